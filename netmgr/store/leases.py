"""Leases on shards of routers: which netmgr replica pushes which router.

Routers are split into ``SHARDS`` shards by a hash of their ID. A replica
pushes a router (and tends its VM) only while it holds the lease of the
router's shard, and every push carries that lease's epoch: a counter in the
shard's ``shard_leases`` row, bumped in the transaction that takes the lease.
The router agent refuses a push from an older epoch than it has seen
(``router/agent/fencing.py``), so a replica that lost its lease cannot roll a
router back, however late its push arrives. No clock is involved.

* ``LocalLeases`` (SQLite, one process): every shard, epochs bumped once at start.
* ``AdvisoryLeases`` (PostgreSQL, any number of replicas): a shard's lease is
  the session-level advisory lock (``pg_try_advisory_lock``) held on a
  connection of its own, so it dies with the replica's process or its
  database session, and the database hands it to another replica; each
  replica also holds a membership lock, so every replica counts the live
  ones (``pg_locks``) and takes its fair share of shards (a new replica gets
  shards as the others give up their surplus). Before each push the
  replica checks its lock session answers (``confirm``): one that lost its
  database connection stops pushing before its locks can pass.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from netmgr.store.base import Database
from netmgr.store.tables.replicas import ShardLeaseRow

log = logging.getLogger(__name__)

SHARDS = 64
# The advisory lock key spaces (the two-int form: namespace, key).
SHARD_LOCKS = 0x636E0001
MEMBER_LOCKS = 0x636E0002
TICK_SECONDS = 0.5


def shard_of(router_id: str) -> int:
    return zlib.crc32(router_id.encode()) % SHARDS


def bump_epochs(s: Session, shards: Iterable[int]) -> dict[int, int]:
    """Each shard's epoch plus one (rows made on first use), in the caller's transaction."""
    out = {}
    for shard in shards:
        row = s.get(ShardLeaseRow, shard, with_for_update=True)
        if row is None:
            row = ShardLeaseRow(shard=shard, epoch=0)
            s.add(row)
        row.epoch += 1
        s.flush()
        out[shard] = row.epoch
    return out


class LocalLeases:
    """One process on SQLite: every shard, its epoch bumped when it starts."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._held: dict[int, int] = {}

    def start(self, on_gained: Callable[[set[int]], None]) -> None:
        self._held = self._db.write(lambda s: bump_epochs(s, range(SHARDS)))
        on_gained(set(self._held))

    def stop(self) -> None:
        pass

    def epoch(self, router_id: str) -> int | None:
        return self._held.get(shard_of(router_id))

    def confirm(self) -> bool:
        return True

    def held(self) -> dict[int, int]:
        return dict(self._held)


def _one(conn: Any, sql: str, args: tuple[object, ...] = ()) -> Any:
    """The first column of the one row ``sql`` returns."""
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise ConnectionError(f"no row from {sql!r}")
    return row[0]


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://u@/db?host=/run`` as libpq takes it."""
    return make_url(sqlalchemy_url).set(drivername="postgresql") \
        .render_as_string(hide_password=False)


