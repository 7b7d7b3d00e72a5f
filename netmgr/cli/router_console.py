"""``cloudnet router console ID [--follow]``: a router VM's serial console
(netmgr's RouterVmService, tenant-scoped; the VM backend only)."""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import router_vm_pb2 as pb

from netmgr.cli.commands import Context, Leaf, Subparsers
from netmgr.cli.vm import follow_console


def cmd_router_console(ctx: Context, args: argparse.Namespace) -> int:
    stub = ctx.client.router_vms
    return follow_console(ctx, lambda offset: stub.GetRouterConsole(
        pb.GetRouterConsoleRequest(id=args.id, offset=offset)), args.follow)


def add_console(s: Subparsers, leaf: Leaf) -> None:
    p = leaf(s, "console", cmd_router_console, "print a router VM's serial console (VM backend)")
    p.add_argument("id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
