"""DNS records of a VPC through the API: inside the VPC's domain, served by
its router to every tier, checked against everything that router serves (the
tiers' records and ports, the VPC's own records: one namespace in dnsmasq);
bad records refused naming the field, nothing created."""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import dns_pb2 as dpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from tests.lib.netmgr_cloud import Api, Cloud, VpcApi, bad_fields, rpc_error

Code = grpc.StatusCode


def record(api: Api, name: str, type_: str, value: str, *, vpc_id: str = "",
           network_id: str = "") -> dpb.DnsRecord:
    return api.CreateDnsRecord(dpb.CreateDnsRecordRequest(dns_record=dpb.DnsRecord(
        vpc_id=vpc_id, network_id=network_id, name=name, type=type_, value=value)))


@pytest.fixture
def shop(cloud: Cloud, acme: tuple[pb.Tenant, Api]) -> tuple[VpcApi, vpb.Vpc, pb.Network,
                                                              pb.Network]:
    _, api = acme
    v = VpcApi(cloud, api)
    vpc = v.vpc("shop", "10.20.0.0/16")
    web = v.tier(vpc.id, "web", "10.20.1.0/24")
    db = v.tier(vpc.id, "db", "10.20.2.0/24")
    api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id, hostname="vm1",
                                                     ip="10.20.1.11")))
    return v, vpc, web, db


def test_a_vpcs_records_are_inside_its_domain_and_listed_apart(shop) -> None:
    v, vpc, _web, db = shop
    d = vpc.domain
    router = v.GetRouter(pb.GetRouterRequest(id=vpc.router_id))
    made = [record(v, "www", "A", "10.20.1.50", vpc_id=vpc.id),
            record(v, "api", "CNAME", "vm1.web", vpc_id=vpc.id),
            record(v, f"files.{d}.", "AAAA", "2001:db8::5", vpc_id=vpc.id),
            record(v, "10.20.2.60", "PTR", "www", vpc_id=vpc.id)]
    assert [(r.vpc_id, r.network_id, r.name, r.value) for r in made] == [
        (vpc.id, "", f"www.{d}", "10.20.1.50"), (vpc.id, "", f"api.{d}", f"vm1.web.{d}"),
        (vpc.id, "", f"files.{d}", "2001:db8::5"),
        (vpc.id, "", "60.2.20.10.in-addr.arpa", f"www.{d}")]
    assert made[0].state == pb.OBJECT_STATE_PENDING
    assert v.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation == \
        router.desired_generation + len(made)
    tier = record(v, "cache", "A", "10.20.2.7", network_id=db.id)
    listed = v.ListDnsRecords(dpb.ListDnsRecordsRequest(vpc_id=vpc.id)).dns_records
    assert sorted(r.id for r in listed) == sorted(r.id for r in made)
    assert [r.id for r in v.ListDnsRecords(dpb.ListDnsRecordsRequest(
        network_id=db.id)).dns_records] == [tier.id]
    v.DeleteDnsRecord(dpb.DeleteDnsRecordRequest(id=made[0].id))
    assert v.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).desired_generation == \
        router.desired_generation + len(made) + 2


# (where: "vpc", "web" or "both"/"none"), (name, type, value), the field named.
BAD: list[tuple[str, tuple[str, str, str], str]] = [
    ("vpc", ("www.example.com.", "A", "10.20.1.5"), "dns_record.name"),  # outside the domain
    ("vpc", ("bad name", "A", "10.20.1.5"), "dns_record.name"),
    ("vpc", ("10.30.0.5", "PTR", "www"), "dns_record.name"),  # not an address of the VPC
    ("vpc", ("10.20.1.1", "PTR", "www"), "dns_record.name"),  # a tier's gateway
    ("vpc", ("10.20.1.11", "PTR", "www"), "dns_record.name"),  # a port's address
    ("vpc", ("vm1.web", "CNAME", "www"), "dns_record.name"),  # a port's name in a tier
    ("vpc", ("vm1.web", "A", "10.20.1.5"), "dns_record.name"),
    ("vpc", ("router.web", "A", "10.20.1.5"), "dns_record.name"),  # a tier's router name
    ("vpc", ("taken", "CNAME", "www"), "dns_record.name"),  # the VPC has an A there
    ("vpc", ("cache.db", "CNAME", "www"), "dns_record.name"),  # the db tier has an A there
    ("vpc", ("alias", "TXT", "x"), "dns_record.name"),  # alias is the VPC's CNAME
    ("vpc", ("loop", "CNAME", "alias"), "dns_record.value"),  # loop -> alias -> (db) ... -> loop
    ("vpc", ("www", "A", "nope"), "dns_record.value"),
    ("vpc", ("www", "MX", "10 mail"), "dns_record.type"),
    # The VPC's domain is not the tier's: a tier record stays inside its own.
    ("web", ("taken.{vpc}.", "TXT", "x"), "dns_record.name"),
    ("both", ("www", "A", "10.20.1.5"), "dns_record.network_id"),
    ("none", ("www", "A", "10.20.1.5"), "dns_record.network_id"),
]


