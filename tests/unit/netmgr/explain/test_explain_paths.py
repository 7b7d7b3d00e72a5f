"""``debug explain`` on the paths where the router's table decides something
other than the firewall rules alone: a load balancer's listener, a VPN peer's
network (no source NAT; through the tunnel only when the router reports it
up), a port forward into a VPC tier guarded by a network ACL. Model only: the
same flows against real routers and live traces are in
tests/integration/diag/test_explain.py."""

from __future__ import annotations

from typing import Any

from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2 as vnpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vnrpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import vpn_pb2 as rvpb

from netmgr.reconcile.agent_report import record_report
from tests.lib.netmgr_cloud import Api, Cloud, VpcApi
from tests.lib.netmgr_edge import Edge

PEER_CIDR = "172.16.9.0/24"
PEER_HOST = "172.16.9.20"


def _explainer(cloud: Cloud, api: Api) -> Any:
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)

    def explain(src: str, to: str) -> debug_pb2.ExplainResponse:
        return stub.Explain(debug_pb2.ExplainRequest(**{"from": src, "to": to}),
                            metadata=api.metadata, timeout=10)
    return explain


def _kinds(r: debug_pb2.ExplainResponse) -> list[str]:
    return [s.object_kind for s in r.steps]


def test_a_load_balancers_listener_is_open_to_its_sources(cloud: Cloud) -> None:
    _, api = cloud.new_tenant("acme")
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                        cidr="10.1.0.0/24")))
    p1 = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
    e = Edge(cloud, api)
    ip = e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    lb = e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(load_balancer=epb.LoadBalancer(
        public_ip_id=ip.id, public_port=80, private_port=8080, protocol="tcp",
        source_cidrs=["198.51.100.0/24"], members=[epb.LoadBalancerMember(port_id=p1.id)])))
    explain = _explainer(cloud, api)

    r = explain("198.51.100.10", f"{ip.ip}:80/tcp")
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("loadbalancer", lb.id)
    assert r.router_id == net.router_id
    # Outside its source CIDRs the edge drops it; another port is not the listener.
    r = explain("192.0.2.7", f"{ip.ip}:80/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "firewall-default"
    r = explain("198.51.100.10", f"{ip.ip}:81/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "firewall-default"
    # From a guest of the network (hairpin): the same listener answers.
    r = explain(p1.id, f"{ip.ip}:80/tcp")
    assert not r.allowed  # the guest's own address is not in the source CIDRs
    # An ingress rule opening the port at the edge lets any source reach HAProxy.
    rule = e.CreateFirewallRule(epb.CreateFirewallRuleRequest(firewall_rule=epb.FirewallRule(
        direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=ip.id, protocol="tcp",
        port=80)))
    r = explain("192.0.2.7", f"{ip.ip}:80/tcp")
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("loadbalancer", lb.id)
    assert ("firewall", rule.id) in [(s.object_kind, s.object_id) for s in r.steps]


def _vpn_site(cloud: Cloud, api: Api) -> tuple[pb.Network, pb.Port, vnpb.VpnConnection]:
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="site",
                                                                        cidr="10.1.0.0/24")))
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
    vpn = vnrpc.VpnServiceStub(cloud.channel)
    md = api.metadata
    gw = vpn.CreateVpnGateway(vnpb.CreateVpnGatewayRequest(
        vpn_gateway=vnpb.VpnGateway(network_id=net.id)), metadata=md)
    cgw = vpn.CreateCustomerGateway(vnpb.CreateCustomerGatewayRequest(
        customer_gateway=vnpb.CustomerGateway(
            name="peer", peer_address="192.0.2.2", peer_cidrs=[PEER_CIDR],
            psk="0123456789abcdef-Key", ike_version=vnpb.IKE_VERSION_2,
            ike_proposals=["aes256gcm16-prfsha384-ecp384"],
            esp_proposals=["aes256gcm16-ecp384"])), metadata=md)
    conn = vpn.CreateVpnConnection(vnpb.CreateVpnConnectionRequest(
        vpn_connection=vnpb.VpnConnection(vpn_gateway_id=gw.id, customer_gateway_id=cgw.id)),
        metadata=md)
    return net, port, conn


