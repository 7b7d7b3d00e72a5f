"""The router agent's diagnostics refuse hostile values before they reach a
socket, a probe port or nft: INVALID_ARGUMENT naming the field, never
INTERNAL. The agent runs in-process with a router whose config is set (no
namespace: a value that got past validation would fail there, as INTERNAL)."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import diag_pb2 as pb
from cloudnet.router.v1 import diag_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from router.agent.registry import RouterRegistry
from router.agent.server import create_server

RID = "5d0c2a1e-2b7c-4e0a-9c1d-3f4e5a6b7c8d"
NET = "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


class _NoFabric:
    def setup(self) -> None: ...
    def plug(self, *a: object, **kw: object) -> None: ...
    def unplug(self, port: str) -> None: ...
    def ports(self) -> set[str]:
        return set()


def _config() -> apb.RouterConfig:
    return apb.RouterConfig(
        router_id=RID, generation=1,
        interfaces=[
            apb.Interface(name="pub0", role=apb.INTERFACE_ROLE_PUBLIC, mac="02:00:00:00:00:10",
                          addresses=["203.0.113.10/24"]),
            apb.Interface(name="g-net1", role=apb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:01",
                          addresses=["10.10.0.1/24"], segment_id=100, network_id=NET)],
        guest_networks=[apb.GuestNetwork(network_id=NET, interface="g-net1",
                                         cidr="10.10.0.0/24", gateway="10.10.0.1")])


@pytest.fixture
def stub(tmp_path):
    registry = RouterRegistry(str(tmp_path / "state"), fabric=_NoFabric())
    registry.runtime(RID).config = _config()  # as if applied: nothing runs in unit tests
    srv, port = create_server("127.0.0.1:0", registry)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield diag_pb2_grpc.RouterDiagnosticsStub(channel)
    channel.close()
    srv.stop(0)


def _probe(**kw: Any) -> tuple[str, pb.ProbeRequest]:
    return "Probe", pb.ProbeRequest(**{"router_id": RID, **kw})


PING = pb.PingProbe(destination="203.0.113.1")
HOSTILE = [
    (_probe(timeout_seconds=math.nan, ping=PING), "timeout_seconds"),
    (_probe(timeout_seconds=math.inf, ping=PING), "timeout_seconds"),
    (_probe(timeout_seconds=-math.inf, ping=PING), "timeout_seconds"),
    (_probe(dhcp=pb.DhcpProbe(network_id=NET, mac="01:00:5e:00:00:01")), "dhcp.mac"),
    (_probe(dhcp=pb.DhcpProbe(network_id=NET, mac="ff:ff:ff:ff:ff:ff")), "dhcp.mac"),
    (_probe(dhcp=pb.DhcpProbe(network_id=NET, mac="00:00:00:00:00:00")), "dhcp.mac"),
    (_probe(dns=pb.DnsProbe(name="a" * 64)), "dns.name"),
    (_probe(dns=pb.DnsProbe(name="www." + "b" * 64 + ".example")), "dns.name"),
    (_probe(ping=pb.PingProbe(destination="255.255.255.255")), "ping.destination"),
    (_probe(ping=pb.PingProbe(destination="10.10.0.255")), "ping.destination"),
    (_probe(ping=pb.PingProbe(destination="203.0.113.255")), "ping.destination"),
    (_probe(ping=pb.PingProbe(destination="224.0.0.1")), "ping.destination"),
    (_probe(ping=pb.PingProbe(destination="0.0.0.0")), "ping.destination"),
    (_probe(traceroute=pb.TracerouteProbe(destination="255.255.255.255")),
     "traceroute.destination"),
    (_probe(traceroute=pb.TracerouteProbe(destination="10.10.0.255")), "traceroute.destination"),
    (_probe(tcp=pb.TcpProbe(destination="255.255.255.255", port=80)), "tcp.destination"),
    (_probe(router_id=RID.upper(), ping=PING), "router_id"),
    (_probe(dhcp=pb.DhcpProbe(network_id=NET.upper())), "dhcp.network_id"),
    (("Capture", pb.CaptureRequest(router_id=RID, interface=pb.InterfaceRef(public=True),
                                   max_seconds=math.nan)), "max_seconds"),
    (("Capture", pb.CaptureRequest(router_id=RID, interface=pb.InterfaceRef(public=True),
                                   max_seconds=math.inf)), "max_seconds"),
    (("Trace", pb.TraceRequest(router_id=RID, protocol="icmp", max_seconds=math.nan)),
     "max_seconds"),
    (("Trace", pb.TraceRequest(router_id=RID, protocol="icmp", max_seconds=math.inf)),
     "max_seconds"),
    (("Show", pb.ShowRequest(router_id=RID.upper(), kind=pb.SHOW_KIND_LEASES)), "router_id"),
]


def _fields(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None, err.details()
    out = []
    for detail in status.details:
        br = error_details_pb2.BadRequest()
        if detail.Unpack(br):
            out += [v.field for v in br.field_violations]
    return out


@pytest.mark.parametrize(("call", "field"), HOSTILE,
                         ids=[f"{c[0]}-{f}-{i}" for i, (c, f) in enumerate(HOSTILE)])
def test_hostile_value_is_invalid_argument_naming_the_field(stub, call, field) -> None:
    name, request = call
    method = getattr(stub, name)
    streamed = name in ("Capture", "Trace")
    with pytest.raises(grpc.RpcError) as info:
        _ = list(method(request, timeout=20)) if streamed else method(request, timeout=20)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert field in _fields(err), err.details()
    assert field in err.details()
