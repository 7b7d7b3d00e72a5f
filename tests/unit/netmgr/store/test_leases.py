"""Shard leases: one process on SQLite holds every shard with epochs that
grow at each start; on PostgreSQL (CLOUDNET_TEST_PG_URL) replicas share the
shards, a replica whose lock session is killed stops at once (``confirm``
fails, nothing held) and its shards go to the other with higher epochs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from netmgr.store.base import Database
from netmgr.store.leases import SHARDS, AdvisoryLeases, LocalLeases, libpq_url, shard_of
from tests.lib.netmgr_cloud import PG_URL_ENV, wipe_postgresql


def test_local_leases_hold_every_shard_with_growing_epochs(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/n.db")
    gained: list[set[int]] = []
    first = LocalLeases(db)
    first.start(gained.append)
    assert gained == [set(range(SHARDS))]
    assert first.epoch("any-router") == 1
    second = LocalLeases(db)  # the next start of the one process
    second.start(lambda _: None)
    assert set(second.held().values()) == {2}
    db.close()


def wait(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.skipif(not os.environ.get(PG_URL_ENV), reason=f"needs {PG_URL_ENV}")
def test_a_killed_lock_session_stops_pushes_and_its_shards_move_on() -> None:
    url = os.environ[PG_URL_ENV]
    wipe_postgresql(url)
    Database(url).close()  # the schema
    a, b = AdvisoryLeases(url, tick=0.1), AdvisoryLeases(url, tick=0.1)
    try:
        a.start(lambda _: None)
        assert len(a.held()) == SHARDS
        b.start(lambda _: None)
        wait(lambda: len(a.held()) == SHARDS // 2 and len(b.held()) == SHARDS // 2)
        assert a.held().keys().isdisjoint(b.held().keys())
        before = b.held()
        router = next(f"r{i}" for i in range(1000) if shard_of(f"r{i}") in before)
        # The database ends b's lock session (as when b's connection dies).
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s", (f"cloudnet-netmgr leases {os.getpid()}",)
            ).fetchall()
        assert ended  # both a's and b's sessions (one process): both must stop
        assert not b.confirm()
        assert b.epoch(router) is None  # no push of that router from b any more
        assert not a.confirm()
        # They reconnect and share the shards again, each under a higher epoch.
        wait(lambda: len(a.held()) + len(b.held()) == SHARDS and
             a.held().keys().isdisjoint(b.held().keys()))
        holder = a if a.epoch(router) is not None else b
        assert holder.epoch(router) > before[shard_of(router)]  # type: ignore[operator]
    finally:
        a.stop()
        b.stop()
