"""The all-in-one's netmgr replicas: ``--replicas N --db postgresql`` starts a
local PostgreSQL cluster (``aio.postgres``, under <state-dir>/pg) and N
netmgr processes on it, replica i listening on the API port + i. They share
the routers' work by shard leases (docs/replicas.md)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aio.postgres import LocalPostgres

if TYPE_CHECKING:
    from aio.allinone import AllInOne

DATABASES = ("sqlite", "postgresql")


def check(replicas: int, db: str) -> str:
    """Why this combination cannot run ("" when it can)."""
    if db not in DATABASES:
        return f"--db must be one of {', '.join(DATABASES)}"
    if replicas < 1:
        return "--replicas must be 1 or more"
    if replicas > 1 and db != "postgresql":
        return "--replicas above 1 needs --db postgresql (SQLite serves one process)"
    return ""


def pg_dir(aio: AllInOne) -> str:
    return os.path.join(aio.state_dir, "pg")


def postgres(aio: AllInOne) -> LocalPostgres:
    return LocalPostgres(pg_dir(aio))


def db_url(aio: AllInOne) -> str:
    """netmgr's database: the state dir's SQLite file, or the local cluster (started)."""
    if aio.db != "postgresql":
        return f"sqlite:///{os.path.join(aio.state_dir, 'netmgr.db')}"
    pg = postgres(aio)
    pg.start()
    return pg.url("cloudnet")


def listens(aio: AllInOne) -> list[str]:
    """Each replica's API address: the all-in-one's port + i."""
    host, _, port = aio.listen.rpartition(":")
    return [f"{host}:{int(port) + i}" for i in range(aio.replicas)]


def name(i: int) -> str:
    """The process name of replica i (the first keeps the single netmgr's)."""
    return "netmgr" if i == 0 else f"netmgr-{i}"


def stop_postgres(aio: AllInOne) -> None:
    """Stop the cluster if this state dir has one (and PostgreSQL is not
    looked for when it has none: a SQLite all-in-one needs none installed)."""
    if os.path.isdir(os.path.join(pg_dir(aio), "data")):
        postgres(aio).stop()


def wipe(aio: AllInOne) -> None:
    if os.path.isdir(pg_dir(aio)):
        postgres(aio).remove()
