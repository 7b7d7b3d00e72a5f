"""A mutating API call's audit event, written in the call's own transaction.

The audit interceptor (``netmgr.api.audit``) opens a ``PendingEvent`` around
the servicer; the first ``Database.write`` of the call that knows the
object it acted on adds the event row before it commits. So a change and its
event commit together (one transaction and one commit per call instead of
two, and no change without its event if the replica dies in between). A
call that wrote nothing, or failed (its transaction rolled back), has its
event written by the interceptor afterwards in a transaction of its own, as
every event was before.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator

from sqlalchemy import insert
from sqlalchemy.orm import Session

from netmgr.model import events as me
from netmgr.store.tables.audit import EventRow
from netmgr.store.tables.base import utcnow


@dataclasses.dataclass
class PendingEvent:
    method: str
    # The request's own object (an update or delete); "" for a create,
    # whose object is the write's result.
    request_object_id: str
    # (tenant ID, token ID) of the caller, once authenticated; None before.
    who: Callable[[], tuple[str, str] | None]
    # Set in the transaction that wrote the row; true once it committed.
    written: bool = False
    committed: bool = False


_current: contextvars.ContextVar[PendingEvent | None] = contextvars.ContextVar(
    "cloudnet_pending_event", default=None)


@contextlib.contextmanager
def pending_event(event: PendingEvent) -> Iterator[PendingEvent]:
    token = _current.set(event)
    try:
        yield event
    finally:
        _current.reset(token)


def _object_id(event: PendingEvent, result: object) -> str:
    if event.request_object_id:
        return event.request_object_id
    made = result[0] if isinstance(result, tuple) and result else result
    found = getattr(made, "id", None)
    return found if isinstance(found, str) else ""


# Built once (its cache key computed once): every audited call runs it.
_INSERT_EVENT = insert(EventRow)


def after_write(s: Session, result: object) -> PendingEvent | None:
    """In a write transaction of an audited call, before it commits: the
    call's success event, once per call. Returns the event to mark committed
    when the transaction commits."""
    event = _current.get()
    if event is None or event.committed:
        return None
    who = event.who()
    object_id = _object_id(event, result)
    if who is None or not object_id:
        return None  # not yet known: a later write of the call, or the interceptor
    tenant_id, token_id = who
    # A Core insert (no unit of work, no RETURNING of the sequence number):
    # every audited call writes one.
    s.connection().execute(_INSERT_EVENT, {
        "at": utcnow(), "kind": me.KIND_API_CALL, "tenant_id": tenant_id, "token_id": token_id,
        "method": event.method[:128], "object_id": object_id[:64], "code": "OK", "detail": ""})
    return event
