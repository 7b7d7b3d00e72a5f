"""The edge part of a router's config: one function per model object.

This is the only place where an edge object of the model becomes what the
router agent sees. The full config (``add_edge``, from
``netmgr.reconcile.configbuild.router``) and an edge delta
(``netmgr.reconcile.delta_push``) both call these functions, so a delta that
adds one object carries exactly that object's part of the full config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb

from netmgr.model import edge as me

PUBLIC_INTERFACE = "pub0"

# The edge rules a delta can carry: their model objects and agent objects.
EdgeRule: TypeAlias = me.StaticNat | me.PortForward | me.FirewallRule
AgentRule: TypeAlias = (pb.StaticNatRule | pb.PortForwardRule | pb.IngressRule | pb.EgressRule
                        | rpb.GuestIngressRule)


def public_address(ip: me.PublicIp) -> pb.PublicAddress:
    return pb.PublicAddress(public_ip_id=ip.id, ip=ip.ip, interface=PUBLIC_INTERFACE)


def static_nat_rule(n: me.StaticNat) -> pb.StaticNatRule:
    return pb.StaticNatRule(id=n.id, public_ip=n.public_ip, private_ip=n.private_ip,
                            network_id=n.network_id)


def port_forward_rule(f: me.PortForward) -> pb.PortForwardRule:
    return pb.PortForwardRule(
        id=f.id, public_ip=f.public_ip, protocol=f.protocol,
        public_port_start=f.public_port, public_port_end=f.public_port_end,
        private_ip=f.private_ip, private_port_start=f.private_port,
        private_port_end=f.private_port_end, source_cidrs=list(f.source_cidrs),
        network_id=f.network_id)


def ingress_rule(r: me.FirewallRule) -> pb.IngressRule:
    return pb.IngressRule(id=r.id, public_ip=r.public_ip, protocol=r.protocol,
                          port_start=r.port, port_end=r.port_end, icmp_type=r.icmp_type,
                          icmp_code=r.icmp_code, cidrs=list(r.cidrs))


def guest_ingress_rule(r: me.FirewallRule) -> rpb.GuestIngressRule:
    """An ingress rule to the guests of a routed or dual-stack network."""
    return rpb.GuestIngressRule(id=r.id, network_id=r.network_id, protocol=r.protocol,
                                port_start=r.port, port_end=r.port_end, icmp_type=r.icmp_type,
                                icmp_code=r.icmp_code, cidrs=list(r.cidrs))


def egress_rule(r: me.FirewallRule, network_cidr: str) -> pb.EgressRule:
    """An egress rule matches the traffic of its network (``network_cidr``)."""
    return pb.EgressRule(id=r.id, network_id=r.network_id, source_cidr=network_cidr,
                         protocol=r.protocol, port_start=r.port, port_end=r.port_end,
                         icmp_type=r.icmp_type, icmp_code=r.icmp_code, cidrs=list(r.cidrs))


def firewall_rule(r: me.FirewallRule, network_cidr: str) -> (
        pb.IngressRule | pb.EgressRule | rpb.GuestIngressRule):
    """By direction and target; ``network_cidr`` (the rule's network)
    matters to egress rules only."""
    if me.is_guest_ingress(r):
        return guest_ingress_rule(r)
    return ingress_rule(r) if r.direction == "ingress" else egress_rule(r, network_cidr)


def edge_rule(obj: EdgeRule, network_cidr: str) -> AgentRule:
    """Any rule a delta can carry; ``network_cidr`` as for ``firewall_rule``."""
    if isinstance(obj, me.StaticNat):
        return static_nat_rule(obj)
    if isinstance(obj, me.PortForward):
        return port_forward_rule(obj)
    return firewall_rule(obj, network_cidr)


def load_balancer_rule(lb: me.LoadBalancer) -> pb.LoadBalancerRule:
    check_type, path, expect_status, interval_ms, rise, fall = lb.health_check
    return pb.LoadBalancerRule(
        id=lb.id, public_ip=lb.public_ip, public_port=lb.public_port, protocol=lb.protocol,
        algorithm=lb.algorithm, stickiness="" if lb.stickiness == "none" else lb.stickiness,
        health_check=pb.LbHealthCheck(
            type="" if check_type == "none" else check_type, path=path,
            expect_status=expect_status, interval_ms=interval_ms, rise=rise, fall=fall),
        # A member whose port is gone (deleted) is left out.
        members=[pb.LbBackend(port_id=m.port_id, ip=m.ip, port=m.private_port, weight=m.weight)
                 for m in lb.members if m.ip],
        source_cidrs=list(lb.source_cidrs), network_id=lb.network_id)


def egress_policy(p: me.EgressPolicy, network_cidr: str) -> pb.EgressPolicy:
    return pb.EgressPolicy(network_id=p.network_id, source_cidr=network_cidr,
                           default_deny=p.default_deny)


def add_edge(config: pb.RouterConfig, edge: me.EdgeSnapshot, cidrs: Mapping[str, str]) -> None:
    """Public IPs, static NAT, port forwards, firewall rules, load balancers and
    egress policies, in a stable order (by address, then ID) so that an
    unchanged model gives an identical config. ``cidrs``: network ID -> CIDR of
    the router's networks (egress rules and policies of other networks are
    left out)."""
    config.public_addresses.extend(public_address(ip) for ip in edge.public_ips)
    config.static_nats.extend(
        static_nat_rule(n) for n in sorted(edge.static_nats, key=lambda n: n.id))
    config.port_forwards.extend(
        port_forward_rule(f) for f in sorted(edge.port_forwards, key=lambda f: f.id))
    rules = sorted(edge.firewall_rules, key=lambda r: r.id)
    config.ingress_rules.extend(
        ingress_rule(r) for r in rules if r.direction == "ingress" and r.public_ip_id)
    config.guest_ingress_rules.extend(
        guest_ingress_rule(r) for r in rules
        if r.direction == "ingress" and not r.public_ip_id and r.network_id in cidrs)
    config.egress_rules.extend(
        egress_rule(r, cidrs[r.network_id])
        for r in rules if r.direction == "egress" and r.network_id in cidrs)
    config.load_balancers.extend(
        load_balancer_rule(lb) for lb in sorted(edge.load_balancers, key=lambda lb: lb.id))
    config.egress_policies.extend(
        egress_policy(p, cidrs[p.network_id])
        for p in edge.egress_policies if p.network_id in cidrs)
