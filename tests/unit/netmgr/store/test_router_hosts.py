"""Router hosts in the store: placement on the live host with the fewest
routers, DOWN after the grace with the routers moved (and bumped) to live
hosts, UP again at the next heartbeat; every change an event row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from common.grpc_errors import NotFound
from netmgr.model.hosts import HostSpec
from netmgr.model.validation import NetworkSpec
from netmgr.store.facade import Store
from netmgr.store.tables.hosts import HostEventRow, HostRow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/n.db")
    yield s
    s.close()


def router_host(store: Store, name: str) -> None:
    store.hosts.register(HostSpec(name=name, address=f"unix:///run/{name}.sock",
                                  fabric="linuxbridge", vcpus=2, memory_mib=1024, role="router"))
    store.hosts.heartbeat(name)


def silence(store: Store, name: str, seconds: float) -> None:
    """The host's last heartbeat ``seconds`` ago."""
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=seconds)
    store.db.write(lambda s: s.execute(
        update(HostRow).where(HostRow.name == name).values(heartbeat_at=past)))


def test_placement_down_and_back(store: Store) -> None:
    tenant = store.create_tenant("t")
    first = store.create_network(tenant.id, NetworkSpec(name="n0", cidr="10.0.0.0/24"))
    assert store.get_router(tenant.id, first.router_id).host == "local"  # none registered
    router_host(store, "ha")
    router_host(store, "hb")
    nets = [store.create_network(tenant.id, NetworkSpec(name=f"n{i}", cidr=f"10.{i}.0.0/24"))
            for i in range(1, 5)]
    hosts = {n.router_id: store.get_router(tenant.id, n.router_id).host for n in nets}
    assert sorted(hosts.values()) == ["ha", "ha", "hb", "hb"]
    assert store.hosts.expire(dt.timedelta(seconds=15)) == []  # both heard from just now

    silence(store, "ha", 60)
    on_a = {rid for rid, h in hosts.items() if h == "ha"}
    before = {rid: store.get_router(tenant.id, rid).desired_generation for rid in on_a}
    assert set(store.hosts.expire(dt.timedelta(seconds=15))) == on_a
    for rid in on_a:
        r = store.get_router(tenant.id, rid)
        assert (r.host, r.desired_generation) == ("hb", before[rid] + 1)
    listed = {h.name: h for h in store.hosts.list()}
    assert (listed["ha"].state, listed["ha"].router_ids) == ("down", ())
    assert (listed["hb"].state, len(listed["hb"].router_ids)) == ("up", 4)
    assert store.hosts.router_hosts() == {"hb": "unix:///run/hb.sock"}
    # A DOWN host gets no new routers.
    new = store.create_network(tenant.id, NetworkSpec(name="n9", cidr="10.9.0.0/24"))
    assert store.get_router(tenant.id, new.router_id).host == "hb"
    assert store.hosts.expire(dt.timedelta(seconds=15)) == []  # once

    store.hosts.heartbeat("ha")
    assert {h.name: h.state for h in store.hosts.list()}["ha"] == "up"
    kinds = store.db.read(lambda s: [(e.host, e.kind) for e in s.scalars(
        select(HostEventRow).order_by(HostEventRow.id))])
    assert kinds[-1] == ("ha", "up")
    assert ("ha", "down") in kinds
    assert kinds.count(("ha", "router-moved")) == 2


def test_no_live_host_leaves_routers_in_place(store: Store) -> None:
    tenant = store.create_tenant("t")
    router_host(store, "ha")
    net = store.create_network(tenant.id, NetworkSpec(name="n", cidr="10.0.0.0/24"))
    silence(store, "ha", 60)
    assert store.hosts.expire(dt.timedelta(seconds=15)) == []
    assert store.get_router(tenant.id, net.router_id).host == "ha"
    kinds = store.db.read(lambda s: [e.kind for e in s.scalars(select(HostEventRow))])
    assert "stranded" in kinds


def test_heartbeat_of_an_unknown_host_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.hosts.heartbeat("nobody")


def test_a_redundant_routers_instances_never_meet_on_one_host(store: Store) -> None:
    """A host DOWN moves a redundant router's instance to a live host other
    than the other instance's (with a new sync VLAN: the orphaned instance on
    the silent host keeps the old one to itself); with no such host it stays
    where it is (the other instance serves as master meanwhile)."""
    tenant = store.create_tenant("t")
    for name in ("ha", "hb"):
        router_host(store, name)
    net = store.create_network(tenant.id, NetworkSpec(name="n", cidr="10.0.0.0/24"))
    rid, red = store.redundancy.set_redundancy(tenant.id, net.id, "", True,
                                               hosts=("ha", "hb"))
    assert red is not None
    first, peer = red.hosts
    silence(store, first, 60)
    assert store.hosts.expire(dt.timedelta(seconds=15)) == []  # no third host: stays
    got = store.redundancy.get(rid)
    assert got is not None
    assert got.hosts == (first, peer)
    kinds = store.db.read(lambda s: [e.kind for e in s.scalars(select(HostEventRow))])
    assert "redundant-kept" in kinds

    router_host(store, "hc")
    store.hosts.heartbeat(first)  # back UP: its own instance again
    silence(store, first, 60)
    generation = store.get_router(tenant.id, rid).desired_generation
    assert store.hosts.expire(dt.timedelta(seconds=15)) == [rid]
    got = store.redundancy.get(rid)
    assert got is not None
    assert got.hosts == ("hc", peer)
    assert got.sync_vlan != red.sync_vlan
    assert store.get_router(tenant.id, rid).desired_generation == generation + 1

    store.hosts.heartbeat(first)  # back UP (holding neither instance now)
    silence(store, peer, 60)  # instance 1's host: not to hc, where instance 0 is
    assert store.hosts.expire(dt.timedelta(seconds=15)) == [rid]
    got = store.redundancy.get(rid)
    assert got is not None
    assert got.hosts == ("hc", first)
