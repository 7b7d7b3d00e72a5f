"""Create calls made idempotent by a client-supplied request ID.

A client that sends a create and gets no answer (the replica died, the
network dropped the reply) cannot tell whether it happened. It sends the
call again with the same request ID (gRPC metadata ``x-request-id``), to
any replica: if the first one committed, the retry returns that object, and
never makes a second one.

The ID is recorded in the same transaction as the object it created: the
first ``Database.write`` of the call whose result has an ``id`` also writes
the ``create_requests`` row (tenant, request ID) -> object ID. A write that
finds the row already there raises ``Replayed`` before doing anything; two
retries racing each other collide on the row's primary key, and the loser's
write, retried whole, finds the winner's row; a loser whose own checks
refused the call first (PostgreSQL: it saw the winner's object, "overlaps
network ...") looks the row up once more before answering. Rows live ``TTL`` (a retry
after that creates anew).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import random
from collections.abc import Iterator

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from common.grpc_errors import InvalidArgument
from netmgr.store.tables.replicas import CreateRequestRow

TTL = dt.timedelta(hours=24)
# One insert in this many also drops the expired rows.
PURGE_EVERY = 200


# Built once (its cache key computed once): every create runs it.
_RECORDED = select(CreateRequestRow.method, CreateRequestRow.object_id).where(
    CreateRequestRow.tenant_id == bindparam("tenant_id"),
    CreateRequestRow.request_id == bindparam("request_id"))
_INSERT_REQUEST = insert(CreateRequestRow)


class Replayed(Exception):
    """The create already happened: its object's ID."""

    def __init__(self, object_id: str) -> None:
        super().__init__(object_id)
        self.object_id = object_id


@dataclasses.dataclass
class CreateRequest:
    tenant_id: str
    request_id: str
    method: str
    recorded: bool = False


_current: contextvars.ContextVar[CreateRequest | None] = contextvars.ContextVar(
    "cloudnet_create_request", default=None)


@contextlib.contextmanager
def create_request(tenant_id: str, request_id: str, method: str) -> Iterator[None]:
    """The writes inside are one create call with this request ID."""
    token = _current.set(CreateRequest(tenant_id, request_id, method))
    try:
        yield
    finally:
        _current.reset(token)


def before_write(s: Session) -> None:
    """At the start of each write transaction: Replayed if the call's request ID is known."""
    req = _current.get()
    if req is None or req.recorded:
        return
    # Core, not the ORM's identity load: every create of every call runs this.
    row = s.connection().execute(_RECORDED, {"tenant_id": req.tenant_id,
                                             "request_id": req.request_id}).first()
    if row is None:
        return
    if row.method != req.method:
        raise InvalidArgument.one(
            "x-request-id", f"already used for {row.method} within {TTL.total_seconds():.0f} s")
    raise Replayed(row.object_id)


def recorded(s: Session, tenant_id: str, request_id: str, method: str) -> str | None:
    """The object a request ID created with ``method``, if it did."""
    row = s.get(CreateRequestRow, (tenant_id, request_id))
    return row.object_id if row is not None and row.method == method else None


def after_write(s: Session, result: object) -> None:
    """Record the request ID with the object the write created (same transaction)."""
    req = _current.get()
    if req is None or req.recorded:
        return
    # A create answers its object, or the object and what goes with it
    # (a token and its secret).
    made = result[0] if isinstance(result, tuple) and result else result
    object_id = getattr(made, "id", None)
    if not isinstance(object_id, str):
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # One Core insert (no unit of work): a concurrent retry's row collides
    # here, and the write is retried whole (``Database.write``).
    conn = s.connection()
    conn.execute(_INSERT_REQUEST, {
        "tenant_id": req.tenant_id, "request_id": req.request_id, "method": req.method,
        "object_id": object_id, "created_at": now})
    if random.randrange(PURGE_EVERY) == 0:
        conn.execute(delete(CreateRequestRow).where(CreateRequestRow.created_at < now - TTL))
    req.recorded = True
