"""DNS records of a network through the API: names completed inside the
network's domain, values normalised, the router's generation bumped; bad
records (names outside the domain, a CNAME beside other records or a port,
wrong values) refused naming the field, nothing created."""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import dns_pb2 as dpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error

Code = grpc.StatusCode


def record(api: Api, network_id: str, name: str, type_: str, value: str) -> dpb.DnsRecord:
    return api.CreateDnsRecord(dpb.CreateDnsRecordRequest(dns_record=dpb.DnsRecord(
        network_id=network_id, name=name, type=type_, value=value)))


@pytest.fixture
def net(acme: tuple[pb.Tenant, Api]) -> pb.Network:
    _, api = acme
    n = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                     cidr="10.0.0.0/24")))
    api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=n.id, hostname="vm1",
                                                     ip="10.0.0.11")))
    return n


def test_records_are_completed_inside_the_domain_and_listed(
    acme: tuple[pb.Tenant, Api], net: pb.Network
) -> None:
    _, api = acme
    domain = net.domain
    router = api.GetRouter(pb.GetRouterRequest(id=net.router_id))
    made = [
        record(api, net.id, "www", "a", "10.0.0.50"),
        record(api, net.id, f"www.{domain}.", "AAAA", "2001:DB8::1"),
        record(api, net.id, "alias", "CNAME", "www"),
        record(api, net.id, "info", "TXT", "v=spf1 -all"),
        record(api, net.id, "_sip._tcp", "SRV", "10 20 5060 www"),
        record(api, net.id, "10.0.0.50", "PTR", "www"),
        record(api, net.id, "vm1", "TXT", "owner=ops"),  # TXT beside a port's name: fine
    ]
    assert [(r.name, r.type, r.value) for r in made] == [
        (f"www.{domain}", "A", "10.0.0.50"),
        (f"www.{domain}", "AAAA", "2001:db8::1"),
        (f"alias.{domain}", "CNAME", f"www.{domain}"),
        (f"info.{domain}", "TXT", "v=spf1 -all"),
        (f"_sip._tcp.{domain}", "SRV", f"10 20 5060 www.{domain}"),
        ("50.0.0.10.in-addr.arpa", "PTR", f"www.{domain}"),
        (f"vm1.{domain}", "TXT", "owner=ops"),
    ]
    assert made[0].state == pb.OBJECT_STATE_PENDING
    assert api.GetRouter(pb.GetRouterRequest(id=net.router_id)).desired_generation == \
        router.desired_generation + len(made)
    listed = api.ListDnsRecords(dpb.ListDnsRecordsRequest(network_id=net.id)).dns_records
    assert sorted(r.id for r in listed) == sorted(r.id for r in made)
    api.DeleteDnsRecord(dpb.DeleteDnsRecordRequest(id=made[2].id))
    assert rpc_error(lambda: api.GetDnsRecord(dpb.GetDnsRecordRequest(
        id=made[2].id))).code() == Code.NOT_FOUND


BAD: list[tuple[tuple[str, str, str], str]] = [
    (("www", "MX", "10 mail"), "dns_record.type"),
    (("www.example.com.", "A", "10.0.0.5"), "dns_record.name"),
    (("bad name", "A", "10.0.0.5"), "dns_record.name"),
    (("-x", "A", "10.0.0.5"), "dns_record.name"),
    (("a" * 64, "A", "10.0.0.5"), "dns_record.name"),
    (("x\nserver=1.2.3.4", "A", "10.0.0.5"), "dns_record.name"),
    (("router", "A", "10.0.0.5"), "dns_record.name"),
    (("data-server", "CNAME", "www"), "dns_record.name"),
    (("vm1", "A", "10.0.0.5"), "dns_record.name"),  # a port's name
    (("vm1", "CNAME", "www"), "dns_record.name"),
    (("taken", "CNAME", "www"), "dns_record.name"),  # taken has an A record
    (("alias", "A", "10.0.0.6"), "dns_record.name"),  # alias is a CNAME
    (("www", "A", "10.0.0.256"), "dns_record.value"),
    (("www", "A", "::1"), "dns_record.value"),
    (("www", "AAAA", "10.0.0.5"), "dns_record.value"),
    (("www", "CNAME", "bad name"), "dns_record.value"),
    (("www", "TXT", 'say "hi"'), "dns_record.value"),
    (("www", "TXT", "x" * 256), "dns_record.value"),
    (("www", "TXT", "a\\b"), "dns_record.value"),
    (("_s._tcp", "SRV", "10 20 www"), "dns_record.value"),
    (("_s._tcp", "SRV", "10 20 70000 www"), "dns_record.value"),
    (("10.9.0.5", "PTR", "www"), "dns_record.name"),  # outside the network
    (("10.0.0.11", "PTR", "other"), "dns_record.name"),  # a port's address
    (("10.0.0.1", "PTR", "other"), "dns_record.name"),  # the gateway
    (("nonsense", "PTR", "www"), "dns_record.name"),
]


