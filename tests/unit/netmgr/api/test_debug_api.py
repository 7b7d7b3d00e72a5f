"""netmgr's DebugService without an agent: tenant scoping, stream auth, metrics."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.router.v1 import diag_pb2 as dpb
from prometheus_client import generate_latest

from netmgr import metrics
from tests.lib.netmgr_cloud import start_cloud


@pytest.fixture
def setup(tmp_path: Path):
    cloud = start_cloud(tmp_path / "netmgr.db")
    _acme, acme_api = cloud.new_tenant("acme")
    _, other_api = cloud.new_tenant("other")
    net = acme_api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="web", cidr="10.0.0.0/24")))
    yield cloud, acme_api, other_api, net
    cloud.stop()



def test_other_tenants_router_is_not_found_and_streams_need_a_token(setup):
    cloud, _acme_api, other_api, net = setup
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)
    other_md = other_api.metadata
    with pytest.raises(grpc.RpcError) as e:
        stub.Show(dpb.ShowRequest(router_id=net.router_id, kind=dpb.SHOW_KIND_LEASES),
                  metadata=other_md, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    for call in (stub.Capture, stub.Trace):
        req = (dpb.CaptureRequest if call is stub.Capture else dpb.TraceRequest)(
            router_id=net.router_id)
        with pytest.raises(grpc.RpcError) as e:
            list(call(req, metadata=other_md, timeout=10))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            list(call(req, timeout=10))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            list(call(req, metadata=[("authorization", "Bearer nope")], timeout=10))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_netmgr_metrics_name_every_router(setup):
    cloud, _, _, net = setup
    text = generate_latest(metrics.registry_for(cloud.store)).decode()
    assert f'cloudnet_netmgr_router_desired_generation{{host="local",router="{net.router_id}"' \
        in text
    assert "cloudnet_netmgr_routers{state=" in text


@pytest.mark.parametrize(("src", "to", "field"), [
    ("", "1.2.3.4:80/tcp", "from"),
    ("internet", "", "to"),
    ("internet", "1.2.3.4:99999/tcp", "to"),
    ("internet", "1.2.3.4:80/sctp", "to"),
    ("internet", "1.2.3.4:80/icmp", "to"),
    ("not-an-ip", "1.2.3.4:80/tcp", "from"),
    ("00000000-0000-0000-0000-000000000000", "1.2.3.4:80/tcp", "from"),
])
def test_explain_rejects_bad_flows(setup, src, to, field):
    cloud, acme_api, _, _ = setup
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Explain(debug_pb2.ExplainRequest(**{"from": src, "to": to}),
                     metadata=acme_api.metadata, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.value.details() or field in str(e.value.trailing_metadata())


def test_explain_from_the_model(setup):
    cloud, acme_api, _, net = setup
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)
    port = acme_api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))

    def explain(src, to):
        return stub.Explain(debug_pb2.ExplainRequest(**{"from": src, "to": to}),
                            metadata=acme_api.metadata, timeout=10)

    r = explain(port.id, "198.51.100.10:80/tcp")
    assert r.allowed
    assert r.decided_by_kind == "egress-default"
    assert [s.object_kind for s in r.steps][-1] == "snat"
    r = explain("internet", f"{port.ip}:22/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "network"
    r = explain("internet", f"{net.source_nat_ip}:22/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "firewall-default"
    r = explain(port.id, f"{net.gateway}/icmp")
    assert r.allowed
    assert r.decided_by_kind == "router"


def test_netmgr_metrics_over_http(setup):
    import urllib.request

    cloud, _, _, net = setup
    port = metrics.serve(cloud.store, "127.0.0.1:0")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert f'router="{net.router_id}"' in text
    assert "cloudnet_netmgr_router_applied_generation" in text
