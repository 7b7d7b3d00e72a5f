"""The audit log: ``cloudnet event list``.

    cloudnet event list                          # this tenant's (the admin: all)
    cloudnet event list --kind quota.refused --since 2026-12-01T00:00:00Z
    cloudnet event list --object ROUTER_ID --follow   # then each new one, until ^C
"""

from __future__ import annotations

import argparse
import datetime as dt

import grpc
from cloudnet.netmgr.v1 import events_pb2 as evpb
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.cli.commands import Context, Group, Leaf
from netmgr.cli.output import to_json
from netmgr.cli.requests import UsageError

API_PREFIX = "/cloudnet.netmgr.v1."


def _time(text: str, flag: str) -> Timestamp:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag}: not an ISO time ({text[:40]!r})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def _line(e: evpb.Event) -> str:
    at = e.time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
    what = e.method.removeprefix(API_PREFIX) or "-"
    who = e.token_id or "-"
    detail = f"  {e.detail}" if e.detail else ""
    return (f"{e.seq:>8} {at} {e.kind:<14} {e.tenant_id or '-':<36} {who:<36} "
            f"{what} {e.object_id or '-'} {e.code}{detail}")


def _show(ctx: Context, e: evpb.Event) -> None:
    ctx.print(to_json(e) if ctx.json else _line(e))


def cmd_event_list(ctx: Context, args: argparse.Namespace) -> int:
    f = evpb.EventFilter(tenant_id=args.event_tenant or "", object_id=args.object or "",
                         kind=args.kind or "")
    req = evpb.ListEventsRequest(filter=f)
    if args.since:
        req.start_time.CopyFrom(_time(args.since, "--since"))
    if args.until:
        req.end_time.CopyFrom(_time(args.until, "--until"))
    if not ctx.json:
        ctx.print(f"{'SEQ':>8} {'TIME':<20} {'KIND':<14} {'TENANT':<36} {'TOKEN':<36} "
                  "METHOD OBJECT CODE")
    last = 0
    shown = 0
    follow_from = 0
    seen: set[int] = set()
    while True:
        page = ctx.client.events.ListEvents(req)
        follow_from = follow_from or page.follow_from
        for e in page.events:
            if args.limit and shown >= args.limit:
                break
            _show(ctx, e)
            shown += 1
            last = e.seq
            seen.add(e.seq)
        if not page.next_page_token or (args.limit and shown >= args.limit):
            break
        req.page_token = page.next_page_token
    if not args.follow:
        return 0
    ctx.out.flush()
    # The client's interceptor adds metadata to unary calls only; no deadline:
    # the stream runs until interrupted.
    # PostgreSQL: from the list's horizon, so an event that committed after
    # the list read a later one is not skipped (the ones shown come again).
    watch = (evpb.WatchEventsRequest(filter=f, from_xid=follow_from) if follow_from
             else evpb.WatchEventsRequest(filter=f, after_seq=last))
    stream = ctx.client.events.WatchEvents(watch, metadata=ctx.client.metadata())
    try:
        for e in stream:
            if e.seq in seen:
                continue
            _show(ctx, e)
            ctx.out.flush()
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            raise
    finally:
        stream.cancel()
    return 0


def add_commands(group: Group, leaf: Leaf) -> None:
    s = group("event", "the audit log: API changes, router state changes, quota refusals")
    p = leaf(s, "list", cmd_event_list, "list events, oldest first")
    p.add_argument("--kind", choices=("api.call", "quota.refused", "router.state", "host"))
    p.add_argument("--object", metavar="ID", help="only events about this object")
    p.add_argument("--of-tenant", dest="event_tenant", metavar="TENANT_ID",
                   help="the admin: only this tenant's events")
    p.add_argument("--since", metavar="TIME", help="ISO time, e.g. 2026-12-01T00:00:00Z")
    p.add_argument("--until", metavar="TIME", help="ISO time (exclusive)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N (before --follow)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="then print each new event as it happens, until interrupted")