@pytest.mark.parametrize(("rec", "field"), BAD)
def test_bad_records_are_refused_naming_the_field_and_nothing_is_created(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], net: pb.Network,
    rec: tuple[str, str, str], field: str
) -> None:
    _, api = acme
    record(api, net.id, "taken", "A", "10.0.0.60")
    record(api, net.id, "alias", "CNAME", "taken")
    before = cloud.row_counts().get("dns_records")
    err = rpc_error(lambda: record(api, net.id, *rec))
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert bad_fields(err) == [field], err.details()
    assert len(err.details()) < 300
    assert "\n" not in err.details()
    assert cloud.row_counts().get("dns_records") == before


def test_another_tenants_network_and_records_are_not_found(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], net: pb.Network
) -> None:
    _, api = acme
    mine = record(api, net.id, "www", "A", "10.0.0.5")
    _, other = cloud.new_tenant("other")
    err = rpc_error(lambda: record(other, net.id, "www", "A", "10.0.0.5"))
    assert err.code() == Code.NOT_FOUND
    assert rpc_error(lambda: other.GetDnsRecord(dpb.GetDnsRecordRequest(
        id=mine.id))).code() == Code.NOT_FOUND
    assert rpc_error(lambda: record(api, net.id, "www", "A", "10.0.0.5")).code() == \
        Code.ALREADY_EXISTS


def test_a_cname_loop_is_refused_as_dnsmasq_would_refuse_it(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], net: pb.Network
) -> None:
    _, api = acme
    record(api, net.id, "l1", "CNAME", "l2")
    record(api, net.id, "l2", "CNAME", "l3")
    for name, target in (("l3", "l1"), ("self", "self")):
        err = rpc_error(lambda name=name, target=target: record(api, net.id, name, "CNAME",
                                                                  target))
        assert bad_fields(err) == ["dns_record.value"], err.details()
    assert record(api, net.id, "l3", "CNAME", "vm1").value == f"vm1.{net.domain}"


# A port's name is answered by the router (A, AAAA): a record of those types,
# or a CNAME, at a port's name is refused from either side.
PORT_VS_RECORD: list[tuple[str, str, str, Code | None]] = [
    # (record type at "web2", its value, how the port takes "web2", refused with)
    ("CNAME", "www", "create", Code.ALREADY_EXISTS),
    ("A", "10.0.0.70", "create", Code.ALREADY_EXISTS),
    ("AAAA", "2001:db8::70", "create", Code.ALREADY_EXISTS),
    ("CNAME", "www", "update", Code.ALREADY_EXISTS),
    ("A", "10.0.0.70", "update", Code.ALREADY_EXISTS),
    ("TXT", "owner=ops", "create", None),  # a TXT beside a port's name is fine
    ("TXT", "owner=ops", "update", None),
]


@pytest.mark.parametrize(("kind", "value", "how", "code"), PORT_VS_RECORD,
                         ids=[f"{k}-{h}" for k, _, h, _ in PORT_VS_RECORD])
def test_a_port_cannot_take_a_name_a_record_holds(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], net: pb.Network, kind: str, value: str,
    how: str, code: Code | None
) -> None:
    _, api = acme
    held = record(api, net.id, "web2", kind, value)
    other = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id,
                                                             hostname="other")))
    before = cloud.row_counts().get("ports")

    def take() -> pb.Port:
        if how == "create":
            return api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id,
                                                                    hostname="web2")))
        return api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=other.id,
                                                                hostname="web2")))

    if code is None:
        assert take().hostname == "web2"
        return
    err = rpc_error(take)
    assert err.code() == code, err.details()
    assert err.details().startswith("port.hostname: "), err.details()
    assert held.id in err.details()
    assert cloud.row_counts().get("ports") == before
    assert api.GetPort(pb.GetPortRequest(id=other.id)).hostname == "other"
    # The other way round: a record at a port's name (this port's, now).
    for k, v in (("CNAME", "www"), ("A", "10.0.0.71"), ("AAAA", "2001:db8::71")):
        err = rpc_error(lambda k=k, v=v: record(api, net.id, "other", k, v))
        assert bad_fields(err) == ["dns_record.name"], err.details()


def test_a_port_named_like_a_record_falls_back_to_its_address_name(
    acme: tuple[pb.Tenant, Api], net: pb.Network
) -> None:
    _, api = acme
    record(api, net.id, "www", "CNAME", "vm1")
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="www")))
    assert port.hostname != "www"
    assert port.hostname.startswith("ip-") or port.ip.replace(".", "-") in port.hostname
