"""The VPC part of a router's config (pure, like ``netmgr.reconcile.configbuild.router``): the
VPC's ID (the router routes between its tiers), the network ACL lists its
tiers and private gateways use and which list guards which interface, the
private gateways' interfaces and the static routes."""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb

from netmgr.model.core import RouterSnapshot
from netmgr.model.vpc import AclRule


def guest_interface_name(network_id: str) -> str:
    # Same rule as netmgr.reconcile.configbuild.router (which imports this module).
    return "g-" + network_id.replace("-", "")[:8]


def gateway_interface_name(gateway_id: str) -> str:
    """A private gateway's interface in the router (≤ 15 bytes)."""
    return "p-" + gateway_id.replace("-", "")[:8]


def _rule(r: AclRule) -> pb.AclRule:
    return pb.AclRule(id=r.id, number=r.number, action=r.action, direction=r.direction,
                      protocol=r.protocol, port_start=r.port, port_end=r.port_end,
                      icmp_type=r.icmp_type, icmp_code=r.icmp_code, cidrs=list(r.cidrs))


def add_vpc(config: pb.RouterConfig, snapshot: RouterSnapshot) -> None:
    vpc = snapshot.vpc
    assert vpc is not None
    config.vpc_id = vpc.vpc.id
    if vpc.vpc.domain:
        # The router answers the VPC's own names (and its tiers', relative
        # to it: db1.db), never its upstream resolvers.
        config.dns.local_domains.append(vpc.vpc.domain)
    config.network_acls.extend(
        pb.NetworkAcl(id=a.id, name=a.name,
                      rules=[_rule(r) for r in sorted(a.rules, key=lambda r: r.number)])
        for a in sorted(vpc.acls, key=lambda a: a.id))
    ifaces = {n.id: guest_interface_name(n.id) for n in snapshot.networks}
    for g in vpc.gateways:
        ifaces[g.id] = gateway_interface_name(g.id)
        config.interfaces.append(pb.Interface(
            name=ifaces[g.id], role=pb.INTERFACE_ROLE_PRIVATE_GATEWAY, mac=g.router_mac,
            addresses=[g.address], segment_id=g.vlan_id, network_id=g.id))
    config.tier_acls.extend(
        pb.TierAcl(network_id=obj_id, interface=ifaces[obj_id], acl_id=acl_id)
        for obj_id, acl_id in sorted(vpc.tier_acls) if obj_id in ifaces)
    # Static routes through the tier or gateway holding their next hop.
    for r in sorted(vpc.routes, key=lambda r: r.cidr):
        if r.via_id in ifaces:
            (config.ipv6_routes if ":" in r.cidr else config.routes).append(
                pb.Route(destination=r.cidr, gateway=r.next_hop, interface=ifaces[r.via_id]))
