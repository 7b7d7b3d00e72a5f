"""Hostile values sent to a real router's diagnostics (through netmgr's
DebugService) and to the router API: each is INVALID_ARGUMENT naming the
field, never INTERNAL, UNKNOWN or ABORTED, and the router still answers a
good probe after them."""

from __future__ import annotations

import ipaddress
import math
import time

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.router.v1 import diag_pb2 as dpb
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aio.allinone import EDGE_PUBLIC_IP, PUBLIC_CIDR
from tests.lib.diag import Debug

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(cloud):
    from tests.lib.allinone import Tenant

    t = Tenant(cloud, "hostile")
    net = t.network(name="h", cidr="10.9.0.0/24")
    t.api.wait_router_active(net.router_id)
    yield t, net
    t.close()


def _fields(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None, err.details()
    out = []
    for detail in status.details:
        br = error_details_pb2.BadRequest()
        if detail.Unpack(br):
            out += [v.field for v in br.field_violations]
    return out


def _cases(net: pb.Network):
    broadcast = str(ipaddress.IPv4Network(net.cidr).broadcast_address)
    public_broadcast = str(ipaddress.IPv4Network(PUBLIC_CIDR).broadcast_address)
    ping = dpb.PingProbe(destination=EDGE_PUBLIC_IP)
    probe = lambda **kw: ("probe", kw)  # noqa: E731
    return [
        (probe(timeout_seconds=math.nan, ping=ping), "timeout_seconds"),
        (probe(dhcp=dpb.DhcpProbe(network_id=net.id, mac="01:00:5e:00:00:01")), "dhcp.mac"),
        (probe(dhcp=dpb.DhcpProbe(network_id=net.id, mac="ff:ff:ff:ff:ff:ff")), "dhcp.mac"),
        (probe(dhcp=dpb.DhcpProbe(network_id=net.id, mac="00:00:00:00:00:00")), "dhcp.mac"),
        (probe(dns=dpb.DnsProbe(name="a" * 64)), "dns.name"),
        (probe(ping=dpb.PingProbe(destination="255.255.255.255")), "ping.destination"),
        (probe(ping=dpb.PingProbe(destination=broadcast)), "ping.destination"),
        (probe(ping=dpb.PingProbe(destination=public_broadcast)), "ping.destination"),
        (probe(traceroute=dpb.TracerouteProbe(destination=broadcast)), "traceroute.destination"),
        (probe(traceroute=dpb.TracerouteProbe(destination="255.255.255.255")),
         "traceroute.destination"),
        (probe(router_id=net.router_id.upper(), ping=ping), "router_id"),
        (("capture", dpb.CaptureRequest(router_id=net.router_id, max_seconds=math.nan,
                                        interface=dpb.InterfaceRef(public=True))),
         "max_seconds"),
        (("trace", dpb.TraceRequest(router_id=net.router_id, protocol="icmp",
                                    max_seconds=math.nan)), "max_seconds"),
    ]


def test_hostile_diagnostics_are_invalid_argument_naming_the_field(lab):
    t, net = lab
    dbg = Debug(t)

    def send(kind, arg):
        if kind == "probe":
            return dbg.probe(arg.pop("router_id", net.router_id), **arg)
        return list((dbg.capture if kind == "capture" else dbg.trace)(arg, timeout=60))

    for (kind, arg), field in _cases(net):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            send(kind, arg)
        err = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.code(), err.details())
        assert field in _fields(err), (field, err.details())
        assert time.monotonic() - started < 30, field  # refused, not run until a limit
    # The router is none the worse: a good probe answers.
    assert dbg.probe(net.router_id, ping=dpb.PingProbe(destination=EDGE_PUBLIC_IP, count=1)).ok


def test_ids_in_another_case_are_refused_not_retried(lab):
    t, net = lab
    with pytest.raises(grpc.RpcError) as info:
        t.api.call(t.api.routers.RestartRouter, pb.RestartRouterRequest(id=net.router_id.upper()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(info.value) == ["id"]
    ips = erpc.PublicIpServiceStub(t.api.channel)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        t.api.call(ips.AllocatePublicIp, epb.AllocatePublicIpRequest(network_id=net.id.upper()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(info.value) == ["network_id"]
    assert time.monotonic() - started < 5
