"""Quotas: a tenant's limits and usage; the admin sets defaults and overrides.

    cloudnet quota show                       # a tenant token: its own
    cloudnet --tenant T quota show            # the admin: tenant T's
    cloudnet quota show                       # the admin: the zone-wide defaults
    cloudnet quota set networks 20            # the admin: the zone-wide default
    cloudnet --tenant T quota set ports 500   # the admin: tenant T's override
    cloudnet --tenant T quota set ports --reset
"""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import quota_pb2 as qpb

from netmgr.cli.commands import Context, Group, Leaf
from netmgr.cli.requests import UsageError

UNLIMITED = -1


def _limit(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


def _print(ctx: Context, quotas: qpb.Quotas) -> None:
    if ctx.json:
        ctx.show(quotas)
        return
    whose = "zone-wide defaults" if not quotas.tenant_id else f"tenant {quotas.tenant_id}"
    ctx.print(f"# quotas of {whose} ('*': {'set' if not quotas.tenant_id else 'own override'})")
    ctx.print(f"{'RESOURCE':<20} {'LIMIT':>10} {'USED':>8}")
    for q in quotas.quotas:
        mark = "*" if q.overridden else " "
        ctx.print(f"{q.resource:<20} {_limit(q.limit):>10}{mark}{q.used:>8}")


def cmd_quota_show(ctx: Context, args: argparse.Namespace) -> int:
    _print(ctx, ctx.client.quotas.GetQuotas(
        qpb.GetQuotasRequest(tenant_id=ctx.settings.tenant or "")))
    return 0


def cmd_quota_set(ctx: Context, args: argparse.Namespace) -> int:
    if args.limit is None and not args.reset:
        raise UsageError("quota set: give a LIMIT (-1: unlimited) or --reset")
    _print(ctx, ctx.client.quotas.SetQuota(qpb.SetQuotaRequest(
        tenant_id=ctx.settings.tenant or "", resource=args.resource,
        limit=args.limit if args.limit is not None else 0, reset=args.reset)))
    return 0


def add_commands(group: Group, leaf: Leaf) -> None:
    s = group("quota", "limits on how many objects of each kind a tenant may hold")
    leaf(s, "show", cmd_quota_show,
         "show limits and usage (the admin: --tenant's, else the zone-wide defaults)")
    p = leaf(s, "set", cmd_quota_set,
             "set a limit (admin): --tenant's override, else the zone-wide default")
    p.add_argument("resource", metavar="RESOURCE", help="networks, ports, public_ips, ...")
    p.add_argument("limit", metavar="LIMIT", type=int, nargs="?",
                   help="the most objects (-1: unlimited)")
    p.add_argument("--reset", action="store_true",
                   help="remove the override (the default applies again)")
