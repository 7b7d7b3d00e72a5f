"""EventService: the audit log, listed and watched. A tenant sees only its
own events; the admin every tenant's (or one's, by filter or
x-cloudnet-tenant)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from cloudnet.netmgr.v1 import events_pb2 as pb
from cloudnet.netmgr.v1 import events_pb2_grpc as rpc
from google.protobuf.timestamp_pb2 import Timestamp

from common.grpc_errors import DomainError, InvalidArgument, PermissionDenied, abort
from netmgr.api.auth import (
    Caller,
    TokenLookup,
    access_for,
    authenticate,
    authorize,
    current_caller,
)
from netmgr.model import events as me
from netmgr.store.events import EventStore

SERVICES = ("cloudnet.netmgr.v1.EventService",)
_PREFIX = "/cloudnet.netmgr.v1.EventService/"
# How often a watcher looks for events another replica recorded.
WATCH_POLL_SECONDS = 0.5


def event_to_pb(e: me.Event) -> pb.Event:
    at = Timestamp()
    at.FromDatetime(e.at)
    return pb.Event(seq=e.seq, time=at, kind=e.kind, tenant_id=e.tenant_id,
                    token_id=e.token_id, method=e.method, object_id=e.object_id,
                    code=e.code, detail=e.detail)


def event_filter(caller: Caller, f: pb.EventFilter) -> me.EventFilter:
    if caller.admin:
        tenant: str | None = f.tenant_id or caller.tenant_id or None
    else:
        if f.tenant_id and f.tenant_id != caller.tenant_id:
            raise PermissionDenied("a tenant token sees only its own tenant's events")
        tenant = caller.tenant_id
    return me.EventFilter(tenant_id=tenant, object_id=f.object_id,
                          kind=me.check_kind(f.kind))


class EventServicer(rpc.EventServiceServicer):
    def __init__(self, events: EventStore, admin_token: str, tokens: TokenLookup) -> None:
        self._events = events
        self._admin_token = admin_token
        self._tokens = tokens

    def _stream_caller(self, context: grpc.ServicerContext, method: str) -> Caller:
        # The auth interceptor wraps unary calls only: a stream authenticates
        # here (with the same functions).
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        caller = authenticate(metadata, self._admin_token, self._tokens)
        authorize(caller, access_for(_PREFIX + method), _PREFIX + method)
        return caller

    def ListEvents(self, request: pb.ListEventsRequest,
                   context: grpc.ServicerContext) -> pb.ListEventsResponse:
        f = event_filter(current_caller(), request.filter)
        if request.HasField("start_time"):
            f = me.EventFilter(f.tenant_id, f.object_id, f.kind,
                               start=request.start_time.ToDatetime(), end=f.end)
        if request.HasField("end_time"):
            f = me.EventFilter(f.tenant_id, f.object_id, f.kind, start=f.start,
                               end=request.end_time.ToDatetime())
        # Taken before the page is read: every transaction older than it has
        # ended, so the page shows what they wrote; a follower watches from it.
        follow_from = self._events.horizon()
        page = self._events.list_events(f, request.page_size, request.page_token)
        return pb.ListEventsResponse(events=[event_to_pb(e) for e in page.items],
                                     next_page_token=page.next_page_token,
                                     follow_from=follow_from)

    def WatchEvents(self, request: pb.WatchEventsRequest,
                    context: grpc.ServicerContext) -> Iterator[pb.Event]:
        try:
            f = event_filter(self._stream_caller(context, "WatchEvents"), request.filter)
            if request.after_seq < 0:
                raise InvalidArgument.one("after_seq", "must not be negative")
            if request.from_xid < 0:
                raise InvalidArgument.one("from_xid", "must not be negative")
            seq = request.after_seq or (0 if request.from_xid else self._events.last_seq())
        except DomainError as e:
            abort(context, e)
            return
        for event in self._events.watch(f, seq, context.is_active, poll=WATCH_POLL_SECONDS,
                                        from_xid=request.from_xid):
            yield event_to_pb(event)


def add_to_server(events: EventStore, admin_token: str, tokens: TokenLookup,
                  server: grpc.Server) -> tuple[str, ...]:
    rpc.add_EventServiceServicer_to_server(EventServicer(events, admin_token, tokens), server)
    return SERVICES
