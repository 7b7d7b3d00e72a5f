"""The store's foundation: the database every repository shares (engine,
one transaction per call), new IDs, and the zone a fresh store starts with.

Writes are retried whole when they hit a unique constraint (a concurrent
writer took the same VLAN, IP or MAC first); a retry re-reads and picks the
next free value, or reports ALREADY_EXISTS if the user asked for that value.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from common.grpc_errors import Aborted, Unavailable
from netmgr.model import core as model
from netmgr.store import call_events, engine, requests
from netmgr.store.quotas import QuotaSession
from netmgr.store.secrets import SecretBox

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ATTEMPTS = 8
# deadlock_detected, serialization_failure
RETRIED_SQLSTATES = ("40P01", "40001")

DEFAULT_ZONE = model.Zone(
    name="zone1",
    public_cidr="203.0.113.0/24",
    public_gateway="203.0.113.1",
    public_pool_start="203.0.113.10",
    public_pool_end="203.0.113.250",
    vlan_min=100,
    vlan_max=999,
    upstream_dns=("198.51.100.53",),
    domain_suffix="cloud.internal",
)


def _unavailable(e: Exception) -> Unavailable:
    log.warning("database unavailable: %s", str(e).splitlines()[0] if str(e) else e)
    return Unavailable("the database is not answering; retry the call")


def new_id() -> str:
    return str(uuid.uuid4())


class Database:
    """The engine and its transactions: every repository of the store holds
    the same one and runs each of its calls as one ``read`` or ``write``."""

    def __init__(self, url: str, *, pool_size: int = 16,
                 secrets: SecretBox | None = None) -> None:
        # Seals what the store keeps of secrets (VPN keys); without one given,
        # a key of this process only (tests).
        self.secrets = secrets if secrets is not None else SecretBox.ephemeral()
        self._engine = engine.make_engine(url, pool_size=pool_size)
        self._writer = engine.writer(self._engine)
        # The same pool, its connections in autocommit for one-statement reads
        # (SQLite: no round trips to save, and its own BEGIN handling).
        self._autocommit: Engine | None = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._engine.dialect.name == "postgresql" else None)
        # SQLite has one write lock, and its busy handler polls for it with
        # growing sleeps: under many concurrent writers one can lose every
        # poll until busy_timeout ("database is locked"). Writers of this
        # process queue here instead and meet SQLite's lock one at a time.
        # (PostgreSQL: row locks, no queue.)
        self._write_gate: contextlib.AbstractContextManager[object] = (
            threading.Lock() if self._engine.dialect.name == "sqlite"
            else contextlib.nullcontext())
        if engine.upgrade(self._engine, secret_box=self.secrets):
            engine.purge_freed(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return str(self._engine.dialect.name)

    def read(self, fn: Callable[[Session], T]) -> T:
        try:
            with Session(self._engine) as s, s.begin():
                return fn(s)
        except (OperationalError, InterfaceError) as e:
            raise _unavailable(e) from e

    def read_statement(self, fn: Callable[[Session], T]) -> T:
        """``read(fn)`` for an ``fn`` that runs ONE statement: on PostgreSQL
        without a transaction around it (one statement sees one snapshot by
        itself), which saves the BEGIN and COMMIT round trips; for the reads
        of every call (its token) and every push (its router's redundancy)."""
        if self._autocommit is None:
            return self.read(fn)
        try:
            with Session(self._autocommit) as s:
                return fn(s)
        except (OperationalError, InterfaceError) as e:
            raise _unavailable(e) from e

    def write_if_changed(self, fn: Callable[[Session], T]) -> T:
        """``write(fn)``, but first ``fn`` runs in a read transaction (no
        autoflush): when it changed nothing, that is all, and no write lock
        is taken. For reports that mostly repeat what is stored (every
        router's status at every resync): a write transaction each would
        queue on SQLite's one write lock ahead of the API's writes. ``fn``
        must set only what differs (an assignment of an equal value counts
        as no change)."""
        with Session(self._engine, autoflush=False) as s:
            s.begin()
            try:
                result = fn(s)
                changed = bool(s.new or s.deleted
                               or any(s.is_modified(o) for o in s.dirty))
            finally:
                s.rollback()
        return self.write(fn) if changed else result

    def write(self, fn: Callable[[Session], T]) -> T:
        try:
            return self._write(fn)
        except (OperationalError, InterfaceError) as e:
            # The database went away mid-call (restarted, a failover): the
            # change may or may not have committed; a retry (with the same
            # request ID for a create) is safe.
            raise _unavailable(e) from e

    def _write(self, fn: Callable[[Session], T]) -> T:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self._write_gate, QuotaSession(self._writer) as s:
                    with s.begin():
                        requests.before_write(s)
                        result = fn(s)
                        requests.after_write(s, result)
                        event = call_events.after_write(s, result)
                    if event is not None:  # committed with the change
                        event.committed = True
                    return result
            except IntegrityError as e:
                # A concurrent writer took a value we picked: start over.
                log.info("write collided (attempt %d): %s", attempt + 1, e.orig)
            except DBAPIError as e:
                # PostgreSQL broke a lock cycle (the zone's and a tenant's row
                # taken in the other order by another writer): start over.
                if getattr(e.orig, "sqlstate", None) not in RETRIED_SQLSTATES:
                    raise
                log.info("write deadlocked (attempt %d): %s", attempt + 1, e.orig)
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise Aborted("the change kept colliding with concurrent changes; retry it")
