"""A replica remembers a token found by its secret for TOKEN_CACHE_SECONDS
(netmgr/store/token_cache.py): calls within that time read no token row; a
token deleted through the same replica is refused at once, through another
replica within the window. Two Stores on one database stand for two
replicas (SQLite; PostgreSQL too with CLOUDNET_TEST_PG_URL); the cache's
clock is the test's, moved on instead of slept."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from netmgr.model.core import Token
from netmgr.store.facade import Store
from netmgr.store.token_cache import TOKEN_CACHE_SECONDS, TokenCache
from tests.lib.netmgr_cloud import BACKENDS, PG_URL_ENV, wipe_postgresql


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def replicas(request: pytest.FixtureRequest, tmp_path: Path
             ) -> Iterator[tuple[Store, Store, Clock]]:
    if request.param == "postgresql":
        url = os.environ[PG_URL_ENV]
        wipe_postgresql(url)
    else:
        url = f"sqlite:///{tmp_path}/tokens.db"
    a = Store(url)
    b = Store(url)
    clock = Clock()
    a.tenants.token_cache.clock = clock
    b.tenants.token_cache.clock = clock
    yield a, b, clock
    a.close()
    b.close()


def token_reads(store: Store) -> list[str]:
    """The token lookups ``store`` sends to its database from now on."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM tokens" in statement:
            seen.append(statement)

    event.listen(store.db._engine, "before_cursor_execute", count)
    return seen


def test_a_token_found_is_read_once_per_window(replicas: tuple[Store, Store, Clock]) -> None:
    a, _, clock = replicas
    tenant = a.create_tenant("acme")
    token, secret = a.create_token(tenant.id, "t")
    reads = token_reads(a)
    for _ in range(5):
        assert a.token_for_secret(secret) == token
    assert len(reads) == 1
    clock.now += TOKEN_CACHE_SECONDS
    assert a.token_for_secret(secret) == token
    assert len(reads) == 2


def test_a_secret_not_found_is_never_remembered(replicas: tuple[Store, Store, Clock]) -> None:
    a, b, _ = replicas
    tenant = a.create_tenant("acme")
    reads = token_reads(b)
    assert b.token_for_secret("cn_nothing") is None
    assert b.token_for_secret("cn_nothing") is None
    assert len(reads) == 2
    # A token made through another replica works here at once.
    token, secret = a.create_token(tenant.id, "t")
    assert b.token_for_secret(secret) == token


def test_a_token_deleted_through_this_replica_is_refused_at_once(
        replicas: tuple[Store, Store, Clock]) -> None:
    a, b, clock = replicas
    tenant = a.create_tenant("acme")
    token, secret = a.create_token(tenant.id, "t")
    assert a.token_for_secret(secret) == token
    assert b.token_for_secret(secret) == token
    a.delete_token(token.id)
    assert a.token_for_secret(secret) is None
    # The other replica within its window, then no more.
    assert b.token_for_secret(secret) == token
    clock.now += TOKEN_CACHE_SECONDS
    assert b.token_for_secret(secret) is None


def test_a_deleted_tenants_tokens_are_refused_at_once(
        replicas: tuple[Store, Store, Clock]) -> None:
    a, b, clock = replicas
    tenant = a.create_tenant("acme")
    other = a.create_tenant("other")
    _, secret = a.create_token(tenant.id, "t")
    kept, kept_secret = a.create_token(other.id, "t")
    assert a.token_for_secret(secret) is not None
    assert a.token_for_secret(kept_secret) == kept
    a.delete_tenant(tenant.id)
    assert a.token_for_secret(secret) is None
    assert a.token_for_secret(kept_secret) == kept
    clock.now += TOKEN_CACHE_SECONDS
    assert b.token_for_secret(secret) is None


def test_a_lookup_that_began_before_a_delete_does_not_bring_the_token_back() -> None:
    clock = Clock()
    cache = TokenCache(clock)
    token = Token(id="t1", tenant_id="acme", name="t", created_at=dt.datetime.now(dt.UTC),
                  expires_at=None, read_only=False)
    began = clock()  # the lookup reads the row...
    cache.forget(token_id="t1")  # ...while the token is deleted through this replica
    cache.put("digest", token, began)
    assert cache.get("digest") is None
    clock.now += 0.5
    cache.put("digest", token, clock())  # a later lookup: a token of that ID again
    assert cache.get("digest") == token


def test_the_cache_is_bounded() -> None:
    clock = Clock()
    cache = TokenCache(clock, max_entries=4)
    for i in range(10):
        clock.now += 0.01
        cache.put(f"d{i}", Token(id=f"t{i}", tenant_id="acme", name="t",
                                 created_at=dt.datetime.now(dt.UTC), expires_at=None,
                                 read_only=False), clock())
    kept = [i for i in range(10) if cache.get(f"d{i}") is not None]
    assert len(kept) <= 4
    assert 9 in kept
