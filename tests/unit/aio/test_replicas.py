"""The all-in-one's replica options: which combinations run, the addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from aio import replicas
from aio.allinone import AllInOne


@pytest.mark.parametrize(("n", "db", "problem"), [
    (1, "sqlite", ""), (3, "postgresql", ""), (1, "postgresql", ""),
    (2, "sqlite", "--replicas above 1 needs --db postgresql"),
    (0, "postgresql", "--replicas must be 1 or more"),
    (1, "mysql", "--db must be one of")])
def test_combinations(n: int, db: str, problem: str) -> None:
    got = replicas.check(n, db)
    assert got.startswith(problem) if problem else got == ""


def test_addresses_names_and_no_postgres_needed_for_sqlite(tmp_path: Path) -> None:
    aio = AllInOne(prefix="tq", state_dir=str(tmp_path), listen="127.0.0.1:7070",
                   admin_token="t", replicas=3, db="postgresql", fabric_kind="linuxbridge")
    assert replicas.listens(aio) == ["127.0.0.1:7070", "127.0.0.1:7071", "127.0.0.1:7072"]
    assert [replicas.name(i) for i in range(3)] == ["netmgr", "netmgr-1", "netmgr-2"]
    single = AllInOne(prefix="tq", state_dir=str(tmp_path), admin_token="t",
                      fabric_kind="linuxbridge")
    assert replicas.db_url(single) == f"sqlite:///{tmp_path}/netmgr.db"
    replicas.stop_postgres(single)  # no cluster here: nothing to do, nothing looked for
    replicas.wipe(single)
