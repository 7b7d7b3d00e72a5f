"""Static routes, private gateways and edge services (port forwarding on the
VPC's public IPs) of a VPC router, with real clients in namespaces.

One VPC for the module (on the VM backend a VPC is a router VM to boot);
each test adds tiers of its own, hot-plugged into the running VM."""

from __future__ import annotations

import contextlib
import subprocess
import uuid

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc

from aio.demo import Api
from aio.nsguest import NamespaceGuest
from tests.lib.allinone import Tenant
from tests.lib.guest_servers import TCP, serve
from tests.lib.vpc import Vpc, ask, pings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vpc(cloud):
    t = Tenant(cloud, f"edge{uuid.uuid4().hex[:6]}")
    try:
        v = Vpc(t, "edge", "10.40.0.0/16")
        yield v
        with contextlib.suppress(grpc.RpcError):
            v.delete()
    finally:
        t.close()


def test_a_static_route_reaches_a_network_behind_a_tier_guest(vpc, servers):
    v = vpc
    web, lan = v.tier("web", "10.40.1.0/24"), v.tier("lan", "10.40.2.0/24")
    (_, gw), (pr, gr) = v.guest(web, "www1"), v.guest(lan, "rtr1")
    # The guest on "lan" routes to 172.31.5.0/24 (an address of its own there).
    assert gr.run(["ip", "addr", "add", "172.31.5.1/24", "dev", "lo"]).returncode == 0
    serve(servers, gr, TCP, 9000, "behind")
    assert not pings(gw, "172.31.5.1")  # the router does not know the network yet
    route = v.call(v.routes.CreateStaticRoute, vpb.CreateStaticRouteRequest(
        static_route=vpb.StaticRoute(vpc_id=v.vpc.id, cidr="172.31.5.0/24",
                                     next_hop=pr.ip)))
    assert route.via_id == lan.id
    v.wait()
    assert pings(gw, "172.31.5.1")
    assert ask(gw, TCP, "172.31.5.1", 9000) == "behind"
    # The tier under the route cannot go while the route uses it.
    v.call(v.routes.DeleteStaticRoute, vpb.DeleteStaticRouteRequest(id=route.id))
    v.wait()
    assert not pings(gw, "172.31.5.1")


def test_a_port_forward_on_the_vpcs_public_ip_reaches_a_tier_guest(vpc, servers):
    v = vpc
    web, db = v.tier("pf-web", "10.40.11.0/24"), v.tier("pf-db", "10.40.12.0/24")
    pw, gw = v.guest(web, "www1")
    v.guest(db, "db1")
    serve(servers, gw, TCP, 80, "web80")
    stub = erpc.PublicIpServiceStub(v.t.api.channel)
    forwards = erpc.PortForwardServiceStub(v.t.api.channel)
    ip = v.call(stub.AllocatePublicIp, epb.AllocatePublicIpRequest(network_id=web.id))
    v.call(forwards.CreatePortForward, epb.CreatePortForwardRequest(
        port_forward=epb.PortForward(public_ip_id=ip.id, protocol="tcp", public_port=8080,
                                     port_id=pw.id, private_port=80)))
    v.wait()
    inet = v.t.cloud.inet_ns
    r = subprocess.run(["ip", "netns", "exec", inet, "socat", "-T3", "-",
                        f"TCP:{ip.ip}:8080,connect-timeout=3"], input="x\n",
                       capture_output=True, text=True, timeout=15)
    assert r.stdout.strip() == "web80"


def test_a_load_balancer_on_the_vpcs_public_ip_spreads_over_tier_guests(vpc, servers):
    v = vpc
    web = v.tier("lb-web", "10.40.21.0/24")
    pa, ga = v.guest(web, "wa")
    pb_, gb = v.guest(web, "wb")
    serve(servers, ga, TCP, 80, "web-a")
    serve(servers, gb, TCP, 80, "web-b")
    ips = erpc.PublicIpServiceStub(v.t.api.channel)
    lbs = erpc.LoadBalancerServiceStub(v.t.api.channel)
    ip = v.call(ips.AllocatePublicIp, epb.AllocatePublicIpRequest(network_id=web.id))
    v.call(lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
        load_balancer=epb.LoadBalancer(
            public_ip_id=ip.id, public_port=8081, protocol="tcp", private_port=80,
            algorithm="roundrobin",
            members=[epb.LoadBalancerMember(port_id=pa.id),
                     epb.LoadBalancerMember(port_id=pb_.id)])))
    v.wait()
    inet = v.t.cloud.inet_ns
    answers = []
    for _ in range(6):
        r = subprocess.run(["ip", "netns", "exec", inet, "socat", "-T5", "-",
                            f"TCP:{ip.ip}:8081,connect-timeout=5"], input="x\n",
                           capture_output=True, text=True, timeout=20)
        answers.append(r.stdout.strip())
    # Round robin over the two tier guests, through HAProxy in the VPC router.
    assert sorted(answers) == ["web-a"] * 3 + ["web-b"] * 3, answers


def test_a_private_gateway_reaches_a_datacenter_network_over_its_vlan(vpc, servers):
    v = vpc
    web = v.tier("pg-web", "10.40.31.0/24")
    _, gw = v.guest(web, "www1")
    # The datacenter's VLAN is the provider's to give: the admin names it
    # (acting as the tenant); a tenant naming one is refused.
    request = vpb.CreatePrivateGatewayRequest(private_gateway=vpb.PrivateGateway(
        vpc_id=v.vpc.id, vlan_id=3001, address="192.168.77.2/24", gateway="192.168.77.1"))
    with pytest.raises(grpc.RpcError) as refused:
        v.call(v.gateways.CreatePrivateGateway, request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = Api(v.t.cloud.listen, v.t.cloud.admin_token, tenant=v.t.tenant.id)
    try:
        pg = admin.call(vrpc.PrivateGatewayServiceStub(admin.channel).CreatePrivateGateway,
                        request)
    finally:
        admin.close()
    v.call(v.routes.CreateStaticRoute, vpb.CreateStaticRouteRequest(
        static_route=vpb.StaticRoute(vpc_id=v.vpc.id, cidr="10.210.0.0/16",
                                     next_hop="192.168.77.1")))
    v.wait()
    # The datacenter: a namespace on VLAN 3001 with 10.210.0.1 behind it.
    dc = NamespaceGuest(f"{v.t.cloud.prefix}-dc-{pg.id[:6]}", v.t.cloud.fabric,
                        f"dc{pg.id.replace('-', '')[:10]}")
    v.t.guests.append(dc)
    dc.attach(3001, "02:00:5e:10:20:30")
    for cmd in (["ip", "addr", "add", "192.168.77.1/24", "dev", "eth0"],
                ["ip", "addr", "add", "10.210.0.1/16", "dev", "lo"],
                ["ip", "route", "add", "10.40.0.0/16", "via", "192.168.77.2"]):
        assert dc.run(cmd).returncode == 0, cmd
    serve(servers, dc, TCP, 9100, "datacenter")
    assert pings(gw, "10.210.0.1")
    assert ask(gw, TCP, "10.210.0.1", 9100) == "datacenter"
    # The gateway's own list guards it like a tier's: default_deny stops new flows.
    v.call(v.acls.ReplaceNetworkAcl, vpb.ReplaceNetworkAclRequest(
        network_id=pg.id, acl_id=v.builtin("default_deny")))
    v.wait()
    assert ask(gw, TCP, "10.210.0.1", 9100) == ""
