"""The audit event log in the store: record, list (by seq, paged), wait for
new ones, sweep old ones.

A successful API call's event is written in the call's own write
transaction (``netmgr.store.call_events``); a refused call's (it rolled its
own back), or one of a call that wrote nothing, in a transaction of its own
after the call. A router's state change is written in the transaction that
records the router's status (``router_state_changed``), so the log and the
router's row never disagree.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, text
from sqlalchemy.orm import Session

from common.grpc_errors import InvalidArgument
from netmgr.model import core as model
from netmgr.model import events as me
from netmgr.model.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from netmgr.store import rows
from netmgr.store.base import Database
from netmgr.store.tables.audit import EventRow
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import RouterRow

log = logging.getLogger(__name__)
SWEEP_EVERY_SECONDS = 3600.0
# How long a transaction may hold an event's sequence number before it
# commits (a watcher reads that far back: EventStore.watch).
COMMIT_GRACE_SECONDS = 10.0
WATCH_BATCH = 200


def _xmin(s: Session) -> int:
    """The oldest transaction still running (PostgreSQL)."""
    return int(s.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")))


def _event(row: EventRow) -> me.Event:
    return me.Event(seq=row.seq, at=rows.aware(row.at), kind=row.kind,
                    tenant_id=row.tenant_id, token_id=row.token_id, method=row.method,
                    object_id=row.object_id, code=row.code, detail=row.detail)


def _naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, seq = raw.partition(":")
        if prefix != "seq" or not seq.isdigit():
            raise ValueError(raw)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.one("page_token", "not a page token of this list") from None


def router_state(row: RouterRow) -> model.RouterState:
    return rows.router(cast(Any, (row, None))).state


# Every change to a router passes through PROVISIONING and back to ACTIVE:
# not worth an event each time (the API call that made it is one).
ROUTINE = frozenset({model.RouterState.PROVISIONING, model.RouterState.ACTIVE})


def router_state_changed(s: Session, row: RouterRow, before: model.RouterState,
                         first_applied: bool = False) -> None:
    """In the caller's transaction: an event if the router's state moved to
    or from UNREACHABLE or DEGRADED, or it served for the first time."""
    after = router_state(row)
    if after == before or ({before, after} <= ROUTINE and not first_applied):
        return
    s.add(EventRow(at=utcnow(), kind=me.KIND_ROUTER_STATE, tenant_id=row.tenant_id,
                   token_id="", method="", object_id=row.id, code=after.name,
                   detail=f"{before.name} -> {after.name}"
                          + (f": {row.last_error}" if row.last_error else "")[:400]))


class EventStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Woken at each event recorded by this process (watchers also poll:
        # another replica's events reach them through the database).
        self.recorded = threading.Condition()

    def record(self, kind: str, *, tenant_id: str, token_id: str, method: str,
               object_id: str, code: str, detail: str = "") -> None:
        def tx(s: Session) -> None:
            s.add(EventRow(at=utcnow(), kind=kind, tenant_id=tenant_id, token_id=token_id,
                           method=method[:128], object_id=object_id[:64], code=code,
                           detail=detail[:me.MAX_DETAIL]))

        self._db.write(tx)
        self.wake()

    def wake(self) -> None:
        with self.recorded:
            self.recorded.notify_all()

    def _select(self, f: me.EventFilter, after_seq: int) -> Any:
        return self._filtered(f, after_seq).order_by(EventRow.seq)

    @staticmethod
    def _filtered(f: me.EventFilter, after_seq: int) -> Any:
        stmt = select(EventRow).where(EventRow.seq > after_seq)
        if f.tenant_id is not None:
            stmt = stmt.where(EventRow.tenant_id == f.tenant_id)
        if f.object_id:
            stmt = stmt.where(EventRow.object_id == f.object_id)
        if f.kind:
            stmt = stmt.where(EventRow.kind == f.kind)
        if f.start is not None:
            stmt = stmt.where(EventRow.at >= _naive(f.start))
        if f.end is not None:
            stmt = stmt.where(EventRow.at < _naive(f.end))
        return stmt

    def list_events(self, f: me.EventFilter, page_size: int, page_token: str) -> Page[me.Event]:
        if page_size < 0:
            raise InvalidArgument.one("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(page_token) if page_token else 0

        def tx(s: Session) -> Page[me.Event]:
            found = [_event(r) for r in s.scalars(self._select(f, after).limit(size + 1))]
            more = len(found) > size
            found = found[:size]
            return Page(tuple(found), encode_page_token(found[-1].seq) if more else "")

        return self._db.read(tx)

    def events_after(self, f: me.EventFilter, after_seq: int, limit: int = 100) -> list[me.Event]:
        return self._db.read(lambda s: [_event(r) for r in s.scalars(
            self._select(f, after_seq).limit(limit))])

    def last_seq(self) -> int:
        return self._db.read(lambda s: int(s.scalar(
            select(EventRow.seq).order_by(EventRow.seq.desc()).limit(1)) or 0))

    def wait(self, timeout: float) -> None:
        """Until this process records an event, or ``timeout`` seconds."""
        with self.recorded:
            self.recorded.wait(timeout)

    @property
    def _postgres(self) -> bool:
        return self._db.dialect == "postgresql"

    def horizon(self) -> int:
        """PostgreSQL: the oldest transaction still running (every older one
        has committed or rolled back); 0 on SQLite."""
        return self._db.read(_xmin) if self._postgres else 0

    def watch(self, f: me.EventFilter, after_seq: int, active: Callable[[], bool],
              poll: float = 0.5, grace: float = COMMIT_GRACE_SECONDS,
              from_xid: int = 0) -> Iterator[me.Event]:
        """The events after ``after_seq`` (or, with ``from_xid``, those of
        transactions from that one on) as they commit, while ``active()``.

        Sequence numbers are taken when a row is inserted, not when it
        commits: on PostgreSQL two writers can commit 11 before 10, and a
        follower that moved past 11 would skip 10. So each event carries its
        transaction's ID (``xid``, set by the insert) and the watch follows
        by (xid, seq), delivering an event only once its transaction is
        older than every transaction still running
        (``pg_snapshot_xmin(pg_current_snapshot())``): nothing can commit
        behind the cursor any more. An open transaction holds back the
        events of later ones until it ends (an event's wait is as long as
        the longest write running when it was recorded). SQLite commits in
        number order (one writer): the watch follows by seq, as a page
        does.
        """
        if self._postgres:
            yield from self._watch_by_xid(f, after_seq, from_xid, active, poll)
            return
        floor = after_seq
        delivered: dict[int, float] = {}  # seq -> when delivered (monotonic)
        while active():
            after = floor
            while True:  # every page after the floor
                batch = self.events_after(f, after, limit=WATCH_BATCH)
                now = time.monotonic()
                for event in batch:
                    if event.seq not in delivered:
                        delivered[event.seq] = now
                        yield event
                if len(batch) < WATCH_BATCH:
                    break
                after = batch[-1].seq
            now = time.monotonic()
            settled = [seq for seq, when in delivered.items() if now - when >= grace]
            if settled:
                floor = max(floor, *settled)
                for seq in [seq for seq in delivered if seq <= floor]:
                    del delivered[seq]
            self.wait(poll)

    def _watch_by_xid(self, f: me.EventFilter, after_seq: int, from_xid: int,
                      active: Callable[[], bool], poll: float) -> Iterator[me.Event]:
        # The cursor: every event at or before (xid, seq) was delivered.
        cursor = (from_xid - 1, 2**31 - 1) if from_xid else (-1, 0)  # seq: an INTEGER
        xid = func.coalesce(EventRow.xid, 0)
        while active():
            def tx(s: Session, cx: int = cursor[0], cs: int = cursor[1]
                   ) -> list[tuple[me.Event, int]]:
                horizon = _xmin(s)
                stmt = (self._filtered(f, 0 if from_xid else after_seq)
                        .where(xid < horizon,
                               or_(xid > cx, and_(xid == cx, EventRow.seq > cs)))
                        .order_by(xid, EventRow.seq).limit(WATCH_BATCH))
                return [(_event(r), r.xid or 0) for r in s.scalars(stmt)]

            batch = self._db.read(tx)
            for event, event_xid in batch:
                cursor = (event_xid, event.seq)
                yield event
            if len(batch) < WATCH_BATCH:
                self.wait(poll)

    def sweep(self, older_than: dt.timedelta) -> int:
        """Delete the events older than ``older_than``; how many went."""
        cutoff = utcnow() - older_than

        def tx(s: Session) -> int:
            stmt = delete(EventRow).where(EventRow.at < cutoff)
            result = cast(CursorResult[Any], s.execute(stmt))
            return int(result.rowcount or 0)

        return self._db.write(tx)

    def sweep_until(self, retention_days: int, stop: threading.Event,
                    every: float = SWEEP_EVERY_SECONDS) -> None:
        """Sweep now and then every ``every`` seconds, until ``stop`` is set
        (the server's thread; a failed sweep is logged and tried again)."""
        while True:
            try:
                gone = self.sweep(dt.timedelta(days=retention_days))
                if gone:
                    log.info("swept %d event(s) older than %d days", gone, retention_days)
            except Exception:
                log.exception("event sweep failed")
            if stop.wait(every):
                return
