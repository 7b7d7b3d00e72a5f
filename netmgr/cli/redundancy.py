"""``cloudnet router failover NETWORK`` and ``cloudnet router redundancy
NETWORK on|off``: a network's (or, with --vpc, a VPC's) redundant router
(netmgr's RouterRedundancyService, tenant-scoped)."""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import redundancy_pb2 as pb

from netmgr.cli.commands import Context, Leaf, Subparsers


def _target(args: argparse.Namespace) -> dict[str, str]:
    return {"vpc_id": args.id} if args.vpc else {"network_id": args.id}


def cmd_router_failover(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.redundancy.Failover(pb.FailoverRequest(**_target(args))))
    return 0


def cmd_router_redundancy(ctx: Context, args: argparse.Namespace) -> int:
    if args.state is None:
        ctx.show(ctx.client.redundancy.GetRedundancy(pb.GetRedundancyRequest(**_target(args))))
        return 0
    ctx.show(ctx.client.redundancy.SetRedundancy(pb.SetRedundancyRequest(
        redundant=args.state == "on", **_target(args))))
    return 0


def add_commands(s: Subparsers, leaf: Leaf) -> None:
    p = leaf(s, "failover", cmd_router_failover,
             "move a redundant router's master to its other instance")
    p.add_argument("id", metavar="NETWORK", help="network ID (a VPC's with --vpc)")
    p.add_argument("--vpc", action="store_true", help="the ID is a VPC's")
    p = leaf(s, "redundancy", cmd_router_redundancy,
             "show a network's router instances, or make it redundant (on) or single (off)")
    p.add_argument("id", metavar="NETWORK", help="network ID (a VPC's with --vpc)")
    p.add_argument("state", nargs="?", choices=("on", "off"))
    p.add_argument("--vpc", action="store_true", help="the ID is a VPC's")
