"""The store's composition: Store offers each repository's calls under the
same names, and the status envelope is read from rows in one place."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmgr.model.core import ObjectState, Status
from netmgr.model.validation import NetworkSpec, PortSpec
from netmgr.store import rows
from netmgr.store.facade import Store

# Repositories whose calls Store offers under their own names; the calls left
# out are used inside the store only.
DELEGATED = {
    "tenants": set(), "zone": {"ensure"}, "networks": set(), "ports": set(),
    "routers": set(), "public_ips": set(), "edge": set(), "load_balancers": set(),
    "edge_router": set(), "acls": set(), "routes": set(), "vpcs": {"create_tier"},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/facade.db")
    yield s
    s.close()


@pytest.mark.parametrize("repository", sorted(DELEGATED))
def test_store_offers_every_call_of_a_repository(store: Store, repository: str) -> None:
    repo = getattr(store, repository)
    calls = {name for name, _ in inspect.getmembers(repo, inspect.ismethod)
             if not name.startswith("_")} - DELEGATED[repository]
    assert calls
    missing = sorted(name for name in calls if getattr(store, name, None) != getattr(repo, name))
    assert not missing


def test_repositories_share_one_database(store: Store) -> None:
    repos = [getattr(store, r) for r in (*DELEGATED, "vpn", "hosts")]
    assert {id(r._db) for r in repos} == {id(store.db)}


def test_new_routers_take_the_backend_set_after_opening(store: Store) -> None:
    from netmgr.model.core import RouterBackend

    tenant = store.create_tenant("acme")
    store.default_backend = RouterBackend.VM
    net = store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.0.0.0/24"))
    router = store.get_router(tenant.id, net.router_id)
    assert (router.backend, router.host) == (RouterBackend.VM, "")
    assert store.default_host == "local"


def test_a_port_carries_its_status_envelope(store: Store) -> None:
    tenant = store.create_tenant("acme")
    net = store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.0.0.0/24"))
    port = store.create_port(tenant.id, PortSpec(network_id=net.id))
    assert port.status.id == port.id
    assert port.tenant_id == tenant.id
    assert (port.generation, port.state, port.applied_generation) == (2, ObjectState.PENDING, 0)
    assert port.created_at is not None
    assert port.created_at.tzinfo is dt.UTC


class _Row:
    id, tenant_id, error = "o1", "t1", ""
    generation = 4
    created_at = dt.datetime(2026, 1, 1)


@pytest.mark.parametrize(("applied", "error", "state"), [
    (3, "", ObjectState.PENDING), (4, "", ObjectState.ACTIVE), (9, "bad", ObjectState.ERROR)])
def test_status_is_judged_against_the_applied_generation(applied: int, error: str,
                                                         state: ObjectState) -> None:
    row = _Row()
    row.error = error
    assert rows.status(row, applied) == Status(
        "o1", "t1", 4, error, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), state, applied)


def test_status_unjudged_is_pending() -> None:
    st = rows.status(_Row())
    assert (st.state, st.applied_generation) == (ObjectState.PENDING, 0)
