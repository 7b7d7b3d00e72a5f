"""Site-to-site VPN through the whole stack (netmgr API -> reconciler ->
agent -> charon via vici): two cloudnet VPCs (and, the same way, two
isolated networks), each router a VPN gateway, joined by a connection each
way; guests reach each other through the tunnel (not through source NAT),
the connection's SA state is read back through the API, and an unrelated
change (a port forward) keeps the same tunnel."""

from __future__ import annotations

import time

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpcpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vpcrpc
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from tests.lib.vpn import wait_established

pytestmark = pytest.mark.integration

PSK = "e2e-Tunnel.key_0123456789"


@pytest.mark.parametrize("where", ["vpc", "network"])
def test_two_sites_joined_by_a_vpn_connection_each_way(make_tenant, where):
    t = make_tenant()
    vpn = vrpc.VpnServiceStub(t.api.channel)
    edge = erpc.PortForwardServiceStub(t.api.channel)
    n = 33 if where == "vpc" else 31
    if where == "vpc":
        vpcs = vpcrpc.VpcServiceStub(t.api.channel)
        va, vb = (t.api.call(vpcs.CreateVpc, vpcpb.CreateVpcRequest(vpc=vpcpb.Vpc(
            name=name, cidr=cidr))) for name, cidr in (("vpc-a", f"10.{n}.0.0/16"),
                                                       ("vpc-b", f"10.{n + 1}.0.0/16")))
        a = t.network(name="web", cidr=f"10.{n}.1.0/24", vpc_id=va.id)
        b = t.network(name="db", cidr=f"10.{n + 1}.2.0/24", vpc_id=vb.id)
        where_a, where_b = vpb.VpnGateway(vpc_id=va.id), vpb.VpnGateway(vpc_id=vb.id)
    else:
        a = t.network(name="site-a", cidr=f"10.{n}.0.0/24")
        b = t.network(name="site-b", cidr=f"10.{n + 1}.0.0/24")
        where_a, where_b = vpb.VpnGateway(network_id=a.id), vpb.VpnGateway(network_id=b.id)
    pa, pb_ = t.port(a.id, hostname="va"), t.port(b.id, hostname="vb")
    t.api.wait_router_active(a.router_id)
    t.api.wait_router_active(b.router_id)
    ga = t.api.call(vpn.CreateVpnGateway, vpb.CreateVpnGatewayRequest(vpn_gateway=where_a))
    gb = t.api.call(vpn.CreateVpnGateway, vpb.CreateVpnGatewayRequest(vpn_gateway=where_b))
    assert ga.public_ip != gb.public_ip
    conns = []
    for mine, theirs, passive in ((ga, gb, False), (gb, ga, True)):
        cgw = t.api.call(vpn.CreateCustomerGateway, vpb.CreateCustomerGatewayRequest(
            customer_gateway=vpb.CustomerGateway(
                name=f"to-{theirs.id[:8]}", peer_address=theirs.public_ip,
                peer_cidrs=list(theirs.local_cidrs), psk=PSK, ike_version=vpb.IKE_VERSION_2,
                ike_proposals=["aes256gcm16-prfsha384-ecp384"],
                esp_proposals=["aes256gcm16-ecp384"], dpd_delay_seconds=2)))
        conns.append(t.api.call(vpn.CreateVpnConnection, vpb.CreateVpnConnectionRequest(
            vpn_connection=vpb.VpnConnection(vpn_gateway_id=mine.id,
                                             customer_gateway_id=cgw.id, passive=passive))))
    up = [wait_established(vpn, t, c.id) for c in conns]
    assert all(c.state == pb.OBJECT_STATE_ACTIVE for c in up)
    # Kernel ESP in a router VM; userspace ESP in namespace routers on this
    # host kind (its kernel has no ESP).
    r = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=a.router_id))
    want = ("kernel",) if r.backend == "vm" else ("libipsec", "kernel")
    assert up[0].status.backend in want, (r.backend, up[0].status.backend)

    ga_guest, gb_guest = t.guest(a, pa), t.guest(b, pb_)
    la, lb = ga_guest.dhcp(), gb_guest.dhcp()
    # Through the tunnel: b sees a's own address (no source NAT on the way).
    r = ga_guest.run(["busybox", "ping", "-c", "3", "-W", "2", lb.ip])
    assert r.returncode == 0, r.stdout
    r = gb_guest.run(["busybox", "ping", "-c", "3", "-W", "2", la.ip])
    assert r.returncode == 0, r.stdout
    got = t.api.call(vpn.GetVpnConnection, vpb.GetVpnConnectionRequest(id=conns[0].id))
    assert got.status.bytes_out > 0 or got.status.bytes_in > 0 or _later_bytes(vpn, t, conns[0])
    ike_before = got.status.established_seconds

    # An unrelated change on router a: the very same tunnel stays up.
    ip = t.api.call(erpc.PublicIpServiceStub(t.api.channel).AllocatePublicIp,
                    epb.AllocatePublicIpRequest(network_id=a.id))
    t.api.call(edge.CreatePortForward, epb.CreatePortForwardRequest(
        port_forward=epb.PortForward(public_ip_id=ip.id, protocol="tcp", public_port=80,
                                     port_id=pa.id, private_port=8080)))
    t.api.wait_router_active(a.router_id)
    r = ga_guest.run(["busybox", "ping", "-c", "3", "-W", "2", lb.ip])
    assert r.returncode == 0, r.stdout
    after = wait_established(vpn, t, conns[0].id)
    assert after.status.established_seconds >= ike_before, "the IKE SA was re-established"

    # Deleting one side's connection: the tunnel goes away.
    t.api.call(vpn.DeleteVpnConnection, vpb.DeleteVpnConnectionRequest(id=conns[0].id))
    t.api.call(vpn.DeleteVpnConnection, vpb.DeleteVpnConnectionRequest(id=conns[1].id))
    t.api.wait_router_active(a.router_id)
    assert not t.api.call(vpn.ListVpnConnections, vpb.ListVpnConnectionsRequest()).vpn_connections


def _later_bytes(vpn, t, conn) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c = t.api.call(vpn.GetVpnConnection, vpb.GetVpnConnectionRequest(id=conn.id))
        if c.status.bytes_out > 0:
            return True
        time.sleep(0.5)
    return False
