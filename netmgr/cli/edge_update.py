"""``cloudnet portforward|firewall update`` and ``... counters``: rules changed
in place (one element swap in the router) and their packet/byte counters.

    cloudnet portforward update PF_ID --private-port 9090 [--source CIDR] [--wait]
    cloudnet firewall update RULE_ID --ports 443 --cidr 198.51.100.0/24
    cloudnet portforward counters NETWORK_ID [RULE_ID ...]
"""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import edge_pb2 as epb

from netmgr.cli.commands import Context, Leaf, Subparsers, wait_settled
from netmgr.cli.output import COLUMNS, column
from netmgr.cli.requests import UsageError, field_mask, parse_port_range

COLUMNS.setdefault("EdgeCounter", [("KIND", column("kind")), ("ID", column("id")),
                                   ("PACKETS", column("packets")), ("BYTES", column("bytes"))])


def pf_update_request(args: argparse.Namespace) -> epb.UpdatePortForwardRequest:
    f = epb.PortForward(id=args.id)
    paths = []
    if args.protocol is not None:
        f.protocol = args.protocol
        paths.append("protocol")
    if args.public_port is not None:
        f.public_port, f.public_port_end = parse_port_range(args.public_port, "--public-port")
        paths += ["public_port", "public_port_end"] if f.public_port_end else ["public_port"]
    if args.port is not None:
        f.port_id = args.port
        paths.append("port_id")
    if args.private_port is not None:
        f.private_port, f.private_port_end = parse_port_range(args.private_port, "--private-port")
        paths += ["private_port", "private_port_end"] if f.private_port_end else ["private_port"]
    if args.source is not None or args.any_source:
        f.source_cidrs.extend(args.source or [])
        paths.append("source_cidrs")
    if not paths:
        raise UsageError("nothing to update: give at least one option")
    return epb.UpdatePortForwardRequest(port_forward=f, update_mask=field_mask(paths))


def fw_update_request(args: argparse.Namespace) -> epb.UpdateFirewallRuleRequest:
    r = epb.FirewallRule(id=args.id)
    paths = []
    if args.protocol is not None:
        r.protocol = args.protocol
        paths.append("protocol")
    if args.ports is not None:
        r.port, r.port_end = parse_port_range(args.ports, "--ports")
        paths += ["port", "port_end"] if r.port_end else ["port"]
    for name in ("icmp_type", "icmp_code"):
        if getattr(args, name) is not None:
            setattr(r, name, getattr(args, name))
            paths.append(name)
    if args.cidr is not None or args.any_cidr:
        r.cidrs.extend(args.cidr or [])
        paths.append("cidrs")
    if not paths:
        raise UsageError("nothing to update: give at least one option")
    return epb.UpdateFirewallRuleRequest(firewall_rule=r, update_mask=field_mask(paths))


def cmd_pf_update(ctx: Context, args: argparse.Namespace) -> int:
    pfs = ctx.client.port_forwards
    f = pfs.UpdatePortForward(pf_update_request(args))
    ctx.show(wait_settled(ctx, pfs.GetPortForward, epb.GetPortForwardRequest(id=f.id), f,
                          args.wait))
    return 0


def cmd_fw_update(ctx: Context, args: argparse.Namespace) -> int:
    fw = ctx.client.firewall
    r = fw.UpdateFirewallRule(fw_update_request(args))
    ctx.show(wait_settled(ctx, fw.GetFirewallRule, epb.GetFirewallRuleRequest(id=r.id), r,
                          args.wait))
    return 0


def cmd_counters(ctx: Context, args: argparse.Namespace) -> int:
    reply = ctx.client.edge_counters.GetEdgeCounters(
        epb.GetEdgeCountersRequest(network_id=args.network, ids=args.ids))
    kinds = getattr(args, "kinds", ())
    ctx.show_list("EdgeCounter", [c for c in reply.counters if args.ids or c.kind in kinds])
    return 0


def add_update(s: Subparsers, leaf: Leaf, kind: str) -> None:
    """`update` and `counters` under the group `s` ("portforward" or "firewall")."""
    if kind == "portforward":
        p = leaf(s, "update", cmd_pf_update, "change a port forward in place")
        p.add_argument("id", metavar="ID")
        p.add_argument("--protocol", help="tcp or udp")
        p.add_argument("--public-port", metavar="PORT[-END]")
        p.add_argument("--port", metavar="PORT_ID", help="the guest port forwarded to")
        p.add_argument("--private-port", metavar="PORT[-END]")
        p.add_argument("--source", action="append", metavar="CIDR",
                       help="allowed sources, replacing the old ones (repeat)")
        p.add_argument("--any-source", action="store_true", help="allow every source")
    else:
        p = leaf(s, "update", cmd_fw_update, "change a firewall rule in place")
        p.add_argument("id", metavar="ID")
        p.add_argument("--protocol", help="tcp, udp, icmp or all")
        p.add_argument("--ports", metavar="PORT[-END]")
        p.add_argument("--icmp-type", type=int)
        p.add_argument("--icmp-code", type=int)
        p.add_argument("--cidr", action="append", metavar="CIDR",
                       help="replacing the old ones (repeat)")
        p.add_argument("--any-cidr", action="store_true", help="match every address")
    p.add_argument("--wait", action="store_true", help="until ACTIVE or ERROR")
    add_counters(s, leaf, (kind,))


def add_counters(s: Subparsers, leaf: Leaf, kinds: tuple[str, ...]) -> None:
    p = leaf(s, "counters", cmd_counters, "packets and bytes per rule, read from the router")
    p.add_argument("network", metavar="NETWORK_ID")
    p.add_argument("ids", nargs="*", metavar="ID", help="only these rules (default: all of "
                   "this kind on the network)")
    p.set_defaults(kinds=kinds)