@pytest.mark.parametrize(("where", "rec", "field"), BAD,
                         ids=[f"{w}-{r[0][:20]}-{r[1]}" for w, r, _ in BAD])
def test_bad_vpc_records_are_refused_naming_the_field_and_nothing_is_created(
    cloud: Cloud, shop, where: str, rec: tuple[str, str, str], field: str
) -> None:
    v, vpc, web, db = shop
    record(v, "taken", "A", "10.20.1.60", vpc_id=vpc.id)
    record(v, "cache", "A", "10.20.2.7", network_id=db.id)
    # A loop across the VPC's and a tier's records: db's "back" -> the VPC's "loop".
    record(v, "back", "CNAME", f"loop.{vpc.domain}.", network_id=db.id)
    record(v, "alias", "CNAME", f"back.db.{vpc.domain}.", vpc_id=vpc.id)
    before = cloud.row_counts().get("dns_records")
    target = {"vpc": {"vpc_id": vpc.id}, "web": {"network_id": web.id},
              "both": {"vpc_id": vpc.id, "network_id": web.id}, "none": {}}[where]
    name, kind, value = rec
    err = rpc_error(lambda: record(v, name.format(vpc=vpc.domain), kind, value, **target))
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert bad_fields(err) == [field], err.details()
    assert len(err.details()) < 300
    assert cloud.row_counts().get("dns_records") == before


def test_a_tier_record_beside_a_vpc_record_is_checked_against_it(shop) -> None:
    v, vpc, _web, db = shop
    record(v, "x.db", "A", "10.20.2.9", vpc_id=vpc.id)
    # The same name from the tier's side: the VPC's A is there.
    err = rpc_error(lambda: record(v, "x", "CNAME", "cache", network_id=db.id))
    assert bad_fields(err) == ["dns_record.name"], err.details()
    assert rpc_error(lambda: record(v, "x", "A", "10.20.2.9", network_id=db.id)).code() == \
        Code.ALREADY_EXISTS


def test_another_tenants_vpc_is_not_found(cloud: Cloud, shop) -> None:
    _v, vpc, _web, _db = shop
    _, other = cloud.new_tenant("other")
    err = rpc_error(lambda: record(other, "www", "A", "10.20.1.5", vpc_id=vpc.id))
    assert err.code() == Code.NOT_FOUND
    assert rpc_error(lambda: other.ListDnsRecords(dpb.ListDnsRecordsRequest(
        vpc_id=vpc.id))).code() == Code.NOT_FOUND


def test_a_tier_port_cannot_take_a_name_a_vpc_record_holds(shop) -> None:
    v, vpc, web, db = shop
    held = record(v, "app.web", "CNAME", "vm1.web", vpc_id=vpc.id)
    record(v, "db2", "A", "10.20.2.8", network_id=db.id)
    for tier, name in ((web, "app"), (db, "db2")):
        err = rpc_error(lambda tier=tier, name=name: v.CreatePort(pb.CreatePortRequest(
            port=pb.Port(network_id=tier.id, hostname=name))))
        assert err.code() == Code.ALREADY_EXISTS, err.details()
        assert err.details().startswith("port.hostname: "), err.details()
    assert held.id in err.details() or "db2" in err.details()
    # The same host name in the other tier is another name: fine.
    assert v.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=db.id, hostname="app"))).hostname == "app"
