"""The all-in-one's switches with its real daemons: --metrics-listen makes
both netmgr and the router agent serve Prometheus metrics; a second run on
the same state directory says what comes back (a network and its source-NAT
address), and --fresh starts empty."""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from aio.allinone import AllInOne
from aio.demo import Api
from tests.lib.allinone import Tenant, free_port

pytestmark = pytest.mark.integration


def _scrape(address: str) -> set[str]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return {f.name for f in text_string_to_metric_families(r.read().decode())}


def _aio(prefix: str, state: str, metrics_port: int = 0) -> AllInOne:
    # TLS, the all-in-one's default: netmgr's CA is made at the first start
    # and kept across the next ones.
    return AllInOne(prefix=prefix, state_dir=state, listen=f"127.0.0.1:{free_port()}",
                    fabric_kind="linuxbridge", health_interval=1.0,
                    metrics_listen=f"127.0.0.1:{metrics_port}" if metrics_port else "")


def _free_pair() -> int:
    """A port P with P+1 free too (netmgr's and the agent's metrics)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two free neighbouring ports")


def test_metrics_then_a_reused_state_dir_then_fresh(tmp_path):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    state = str(tmp_path / "state")
    port = _free_pair()
    aio = _aio(prefix, state, port)
    try:
        aio.up()
        assert "cloudnet_netmgr_routers" in _scrape(f"127.0.0.1:{port}")
        assert "cloudnet_router_agent_routers" in _scrape(f"127.0.0.1:{port + 1}")
        plain = Api(aio.listen, aio.admin_token)  # TLS only: a plaintext client is refused
        with pytest.raises(grpc.RpcError) as info:
            plain.call(plain.tenants.ListTenants, pb.ListTenantsRequest())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        plain.close()
        t = Tenant(aio, "keep")
        tenant_id = t.tenant.id
        net = t.network(name="web", cidr="10.44.0.0/24")
        t.api.wait_router_active(net.router_id)
        t.close()
    finally:
        aio.down()
    again = _aio(prefix, state)
    note = again.previous_state()
    assert note is not None
    assert "1 network" in note
    assert "1 source-NAT IP" in note
    try:
        again.up()
        api = Api(again.listen, again.admin_token, tenant=tenant_id, tls=again.client_tls)
        assert api.call(api.networks.GetNetwork, pb.GetNetworkRequest(id=net.id)).cidr == \
            net.cidr
        api.wait_router_active(net.router_id)  # the previous run's router came back
        api.close()
    finally:
        again.down()
    fresh = _aio(prefix, state)
    fresh.wipe_state()
    assert fresh.previous_state() is None
    try:
        fresh.up()
        api = Api(fresh.listen, fresh.admin_token, tls=fresh.client_tls)
        assert not api.call(api.tenants.ListTenants, pb.ListTenantsRequest()).tenants
        api.close()
    finally:
        fresh.down()
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
    assert not leftovers, leftovers
