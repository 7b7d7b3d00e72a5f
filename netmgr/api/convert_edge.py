"""Edge protobuf messages <-> model objects and validation inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloudnet.netmgr.v1 import edge_pb2 as epb
from google.protobuf.message import Message

from common.grpc_errors import InvalidArgument
from netmgr.api.convert import _present, status_fields
from netmgr.model import edge as me
from netmgr.model.validation import resolve_update_mask
from netmgr.model.validation_edge import (
    EGRESS,
    INGRESS,
    FirewallRuleSpec,
    LbHealthSpec,
    LbMemberSpec,
    LoadBalancerSpec,
    PortForwardSpec,
    StaticNatSpec,
)

DIRECTIONS = {epb.FIREWALL_DIRECTION_INGRESS: INGRESS, epb.FIREWALL_DIRECTION_EGRESS: EGRESS}
DIRECTIONS_PB = {v: k for k, v in DIRECTIONS.items()}


def public_ip_to_pb(ip: me.PublicIp) -> epb.PublicIp:
    return epb.PublicIp(**status_fields(ip.status, epb.PublicIp), ip=ip.ip,
                        network_id=ip.network_id, source_nat=ip.source_nat)


def static_nat_to_pb(n: me.StaticNat) -> epb.StaticNat:
    return epb.StaticNat(**status_fields(n.status, epb.StaticNat), public_ip_id=n.public_ip_id,
                         port_id=n.port_id, public_ip=n.public_ip, private_ip=n.private_ip,
                         network_id=n.network_id)


def port_forward_to_pb(f: me.PortForward) -> epb.PortForward:
    return epb.PortForward(
        **status_fields(f.status, epb.PortForward), public_ip_id=f.public_ip_id,
        protocol=f.protocol, public_port=f.public_port, public_port_end=f.public_port_end,
        port_id=f.port_id, private_port=f.private_port, private_port_end=f.private_port_end,
        source_cidrs=list(f.source_cidrs), public_ip=f.public_ip, private_ip=f.private_ip,
        network_id=f.network_id)


def firewall_rule_to_pb(r: me.FirewallRule) -> epb.FirewallRule:
    return epb.FirewallRule(
        **status_fields(r.status, epb.FirewallRule), direction=DIRECTIONS_PB[r.direction],
        public_ip_id=r.public_ip_id, network_id=r.network_id, protocol=r.protocol,
        port=r.port, port_end=r.port_end, icmp_type=r.icmp_type, icmp_code=r.icmp_code,
        cidrs=list(r.cidrs), public_ip=r.public_ip)


def egress_policy_to_pb(p: me.EgressPolicy) -> epb.EgressPolicy:
    return epb.EgressPolicy(
        network_id=p.network_id,
        default_action=epb.EGRESS_ACTION_DENY if p.default_deny else epb.EGRESS_ACTION_ALLOW)


def port_forward_spec(m: epb.PortForward) -> PortForwardSpec:
    return PortForwardSpec(
        public_ip_id=m.public_ip_id, protocol=m.protocol, public_port=m.public_port,
        public_port_end=m.public_port_end, port_id=m.port_id, private_port=m.private_port,
        private_port_end=m.private_port_end, source_cidrs=tuple(m.source_cidrs))


def static_nat_spec(m: epb.StaticNat) -> StaticNatSpec:
    return StaticNatSpec(public_ip_id=m.public_ip_id, port_id=m.port_id)


def firewall_rule_spec(m: epb.FirewallRule) -> FirewallRuleSpec:
    return FirewallRuleSpec(
        direction=DIRECTIONS.get(m.direction, ""), public_ip_id=m.public_ip_id,
        network_id=m.network_id, protocol=m.protocol, port=m.port, port_end=m.port_end,
        icmp_type=m.icmp_type, icmp_code=m.icmp_code, cidrs=tuple(m.cidrs))


def egress_default_deny(p: epb.EgressPolicy) -> bool:
    if p.default_action == epb.EGRESS_ACTION_DENY:
        return True
    if p.default_action == epb.EGRESS_ACTION_ALLOW:
        return False
    raise InvalidArgument.one("policy.default_action", "must be ALLOW or DENY")


def load_balancer_to_pb(lb: me.LoadBalancer) -> epb.LoadBalancer:
    t, path, expect, interval, rise, fall = lb.health_check
    return epb.LoadBalancer(
        **status_fields(lb.status, epb.LoadBalancer), public_ip_id=lb.public_ip_id,
        public_port=lb.public_port,
        protocol=lb.protocol, algorithm=lb.algorithm, private_port=lb.private_port,
        members=[epb.LoadBalancerMember(port_id=m.port_id, weight=m.weight,
                                        private_port=m.private_port, ip=m.ip, health=m.health,
                                        last_check=m.last_check) for m in lb.members],
        stickiness=lb.stickiness,
        health_check=epb.LoadBalancerHealthCheck(type=t, path=path, expect_status=expect,
                                                 interval_ms=interval, rise=rise, fall=fall),
        source_cidrs=list(lb.source_cidrs), name=lb.name, public_ip=lb.public_ip,
        network_id=lb.network_id)


def load_balancer_spec(m: epb.LoadBalancer) -> LoadBalancerSpec:
    h = m.health_check
    return LoadBalancerSpec(
        public_ip_id=m.public_ip_id, public_port=m.public_port, protocol=m.protocol,
        algorithm=m.algorithm, private_port=m.private_port,
        members=tuple(LbMemberSpec(x.port_id, x.weight, x.private_port) for x in m.members),
        stickiness=m.stickiness,
        health_check=LbHealthSpec(h.type, h.path, h.expect_status, h.interval_ms, h.rise,
                                  h.fall),
        source_cidrs=tuple(m.source_cidrs), name=m.name)


# ----------------------------------------------------------------- updates

PORT_FORWARD_UPDATABLE = frozenset({"protocol", "public_port", "public_port_end", "port_id",
                                    "private_port", "private_port_end", "source_cidrs"})
FIREWALL_UPDATABLE = frozenset({"protocol", "port", "port_end", "icmp_type", "icmp_code",
                                "cidrs"})


def _changes(msg: Message, mask_paths: Sequence[str], updatable: frozenset[str],
             prefix: str) -> dict[str, Any]:
    paths = resolve_update_mask(mask_paths, updatable, _present(msg))
    if not paths:
        raise InvalidArgument.one("update_mask", f"names no updatable field of {prefix} "
                                  f"(updatable: {', '.join(sorted(updatable))})")
    return {p: (tuple(getattr(msg, p)) if p in ("source_cidrs", "cidrs") else getattr(msg, p))
            for p in paths}


def port_forward_changes(m: epb.PortForward, mask_paths: Sequence[str]) -> dict[str, Any]:
    """PortForwardSpec field -> new value (the store fills in the rest)."""
    return _changes(m, mask_paths, PORT_FORWARD_UPDATABLE, "port_forward")


def firewall_rule_changes(m: epb.FirewallRule, mask_paths: Sequence[str]) -> dict[str, Any]:
    return _changes(m, mask_paths, FIREWALL_UPDATABLE, "firewall_rule")


def edge_counter_to_pb(kind: str, oid: str, packets: int, nbytes: int) -> epb.EdgeCounter:
    return epb.EdgeCounter(kind=kind, id=oid, packets=packets, bytes=nbytes)
