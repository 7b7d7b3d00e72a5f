"""``cloudnet router console ID [--follow]``: a router VM's serial console
(netmgr's RouterVmService, tenant-scoped; the VM backend only)."""

from __future__ import annotations

import argparse
import time

from cloudnet.netmgr.v1 import router_vm_pb2 as pb
from cloudnet.netmgr.v1 import router_vm_pb2_grpc as rpc

from netmgr.cli_commands import Context


def cmd_router_console(ctx: Context, args: argparse.Namespace) -> int:
    stub = rpc.RouterVmServiceStub(ctx.client.channel)
    raw = getattr(ctx.out, "buffer", None)  # bytes as they are, when stdout has them
    offset = 0
    while True:
        chunk = stub.GetRouterConsole(pb.GetRouterConsoleRequest(id=args.id, offset=offset))
        if raw is not None:
            raw.write(chunk.data)
            raw.flush()
        else:
            ctx.out.write(chunk.data.decode(errors="replace"))
            ctx.out.flush()
        offset = chunk.next_offset
        if not args.follow:
            return 0
        if not chunk.data:
            time.sleep(0.5)


def add_console(s, leaf) -> None:  # type: ignore[no-untyped-def]
    p = leaf(s, "console", cmd_router_console, "print a router VM's serial console (VM backend)")
    p.add_argument("id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