class AdvisoryLeases:
    """Shard leases as PostgreSQL session advisory locks (module docstring)."""

    def __init__(self, url: str, *, on_lost: Callable[[set[int]], None] | None = None,
                 tick: float = TICK_SECONDS) -> None:
        self._url = libpq_url(url)
        self._tick = tick
        self._on_lost = on_lost
        self._on_gained: Callable[[set[int]], None] = lambda _: None
        self._conn: Any = None  # psycopg.Connection, the lock session
        self._conn_lock = threading.Lock()
        self._held: dict[int, int] = {}
        self._held_lock = threading.Lock()
        self._member = random.randrange(1, 2**31 - 1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, on_gained: Callable[[set[int]], None]) -> None:
        self._on_gained = on_gained
        self._balance()  # the first shards before the API serves
        self._thread = threading.Thread(target=self._loop, name="shard-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drop_all()
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()  # the locks go with the session
                self._conn = None

    # ------------------------------------------------------------- queries

    def epoch(self, router_id: str) -> int | None:
        with self._held_lock:
            return self._held.get(shard_of(router_id))

    def held(self) -> dict[int, int]:
        with self._held_lock:
            return dict(self._held)

    def confirm(self) -> bool:
        """One round trip on the lock session: if it fails, every lease is
        dropped here at once (the database ends the session's locks too)."""
        with self._held_lock:
            if not self._held:
                return False
        try:
            with self._conn_lock:
                if self._conn is None:
                    raise ConnectionError("no lock session")
                self._conn.execute("SELECT 1").fetchone()
            return True
        except Exception as e:  # psycopg.Error, OSError: the session is gone
            log.warning("lock session lost (%s): stopping every push", e)
            self._session_lost()
            return False

    # ------------------------------------------------------------ internals

    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self._balance()
            except Exception:
                log.exception("shard leases: balance failed")

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                               application_name=f"cloudnet-netmgr leases {os.getpid()}")
        if not _one(conn, "SELECT pg_try_advisory_lock(%s, %s)", (MEMBER_LOCKS, self._member)):
            conn.close()
            self._member = random.randrange(1, 2**31 - 1)
            raise ConnectionError("membership key taken; another try")
        return conn

    def _session_lost(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing the lost session", exc_info=True)
        self._drop_all()

    def _drop_all(self) -> None:
        with self._held_lock:
            lost, self._held = set(self._held), {}
        if lost and self._on_lost is not None:
            self._on_lost(lost)

    def _balance(self) -> None:
        gained: set[int] = set()
        try:
            with self._conn_lock:
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                members = _one(
                    conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND classid = %s::oid AND objsubid = 2", (MEMBER_LOCKS,))
                target = math.ceil(SHARDS / max(1, members))
                held = self.held()
                if len(held) > target:
                    self._release(conn, sorted(held)[target:])
                elif len(held) < target:
                    gained = self._acquire(conn, target - len(held), held)
        except Exception as e:
            if self._stop.is_set():
                return
            log.warning("lock session: %s", e)
            self._session_lost()
            time.sleep(self._tick)
        if gained:
            self._on_gained(gained)  # outside the session lock: it may push at once

    def _release(self, conn: Any, shards: list[int]) -> None:
        with self._held_lock:  # stop pushing them first
            for shard in shards:
                self._held.pop(shard, None)
        if self._on_lost is not None:
            self._on_lost(set(shards))
        for shard in shards:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (SHARD_LOCKS, shard))
        log.info("released shards %s (fair share)", shards)

    def _acquire(self, conn: Any, wanted: int, held: dict[int, int]) -> set[int]:
        gained: set[int] = set()
        start = random.randrange(SHARDS)
        for i in range(SHARDS):
            if len(gained) >= wanted:
                break
            shard = (start + i) % SHARDS
            if shard in held:
                continue
            epoch = None
            try:
                with conn.transaction():
                    if _one(conn, "SELECT pg_try_advisory_lock(%s, %s)", (SHARD_LOCKS, shard)):
                        conn.execute("INSERT INTO shard_leases (shard, epoch) VALUES (%s, 0) "
                                     "ON CONFLICT (shard) DO NOTHING", (shard,))
                        epoch = _one(conn, "UPDATE shard_leases SET epoch = epoch + 1 "
                                     "WHERE shard = %s RETURNING epoch", (shard,))
            except Exception:
                # The transaction rolled back; a session lock outlives it.
                with contextlib.suppress(Exception):
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (SHARD_LOCKS, shard))
                raise
            if epoch is None:
                continue
            with self._held_lock:
                self._held[shard] = int(epoch)
            gained.add(shard)
        if gained:
            log.info("took shards %s", sorted(gained))
        return gained

