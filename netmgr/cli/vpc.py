"""``cloudnet vpc|tier|acl|route|private-gateway ...``: VPCs and what they hold.

    cloudnet vpc create shop --cidr 10.20.0.0/16 --wait
    cloudnet tier create VPC_ID web --cidr 10.20.1.0/24 [--acl ACL_ID] --wait
    cloudnet acl create VPC_ID db-rules
    cloudnet acl rule-create ACL_ID --number 100 --action deny --direction ingress \\
        --protocol tcp --ports 80 [--cidr 10.20.1.0/24] --wait
    cloudnet acl replace TIER_OR_GATEWAY_ID ACL_ID --wait
    cloudnet route create VPC_ID --cidr 172.16.0.0/12 --next-hop 10.20.2.10
    cloudnet private-gateway create VPC_ID --address 192.168.50.2/24 \\
        --gateway 192.168.50.1 [--vlan 2000 (admin only)]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.cli.commands import (
    Command,
    Context,
    Group,
    Leaf,
    Subparsers,
    router_progress,
    wait_settled,
    wait_with_progress,
)
from netmgr.cli.output import COLUMNS, column, format_port_range
from netmgr.cli.requests import IPV6_MODES, UsageError, field_mask, parse_port_range

ACTIONS = {"allow": vpb.ACL_ACTION_ALLOW, "deny": vpb.ACL_ACTION_DENY}
DIRECTIONS = {"ingress": vpb.ACL_DIRECTION_INGRESS, "egress": vpb.ACL_DIRECTION_EGRESS}


COLUMNS.update({
    "Vpc": [("ID", column("id")), ("NAME", column("name")), ("CIDR", column("cidr")),
            ("DOMAIN", column("domain")), ("SNAT IP", column("source_nat_ip")),
            ("TIERS", lambda m: str(len(m.tier_ids))), ("ROUTER", column("router_id"))],
    "NetworkAcl": [("ID", column("id")), ("NAME", column("name")), ("BUILTIN", column("builtin")),
                   ("TIERS", column("network_ids")), ("DESCRIPTION", column("description"))],
    "AclRule": [("NUMBER", column("number")), ("ID", column("id")), ("ACTION", column("action")),
                ("DIRECTION", column("direction")), ("PROTO", column("protocol")),
                ("PORTS", lambda m: format_port_range(m, "port", "port_end") if m.port else ""),
                ("ICMP", lambda m: f"{m.icmp_type}/{m.icmp_code}" if m.protocol == "icmp"
                 else ""),
                ("CIDRS", column("cidrs")), ("STATE", column("state"))],
    "AclRuleCounter": [("NUMBER", column("number")), ("RULE", column("rule_id")),
                       ("PACKETS", column("packets")), ("BYTES", column("bytes"))],
    "StaticRoute": [("ID", column("id")), ("CIDR", column("cidr")),
                    ("NEXT HOP", column("next_hop")), ("VIA", column("via_id")),
                    ("STATE", column("state"))],
    "PrivateGateway": [("ID", column("id")), ("VLAN", column("vlan_id")),
                       ("ADDRESS", column("address")),
                       ("GATEWAY", column("gateway")), ("ACL", column("acl_id")),
                       ("STATE", column("state"))],
})


def _wait_router(ctx: Context, args: argparse.Namespace, router_id: str) -> None:
    if args.wait:
        wait_with_progress(ctx, lambda p: ctx.client.wait_router(
            router_id, on_poll=router_progress(p, f"router {router_id}")))


# -------------------------------------------------------------------- VPCs


def cmd_vpc_create(ctx: Context, args: argparse.Namespace) -> int:
    vpc = ctx.client.vpcs.CreateVpc(vpb.CreateVpcRequest(vpc=vpb.Vpc(
        name=args.name, cidr=args.cidr, domain=args.domain or "",
        redundant=args.redundant)))
    _wait_router(ctx, args, vpc.router_id)
    ctx.show(vpc)
    return 0


def cmd_vpc_update(ctx: Context, args: argparse.Namespace) -> int:
    """Only the options given change (the mask names exactly them)."""
    vpc, paths = vpb.Vpc(id=args.id), list[str]()
    if args.name is not None:
        vpc.name, paths = args.name, [*paths, "name"]
    if args.redundant is not None:
        vpc.redundant, paths = args.redundant == "on", [*paths, "redundant"]
    if not paths:
        raise UsageError("vpc update: give --name or --redundant on|off")
    ctx.show(ctx.client.vpcs.UpdateVpc(vpb.UpdateVpcRequest(vpc=vpc,
                                                            update_mask=field_mask(paths))))
    return 0


def cmd_vpc_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("Vpc", ctx.client.list_all(ctx.client.vpcs.ListVpcs, vpb.ListVpcsRequest(),
                                             "vpcs", args.limit))
    return 0


def cmd_vpc_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.vpcs.GetVpc(vpb.GetVpcRequest(id=args.id)))
    return 0


def cmd_vpc_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.vpcs.DeleteVpc(vpb.DeleteVpcRequest(id=args.id))
    ctx.deleted("VPC", args.id)
    return 0


def cmd_tier_create(ctx: Context, args: argparse.Namespace) -> int:
    net = pb.Network(name=args.name, cidr=args.cidr, vpc_id=args.vpc_id,
                     gateway=args.gateway or "", domain=args.domain or "", acl_id=args.acl or "",
                     ipv6_cidr=args.ipv6_cidr or "")
    if args.ipv6_mode:
        net.ipv6_mode = IPV6_MODES[args.ipv6_mode]
    tier = ctx.client.networks.CreateNetwork(pb.CreateNetworkRequest(network=net))
    _wait_router(ctx, args, tier.router_id)
    ctx.show(tier)
    return 0


# -------------------------------------------------------------------- ACLs


def cmd_acl_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.network_acls.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=args.vpc_id, name=args.name,
                                   description=args.description or ""))))
    return 0


def cmd_acl_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("NetworkAcl", list(ctx.client.network_acls.ListNetworkAcls(
        vpb.ListNetworkAclsRequest(vpc_id=args.vpc_id)).network_acls))
    return 0


def cmd_acl_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.network_acls.DeleteNetworkAcl(vpb.DeleteNetworkAclRequest(id=args.id))
    ctx.deleted("network ACL", args.id)
    return 0


def cmd_acl_rules(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("AclRule", list(ctx.client.network_acls.ListAclRules(
        vpb.ListAclRulesRequest(acl_id=args.acl_id)).rules))
    return 0


def build_rule(args: argparse.Namespace) -> vpb.AclRule:
    port, port_end = parse_port_range(args.ports, "--ports") if args.ports else (0, 0)
    return vpb.AclRule(number=args.number, action=ACTIONS[args.action],
                       direction=DIRECTIONS[args.direction], protocol=args.protocol,
                       port=port, port_end=port_end, icmp_type=args.icmp_type,
                       icmp_code=args.icmp_code, cidrs=args.cidr or [])


def cmd_rule_create(ctx: Context, args: argparse.Namespace) -> int:
    acls = ctx.client.network_acls
    rule = build_rule(args)
    rule.acl_id = args.acl_id
    r = acls.CreateAclRule(vpb.CreateAclRuleRequest(rule=rule))
    ctx.show(wait_settled(ctx, acls.GetAclRule, vpb.GetAclRuleRequest(id=r.id), r, args.wait))
    return 0


def cmd_rule_update(ctx: Context, args: argparse.Namespace) -> int:
    acls = ctx.client.network_acls
    rule = build_rule(args)
    rule.id = args.id
    r = acls.UpdateAclRule(vpb.UpdateAclRuleRequest(rule=rule))
    ctx.show(wait_settled(ctx, acls.GetAclRule, vpb.GetAclRuleRequest(id=r.id), r, args.wait))
    return 0


def cmd_rule_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.network_acls.DeleteAclRule(vpb.DeleteAclRuleRequest(id=args.id))
    ctx.deleted("ACL rule", args.id)
    return 0


def _acl_holder(ctx: Context, holder_id: str) -> tuple[Callable[[], Any], str]:
    """What a list guards, by its ID: a tier or a private gateway (the API
    takes either). Returns how to read it again and its VPC router."""
    try:
        net = ctx.client.networks.GetNetwork(pb.GetNetworkRequest(id=holder_id))
        return (lambda: ctx.client.networks.GetNetwork(pb.GetNetworkRequest(id=holder_id)),
                net.router_id)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
    gws = ctx.client.private_gateways
    gw = gws.GetPrivateGateway(vpb.GetPrivateGatewayRequest(id=holder_id))
    vpc = ctx.client.vpcs.GetVpc(vpb.GetVpcRequest(id=gw.vpc_id))
    return (lambda: gws.GetPrivateGateway(vpb.GetPrivateGatewayRequest(id=holder_id)),
            vpc.router_id)


def cmd_acl_replace(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.network_acls.ReplaceNetworkAcl(vpb.ReplaceNetworkAclRequest(
        network_id=args.network_id, acl_id=args.acl_id))
    read, router_id = _acl_holder(ctx, args.network_id)
    _wait_router(ctx, args, router_id)
    ctx.show(read())
    return 0


def cmd_acl_counters(ctx: Context, args: argparse.Namespace) -> int:
    reply = ctx.client.network_acls.GetAclCounters(vpb.GetAclCountersRequest(acl_id=args.acl_id))
    ctx.show_list("AclRuleCounter", list(reply.counters))
    return 0


# ------------------------------------------------- routes, private gateways


def cmd_route_create(ctx: Context, args: argparse.Namespace) -> int:
    routes = ctx.client.static_routes
    r = routes.CreateStaticRoute(vpb.CreateStaticRouteRequest(static_route=vpb.StaticRoute(
        vpc_id=args.vpc_id, cidr=args.cidr, next_hop=args.next_hop)))
    ctx.show(wait_settled(ctx, routes.GetStaticRoute, vpb.GetStaticRouteRequest(id=r.id), r,
                          args.wait))
    return 0


def cmd_route_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("StaticRoute", list(ctx.client.static_routes.ListStaticRoutes(
        vpb.ListStaticRoutesRequest(vpc_id=args.vpc_id)).static_routes))
    return 0


def cmd_route_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.static_routes.DeleteStaticRoute(vpb.DeleteStaticRouteRequest(id=args.id))
    ctx.deleted("static route", args.id)
    return 0


def cmd_pg_create(ctx: Context, args: argparse.Namespace) -> int:
    gws = ctx.client.private_gateways
    g = gws.CreatePrivateGateway(vpb.CreatePrivateGatewayRequest(
        private_gateway=vpb.PrivateGateway(vpc_id=args.vpc_id, vlan_id=args.vlan or 0,
                                           address=args.address, gateway=args.gateway,
                                           acl_id=args.acl or "")))
    ctx.show(wait_settled(ctx, gws.GetPrivateGateway, vpb.GetPrivateGatewayRequest(id=g.id), g,
                          args.wait))
    return 0


def cmd_pg_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("PrivateGateway", list(ctx.client.private_gateways.ListPrivateGateways(
        vpb.ListPrivateGatewaysRequest(vpc_id=args.vpc_id)).private_gateways))
    return 0


def cmd_pg_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.private_gateways.DeletePrivateGateway(vpb.DeletePrivateGatewayRequest(id=args.id))
    ctx.deleted("private gateway", args.id)
    return 0


# ----------------------------------------------------------------- parser


def add_commands(group: Group, leaf: Leaf) -> None:
    def wait(p: argparse.ArgumentParser, what: str = "ACTIVE or ERROR") -> None:
        p.add_argument("--wait", action="store_true", help=f"until {what}")

    def by_id(s: Subparsers, name: str, func: Command, help: str,
              metavar: str = "ID") -> argparse.ArgumentParser:
        p = leaf(s, name, func, help)
        p.add_argument(metavar.lower(), metavar=metavar)
        return p

    s = group("vpc", "VPCs: a super CIDR, a domain, one router, tiers")
    p = leaf(s, "create", cmd_vpc_create, "create a VPC with its router and source-NAT IP")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cidr", required=True, help="the super CIDR (/8 to /28)")
    p.add_argument("--domain", help="DNS domain (default <name>.<tenant>.<zone suffix>)")
    p.add_argument("--redundant", action="store_true",
                   help="the VPC's router as two instances on two hosts, every tier's gateway "
                   "moving together (docs/redundant-routers.md)")
    wait(p, "the router is ACTIVE")
    p = by_id(s, "update", cmd_vpc_update, "change a VPC; only given options change")
    p.add_argument("--name")
    p.add_argument("--redundant", choices=("on", "off"),
                   help="switch the VPC's router redundant or single (leases and connections "
                   "kept)")
    p = leaf(s, "list", cmd_vpc_list, "list VPCs")
    p.add_argument("--limit", type=int, metavar="N", help="at most N")
    by_id(s, "show", cmd_vpc_show, "show a VPC")
    by_id(s, "delete", cmd_vpc_delete, "delete a VPC (it must have no tiers)")

    s = group("tier", "tiers: networks inside a VPC")
    p = leaf(s, "create", cmd_tier_create, "create a tier (a network with its own VLAN)")
    p.add_argument("vpc_id", metavar="VPC_ID")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cidr", required=True, help="inside the VPC's CIDR, overlapping no tier")
    p.add_argument("--gateway", help="the router's address (default: first host)")
    p.add_argument("--domain", help="DNS domain (default <tier>.<vpc domain>)")
    p.add_argument("--acl", metavar="ACL_ID", help="network ACL list (default: default_allow)")
    p.add_argument("--ipv6-mode", choices=tuple(IPV6_MODES),
                   help="dual stack: a /64 from the zone's IPv6 pool (or --ipv6-cidr)")
    p.add_argument("--ipv6-cidr", metavar="PREFIX/64", help="the tier's own /64")
    wait(p, "the VPC router is ACTIVE")

    s = group("acl", "network ACL lists of a VPC and their numbered rules")
    p = leaf(s, "create", cmd_acl_create, "create a list")
    p.add_argument("vpc_id", metavar="VPC_ID")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description")
    by_id(s, "list", cmd_acl_list, "list a VPC's lists (built-in ones first)", "VPC_ID")
    by_id(s, "delete", cmd_acl_delete, "delete a list no tier uses")
    by_id(s, "rules", cmd_acl_rules, "list a list's rules in number order", "ACL_ID")
    by_id(s, "counters", cmd_acl_counters, "packets and bytes per rule, from the router",
          "ACL_ID")

    def rule_fields(p: argparse.ArgumentParser) -> None:
        p.add_argument("--number", required=True, type=int, help="evaluation order, 1-65535")
        p.add_argument("--action", required=True, choices=sorted(ACTIONS))
        p.add_argument("--direction", required=True, choices=sorted(DIRECTIONS))
        p.add_argument("--protocol", required=True, help="tcp, udp, icmp, all or 0-255")
        p.add_argument("--ports", metavar="PORT[-END]", help="tcp/udp (default: all)")
        p.add_argument("--icmp-type", type=int, default=-1, help="icmp (-1: any)")
        p.add_argument("--icmp-code", type=int, default=-1, help="icmp (-1: any)")
        p.add_argument("--cidr", action="append", metavar="CIDR",
                       help="ingress: sources; egress: destinations (repeat; default any)")
        wait(p)

    p = by_id(s, "rule-create", cmd_rule_create, "add a numbered rule to a list", "ACL_ID")
    rule_fields(p)
    p = by_id(s, "rule-update", cmd_rule_update, "replace one rule's fields")
    rule_fields(p)
    by_id(s, "rule-delete", cmd_rule_delete, "delete a rule")
    p = leaf(s, "replace", cmd_acl_replace,
             "put a tier or a private gateway under another list")
    p.add_argument("network_id", metavar="TIER_OR_GATEWAY_ID")
    p.add_argument("acl_id", metavar="ACL_ID")
    wait(p, "the VPC router applied it")

    s = group("route", "static routes of a VPC")
    p = leaf(s, "create", cmd_route_create, "route a CIDR to a next hop on a tier or gateway")
    p.add_argument("vpc_id", metavar="VPC_ID")
    p.add_argument("--cidr", required=True)
    p.add_argument("--next-hop", required=True)
    wait(p)
    by_id(s, "list", cmd_route_list, "list a VPC's static routes", "VPC_ID")
    by_id(s, "delete", cmd_route_delete, "delete a static route")

    s = group("private-gateway", "VPC router interfaces on provider VLANs")
    p = leaf(s, "create", cmd_pg_create, "create a private gateway")
    p.add_argument("vpc_id", metavar="VPC_ID")
    p.add_argument("--vlan", type=int,
                   help="provider VLAN (admin only; default: allocated from the zone's "
                        "private gateway range)")
    p.add_argument("--address", required=True, help="the router's address, a.b.c.d/n")
    p.add_argument("--gateway", required=True, help="the far side's router")
    p.add_argument("--acl", metavar="ACL_ID", help="network ACL list (default: default_allow)")
    wait(p)
    by_id(s, "list", cmd_pg_list, "list a VPC's private gateways", "VPC_ID")
    by_id(s, "delete", cmd_pg_delete, "delete a private gateway (no route may use it)")
