"""`cloudnet vm ...` against a real compute agent: create --wait (progress on
stderr until the lease), list, show, console, delete."""

from __future__ import annotations

import io
import json

import pytest

from netmgr.cli import main as cli
from tests.lib.vmutil import VmTenant

pytestmark = pytest.mark.integration


def run(tenant: VmTenant, host, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import sys

    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        rc = cli.main(["--server", tenant.cloud.listen, "--token", tenant.secret, *argv[:2],
                       "--compute", host.address, *argv[2:]])
    finally:
        sys.stdout, sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


def test_vm_cli_create_wait_list_show_console_delete(ovs_cloud, host_a):
    t = VmTenant(ovs_cloud, host_a)
    vm = None
    try:
        net = t.network("clinet", "10.82.0.0/24")
        rc, out, err = run(t, host_a, "vm", "create", "clivm", "--network", net.id, "--wait",
                           "-o", "json")
        assert rc == 0, err
        vm = json.loads(out)
        assert "booting clivm" in err
        assert "booted clivm" in err
        assert vm["nics"][0]["ip"] in err
        rc, out, _ = run(t, host_a, "vm", "list")
        assert rc == 0
        assert "clivm" in out
        assert "RUNNING" in out
        rc, out, _ = run(t, host_a, "vm", "show", vm["id"])
        assert rc == 0
        assert vm["nics"][0]["mac"] in out
        rc, out, _ = run(t, host_a, "vm", "console", vm["id"])
        assert rc == 0
        assert "CLOUDNET-LEASE bound" in out
        rc, out, _ = run(t, host_a, "vm", "delete", vm["id"])
        assert rc == 0
        assert vm["id"] in out
        deleted, vm = vm, None
        rc, _, err = run(t, host_a, "vm", "show", deleted["id"])
        assert rc == 1
        assert "NOT_FOUND" in err.upper().replace(" ", "_")
        rc, _, err = run(t, host_a, "vm", "create", "x", "--network", net.id, "--vcpus", "0")
        assert rc == 1
        assert "vm.vcpus" in err
    finally:
        if vm is not None:
            run(t, host_a, "vm", "delete", vm["id"])
        t.close()
