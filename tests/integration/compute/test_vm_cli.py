"""`cloudnet vm ...` against a real compute agent: create --wait (progress on
stderr until the lease), list, show, console, delete."""

from __future__ import annotations

import json

import pytest

from tests.lib.vmutil import VmTenant, run_cli

pytestmark = pytest.mark.integration


def test_vm_cli_create_wait_list_show_console_delete(ovs_cloud, host_a):
    t = VmTenant(ovs_cloud, host_a)
    vm = None
    try:
        net = t.network("clinet", "10.82.0.0/24")
        rc, out, err = run_cli(t, host_a, "vm", "create", "clivm", "--network", net.id, "--wait",
                           "-o", "json")
        assert rc == 0, err
        vm = json.loads(out)
        assert "booting clivm" in err
        assert "booted clivm" in err
        assert vm["nics"][0]["ip"] in err
        rc, out, _ = run_cli(t, host_a, "vm", "list")
        assert rc == 0
        assert "clivm" in out
        assert "RUNNING" in out
        rc, out, _ = run_cli(t, host_a, "vm", "show", vm["id"])
        assert rc == 0
        assert vm["nics"][0]["mac"] in out
        rc, out, _ = run_cli(t, host_a, "vm", "console", vm["id"])
        assert rc == 0
        assert "CLOUDNET-LEASE bound" in out
        rc, out, _ = run_cli(t, host_a, "vm", "delete", vm["id"])
        assert rc == 0
        assert vm["id"] in out
        deleted, vm = vm, None
        rc, _, err = run_cli(t, host_a, "vm", "show", deleted["id"])
        assert rc == 1
        assert "NOT_FOUND" in err.upper().replace(" ", "_")
        rc, _, err = run_cli(t, host_a, "vm", "create", "x", "--network", net.id, "--vcpus", "0")
        assert rc == 1
        assert "vm.vcpus" in err
    finally:
        if vm is not None:
            run_cli(t, host_a, "vm", "delete", vm["id"])
        t.close()
