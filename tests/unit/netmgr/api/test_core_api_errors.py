"""Rejected calls against a real server: status codes, the field named in the
BadRequest detail, tenant isolation, exhaustion, and nothing half-created."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from netmgr.store.base import DEFAULT_ZONE
from tests.lib.netmgr_cloud import ADMIN, Api, Cloud, bad_fields, rpc_error

UNKNOWN = "00000000-0000-4000-8000-000000000000"
Code = grpc.StatusCode


def net_req(**kw: Any) -> pb.CreateNetworkRequest:
    fields = {"name": "web", "cidr": "10.0.0.0/24", **kw}
    return pb.CreateNetworkRequest(network=pb.Network(**fields))


@pytest.fixture
def web(acme: tuple[pb.Tenant, Api]) -> pb.Network:
    _, api = acme
    return api.CreateNetwork(net_req())


BAD_NETWORKS = [
    (dict(cidr="10.0.0.0/33"), "network.cidr"),
    (dict(cidr="10.0.0.0/30"), "network.cidr"),  # too small
    (dict(cidr="10.0.0.0/8"), "network.cidr"),  # too big
    (dict(cidr="10.0.0.5/24"), "network.cidr"),
    (dict(cidr="203.0.113.0/25"), "network.cidr"),  # the zone's public network
    (dict(cidr=""), "network.cidr"),
    (dict(name=""), "network.name"),
    (dict(name="web\nserver"), "network.name"),
    (dict(gateway="10.0.1.1"), "network.gateway"),
    (dict(domain="evil.example\naddress=/x/1.2.3.4"), "network.domain"),
    (dict(dns_servers=["1.1.1.1\n"]), "network.dns_servers[0]"),
    (dict(mtu=100), "network.mtu"),
    (dict(lease_seconds=5), "network.lease_seconds"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_NETWORKS)
def test_bad_network_is_invalid_argument_naming_the_field(
    acme: tuple[pb.Tenant, Api], fields: dict[str, Any], field: str
) -> None:
    _, api = acme
    err = rpc_error(lambda: api.CreateNetwork(net_req(**fields)))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in bad_fields(err)
    assert err.details().startswith(f"{bad_fields(err)[0]}: ")
    assert "\n" not in err.details()


def test_overlapping_cidrs_within_a_tenant_are_refused(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], web: pb.Network
) -> None:
    _, api = acme
    err = rpc_error(lambda: api.CreateNetwork(net_req(name="db", cidr="10.0.0.128/25")))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == ["network.cidr"]
    assert web.id in err.details()
    assert "'web'" in err.details()
    # ...while another tenant may use the very same CIDR.
    _, other = cloud.new_tenant("other")
    assert other.CreateNetwork(net_req()).cidr == "10.0.0.0/24"


BAD_HOSTNAMES = ["vm\n1", "vm 1", "vm'1", 'vm"1', "vm;reboot", "$(reboot)", "-vm", "x" * 64,
                 "vm\r", "vm\x00"]


@pytest.mark.parametrize("hostname", BAD_HOSTNAMES)
def test_bad_hostnames(acme: tuple[pb.Tenant, Api], web: pb.Network, hostname: str) -> None:
    _, api = acme
    req = pb.CreatePortRequest(port=pb.Port(network_id=web.id, hostname=hostname))
    err = rpc_error(lambda: api.CreatePort(req))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == ["port.hostname"]
    assert "\n" not in err.details()
    assert "\r" not in err.details()


@pytest.mark.parametrize(("port", "code", "field"), [
    (dict(ip="10.0.1.5"), Code.INVALID_ARGUMENT, "port.ip"),
    (dict(ip="10.0.0.1"), Code.INVALID_ARGUMENT, "port.ip"),  # the gateway
    (dict(ip="10.0.0.255"), Code.INVALID_ARGUMENT, "port.ip"),
    (dict(ip="ten"), Code.INVALID_ARGUMENT, "port.ip"),
    (dict(mac="ff:ff:ff:ff:ff:ff"), Code.INVALID_ARGUMENT, "port.mac"),
    (dict(device_id="vm 1"), Code.INVALID_ARGUMENT, "port.device_id"),
    (dict(name="a\nb"), Code.INVALID_ARGUMENT, "port.name"),
])
def test_bad_ports(acme: tuple[pb.Tenant, Api], web: pb.Network, port: dict[str, Any],
                   code: grpc.StatusCode, field: str) -> None:
    _, api = acme
    err = rpc_error(lambda: api.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network_id=web.id, **port))))
    assert err.code() == code
    assert bad_fields(err) == [field]


def test_taken_ip_mac_hostname_are_already_exists(acme: tuple[pb.Tenant, Api],
                                                  web: pb.Network) -> None:
    _, api = acme
    first = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id, hostname="vm1")))
    for taken, field in ((dict(ip=first.ip), "port.ip"), (dict(mac=first.mac), "port.mac"),
                         (dict(hostname="VM1"), "port.hostname")):
        err = rpc_error(lambda t=taken: api.CreatePort(  # type: ignore[misc]
            pb.CreatePortRequest(port=pb.Port(network_id=web.id, **t))))
        assert err.code() == Code.ALREADY_EXISTS, taken
        assert err.details().startswith(f"{field}: ")


def test_ids(acme: tuple[pb.Tenant, Api], web: pb.Network) -> None:
    _, api = acme
    calls: list[tuple[Callable[[str], Any], str]] = [
        (lambda i: api.GetNetwork(pb.GetNetworkRequest(id=i)), "id"),
        (lambda i: api.DeleteNetwork(pb.DeleteNetworkRequest(id=i)), "id"),
        (lambda i: api.UpdateNetwork(pb.UpdateNetworkRequest(
            network=pb.Network(id=i, mtu=1500))), "network.id"),
        (lambda i: api.GetPort(pb.GetPortRequest(id=i)), "id"),
        (lambda i: api.DeletePort(pb.DeletePortRequest(id=i)), "id"),
        (lambda i: api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=i, name="x"))), "port.id"),
        (lambda i: api.GetRouter(pb.GetRouterRequest(id=i)), "id"),
        (lambda i: api.RestartRouter(pb.RestartRouterRequest(id=i)), "id"),
        (lambda i: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=i))),
         "port.network_id"),
        (lambda i: api.ListPorts(pb.ListPortsRequest(network_id=i)), "network_id"),
    ]
    for call, field in calls:
        # An empty network_id of ListPorts means "all networks".
        empties = () if field == "network_id" else ("",)
        for malformed in (*empties, "nope", "../x", UNKNOWN + "\n"):
            err = rpc_error(lambda c=call, m=malformed: c(m))  # type: ignore[misc]
            assert err.code() == Code.INVALID_ARGUMENT, (field, malformed)
            assert bad_fields(err) == [field]
        err = rpc_error(lambda c=call: c(UNKNOWN))  # type: ignore[misc]
        assert err.code() == Code.NOT_FOUND, field


def test_admin_ids(cloud: Cloud) -> None:
    for call in (lambda i: cloud.admin.GetTenant(pb.GetTenantRequest(id=i)),
                 lambda i: cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=i)),
                 lambda i: cloud.admin.DeleteToken(pb.DeleteTokenRequest(id=i)),
                 lambda i: cloud.admin.CreateToken(pb.CreateTokenRequest(tenant_id=i))):
        assert rpc_error(lambda c=call: c("bad")).code() == Code.INVALID_ARGUMENT  # type: ignore[misc]
        assert rpc_error(lambda c=call: c(UNKNOWN)).code() == Code.NOT_FOUND  # type: ignore[misc]


def test_another_tenants_objects_are_not_found(cloud: Cloud, acme: tuple[pb.Tenant, Api],
                                               web: pb.Network) -> None:
    _, api = acme
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id)))
    _, eve = cloud.new_tenant("eve")
    attempts = [
        lambda: eve.GetNetwork(pb.GetNetworkRequest(id=web.id)),
        lambda: eve.UpdateNetwork(pb.UpdateNetworkRequest(network=pb.Network(id=web.id, mtu=1400))),
        lambda: eve.DeleteNetwork(pb.DeleteNetworkRequest(id=web.id, force=True)),
        lambda: eve.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id))),
        lambda: eve.ListPorts(pb.ListPortsRequest(network_id=web.id)),
        lambda: eve.GetPort(pb.GetPortRequest(id=port.id)),
        lambda: eve.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, name="x"))),
        lambda: eve.DeletePort(pb.DeletePortRequest(id=port.id)),
        lambda: eve.GetRouter(pb.GetRouterRequest(id=web.router_id)),
        lambda: eve.RestartRouter(pb.RestartRouterRequest(id=web.router_id)),
    ]
    for attempt in attempts:
        err = rpc_error(attempt)
        assert err.code() == Code.NOT_FOUND
        # Same words as for an object that never existed: nothing leaks.
        assert "another tenant" not in err.details()
    assert list(eve.ListNetworks(pb.ListNetworksRequest()).networks) == []
    assert list(eve.ListPorts(pb.ListPortsRequest()).ports) == []
    assert list(eve.ListRouters(pb.ListRoutersRequest()).routers) == []
    assert cloud.hooks.restarted == []
    assert api.GetNetwork(pb.GetNetworkRequest(id=web.id)).mtu == 0


def test_authentication(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    list_networks = pb.ListNetworksRequest()
    for api in (cloud.api(None), cloud.api("wrong"), cloud.api(""), cloud.api("cn_forged"),
                cloud.api(ADMIN + "x")):
        assert rpc_error(lambda a=api: a.ListNetworks(list_networks)).code() == \
            Code.UNAUTHENTICATED  # type: ignore[misc]
        assert rpc_error(lambda a=api: a.GetZone(pb.GetZoneRequest())).code() == \
            Code.UNAUTHENTICATED  # type: ignore[misc]
    # The scheme must be Bearer.
    err = rpc_error(lambda: cloud.admin.networks.ListNetworks(
        list_networks, metadata=(("authorization", f"Basic {ADMIN}"),)))
    assert err.code() == Code.UNAUTHENTICATED


def test_admin_only_calls_refuse_tenant_tokens(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    for call in (
        lambda: api.CreateTenant(pb.CreateTenantRequest(name="x")),
        lambda: api.ListTenants(pb.ListTenantsRequest()),
        lambda: api.GetTenant(pb.GetTenantRequest(id=tenant.id)),
        lambda: api.DeleteTenant(pb.DeleteTenantRequest(id=tenant.id)),
        lambda: api.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id)),
        lambda: api.ListTokens(pb.ListTokensRequest(tenant_id=tenant.id)),
        lambda: api.UpdateZone(pb.UpdateZoneRequest(zone=pb.Zone(domain_suffix="x.example"))),
    ):
        assert rpc_error(call).code() == Code.PERMISSION_DENIED
    assert api.GetZone(pb.GetZoneRequest()).name == "zone1"
    who = api.WhoAmI(pb.WhoAmIRequest())
    assert (who.admin, who.tenant_id) == (False, tenant.id)
    # A tenant token cannot pose as another tenant.
    other, _ = cloud.new_tenant("other")
    posing = cloud.api(api.metadata[0][1].split()[1], tenant=other.id)
    assert rpc_error(lambda: posing.ListNetworks(pb.ListNetworksRequest())).code() == \
        Code.PERMISSION_DENIED


def test_admin_acts_as_a_tenant_only_when_it_names_one(cloud: Cloud,
                                                       acme: tuple[pb.Tenant, Api],
                                                       web: pb.Network) -> None:
    tenant, _ = acme
    # A change needs a tenant; a list without one is every tenant's (test_admin_lists).
    err = rpc_error(lambda: cloud.admin.CreateNetwork(net_req(name="db", cidr="10.9.0.0/24")))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == ["x-cloudnet-tenant"]
    err = rpc_error(lambda: cloud.admin.GetNetwork(pb.GetNetworkRequest(id=web.id)))
    assert bad_fields(err) == ["x-cloudnet-tenant"]
    as_acme = cloud.api(ADMIN, tenant=tenant.id)
    assert [n.id for n in as_acme.ListNetworks(pb.ListNetworksRequest()).networks] == [web.id]
    assert as_acme.WhoAmI(pb.WhoAmIRequest()).admin is True
    bad = cloud.api(ADMIN, tenant="nope")
    assert rpc_error(lambda: bad.ListNetworks(pb.ListNetworksRequest())).code() == \
        Code.INVALID_ARGUMENT
    ghost = cloud.api(ADMIN, tenant=UNKNOWN)
    assert rpc_error(lambda: ghost.CreateNetwork(net_req())).code() == Code.NOT_FOUND


def test_deleted_token_stops_working(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> None:
    tenant, api = acme
    tok = cloud.admin.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="tmp"))
    temp = cloud.api(tok.secret)
    assert temp.WhoAmI(pb.WhoAmIRequest()).token_id == tok.token.id
    cloud.admin.DeleteToken(pb.DeleteTokenRequest(id=tok.token.id))
    assert rpc_error(lambda: temp.WhoAmI(pb.WhoAmIRequest())).code() == Code.UNAUTHENTICATED
    assert api.WhoAmI(pb.WhoAmIRequest()).tenant_id == tenant.id


def test_duplicates_and_preconditions(cloud: Cloud, acme: tuple[pb.Tenant, Api],
                                      web: pb.Network) -> None:
    tenant, api = acme
    err = rpc_error(lambda: cloud.admin.CreateTenant(pb.CreateTenantRequest(name="acme")))
    assert err.code() == Code.ALREADY_EXISTS
    err = rpc_error(lambda: cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=tenant.id)))
    assert err.code() == Code.FAILED_PRECONDITION
    api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id)))
    err = rpc_error(lambda: api.DeleteNetwork(pb.DeleteNetworkRequest(id=web.id)))
    assert err.code() == Code.FAILED_PRECONDITION


@pytest.mark.parametrize(("mask", "field"), [
    (["cidr"], "update_mask"), (["vlan_id"], "update_mask"), (["bogus"], "update_mask"),
])
def test_update_mask_refuses_immutable_paths(acme: tuple[pb.Tenant, Api], web: pb.Network,
                                             mask: list[str], field: str) -> None:
    _, api = acme
    err = rpc_error(lambda: api.UpdateNetwork(pb.UpdateNetworkRequest(
        network=pb.Network(id=web.id, cidr="10.1.0.0/24"), update_mask=FieldMask(paths=mask))))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == [field]


def test_bad_page_tokens_and_sizes(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    for token in ("garbage", "eyJ4IjogMX0", "!!"):
        err = rpc_error(lambda t=token: api.ListNetworks(  # type: ignore[misc]
            pb.ListNetworksRequest(page_token=t)))
        assert err.code() == Code.INVALID_ARGUMENT
        assert bad_fields(err) == ["page_token"]
    err = rpc_error(lambda: api.ListNetworks(pb.ListNetworksRequest(page_size=-1)))
    assert bad_fields(err) == ["page_size"]


TINY_ZONE = dataclasses.replace(DEFAULT_ZONE, vlan_min=100, vlan_max=102,
                                public_pool_start="203.0.113.10", public_pool_end="203.0.113.13")


def test_public_pool_runs_out(make_cloud: Any) -> None:
    # Four public IPs for six VLANs: the pool runs out first.
    cloud = make_cloud(zone=dataclasses.replace(TINY_ZONE, vlan_max=105))
    _, api = cloud.new_tenant("acme")
    for i in range(4):
        api.CreateNetwork(net_req(name=f"n{i}", cidr=f"10.{i}.0.0/24"))
    err = rpc_error(lambda: api.CreateNetwork(net_req(name="n9", cidr="10.9.0.0/24")))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("zone.public_pool")


def test_vlans_run_out(make_cloud: Any) -> None:
    cloud = make_cloud(zone=TINY_ZONE)
    _, api = cloud.new_tenant("acme")
    for i in range(3):
        api.CreateNetwork(net_req(name=f"n{i}", cidr=f"10.{i}.0.0/24"))
    err = rpc_error(lambda: api.CreateNetwork(net_req(name="n9", cidr="10.9.0.0/24")))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("zone.vlan")


def test_port_ips_run_out(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    small = api.CreateNetwork(net_req(name="small", cidr="10.5.0.0/29"))
    ips = [api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=small.id))).ip
           for _ in range(5)]  # 6 hosts minus the gateway
    assert ips == [f"10.5.0.{i}" for i in range(2, 7)]
    err = rpc_error(lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=small.id))))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("network.cidr")


def test_nothing_half_created_after_rejected_calls(cloud: Cloud, acme: tuple[pb.Tenant, Api],
                                                   web: pb.Network) -> None:
    tenant, api = acme
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id, hostname="vm1")))
    small = api.CreateNetwork(net_req(name="small", cidr="10.7.0.0/29"))
    for _ in range(5):
        api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=small.id)))
    before = cloud.row_counts()
    generations = {r.id: r.desired_generation
                   for r in api.ListRouters(pb.ListRoutersRequest()).routers}
    notified = len(cloud.hooks.notified)
    bad_calls = [
        *(lambda f=f: api.CreateNetwork(net_req(**{"name": "x", **f})) for f, _ in BAD_NETWORKS),
        lambda: api.CreateNetwork(net_req(name="dup", cidr="10.0.0.0/24")),  # overlaps web
        lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id,
                                                                 ip=port.ip))),
        lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id,
                                                                 mac=port.mac))),
        lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id,
                                                                 hostname="vm1"))),
        lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=small.id))),
        lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id,
                                                                 ip="10.0.0.1"))),
        lambda: api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, hostname="a b"))),
        lambda: api.DeleteNetwork(pb.DeleteNetworkRequest(id=web.id)),
        lambda: cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=tenant.id)),
        lambda: cloud.admin.CreateTenant(pb.CreateTenantRequest(name="acme")),
        lambda: cloud.admin.CreateToken(pb.CreateTokenRequest(tenant_id=UNKNOWN)),
    ]
    for call in bad_calls:
        rpc_error(call)
    assert cloud.row_counts() == before
    after = {r.id: r.desired_generation
             for r in api.ListRouters(pb.ListRoutersRequest()).routers}
    assert after == generations  # no generation was burnt by a rejected call
    assert len(cloud.hooks.notified) == notified


def test_a_bug_is_internal_without_details(cloud: Cloud, acme: tuple[pb.Tenant, Api],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, api = acme

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(cloud.store, "list_networks", broken)
    err = rpc_error(lambda: api.ListNetworks(pb.ListNetworksRequest()))
    assert err.code() == Code.INTERNAL
    assert "secret" not in (err.details() or "")
