"""Writers on SQLite queue in netmgr, not in SQLite's busy handler: that one
polls with growing sleeps, so under 20 concurrent API writers one could lose
every poll until busy_timeout and fail ("database is locked", INTERNAL)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from netmgr.store import engine
from netmgr.store.base import Database


def test_concurrent_writers_all_succeed_past_sqlites_busy_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each write holds the lock 20 ms; 16 of them take longer together than
    # SQLite would wait (50 ms): only a queue in front of SQLite lets all pass.
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    db = Database(f"sqlite:///{tmp_path}/w.db")
    db.write(lambda s: s.execute(text("CREATE TABLE n (v INTEGER)")))
    failures: list[BaseException] = []

    def one(i: int) -> None:
        def tx(s) -> None:
            s.execute(text("INSERT INTO n VALUES (:v)"), {"v": i})
            time.sleep(0.02)
        try:
            db.write(tx)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert db.read(lambda s: s.execute(text("SELECT count(*) FROM n")).scalar()) == 16
    db.close()
