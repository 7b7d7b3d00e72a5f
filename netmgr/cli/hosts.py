"""``cloudnet host list``: compute and router hosts, their state, last
heartbeat and the routers placed on them (admin token).

    ROLE     NAME    STATE  LAST_HEARTBEAT        ROUTERS  ADDRESS
    router   rhost1  UP     2026-12-03T09:20:01Z  12       10.0.0.5:7080
"""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import hosts_pb2_grpc

from netmgr.cli.commands import Context, Group, Leaf
from netmgr.cli.output import format_table, to_json


def _state(h: hpb.Host) -> str:
    return str(hpb.HostState.Name(h.state)).removeprefix("HOST_STATE_")


def _heartbeat(h: hpb.Host) -> str:
    if not h.HasField("last_heartbeat"):
        return ""
    return str(h.last_heartbeat.ToJsonString())


def cmd_host_list(ctx: Context, args: argparse.Namespace) -> int:
    stub = hosts_pb2_grpc.HostServiceStub(ctx.client.channel)
    hosts = list(stub.ListHosts(hpb.ListHostsRequest()).hosts)
    if ctx.json:
        ctx.print(to_json(hosts))
        return 0
    ctx.print(format_table(
        ("ROLE", "NAME", "STATE", "LAST_HEARTBEAT", "ROUTERS", "ADDRESS"),
        [(h.role or "compute", h.name, _state(h), _heartbeat(h), len(h.router_ids), h.address)
         for h in hosts]))
    return 0


def add_commands(group: Group, leaf: Leaf) -> None:
    s = group("host", "compute and router hosts (admin)")
    leaf(s, "list", cmd_host_list, "list hosts: state, last heartbeat, routers")
