"""The README's demo, run twice on one all-in-one: the second run finds the
demo's tenant, network and ports again and still shows everything working."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.demo import Api, run_demo

pytestmark = pytest.mark.integration


def test_demo_succeeds_and_can_run_again(cloud, capsys):
    assert run_demo(cloud)
    first = capsys.readouterr().out
    assert run_demo(cloud)
    second = capsys.readouterr().out
    # Same network, same addresses: found again, not made anew.
    line = next(x for x in first.splitlines() if x.startswith("network "))
    assert line in second
    for x in first.splitlines():
        if x.startswith(("vm1: lease", "vm2: lease")):
            assert x in second
    assert "internet host saw the connection from 203.0.113." in second
    # One demo token however many runs: each run's replaces the last's.
    admin = Api(cloud.listen, cloud.admin_token, tls=cloud.client_tls)
    try:
        tenant = next(t for t in admin.call(admin.tenants.ListTenants, pb.ListTenantsRequest(
            page_size=500)).tenants if t.name == "demo")
        tokens = admin.call(admin.tenants.ListTokens, pb.ListTokensRequest(
            tenant_id=tenant.id, page_size=500)).tokens
    finally:
        admin.close()
    assert [t.name for t in tokens] == ["demo"]


def test_the_demos_hint_names_a_token_file_never_the_secret(cloud, capsys):
    """The hint the demo ends with reads the demo tenant's token from a 0600
    file: the secret is neither printed nor put on a command line."""
    assert run_demo(cloud)
    out = capsys.readouterr().out
    hint = next(x for x in out.splitlines() if x.startswith("Try: "))
    assert "cn_" not in out, "a token's secret printed"
    named = re.search(r"CLOUDNET_TOKEN_FILE=(\S+)", hint)
    assert named, hint
    path = named[1]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The hint's command works as printed (the CLI's server and CA from the
    # all-in-one's client settings, passed here as its config file).
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    env = {**os.environ, "PYTHONPATH": f"{repo}:{repo}/proto", "CLOUDNET_TOKEN_FILE": path,
           "CLOUDNET_CONFIG": cloud.write_client_config()[0]}
    env.pop("CLOUDNET_TOKEN", None)
    listed = subprocess.run([sys.executable, "-m", "netmgr.cli.main", "network", "list"],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr[-500:]
    assert "web" in listed.stdout
