"""The audit log through the real API: what was done is what the log says,
tenants see only their own events, filters and pages, the watch stream,
router state changes, quota refusals, read-only and expired tokens, the
retention sweep."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import events_pb2 as evpb
from cloudnet.netmgr.v1 import events_pb2_grpc as evrpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import quota_pb2 as qpb
from cloudnet.netmgr.v1 import quota_pb2_grpc as qrpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, text

from netmgr.model.core import ServiceHealth
from netmgr.store.token_cache import TOKEN_CACHE_SECONDS
from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error

API = "/cloudnet.netmgr.v1."


def events(cloud: Cloud, api: Api, **filters: Any) -> list[evpb.Event]:
    stub = evrpc.EventServiceStub(cloud.channel)
    out: list[evpb.Event] = []
    token = ""
    while True:
        page = stub.ListEvents(evpb.ListEventsRequest(
            filter=evpb.EventFilter(**filters), page_size=2, page_token=token),
            metadata=api.metadata, timeout=30)
        out += page.events
        token = page.next_page_token
        if not token:
            return out


def calls(evs: list[evpb.Event]) -> list[tuple[str, str, str]]:
    return [(e.method.removeprefix(API), e.object_id, e.code) for e in evs]


def execute(cloud: Cloud, sql: str, **params: Any) -> None:
    engine = create_engine(cloud.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def test_the_log_is_what_was_done(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    _, other = cloud.new_tenant("other")
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                       cidr="10.1.0.0/24")))
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
    api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, name="x"),
                                        update_mask={"paths": ["name"]}))
    api.DeletePort(pb.DeletePortRequest(id=port.id))
    rpc_error(lambda: api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="bad", cidr="10.1.0.0/33"))))
    api.ListNetworks(pb.ListNetworksRequest())  # a read: not logged
    other.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="o",
                                                                   cidr="10.1.0.0/24")))

    token_id = api.WhoAmI(pb.WhoAmIRequest()).token_id
    mine = events(cloud, api)
    assert calls(mine) == [
        ("TenantService/CreateToken", token_id, "OK"),  # by the admin, for this tenant
        ("NetworkService/CreateNetwork", net.id, "OK"),
        ("PortService/CreatePort", port.id, "OK"),
        ("PortService/UpdatePort", port.id, "OK"),
        ("PortService/DeletePort", port.id, "OK"),
        ("NetworkService/CreateNetwork", "", "INVALID_ARGUMENT"),
    ]
    assert (mine[0].tenant_id, mine[0].token_id) == (tenant.id, "admin")
    assert {(e.kind, e.tenant_id, e.token_id) for e in mine[1:]} == {("api.call", tenant.id,
                                                                      token_id)}
    assert "network.cidr" in mine[-1].detail
    # The admin sees every tenant's (and its own calls, under "admin").
    everything = events(cloud, cloud.admin)
    # And the other's token and network, and both CreateTenant calls.
    assert len(everything) == len(mine) + 2 + 2
    assert {e.token_id for e in everything if "TenantService" in e.method} == {"admin"}
    assert calls(events(cloud, cloud.admin, object_id=port.id)) == calls(mine)[2:5]
    assert events(cloud, cloud.admin, tenant_id=tenant.id) == mine
    err = rpc_error(lambda: events(cloud, other, tenant_id=tenant.id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert bad_fields(rpc_error(lambda: events(cloud, api, kind="nope"))) == ["filter.kind"]

    # A time range: everything before the first event is nothing.
    stub = evrpc.EventServiceStub(cloud.channel)
    end = Timestamp()
    end.FromDatetime(mine[0].time.ToDatetime() - dt.timedelta(seconds=1))
    assert not stub.ListEvents(evpb.ListEventsRequest(end_time=end), metadata=api.metadata,
                               timeout=30).events
    start = Timestamp()
    start.FromDatetime(mine[0].time.ToDatetime())
    assert len(stub.ListEvents(evpb.ListEventsRequest(start_time=start, page_size=100),
                               metadata=api.metadata, timeout=30).events) == len(mine)
    assert bad_fields(rpc_error(lambda: stub.ListEvents(
        evpb.ListEventsRequest(page_token="garbage"), metadata=api.metadata))) == ["page_token"]


def test_quota_refusal_and_router_state_changes_are_events(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    qrpc.QuotaServiceStub(cloud.channel).SetQuota(
        qpb.SetQuotaRequest(tenant_id=tenant.id, resource="networks", limit=1),
        metadata=cloud.admin.metadata)
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                       cidr="10.1.0.0/24")))
    rpc_error(lambda: api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="b", cidr="10.2.0.0/24"))))
    refused = events(cloud, api, kind="quota.refused")
    assert [(e.code, e.method.removeprefix(API)) for e in refused] == [
        ("RESOURCE_EXHAUSTED", "NetworkService/CreateNetwork")]
    assert "quota.networks" in refused[0].detail

    store = cloud.store
    healthy = [ServiceHealth("dnsmasq", True)]
    store.record_router_status(net.router_id, applied_generation=1, services=healthy,
                               last_error="", port_errors={}, reachable=True)
    store.record_router_status(net.router_id, applied_generation=1, services=healthy,
                               last_error="", port_errors={}, reachable=True)  # no change
    store.mark_router_unreachable(net.router_id, "connection refused")
    store.record_router_status(net.router_id, applied_generation=1, services=healthy,
                               last_error="", port_errors={}, reachable=True)
    changes = events(cloud, api, kind="router.state")
    assert [(e.object_id, e.code) for e in changes] == [
        (net.router_id, "ACTIVE"), (net.router_id, "UNREACHABLE"), (net.router_id, "ACTIVE")]
    assert "connection refused" in changes[1].detail


def test_watch_streams_new_events(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    _, other = cloud.new_tenant("other")
    stub = evrpc.EventServiceStub(cloud.channel)
    stream = stub.WatchEvents(evpb.WatchEventsRequest(), metadata=api.metadata, timeout=30)
    got: list[evpb.Event] = []
    done = threading.Event()

    def read() -> None:
        for e in stream:
            got.append(e)
            if len(got) == 2:
                break
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Until the stream is served, a change may come before the watch began:
    # poll with changes until two of this tenant's arrive.
    n = 0
    while not done.wait(0.2):
        other.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
            name=f"o{n}", cidr=f"10.{n}.0.0/24")))
        api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
            name=f"n{n}", cidr=f"10.{n}.0.0/24")))
        n += 1
    stream.cancel()
    assert {e.method.removeprefix(API) for e in got} == {"NetworkService/CreateNetwork"}
    mine = {e.seq for e in events(cloud, api)}
    assert {e.seq for e in got} <= mine  # never another tenant's
    assert got[0].seq < got[1].seq
    bad = stub.WatchEvents(evpb.WatchEventsRequest(), metadata=(("authorization", "Bearer x"),))
    with pytest.raises(grpc.RpcError) as info:
        next(iter(bad))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_read_only_and_expiring_tokens(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    admin = cloud.admin
    ro = admin.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="ro",
                                                 read_only=True))
    assert ro.token.read_only
    reader = cloud.api(ro.secret)
    assert reader.ListNetworks(pb.ListNetworksRequest()).networks == []
    err = rpc_error(lambda: reader.CreateNetwork(pb.CreateNetworkRequest(
        network=pb.Network(name="a", cidr="10.1.0.0/24"))))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "read-only" in err.details()
    assert calls(events(cloud, api))[-1] == ("NetworkService/CreateNetwork", "",
                                            "PERMISSION_DENIED")
    assert cloud.row_counts()["networks"] == 0

    temp = admin.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="t",
                                                   ttl_seconds=3600))
    assert temp.token.HasField("expire_time")
    user = cloud.api(temp.secret)
    user.WhoAmI(pb.WhoAmIRequest())
    execute(cloud, "UPDATE tokens SET expires_at = :past WHERE id = :id",
            past=dt.datetime(2000, 1, 1), id=temp.token.id)
    # Changed behind netmgr's back (as by another replica): seen once the
    # token this replica remembers is older than the cache's window.
    cache = cloud.store.tenants.token_cache
    later = cache.clock() + TOKEN_CACHE_SECONDS
    cache.clock = lambda: later
    err = rpc_error(lambda: user.WhoAmI(pb.WhoAmIRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in err.details()
    assert bad_fields(rpc_error(lambda: admin.CreateToken(pb.CreateTokenRequest(
        tenant_id=tenant.id, name="x", ttl_seconds=-5)))) == ["ttl_seconds"]


def test_retention_sweeps_old_events(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                 cidr="10.1.0.0/24")))
    api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="b",
                                                                 cidr="10.2.0.0/24")))
    before = [e.seq for e in events(cloud, api)]
    first = events(cloud, api)[0]
    execute(cloud, "UPDATE events SET at = :old WHERE seq = :seq",
            old=dt.datetime(2000, 1, 1), seq=first.seq)
    assert cloud.store.events.sweep(dt.timedelta(days=30)) == 1
    assert [e.seq for e in events(cloud, api)] == before[1:]


def test_which_calls_are_audited() -> None:
    from netmgr.api.audit import is_audited

    assert is_audited(API + "NetworkService/CreateNetwork")
    assert is_audited(API + "HostService/RegisterHost")
    assert is_audited(API + "QuotaService/SetQuota")
    assert not is_audited(API + "NetworkService/ListNetworks")
    assert not is_audited(API + "EventService/WatchEvents")
    assert not is_audited(API + "DebugService/Capture")
    assert not is_audited(API + "HostService/Heartbeat")
    assert not is_audited("/grpc.health.v1.Health/Check")


SLOW_INSERT = ("INSERT INTO events (at, kind, tenant_id, token_id, method, object_id, code, "
               "detail) VALUES (now(), 'api.call', :t, '', 'slow', '', 'OK', '') RETURNING seq")


def test_watch_delivers_an_event_that_commits_after_a_later_one(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    """PostgreSQL numbers an event when it is inserted and two writers may
    commit out of order; the watch must not skip the one that commits last:
    it holds the later one back until the earlier transaction has ended."""
    if cloud.db_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: events commit in number order")
    tenant, api = acme
    stub = evrpc.EventServiceStub(cloud.channel)
    start = events(cloud, cloud.admin)[-1].seq  # the watch starts after it, whenever it runs
    stream = stub.WatchEvents(evpb.WatchEventsRequest(after_seq=start), metadata=api.metadata,
                              timeout=60)
    got: list[evpb.Event] = []
    two = threading.Event()

    def read() -> None:
        for e in stream:
            got.append(e)
            if len(got) == 2:
                two.set()
                return

    threading.Thread(target=read, daemon=True).start()
    engine = create_engine(cloud.db_url)
    try:
        with engine.connect() as slow:
            tx = slow.begin()
            low = slow.execute(text(SLOW_INSERT), {"t": tenant.id}).scalar_one()
            # A later number, committed first (ListEvents shows it).
            net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
                name="web", cidr="10.1.0.0/24")))
            assert [e.object_id for e in events(cloud, api) if e.seq > low] == [net.id]
            tx.commit()
        assert two.wait(30), got
    finally:
        engine.dispose()
        stream.cancel()
    # In commit-safe order: the one that took the lower number first.
    assert (got[0].seq, got[0].method) == (low, "slow")
    assert got[1].seq > low
    assert got[1].object_id == net.id


def test_a_follower_of_a_list_gets_an_event_that_commits_after_the_list(
        cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    """ListEvents then WatchEvents (``event list --follow``): two writers, the
    one with the lower number commits last, after the list showed the other;
    the follower that starts from the list's follow_from still gets it."""
    if cloud.db_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: events commit in number order")
    tenant, api = acme
    stub = evrpc.EventServiceStub(cloud.channel)
    engine = create_engine(cloud.db_url)
    got: list[evpb.Event] = []
    try:
        with engine.connect() as slow:
            tx = slow.begin()
            low = slow.execute(text(SLOW_INSERT), {"t": tenant.id}).scalar_one()
            api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
                name="web", cidr="10.1.0.0/24")))
            listed = stub.ListEvents(evpb.ListEventsRequest(page_size=500),
                                     metadata=api.metadata)
            shown = {e.seq for e in listed.events}
            assert low not in shown
            assert max(shown) > low  # a later number was listed: "id > last" would skip low
            assert listed.follow_from > 0
            stream = stub.WatchEvents(evpb.WatchEventsRequest(from_xid=listed.follow_from),
                                      metadata=api.metadata, timeout=60)
            tx.commit()
        for e in stream:
            if e.seq not in shown:
                got.append(e)
                break
        stream.cancel()
    finally:
        engine.dispose()
    assert [(e.seq, e.method) for e in got] == [(low, "slow")]


