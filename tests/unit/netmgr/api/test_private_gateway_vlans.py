"""Which VLAN a private gateway gets: a tenant never chooses one (it is
allocated from the zone's private gateway range), the admin may name one,
and no one gets the guest range, the provider's segment, the router-VM
control network or any other VLAN the zone reserves."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.lib.netmgr_cloud import ADMIN, VpcApi, bad_fields, rpc_error

Code = grpc.StatusCode
PG_MIN, PG_MAX = 2000, 2002


def set_zone(cloud, **fields: Any) -> pb.Zone:
    return cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(**fields), update_mask=FieldMask(paths=sorted(fields))))


@pytest.fixture
def world(acme_vpc):
    cloud, api = acme_vpc
    set_zone(cloud, private_gateway_vlan_min=PG_MIN, private_gateway_vlan_max=PG_MAX)
    tenant_id = api.WhoAmI(pb.WhoAmIRequest()).tenant_id
    admin = VpcApi(cloud, cloud.api(ADMIN, tenant_id))
    return cloud, api, admin


def gateway(api, vpc_id: str, n: int = 50, **kw: Any) -> vpb.PrivateGateway:
    fields = dict(vpc_id=vpc_id, address=f"192.168.{n}.2/24", gateway=f"192.168.{n}.1")
    fields.update(kw)
    return api.CreatePrivateGateway(vpb.CreatePrivateGatewayRequest(
        private_gateway=vpb.PrivateGateway(**fields)))


def count(cloud) -> int:
    return cloud.sql("SELECT count(*) FROM vpc_private_gateways")[0][0]


@pytest.mark.parametrize("vlan", [4000, 4001, 3001, PG_MIN])
def test_a_tenant_cannot_choose_a_vlan(world, vlan):
    cloud, api, _ = world
    vpc = api.vpc()
    err = rpc_error(lambda: gateway(api, vpc.id, vlan_id=vlan))
    assert err.code() == Code.PERMISSION_DENIED
    assert err.details().startswith("private_gateway.vlan_id:")
    assert count(cloud) == 0


def test_a_tenant_gets_the_lowest_free_vlan_of_the_zone_range(world):
    cloud, api, _ = world
    vpcs = [api.vpc(f"v{i}", f"10.{i}.0.0/16") for i in range(4)]
    got = [gateway(api, v.id).vlan_id for v in vpcs[:3]]
    assert got == [PG_MIN, PG_MIN + 1, PG_MIN + 2]
    err = rpc_error(lambda: gateway(api, vpcs[3].id))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("private_gateway.vlan_id:")
    first = api.ListPrivateGateways(vpb.ListPrivateGatewaysRequest(vpc_id=vpcs[0].id))
    api.DeletePrivateGateway(vpb.DeletePrivateGatewayRequest(
        id=first.private_gateways[0].id))
    assert gateway(api, vpcs[3].id).vlan_id == PG_MIN
    assert count(cloud) == 3


def test_without_a_zone_range_a_tenant_gets_no_private_gateway(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc()
    err = rpc_error(lambda: gateway(api, vpc.id))
    assert err.code() == Code.FAILED_PRECONDITION
    assert "private_gateway_vlan_min" in err.details()
    assert count(cloud) == 0


@pytest.mark.parametrize("vlan", [4000, 4001, 100, 999, 4095, 5000])
def test_the_admin_cannot_name_a_reserved_or_guest_vlan(world, vlan):
    cloud, _api, admin = world
    vpc = admin.vpc()
    err = rpc_error(lambda: gateway(admin, vpc.id, vlan_id=vlan))
    assert err.code() == Code.INVALID_ARGUMENT
    assert "private_gateway.vlan_id" in bad_fields(err)
    assert count(cloud) == 0


def test_the_admin_may_name_a_vlan_outside_the_range(world):
    cloud, api, admin = world
    vpc = admin.vpc()
    pg = gateway(admin, vpc.id, vlan_id=3001)
    assert pg.vlan_id == 3001
    # The tenant sees it, and allocation still starts at the range.
    other = api.vpc("w", "10.9.0.0/16")
    assert gateway(api, other.id).vlan_id == PG_MIN
    err = rpc_error(lambda: gateway(admin, admin.vpc("x", "10.8.0.0/16").id, n=51,
                                    vlan_id=3001))
    assert err.code() == Code.ALREADY_EXISTS
    assert count(cloud) == 2


def test_concurrent_allocations_get_distinct_vlans(world):
    _cloud, api, _ = world
    vpcs = [api.vpc(f"v{i}", f"10.{i}.0.0/16") for i in range(6)]
    results: list[Any] = []
    barrier = threading.Barrier(len(vpcs))

    def create(vpc_id: str) -> None:
        barrier.wait()
        try:
            results.append(gateway(api, vpc_id).vlan_id)
        except grpc.RpcError as e:
            results.append(e.code())

    threads = [threading.Thread(target=create, args=(v.id,)) for v in vpcs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    vlans = sorted(r for r in results if isinstance(r, int))
    assert vlans == [PG_MIN, PG_MIN + 1, PG_MIN + 2]
    assert [r for r in results if not isinstance(r, int)] == [Code.RESOURCE_EXHAUSTED] * 3


BAD_ZONES = [
    # The private gateway range overlaps the guest range (100-999).
    (dict(private_gateway_vlan_min=900, private_gateway_vlan_max=1100),
     "zone.private_gateway_vlan_min"),
    # ... or holds a reserved VLAN (the provider's 4000, the control network's 4001).
    (dict(private_gateway_vlan_min=3990, private_gateway_vlan_max=4010),
     "zone.private_gateway_vlan_max"),
    (dict(private_gateway_vlan_min=2000, private_gateway_vlan_max=1990),
     "zone.private_gateway_vlan_max"),
    (dict(private_gateway_vlan_min=2000, private_gateway_vlan_max=0),
     "zone.private_gateway_vlan_max"),
    (dict(private_gateway_vlan_min=2000, private_gateway_vlan_max=4095),
     "zone.private_gateway_vlan_max"),
    # The guest range must stay clear of reserved VLANs too.
    (dict(vlan_max=4094), "zone.vlan_max"),
    (dict(reserved_vlans=[4000, 0]), "zone.reserved_vlans"),
    (dict(reserved_vlans=[4000, 4095]), "zone.reserved_vlans"),
    (dict(reserved_vlans=[4000, 500]), "zone.reserved_vlans"),  # in the guest range
]


@pytest.mark.parametrize(("fields", "field"), BAD_ZONES)
def test_a_bad_zone_vlan_setting_names_its_field(acme_vpc, fields, field):
    cloud, _ = acme_vpc
    before = cloud.admin.GetZone(pb.GetZoneRequest())
    err = rpc_error(lambda: set_zone(cloud, **fields))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in bad_fields(err)
    assert cloud.admin.GetZone(pb.GetZoneRequest()) == before


def test_the_default_zone_reserves_the_provider_and_control_vlans(acme_vpc):
    _cloud, api = acme_vpc
    zone = api.GetZone(pb.GetZoneRequest())
    assert {4000, 4001} <= set(zone.reserved_vlans)
    assert (zone.private_gateway_vlan_min, zone.private_gateway_vlan_max) == (0, 0)


def test_a_range_cannot_be_moved_over_a_private_gateway(world):
    cloud, _api, admin = world
    pg = gateway(admin, admin.vpc().id, vlan_id=3001)
    for fields in (dict(reserved_vlans=[4000, 4001, 3001]),
                   dict(vlan_max=3100, private_gateway_vlan_min=3200,
                        private_gateway_vlan_max=3300)):
        err = rpc_error(lambda f=fields: set_zone(cloud, **f))
        assert err.code() == Code.FAILED_PRECONDITION, fields
        assert str(pg.vlan_id) in err.details()
