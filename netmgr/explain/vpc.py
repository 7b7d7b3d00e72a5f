"""The VPC part of ``netmgr.explain.flows``: network ACLs, evaluated like the router
does (rules in number order, first match decides, no match denies), and the
router's routing between tiers. Names the deciding rule by ID and number."""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudnet.netmgr.v1 import debug_pb2 as pb

from netmgr.model import core as model
from netmgr.model import vpc as mv

PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
# What explain's "IP/icmp" stands for.
ECHO_REQUEST = (8, 0)


def _matches(rule: mv.AclRule, flow: Any, peer: ipaddress.IPv4Address) -> bool:
    if rule.cidrs and not any(peer in ipaddress.IPv4Network(c) for c in rule.cidrs):
        return False
    if rule.protocol == "all":
        return True
    if rule.protocol.isdigit():
        return int(rule.protocol) == PROTO_NUMBERS.get(flow.proto)
    if rule.protocol != flow.proto:
        return False
    if flow.proto == "icmp":
        return rule.icmp_type in (-1, ECHO_REQUEST[0]) and rule.icmp_code in (-1, ECHO_REQUEST[1])
    return not rule.port or rule.port <= flow.port <= (rule.port_end or rule.port)


def acl_verdict(snap: model.RouterSnapshot, obj_id: str, direction: str, flow: Any,
                res: Any) -> tuple[bool, str, str, str]:
    """(allowed, kind, id, reason) of the list guarding tier/gateway ``obj_id``
    for a new flow in ``direction``; records the step."""
    vpc = snap.vpc
    assert vpc is not None
    acl_id = dict(vpc.tier_acls).get(obj_id, mv.DEFAULT_ALLOW_ID)
    acl = next((a for a in vpc.acls if a.id == acl_id), mv.BUILTIN_ACLS.get(acl_id))
    peer = flow.src if direction == mv.INGRESS else flow.dst
    rules = sorted((r for r in (acl.rules if acl else ()) if r.direction == direction),
                   key=lambda r: r.number)
    name = acl.name if acl else acl_id
    for rule in rules:
        if _matches(rule, flow, peer):
            allowed = rule.action == mv.ALLOW
            out = (allowed, "aclrule", rule.id,
                   f"{direction} rule {rule.number} of list {name!r} "
                   f"{'allows' if allowed else 'denies'} it")
            res.step(*out[1:])
            return out
    out = (False, "acl-default-deny", acl_id,
           f"no {direction} rule of list {name!r} matches: denied")
    res.step(*out[1:])
    return out


def between_tiers(snap: model.RouterSnapshot, src: model.Network, dst: model.Network,
                  flow: Any, res: Any) -> pb.ExplainResponse:
    """A new flow from one tier to another through the VPC router."""
    res.step("vpc", src.vpc_id, f"{dst.name} ({dst.cidr}) is another tier of the VPC: routed")
    for obj, direction in ((src, mv.EGRESS), (dst, mv.INGRESS)):
        allowed, kind, ident, reason = acl_verdict(snap, obj.id, direction, flow, res)
        if not allowed:
            break
    else:
        reason = f"routed to tier {dst.name}; {reason}"
    answer: pb.ExplainResponse = res.done(allowed, kind, ident, reason)
    return answer
