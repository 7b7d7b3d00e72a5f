"""An agent's report that says what the store already holds costs no write:
netmgr's resync reports every router every two seconds, and at 1,000 routers
a write transaction each (SQLite's one write lock) starved the API's writes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmgr.model.core import ServiceHealth
from netmgr.model.validation import NetworkSpec, PortSpec
from netmgr.store.facade import Store


@pytest.fixture
def path(tmp_path: Path) -> str:
    return f"{tmp_path}/status.db"


@pytest.fixture
def store(path: str) -> Iterator[Store]:
    s = Store(f"sqlite:///{path}")
    yield s
    s.close()


def report(store: Store, router_id: str, *, healthy: bool = True, port_errors=None) -> None:
    store.record_router_status(
        router_id, applied_generation=2,
        services=[ServiceHealth("dnsmasq", healthy, "" if healthy else "down", "")],
        last_error="", port_errors=port_errors or {}, reachable=True)
    store.record_edge_status(router_id, {}, {})


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_an_unchanged_report_needs_no_write_lock(store: Store, path: str) -> None:
    tenant = store.create_tenant("acme")
    net = store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.0.0.0/24"))
    store.create_port(tenant.id, PortSpec(network_id=net.id))
    report(store, net.router_id)
    first = store.get_router(tenant.id, net.router_id)

    # Another writer holds SQLite's write lock (as an API call does).
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        same = in_thread(lambda: report(store, net.router_id))
        same.join(timeout=20)
        assert not same.is_alive(), "an unchanged report waited for the write lock"
        changed = in_thread(lambda: report(store, net.router_id, healthy=False))
        changed.join(timeout=0.5)
        assert changed.is_alive(), "a changed report is written (it waits for the lock)"
    finally:
        other.execute("ROLLBACK")
        other.close()
    changed.join(timeout=20)
    assert not changed.is_alive()

    after = store.get_router(tenant.id, net.router_id)
    assert [s.healthy for s in after.services] == [False]
    # The update time is the time of the last change, not of the last report.
    assert after.updated_at > first.updated_at
    report(store, net.router_id, healthy=False)
    assert store.get_router(tenant.id, net.router_id).updated_at == after.updated_at


def test_a_port_error_alone_is_a_change(store: Store) -> None:
    tenant = store.create_tenant("acme")
    net = store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.0.0.0/24"))
    port = store.create_port(tenant.id, PortSpec(network_id=net.id))
    report(store, net.router_id)
    report(store, net.router_id, port_errors={port.id: "hostname refused"})
    assert store.get_port(tenant.id, port.id).error == "hostname refused"
    report(store, net.router_id)
    assert store.get_port(tenant.id, port.id).error == ""


def test_a_hosts_reports_are_one_write(store: Store) -> None:
    from sqlalchemy import event

    from netmgr.model.core import RouterReport

    tenant = store.create_tenant("acme")
    nets = [store.create_network(tenant.id, NetworkSpec(name=f"n{i}", cidr=f"10.0.{i}.0/24"))
            for i in range(5)]
    writes: list[str] = []
    engine = store.db._engine

    def count(conn, cursor, statement, *args) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        store.record_router_statuses([RouterReport(n.router_id, 2, (), "", {}) for n in nets])
        store.mark_routers_unreachable([n.router_id for n in nets], "agent gone")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(writes) == 2
    routers = [store.get_router(tenant.id, n.router_id) for n in nets]
    assert {(r.applied_generation, r.last_error) for r in routers} == {(2, "agent gone")}


def test_a_refused_record_or_ports_options_mark_that_object_error_only(store: Store) -> None:
    from cloudnet.router.v1 import agent_pb2 as apb

    from netmgr.model.dns import DnsRecordSpec
    from netmgr.model.validation import PortSpec as Spec
    from netmgr.reconcile.agent_report import record_report

    tenant = store.create_tenant("acme")
    net = store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.0.0.0/24"))
    port = store.create_port(tenant.id, Spec(network_id=net.id, hostname="vm1"))
    other = store.create_port(tenant.id, Spec(network_id=net.id, hostname="vm2"))
    bad = store.dns.create_dns_record(tenant.id, DnsRecordSpec(net.id, "a", "CNAME", "b"))
    good = store.dns.create_dns_record(tenant.id, DnsRecordSpec(net.id, "www", "A", "10.0.0.9"))
    gen = store.get_router(tenant.id, net.router_id).desired_generation

    def status(*objects: apb.ObjectStatus) -> apb.RouterStatus:
        return apb.RouterStatus(router_id=net.router_id, applied_generation=gen,
                                objects=list(objects))

    record_report(store, store.vpn, net.router_id, status(
        apb.ObjectStatus(kind="port", id=port.id, ok=True),
        apb.ObjectStatus(kind="dhcpoptions", id=port.id, ok=False, error="bad IP address"),
        apb.ObjectStatus(kind="dnsrecord", id=bad.id, ok=False, error="CNAME loop")))
    assert store.get_port(tenant.id, port.id).error == "DHCP options: bad IP address"
    assert store.get_port(tenant.id, other.id).error == ""
    assert store.dns.get_dns_record(tenant.id, bad.id).status.error == "CNAME loop"
    assert store.dns.get_dns_record(tenant.id, bad.id).status.state.name == "ERROR"
    assert store.dns.get_dns_record(tenant.id, good.id).status.state.name == "ACTIVE"
    # Applied in a later report: the errors are cleared.
    record_report(store, store.vpn, net.router_id, status())
    assert store.get_port(tenant.id, port.id).error == ""
    assert store.dns.get_dns_record(tenant.id, bad.id).status.state.name == "ACTIVE"


def test_the_routers_behind_are_those_whose_recorded_generation_is_older(store: Store) -> None:
    """What a replica that takes a shard over pushes at once."""
    tenant = store.create_tenant("acme")
    a = store.create_network(tenant.id, NetworkSpec(name="a", cidr="10.0.0.0/24"))
    b = store.create_network(tenant.id, NetworkSpec(name="b", cidr="10.1.0.0/24"))
    assert set(store.routers_behind()) == {a.router_id, b.router_id}  # never applied
    for net in (a, b):
        gen = store.get_router(tenant.id, net.router_id).desired_generation
        store.record_router_status(net.router_id, applied_generation=gen, services=[],
                                   last_error="", port_errors={}, reachable=True)
    assert store.routers_behind() == []
    store.create_port(tenant.id, PortSpec(network_id=b.id))  # a change not pushed yet
    assert store.routers_behind() == [b.router_id]


def test_reports_of_many_routers_are_recorded_in_a_few_transactions(store: Store) -> None:
    """A resync records every changed report of a host together (its reads
    do not grow with the routers: the routers, their edge objects, ports and
    DNS records each read once for all): each
    router's edge objects' errors land on its own objects, cleared as the
    next report says, in one write transaction for them all (a transaction
    per router made a resync pass of 460 reports take 41 s under load)."""
    from cloudnet.router.v1 import agent_pb2 as apb
    from sqlalchemy import event

    from netmgr.model.validation_edge import PortForwardSpec
    from netmgr.reconcile.agent_report import record_reports

    tenant = store.create_tenant("acme")
    made = []
    for i in range(4):
        net = store.create_network(tenant.id, NetworkSpec(name=f"n{i}", cidr=f"10.{i}.0.0/24"))
        port = store.create_port(tenant.id, PortSpec(network_id=net.id))
        ip, _ = store.allocate_public_ip(tenant.id, net.id)
        pf = store.create_port_forward(tenant.id, PortForwardSpec(ip.id, "tcp", 80, 0, port.id,
                                                                  8080, 0))
        made.append((net.router_id, pf.id))

    def report(refused: set[str]) -> list[tuple[str, apb.RouterStatus]]:
        return [(rid, apb.RouterStatus(router_id=rid, applied_generation=9, objects=[
            apb.ObjectStatus(kind="portforward", id=pf, ok=pf not in refused,
                             error="refused" if pf in refused else "")]))
            for rid, pf in made]

    begins: list[int] = []
    statements: list[str] = []

    def began(conn: object) -> None:
        begins.append(1)

    def executed(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(store.db._engine, "begin", began)
    event.listen(store.db._engine, "before_cursor_execute", executed)
    try:
        # Two routers' reports (one refusing an object, one not), then four's.
        record_reports(store, store.vpn, report({made[0][1]})[:2])
        two = (len(begins), len(statements))
        begins.clear()
        statements.clear()
        record_reports(store, store.vpn, report({made[1][1], made[3][1]}))
        four = (len(begins), len(statements))
        errors = [store.get_port_forward(tenant.id, pf).error for _, pf in made]
        assert errors == ["", "refused", "", "refused"]
        record_reports(store, store.vpn, report(set()))
        assert [store.get_port_forward(tenant.id, pf).error for _, pf in made] == [""] * 4
    finally:
        event.remove(store.db._engine, "begin", began)
        event.remove(store.db._engine, "before_cursor_execute", executed)
    # As many transactions and reads for four routers as for two (only what
    # changed is written, a row at a time).
    assert four == two