def _report(cloud: Cloud, router_id: str, conn_id: str, ike: str, child: str,
            remote_ts: list[str]) -> None:
    children = [rvpb.VpnChildSaStatus(name="n0", state=child, local_ts=["10.1.0.0/24"],
                                      remote_ts=remote_ts)] if child else []
    status = apb.RouterStatus(router_id=router_id, vpn_connections=[
        rvpb.VpnConnectionStatus(connection_id=conn_id, ike_state=ike, backend="kernel",
                                 children=children)])
    record_report(cloud.store, cloud.store.vpn, router_id, status)


def test_a_vpn_peers_network_goes_through_the_tunnel_never_through_source_nat(
        cloud: Cloud) -> None:
    _, api = cloud.new_tenant("acme")
    net, port, conn = _vpn_site(cloud, api)
    explain = _explainer(cloud, api)

    # Never reported up: the router drops it (nothing in clear), no source NAT.
    r = explain(port.id, f"{PEER_HOST}:22/tcp")
    assert not r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("vpnconnection", conn.id)
    assert "snat" not in _kinds(r)
    _report(cloud, net.router_id, conn.id, "CONNECTING", "", [])
    r = explain(port.id, f"{PEER_HOST}/icmp")
    assert not r.allowed
    assert (r.decided_by_kind, r.decided_by_id) == ("vpnconnection", conn.id)
    assert "CONNECTING" in r.reason

    # Reported up with a child SA to the peer's network: through the tunnel.
    _report(cloud, net.router_id, conn.id, "ESTABLISHED", "INSTALLED", [PEER_CIDR])
    r = explain(port.id, f"{PEER_HOST}:22/tcp")
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("vpnconnection", conn.id)
    assert "snat" not in _kinds(r)
    assert "staticnat" not in _kinds(r)
    # The peer's side reaches the guest back through the same tunnel.
    r = explain(PEER_HOST, f"{port.ip}:22/tcp")
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("vpnconnection", conn.id)
    # Up, but no child SA covers that address: still dropped.
    _report(cloud, net.router_id, conn.id, "ESTABLISHED", "INSTALLED", ["172.16.9.0/28"])
    r = explain(port.id, f"{PEER_HOST}:22/tcp")
    assert not r.allowed, r.reason
    # An address outside the peer's networks still leaves through source NAT.
    r = explain(port.id, "198.51.100.10:80/tcp")
    assert r.allowed
    assert _kinds(r)[-1] == "snat"


def test_a_port_forward_into_a_tier_passes_the_tiers_acl(acme_vpc: tuple[Cloud, VpcApi]) -> None:
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    acl = api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="web-in")))

    def rule(number: int, action: int, **kw: Any) -> vpb.AclRule:
        return api.CreateAclRule(vpb.CreateAclRuleRequest(rule=vpb.AclRule(
            acl_id=acl.id, number=number, action=action,
            direction=vpb.ACL_DIRECTION_INGRESS, protocol="tcp", **kw)))

    deny = rule(10, vpb.ACL_ACTION_DENY, port=80, cidrs=["198.51.100.0/24"])
    allow = rule(20, vpb.ACL_ACTION_ALLOW, port=80)
    web = api.tier(vpc.id, "web", "10.0.1.0/24", acl_id=acl.id)
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id)))
    e = Edge(cloud, api.api)
    ip = e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=web.id))
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=8080, port_id=port.id,
        private_port=80)))
    explain = _explainer(cloud, api.api)

    # The tier's list sees the forwarded packet: private port, outside source.
    r = explain("198.51.100.10", f"{ip.ip}:8080/tcp")
    assert not r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("aclrule", deny.id)
    assert "portforward" in _kinds(r)
    r = explain("192.0.2.7", f"{ip.ip}:8080/tcp")
    assert r.allowed, r.reason
    assert (r.decided_by_kind, r.decided_by_id) == ("portforward", f.id)
    assert ("aclrule", allow.id) in [(s.object_kind, s.object_id) for s in r.steps]
    # A list without an ingress rule for it: the list's default deny.
    api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(
        network_id=web.id, acl_id=next(a.id for a in api.ListNetworkAcls(
            vpb.ListNetworkAclsRequest(vpc_id=vpc.id)).network_acls
            if a.name == "default_deny")))
    r = explain("192.0.2.7", f"{ip.ip}:8080/tcp")
    assert not r.allowed
    assert r.decided_by_kind == "acl-default-deny"
