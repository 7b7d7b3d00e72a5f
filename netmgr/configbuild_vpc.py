"""The VPC part of a router's config (pure, like ``netmgr.configbuild``): the
VPC's ID (the router routes between its tiers), the network ACL lists its
tiers use, and which list guards which tier's interface."""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb

from netmgr.model import RouterSnapshot
from netmgr.model_vpc import AclRule


def guest_interface_name(network_id: str) -> str:
    # Same rule as netmgr.configbuild (which imports this module).
    return "g-" + network_id.replace("-", "")[:8]


def _rule(r: AclRule) -> pb.AclRule:
    return pb.AclRule(id=r.id, number=r.number, action=r.action, direction=r.direction,
                      protocol=r.protocol, port_start=r.port, port_end=r.port_end,
                      icmp_type=r.icmp_type, icmp_code=r.icmp_code, cidrs=list(r.cidrs))


def add_vpc(config: pb.RouterConfig, snapshot: RouterSnapshot) -> None:
    vpc = snapshot.vpc
    assert vpc is not None
    config.vpc_id = vpc.vpc.id
    config.network_acls.extend(
        pb.NetworkAcl(id=a.id, name=a.name,
                      rules=[_rule(r) for r in sorted(a.rules, key=lambda r: r.number)])
        for a in sorted(vpc.acls, key=lambda a: a.id))
    served = {n.id for n in snapshot.networks}
    config.tier_acls.extend(
        pb.TierAcl(network_id=net_id, interface=guest_interface_name(net_id), acl_id=acl_id)
        for net_id, acl_id in sorted(vpc.tier_acls) if net_id in served)