def test_a_change_and_its_event_commit_in_one_transaction(
        cloud: Cloud, acme: tuple[pb.Tenant, Api], monkeypatch: pytest.MonkeyPatch) -> None:
    """A successful change's event is written by the change's own
    transaction, not by a second write after it: with that second path
    broken, every change still has its event; a refused call (nothing
    committed) still takes the second path."""
    _, api = acme
    separate: list[str] = []

    def broken(kind: str, **fields: Any) -> None:
        separate.append(fields["method"])
        raise RuntimeError("the separate event write is down")

    monkeypatch.setattr(cloud.store.events, "record", broken)
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="one",
                                                                       cidr="10.9.0.0/24")))
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id)))
    api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, name="x"),
                                        update_mask={"paths": ["name"]}))
    api.DeletePort(pb.DeletePortRequest(id=port.id))
    rpc_error(lambda: api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="bad", cidr="10.9.0.0/33"))))
    monkeypatch.undo()
    assert calls(events(cloud, api))[-4:] == [
        ("NetworkService/CreateNetwork", net.id, "OK"),
        ("PortService/CreatePort", port.id, "OK"),
        ("PortService/UpdatePort", port.id, "OK"),
        ("PortService/DeletePort", port.id, "OK"),
    ]
    assert separate == [API + "NetworkService/CreateNetwork"]
