"""Audit events: who changed what, with what result; router state changes;
quota refusals. Read by ListEvents and WatchEvents."""

from __future__ import annotations

import dataclasses
import datetime as dt

from common.grpc_errors import InvalidArgument, quote

KIND_API_CALL = "api.call"
KIND_QUOTA_REFUSED = "quota.refused"
KIND_ROUTER_STATE = "router.state"
# A host's liveness and what it meant for its routers (up, down, a router
# moved off it, a router with nowhere to go).
KIND_HOST = "host"
KINDS = (KIND_API_CALL, KIND_QUOTA_REFUSED, KIND_ROUTER_STATE, KIND_HOST)
# The token of the admin's calls, as events name it.
ADMIN_TOKEN_ID = "admin"
MAX_DETAIL = 512


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    seq: int
    at: dt.datetime
    kind: str
    tenant_id: str
    token_id: str
    method: str
    object_id: str
    code: str
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class EventFilter:
    # None: every tenant's (the admin only).
    tenant_id: str | None = None
    object_id: str = ""
    kind: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def check_kind(kind: str, field: str = "filter.kind") -> str:
    if kind and kind not in KINDS:
        raise InvalidArgument.one(field, f"{quote(kind)} is not an event kind; one of "
                                         f"{', '.join(KINDS)}")
    return kind
