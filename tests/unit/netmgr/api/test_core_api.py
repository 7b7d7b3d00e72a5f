"""The API doing its job against a real server: resources, defaults,
generations and hooks, derived states, pagination, persistence, zone updates,
health and reflection."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf import descriptor_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from netmgr.model.core import ServiceHealth
from tests.lib.netmgr_cloud import Api, Cloud, rpc_error, start_cloud

Code = grpc.StatusCode


def create_network(api: Api, name: str = "web", cidr: str = "10.0.0.0/24",
                   **kw: Any) -> pb.Network:
    return api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name=name, cidr=cidr,
                                                                        **kw)))


def create_port(api: Api, network_id: str, **kw: Any) -> pb.Port:
    return api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=network_id, **kw)))


def test_network_with_defaults_and_allocations(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    web = create_network(api, "Web_1", "10.0.0.0/24")
    assert (web.tenant_id, web.gateway, web.domain, web.lease_seconds) == (
        tenant.id, "10.0.0.1", "web-1.acme.cloud.internal", 86400)
    assert (web.vlan_id, web.source_nat_ip) == (100, "203.0.113.10")
    db = create_network(api, "db", "10.1.0.0/24", gateway="10.1.0.254", domain="db.example",
                        dns_servers=["1.1.1.1"], domain_search=["example"], mtu=1400,
                        lease_seconds=600)
    assert (db.vlan_id, db.source_nat_ip, db.gateway, db.domain) == (
        101, "203.0.113.11", "10.1.0.254", "db.example")
    assert api.GetNetwork(pb.GetNetworkRequest(id=db.id)) == db

    router = api.GetRouter(pb.GetRouterRequest(id=web.router_id))
    assert (router.network_id, router.backend, router.host, router.public_ip) == (
        web.id, "netns", "local", web.source_nat_ip)
    assert (router.desired_generation, router.applied_generation) == (1, 0)
    assert router.state == pb.ROUTER_STATE_PROVISIONING
    assert cloud.hooks.notified == [web.router_id, db.router_id]


def test_deleting_a_network_releases_its_vlan_and_public_ip(
    cloud: Cloud, acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    first = create_network(api, "a", "10.0.0.0/24")
    create_network(api, "b", "10.1.0.0/24")
    create_port(api, first.id)
    api.DeleteNetwork(pb.DeleteNetworkRequest(id=first.id, force=True))
    assert cloud.hooks.notified[-1] == first.router_id  # so the reconciler removes it
    assert rpc_error(lambda: api.GetRouter(pb.GetRouterRequest(id=first.router_id))).code() == \
        Code.NOT_FOUND
    again = create_network(api, "c", "10.0.0.0/24")
    assert (again.vlan_id, again.source_nat_ip) == (first.vlan_id, first.source_nat_ip)
    counts = cloud.row_counts()
    assert (counts["networks"], counts["routers"], counts["ports"], counts["public_ips"]) == (
        2, 2, 0, 2)
    assert counts["mac_addresses"] == 4  # two per router


def test_ports_allocate_and_keep_requests(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = create_network(api)
    p1 = create_port(api, web.id, name="vm1")
    p2 = create_port(api, web.id, name="my server")
    p3 = create_port(api, web.id, ip="10.0.0.100", mac="02:AA:00:00:00:01", hostname="DB",
                     device_id="vm-0003")
    assert (p1.ip, p1.hostname, p1.fqdn) == ("10.0.0.2", "vm1", "vm1.web.acme.cloud.internal")
    assert (p2.ip, p2.hostname) == ("10.0.0.3", "host-10-0-0-3")
    assert (p3.ip, p3.mac, p3.hostname, p3.device_id) == (
        "10.0.0.100", "02:aa:00:00:00:01", "db", "vm-0003")
    for p in (p1, p2):
        first = int(p.mac.split(":")[0], 16)
        assert first & 0b10
        assert not first & 0b1
    assert len({p1.mac, p2.mac, p3.mac}) == 3
    # The lowest free address is reused after a delete.
    api.DeletePort(pb.DeletePortRequest(id=p1.id))
    assert create_port(api, web.id).ip == "10.0.0.2"


def test_generations_hooks_and_port_state(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = create_network(api)
    other = create_network(api, "other", "10.1.0.0/24")
    rid = web.router_id

    def desired() -> int:
        return api.GetRouter(pb.GetRouterRequest(id=rid)).desired_generation

    port = create_port(api, web.id, hostname="vm1")
    assert desired() == 2
    assert cloud.hooks.notified[-1] == rid
    assert port.state == pb.OBJECT_STATE_PENDING
    api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, hostname="vm2"),
                                        update_mask=FieldMask(paths=["hostname"])))
    assert desired() == 3
    api.UpdateNetwork(pb.UpdateNetworkRequest(network=pb.Network(id=web.id, mtu=1400)))
    assert desired() == 4
    assert cloud.hooks.notified[-1] == rid
    assert api.GetRouter(pb.GetRouterRequest(id=other.router_id)).desired_generation == 1

    # The router applies generation 3: the port (changed at 3) is ACTIVE.
    cloud.store.record_router_status(rid, applied_generation=3,
                                     services=[ServiceHealth("dnsmasq", True)], last_error="",
                                     port_errors={}, reachable=True)
    assert api.GetPort(pb.GetPortRequest(id=port.id)).state == pb.OBJECT_STATE_ACTIVE
    router = api.GetRouter(pb.GetRouterRequest(id=rid))
    assert router.state == pb.ROUTER_STATE_PROVISIONING  # 3 < 4
    cloud.store.record_router_status(rid, applied_generation=4, services=[], last_error="",
                                     port_errors={port.id: "rejected: bad host"}, reachable=True)
    got = api.GetPort(pb.GetPortRequest(id=port.id))
    assert (got.state, got.error) == (pb.OBJECT_STATE_ERROR, "rejected: bad host")
    assert api.GetRouter(pb.GetRouterRequest(id=rid)).state == pb.ROUTER_STATE_ACTIVE
    # Changing the port clears the error; it is PENDING for the new generation.
    got = api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, hostname="vm3")))
    assert (got.state, got.error) == (pb.OBJECT_STATE_PENDING, "")

    cloud.store.mark_router_unreachable(rid, "agent on local unreachable")
    router = api.GetRouter(pb.GetRouterRequest(id=rid))
    assert (router.state, router.last_error) == (pb.ROUTER_STATE_UNREACHABLE,
                                                 "agent on local unreachable")
    cloud.store.record_router_status(rid, applied_generation=5,
                                     services=[ServiceHealth("dnsmasq", False, "down")],
                                     last_error="", port_errors={}, reachable=True)
    assert api.GetRouter(pb.GetRouterRequest(id=rid)).state == pb.ROUTER_STATE_DEGRADED

    before = api.GetRouter(pb.GetRouterRequest(id=rid)).desired_generation
    restarted = api.RestartRouter(pb.RestartRouterRequest(id=rid))
    assert cloud.hooks.restarted == [rid]
    # A rebuild is a new generation: the router is not ACTIVE until it applied it.
    assert restarted.desired_generation == before + 1
    assert restarted.state != pb.ROUTER_STATE_ACTIVE


def test_router_snapshot_is_what_the_router_serves(cloud: Cloud,
                                                   acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = create_network(api)
    other = create_network(api, "other", "10.1.0.0/24")
    ports = [create_port(api, web.id) for _ in range(3)]
    snap = cloud.store.router_snapshot(web.router_id)
    assert snap.router.desired_generation == 4
    assert [n.id for n in snap.networks] == [web.id]
    assert [p.id for p in snap.ports] == [p.id for p in ports]
    assert snap.zone.public_gateway == "203.0.113.1"
    assert [r.id for r in cloud.store.list_routers_all()] == [web.router_id, other.router_id]
    # What a resync reads: the same routers, in the same order, as plain rows.
    assert [(p.id, p.host, p.backend, p.desired_generation)
            for p in cloud.store.placed_routers()] == [
        (r.id, r.host, r.backend, r.desired_generation)
        for r in cloud.store.list_routers_all()]
    assert cloud.store.placed_routers()[0].desired_generation == 4
    # An agent that lost its state reports less: stored as reported.
    cloud.store.record_router_status(web.router_id, applied_generation=4, services=[],
                                     last_error="", port_errors={}, reachable=True)
    cloud.store.record_router_status(web.router_id, applied_generation=0, services=[],
                                     last_error="", port_errors={}, reachable=True)
    assert cloud.store.router_snapshot(web.router_id).router.applied_generation == 0


def test_updates_with_and_without_mask(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = create_network(api, dns_servers=["1.1.1.1"], mtu=1400)
    # Empty mask: every updatable field set in the message.
    upd = api.UpdateNetwork(pb.UpdateNetworkRequest(network=pb.Network(id=web.id, name="web2")))
    assert (upd.name, upd.mtu, list(upd.dns_servers), upd.domain) == (
        "web2", 1400, ["1.1.1.1"], web.domain)
    # An explicit mask can clear fields.
    upd = api.UpdateNetwork(pb.UpdateNetworkRequest(
        network=pb.Network(id=web.id), update_mask=FieldMask(paths=["dns_servers", "mtu"])))
    assert (list(upd.dns_servers), upd.mtu, upd.name) == ([], 0, "web2")
    port = create_port(api, web.id, name="a", device_id="vm-1")
    upd_port = api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id, name="b"), update_mask=FieldMask(paths=["name", "device_id"])))
    assert (upd_port.name, upd_port.device_id, upd_port.ip) == ("b", "", port.ip)


def test_pagination_walks_every_item_once_in_stable_order(cloud: Cloud,
                                                          acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = create_network(api, cidr="10.0.0.0/24")
    created = [create_port(api, web.id).id for _ in range(12)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = api.ListPorts(pb.ListPortsRequest(page_size=5, page_token=token))
        seen += [p.id for p in resp.ports]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
        create_port(api, web.id)  # new items land at the end, not in the middle
    assert pages >= 3
    assert seen[:12] == created
    assert len(seen) == len(set(seen))
    assert len(api.ListPorts(pb.ListPortsRequest(page_size=10_000)).ports) == len(seen)
    assert len(api.ListPorts(pb.ListPortsRequest()).ports) == len(seen)  # default 50
    resp = api.ListPorts(pb.ListPortsRequest(network_id=web.id, page_size=1))
    assert len(resp.ports) == 1
    assert resp.next_page_token

    for i in range(3):
        cloud.new_tenant(f"t{i}")
    names = []
    token = ""
    while True:
        tresp = cloud.admin.ListTenants(pb.ListTenantsRequest(page_size=2, page_token=token))
        names += [t.name for t in tresp.tenants]
        token = tresp.next_page_token
        if not token:
            break
    assert names == ["acme", "t0", "t1", "t2"]


def test_zone_update(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = create_network(api)
    zone = cloud.admin.GetZone(pb.GetZoneRequest())
    assert (zone.name, zone.vlan_min, zone.vlan_max, list(zone.upstream_dns)) == (
        "zone1", 100, 999, ["198.51.100.53"])
    new = cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(upstream_dns=["9.9.9.9"]), update_mask=FieldMask(paths=["upstream_dns"])))
    assert list(new.upstream_dns) == ["9.9.9.9"]
    assert new.public_cidr == zone.public_cidr
    # Upstream DNS is served by every router: they are bumped and notified.
    assert api.GetRouter(pb.GetRouterRequest(id=web.router_id)).desired_generation == 2
    assert cloud.hooks.notified[-1] == web.router_id
    # Ranges in use cannot be shrunk away.
    for z, mask in ((pb.Zone(vlan_min=200), ["vlan_min"]),
                    (pb.Zone(public_pool_start="203.0.113.20"), ["public_pool_start"])):
        err = rpc_error(lambda z=z, m=mask: cloud.admin.UpdateZone(  # type: ignore[misc]
            pb.UpdateZoneRequest(zone=z, update_mask=FieldMask(paths=m))))
        assert err.code() == Code.FAILED_PRECONDITION
    err = rpc_error(lambda: cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(vlan_min=0), update_mask=FieldMask(paths=["vlan_min"]))))
    assert err.code() == Code.INVALID_ARGUMENT


def test_everything_acknowledged_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "persist.db"
    cloud = start_cloud(db)
    tenant, api = cloud.new_tenant("acme")
    secret = api.metadata[0][1].split()[1]
    web = create_network(api)
    port = create_port(api, web.id, hostname="vm1")
    cloud.stop()

    again = start_cloud(db)
    try:
        api2 = again.api(secret)
        assert api2.GetNetwork(pb.GetNetworkRequest(id=web.id)) == web
        got = api2.GetPort(pb.GetPortRequest(id=port.id))
        assert (got.ip, got.mac, got.hostname) == (port.ip, port.mac, "vm1")
        assert api2.GetRouter(pb.GetRouterRequest(id=web.router_id)).desired_generation == 2
        assert again.admin.GetTenant(pb.GetTenantRequest(id=tenant.id)) == tenant
        # Allocation continues where it was.
        assert create_network(api2, "b", "10.1.0.0/24").vlan_id == web.vlan_id + 1
    finally:
        again.stop()


def test_zone_defaults_apply_only_to_a_new_database(tmp_path: Path) -> None:
    from netmgr.store.base import DEFAULT_ZONE

    db = tmp_path / "zone.db"
    start_cloud(db, dataclasses.replace(DEFAULT_ZONE, name="first")).stop()
    cloud = start_cloud(db, dataclasses.replace(DEFAULT_ZONE, name="second"))
    try:
        assert cloud.admin.GetZone(pb.GetZoneRequest()).name == "first"
    finally:
        cloud.stop()


def test_health_and_reflection_need_no_token(cloud: Cloud) -> None:
    health = health_pb2_grpc.HealthStub(cloud.channel)
    for service in ("", "cloudnet.netmgr.v1.NetworkService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(cloud.channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="cloudnet.netmgr.v1.PortService")]
    responses = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {f"cloudnet.netmgr.v1.{s}" for s in ("TenantService", "ZoneService", "NetworkService",
                                                "PortService", "RouterService")} <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    proto = descriptor_pb2.FileDescriptorProto.FromString(
        responses[1].file_descriptor_response.file_descriptor_proto[0])
    assert "PortService" in [s.name for s in proto.service]


def test_tenants_and_tokens(cloud: Cloud) -> None:
    tenant = cloud.admin.CreateTenant(pb.CreateTenantRequest(name="acme"))
    created = cloud.admin.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="ci"))
    assert created.secret.startswith("cn_")
    assert created.token.tenant_id == tenant.id
    tokens = cloud.admin.ListTokens(pb.ListTokensRequest(tenant_id=tenant.id)).tokens
    assert [t.id for t in tokens] == [created.token.id]
    stored = [r[0] for r in cloud.sql("SELECT secret_sha256 FROM tokens")]
    assert created.secret not in stored
    assert len(stored[0]) == 64
    assert cloud.admin.WhoAmI(pb.WhoAmIRequest()).admin is True
    cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=tenant.id))
    assert cloud.row_counts()["tokens"] == 0
    assert rpc_error(lambda: cloud.api(created.secret).WhoAmI(pb.WhoAmIRequest())).code() == \
        Code.UNAUTHENTICATED


def test_reconciler_calls_on_a_deleted_router(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    """The reconciler races with deletes: a snapshot says NotFound (so it tears
    the router down), late status reports are dropped silently."""
    from common.grpc_errors import NotFound

    _, api = acme
    web = create_network(api)
    api.DeleteNetwork(pb.DeleteNetworkRequest(id=web.id))
    with pytest.raises(NotFound):
        cloud.store.router_snapshot(web.router_id)
    cloud.store.record_router_status(web.router_id, applied_generation=1, services=[],
                                     last_error="", port_errors={}, reachable=True)
    cloud.store.mark_router_unreachable(web.router_id, "gone")
    assert cloud.store.list_routers_all() == []
