"""``debug explain`` follows the router's table where it is not obvious: what
the edge filter guards (tenant public IPs, not the source NAT address), a
port forward's DNAT whatever its source CIDRs once a rule opened the edge,
static NAT decided by the ingress rule, which of several rules the router's
sets name, egress rules by protocol group, VPC hairpins, private gateways
and static routes under network ACLs. Model only (the same against real
routers: tests/integration/diag/test_explain_property.py)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.explain import edge as explain_edge
from router.services.nftables import edge as router_edge
from tests.lib.netmgr_cloud import ADMIN, Api, Cloud, VpcApi
from tests.lib.netmgr_edge import Edge

INGRESS, EGRESS = epb.FIREWALL_DIRECTION_INGRESS, epb.FIREWALL_DIRECTION_EGRESS


def _explainer(cloud: Cloud, api: Api) -> Any:
    stub = debug_pb2_grpc.DebugServiceStub(cloud.channel)

    def explain(src: str, to: str) -> debug_pb2.ExplainResponse:
        return stub.Explain(debug_pb2.ExplainRequest(**{"from": src, "to": to}),
                            metadata=api.metadata, timeout=10)
    return explain


def _decided(r: debug_pb2.ExplainResponse) -> tuple[bool, str, str]:
    return r.allowed, r.decided_by_kind, r.decided_by_id


def _steps(r: debug_pb2.ExplainResponse) -> list[tuple[str, str]]:
    return [(s.object_kind, s.object_id) for s in r.steps]


def test_the_expansion_limit_is_the_routers() -> None:
    # Which of two objects covering a packet the router names depends on it.
    assert explain_edge.EXPAND_MAX == router_edge.EXPAND_MAX


def _network(cloud: Cloud) -> tuple[Api, Edge, pb.Network, list[pb.Port], epb.PublicIp]:
    _, api = cloud.new_tenant("acme")
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                        cidr="10.1.0.0/24")))
    ports = [api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
             for _ in range(2)]
    e = Edge(cloud, api)
    ip = e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    return api, e, net, ports, ip


def _rule(e: Edge, **fields: Any) -> epb.FirewallRule:
    return e.CreateFirewallRule(epb.CreateFirewallRuleRequest(
        firewall_rule=epb.FirewallRule(**fields)))


def test_the_edge_guards_public_ips_not_the_source_nat_address(cloud: Cloud) -> None:
    api, e, net, (p1, _), ip = _network(cloud)
    explain = _explainer(cloud, api)
    # The router answers ICMP on its source NAT address (no edge filter there) ...
    assert _decided(explain("internet", f"{net.source_nat_ip}/icmp")) == (
        True, "router", net.router_id)
    # ... but not on a public IP no rule opens.
    assert _decided(explain("internet", f"{ip.ip}/icmp")) == (
        False, "firewall-default", "drop")
    icmp = _rule(e, direction=INGRESS, public_ip_id=ip.id, protocol="icmp", icmp_type=8)
    r = explain("internet", f"{ip.ip}/icmp")
    assert _decided(r) == (True, "router", net.router_id)
    assert ("firewall", icmp.id) in _steps(r)
    # A rule for echo replies only does not open echo requests.
    _rule(e, direction=INGRESS, public_ip_id=ip.id, protocol="icmp", icmp_type=0)
    r = explain(p1.id, f"{ip.ip}:22/tcp")  # a hairpin meets the edge filter too
    assert _decided(r) == (False, "firewall-default", "drop")
    # An opened port with nothing behind it: the router's input drops it.
    tcp = _rule(e, direction=INGRESS, public_ip_id=ip.id, protocol="tcp", port=22)
    r = explain("internet", f"{ip.ip}:22/tcp")
    assert _decided(r) == (False, "firewall-default", "drop")
    assert ("firewall", tcp.id) in _steps(r)
    # Guests get DNS from the router on any of its addresses.
    assert _decided(explain(p1.id, f"{net.source_nat_ip}:53/udp")) == (
        True, "router", net.router_id)


def test_port_forwards_static_nat_and_the_rule_the_router_names(cloud: Cloud) -> None:
    api, e, net, (p1, p2), ip = _network(cloud)
    explain = _explainer(cloud, api)
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=8080, port_id=p1.id, private_port=80,
        source_cidrs=["192.0.2.0/24"])))
    r = explain("198.51.100.10", f"{ip.ip}:8080/tcp")
    assert _decided(r) == (False, "firewall-default", "drop")
    # A rule opening the port to every source: the forward's DNAT applies (it
    # is keyed on address and port only), the forward decides.
    rule = _rule(e, direction=INGRESS, public_ip_id=ip.id, protocol="tcp", port=8080)
    r = explain("198.51.100.10", f"{ip.ip}:8080/tcp")
    assert _decided(r) == (True, "portforward", f.id)
    assert ("firewall", rule.id) in _steps(r)
    # From its own source CIDR the router's exact set of the shortest prefix
    # (/0: the rule's element) is looked up first: the rule opens the edge.
    r = explain("192.0.2.9", f"{ip.ip}:8080/tcp")
    assert _steps(r)[1] == ("firewall", rule.id)
    # A range longer than the router expands lives in an interval set, after
    # every exact one: the forward's own element opens it.
    wide = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="udp", public_port=9000, public_port_end=9099,
        port_id=p2.id, private_port=9000)))
    _rule(e, direction=INGRESS, public_ip_id=ip.id, protocol="udp", port=9000,
          port_end=9199)
    r = explain("198.51.100.10", f"{ip.ip}:9050/udp")
    assert _decided(r) == (True, "portforward", wide.id)
    assert _steps(r)[1] == ("portforward", wide.id)
    assert ("portforward", wide.id) in _steps(r)
    assert f"DNAT to {p2.ip}:9050" in [s.result for s in r.steps]
    # Static NAT: the ingress rule on its address decides, the reply leaves
    # with the static NAT address.
    ip2 = e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    nat = e.CreateStaticNat(epb.CreateStaticNatRequest(static_nat=epb.StaticNat(
        public_ip_id=ip2.id, port_id=p2.id)))
    assert not explain("internet", f"{ip2.ip}:443/tcp").allowed
    opens = _rule(e, direction=INGRESS, public_ip_id=ip2.id, protocol="all")
    r = explain("internet", f"{ip2.ip}:443/tcp")
    assert _decided(r) == (True, "firewall", opens.id)
    assert ("staticnat", nat.id) in _steps(r)
    r = explain(p2.id, "198.51.100.10:80/tcp")
    assert r.steps[-1].object_kind == "staticnat"
    assert r.steps[-1].result == f"source becomes {ip2.ip}"


def test_egress_rules_by_protocol_group_then_the_smallest_id(cloud: Cloud) -> None:
    api, e, net, (p1, _), _ = _network(cloud)
    explain = _explainer(cloud, api)
    rules = [_rule(e, direction=EGRESS, network_id=net.id, protocol=proto, port=port)
             for proto, port in (("all", 0), ("tcp", 443), ("all", 0))]
    r = explain(p1.id, "198.51.100.10:443/tcp")
    # The router looks up TCP/UDP rules before rules for every protocol.
    assert _decided(r) == (False, "firewall", rules[1].id)
    r = explain(p1.id, "198.51.100.10:80/tcp")
    assert _decided(r) == (False, "firewall", min(rules[0].id, rules[2].id))
    e.SetEgressPolicy(epb.SetEgressPolicyRequest(policy=epb.EgressPolicy(
        network_id=net.id, default_action=epb.EGRESS_ACTION_DENY)))
    for rule in rules:
        if rule.protocol == "all":
            e.DeleteFirewallRule(epb.DeleteFirewallRuleRequest(id=rule.id))
    # The network's policy denies (the router's deny set names the network) ...
    assert _decided(explain(p1.id, "198.51.100.10:80/tcp")) == (False, "network", net.id)
    # ... and a rule flips it back.
    r = explain(p1.id, "198.51.100.10:443/tcp")
    assert _decided(r) == (True, "firewall", rules[1].id)
    assert r.steps[-1].object_kind == "snat"
    # To the gateway: the router's own services, no egress.
    assert _decided(explain(p1.id, f"{net.gateway}:67/udp")) == (True, "router", net.router_id)


def test_vpc_hairpin_private_gateway_and_static_route(acme_vpc: tuple[Cloud, VpcApi]) -> None:
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    acl = api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="lan")))

    def rule(number: int, action: int, direction: int, **kw: Any) -> vpb.AclRule:
        return api.CreateAclRule(vpb.CreateAclRuleRequest(rule=vpb.AclRule(
            acl_id=acl.id, number=number, action=action, direction=direction, **kw)))

    deny_dc = rule(10, vpb.ACL_ACTION_DENY, vpb.ACL_DIRECTION_EGRESS, protocol="tcp",
                   port=22, cidrs=["10.210.0.0/16"])
    allow_out = rule(20, vpb.ACL_ACTION_ALLOW, vpb.ACL_DIRECTION_EGRESS, protocol="all")
    allow_in = rule(30, vpb.ACL_ACTION_ALLOW, vpb.ACL_DIRECTION_INGRESS, protocol="all",
                    cidrs=["10.210.0.0/16"])
    web = api.tier(vpc.id, "web", "10.0.1.0/24", acl_id=acl.id)
    db = api.tier(vpc.id, "db", "10.0.2.0/24")
    pw = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id)))
    pd = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=db.id)))
    # A private gateway's VLAN is the provider's to name: the admin, acting as the tenant.
    admin = VpcApi(cloud, cloud.api(ADMIN, api.WhoAmI(pb.WhoAmIRequest()).tenant_id))
    gw = admin.CreatePrivateGateway(vpb.CreatePrivateGatewayRequest(
        private_gateway=vpb.PrivateGateway(vpc_id=vpc.id, vlan_id=2000,
                                           address="192.168.50.2/24",
                                           gateway="192.168.50.1")))
    route = api.CreateStaticRoute(vpb.CreateStaticRouteRequest(static_route=vpb.StaticRoute(
        vpc_id=vpc.id, cidr="10.210.0.0/16", next_hop="192.168.50.1")))
    explain = _explainer(cloud, api.api)

    # Out through the private gateway: the tier's list, then the gateway's (default_allow).
    r = explain(pw.id, "10.210.3.4:80/tcp")
    assert r.allowed, r.reason
    assert ("staticroute", route.id) in _steps(r)
    assert ("aclrule", allow_out.id) in _steps(r)
    assert not [k for k, _ in _steps(r) if k == "snat"]
    r = explain(pw.id, "10.210.3.4:22/tcp")
    assert _decided(r) == (False, "aclrule", deny_dc.id)
    # From the datacenter behind it into the tier: the tier's ingress list.
    r = explain("10.210.3.4", f"{pw.ip}:80/tcp")
    assert _decided(r) == (True, "aclrule", allow_in.id)
    assert r.router_id == vpc.router_id
    r = explain("10.220.0.1", f"{pw.ip}:80/tcp")  # not behind the gateway: outside
    assert _decided(r)[:2] == (False, "network")
    # The gateway's own list guards it like a tier's.
    api.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(
        network_id=gw.id, acl_id=next(a.id for a in api.ListNetworkAcls(
            vpb.ListNetworkAclsRequest(vpc_id=vpc.id)).network_acls
            if a.name == "default_deny")))
    r = explain(pw.id, "10.210.3.4:80/tcp")
    assert (r.allowed, r.decided_by_kind) == (False, "acl-default-deny")
    # Nothing from a private gateway goes out to the internet.
    r = explain("192.168.50.7", "198.51.100.10:80/tcp")
    assert not r.allowed
    # A VPC hairpin: a public IP forwarded to another tier passes both lists.
    e = Edge(cloud, api.api)
    ip = e.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=db.id))
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=5432, port_id=pd.id,
        private_port=5432)))
    r = explain(pw.id, f"{ip.ip}:5432/tcp")
    assert _decided(r) == (True, "portforward", f.id)
    assert ("aclrule", allow_out.id) in _steps(r)
    assert "hairpin" not in [k for k, _ in _steps(r)]  # another tier: no source NAT
    r = explain(pd.id, f"{ip.ip}:5432/tcp")
    assert _decided(r) == (True, "portforward", f.id)
    assert "hairpin" in [k for k, _ in _steps(r)]
    # To the router's own address on another tier: its input, no list.
    assert _decided(explain(pw.id, f"{db.gateway}:53/udp")) == (True, "router", vpc.router_id)


def test_a_guest_address_counts_only_from_its_port(cloud: Cloud) -> None:
    api, _, net, (p1, _), _ = _network(cloud)
    explain = _explainer(cloud, api)
    # The port's own address is the port.
    r = explain(p1.ip, "198.51.100.10:80/tcp")
    assert _decided(r)[:2] == (True, "egress-default")
    assert ("port", p1.id) in _steps(r)
    # An address of the network no port holds: the router's port security drops it.
    for spoofed in ("10.1.0.200", net.gateway):
        r = explain(spoofed, "198.51.100.10:80/tcp")
        assert _decided(r) == (False, "port-spoof", net.id), spoofed


def test_an_object_the_router_refused_is_flagged(cloud: Cloud) -> None:
    api, e, net, (p1, _), ip = _network(cloud)
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=8080, port_id=p1.id, private_port=80)))
    cloud.store.record_edge_status(net.router_id, {("portforward", f.id): "refused: test"})
    r = _explainer(cloud, api)("internet", f"{ip.ip}:8080/tcp")
    assert _decided(r) == (True, "portforward", f.id)
    flagged = [s.result for s in r.steps if (s.object_kind, s.object_id) == ("portforward", f.id)
               and "ERROR" in s.result]
    assert len(flagged) == 1
    assert "refused: test" in flagged[0]


def test_the_source_nat_address_opens_only_its_own_forwards_and_listeners(
        cloud: Cloud) -> None:
    api, e, net, (p1, p2), _ = _network(cloud)
    explain = _explainer(cloud, api)
    snat = next(i for i in e.ListPublicIps(epb.ListPublicIpsRequest(
        network_id=net.id)).public_ips if i.source_nat)
    try:
        f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
            public_ip_id=snat.id, protocol="tcp", public_port=2222, port_id=p1.id,
            private_port=22, source_cidrs=["198.51.100.0/24"])))
    except grpc.RpcError as refused:
        if refused.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        pytest.skip("this API keeps port forwards off the source NAT address")
    lb = e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(load_balancer=epb.LoadBalancer(
        public_ip_id=snat.id, public_port=80, private_port=8080, protocol="tcp",
        source_cidrs=["198.51.100.0/24"], members=[epb.LoadBalancerMember(port_id=p2.id)])))
    # Open to their sources ...
    assert _decided(explain("198.51.100.10", f"{snat.ip}:2222/tcp")) == (
        True, "portforward", f.id)
    assert _decided(explain("198.51.100.10", f"{snat.ip}:80/tcp")) == (
        True, "loadbalancer", lb.id)
    # ... closed to others (the forward by the default drop, the listener by its
    # own lookup: the router's trace names the load balancer) ...
    assert _decided(explain("192.0.2.7", f"{snat.ip}:2222/tcp")) == (
        False, "firewall-default", "drop")
    assert _decided(explain("192.0.2.7", f"{snat.ip}:80/tcp")) == (
        False, "loadbalancer", lb.id)
    # ... and the address's own traffic passes as before.
    assert _decided(explain("192.0.2.7", f"{snat.ip}/icmp")) == (True, "router", net.router_id)
    assert _decided(explain(p2.id, f"{snat.ip}:53/udp")) == (True, "router", net.router_id)
    # A hairpin from a guest outside the sources: dropped like one from outside.
    assert _decided(explain(p2.id, f"{snat.ip}:2222/tcp")) == (
        False, "firewall-default", "drop")


def test_the_metadata_service_answers_a_ports_own_guest(cloud: Cloud) -> None:
    api, _, net, (p1, _), _ = _network(cloud)
    explain = _explainer(cloud, api)
    for to in (f"{net.gateway}:80/tcp", "169.254.169.254:80/tcp", "169.254.169.254:8080/tcp"):
        assert _decided(explain(p1.id, to)) == (True, "router", net.router_id), to
    assert _decided(explain(p1.id, "169.254.169.254:22/tcp")) == (
        False, "firewall-default", "drop")
    # Not from outside, and not for an address no port holds.
    assert not explain("internet", f"{net.source_nat_ip}:80/tcp").allowed
    assert not explain("10.1.0.99", f"{net.gateway}:80/tcp").allowed


def test_the_metadata_constants_are_the_routers() -> None:
    nft = pytest.importorskip("router.services.nftables.metadata")
    service = pytest.importorskip("router.services.metadata")
    from netmgr.explain import path, router_view

    assert path.METADATA_PORTS == nft.METADATA_PORTS
    assert router_view.METADATA_ADDRESS == service.METADATA_ADDRESS
