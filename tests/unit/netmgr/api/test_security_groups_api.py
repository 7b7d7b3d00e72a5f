"""Security groups through the API: the tenant's default group, groups and
rules, a port's groups, port security and allowed address pairs; bad input
named by field (INVALID_ARGUMENT / NOT_FOUND) and nothing created."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error

Code = grpc.StatusCode
OTHER_ID = "00000000-0000-4000-8000-000000000000"


def groups(api: Api) -> dict[str, sgpb.SecurityGroup]:
    return {g.name: g for g in api.ListSecurityGroups(
        sgpb.ListSecurityGroupsRequest()).security_groups}


def new_group(api: Api, name: str) -> sgpb.SecurityGroup:
    return api.CreateSecurityGroup(sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(name=name, description="web servers")))


def add_rule(api: Api, group_id: str, **kw: Any) -> sgpb.SecurityGroupRule:
    return api.CreateSecurityGroupRule(sgpb.CreateSecurityGroupRuleRequest(
        rule=sgpb.SecurityGroupRule(security_group_id=group_id, **kw)))


def net_of(api: Api, name: str = "web", cidr: str = "10.0.0.0/24") -> pb.Network:
    return api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name=name, cidr=cidr)))


def port_on(api: Api, net: pb.Network, **kw: Any) -> pb.Port:
    return api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, **kw)))


def counts(cloud: Cloud) -> dict[str, int]:
    return {t: cloud.sql(f"SELECT count(*) FROM {t}")[0][0]
            for t in ("security_groups", "security_group_rules", "ports")}


def test_every_tenant_has_a_default_group_allowing_egress_and_ingress_from_itself(
    cloud: Cloud, acme: tuple[pb.Tenant, Api]
) -> None:
    tenant, api = acme
    default = groups(api)["default"]
    assert default.tenant_id == tenant.id
    shape = sorted((r.direction, r.ethertype, r.protocol, r.remote_cidr, r.remote_group_id)
                   for r in default.rules)
    assert shape == [("egress", "ipv4", "all", "", ""), ("egress", "ipv6", "all", "", ""),
                     ("ingress", "ipv4", "all", "", default.id),
                     ("ingress", "ipv6", "all", "", default.id)]
    err = rpc_error(lambda: api.DeleteSecurityGroup(
        sgpb.DeleteSecurityGroupRequest(id=default.id)))
    assert err.code() == Code.FAILED_PRECONDITION
    err = rpc_error(lambda: new_group(api, "default"))
    assert bad_fields(err) == ["security_group.name"]


def test_a_port_naming_no_group_is_filtered_by_the_default_group(
    acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    port = port_on(api, net_of(api), name="vm1")
    assert list(port.security_group_ids) == []
    assert port.port_security is True
    assert groups(api)["default"].port_count == 1


def test_rules_are_stored_normalised_and_a_duplicate_is_refused(
    acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    web = new_group(api, "web")
    ssh = add_rule(api, web.id, direction="ingress", protocol="6", port_min=22,
                   remote_cidr="192.0.2.0/24")
    assert (ssh.protocol, ssh.port_min, ssh.port_max, ssh.ethertype) == ("tcp", 22, 22, "ipv4")
    ping = add_rule(api, web.id, direction="ingress", protocol="icmp", icmp_type=8, icmp_code=0)
    assert (ping.icmp_type, ping.icmp_code) == (8, 0)
    any_icmp = add_rule(api, web.id, direction="ingress", protocol="icmp", icmp_type=-1,
                        icmp_code=-1)
    assert (any_icmp.icmp_type, any_icmp.icmp_code) == (-1, -1)
    v6 = add_rule(api, web.id, direction="ingress", ethertype="ipv6", protocol="58",
                  icmp_type=128, remote_cidr="2001:db8::/32")
    assert v6.protocol == "icmp"
    from_default = add_rule(api, web.id, direction="ingress", protocol="udp", port_min=1000,
                            port_max=2000, remote_group_id=groups(api)["default"].id)
    assert from_default.remote_group_id == groups(api)["default"].id
    err = rpc_error(lambda: add_rule(api, web.id, direction="ingress", protocol="tcp",
                                     port_min=22, port_max=22, remote_cidr="192.0.2.0/24"))
    assert err.code() == Code.ALREADY_EXISTS
    got = api.GetSecurityGroup(sgpb.GetSecurityGroupRequest(id=web.id))
    assert [r.id for r in got.rules] == [ssh.id, ping.id, any_icmp.id, v6.id, from_default.id]
    api.DeleteSecurityGroupRule(sgpb.DeleteSecurityGroupRuleRequest(id=ssh.id))
    got = api.GetSecurityGroup(sgpb.GetSecurityGroupRequest(id=web.id))
    assert ssh.id not in [r.id for r in got.rules]


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    ("direction", {"direction": "inbound"}, "rule.direction"),
    ("ethertype", {"ethertype": "ipx"}, "rule.ethertype"),
    ("protocol name", {"protocol": "sctpx"}, "rule.protocol"),
    ("protocol number", {"protocol": "256"}, "rule.protocol"),
    ("port above 65535", {"protocol": "tcp", "port_min": 70000}, "rule.port_min"),
    ("range backwards", {"protocol": "tcp", "port_min": 100, "port_max": 99}, "rule.port_max"),
    ("range without start", {"protocol": "udp", "port_max": 99}, "rule.port_min"),
    ("ports on icmp", {"protocol": "icmp", "port_min": 22}, "rule.port_min"),
    ("ports on all", {"protocol": "all", "port_min": 22}, "rule.port_min"),
    ("icmp type", {"protocol": "icmp", "icmp_type": 256}, "rule.icmp_type"),
    ("icmp code", {"protocol": "icmp", "icmp_type": 3, "icmp_code": 300}, "rule.icmp_code"),
    ("code without type", {"protocol": "icmp", "icmp_type": -1, "icmp_code": 3},
     "rule.icmp_code"),
    ("icmp type on tcp", {"protocol": "tcp", "icmp_type": 8}, "rule.icmp_type"),
    ("cidr garbage", {"remote_cidr": "10.0.0.300/24"}, "rule.remote_cidr"),
    ("cidr host bits", {"remote_cidr": "10.0.0.1/24"}, "rule.remote_cidr"),
    ("cidr of the other version", {"remote_cidr": "2001:db8::/32"}, "rule.remote_cidr"),
    ("cidr control chars", {"remote_cidr": "10.0.0.0/24\n;drop"}, "rule.remote_cidr"),
    ("cidr and group", {"remote_cidr": "10.0.0.0/24", "remote_group_id": OTHER_ID},
     "rule.remote_group_id"),
    ("description", {"description": "x" * 256}, "rule.description"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_RULES, ids=[c[0] for c in BAD_RULES])
def test_bad_rules_are_refused_naming_the_field_and_nothing_is_created(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], case: str, fields: dict[str, Any], field: str
) -> None:
    _, api = acme
    web = new_group(api, "web")
    before = counts(cloud)
    fields = {"direction": "ingress", **fields}
    err = rpc_error(lambda: add_rule(api, web.id, **fields))
    assert err.code() == Code.INVALID_ARGUMENT, case
    assert field in bad_fields(err), (case, bad_fields(err))
    assert len(err.details() or "") < 300
    assert counts(cloud) == before


def test_a_remote_group_or_group_of_another_tenant_is_not_found(cloud: Cloud) -> None:
    _, acme = cloud.new_tenant("acme")
    _, other = cloud.new_tenant("other")
    mine = new_group(acme, "web")
    theirs = new_group(other, "db")
    before = counts(cloud)
    err = rpc_error(lambda: add_rule(acme, mine.id, direction="ingress",
                                     remote_group_id=theirs.id))
    assert err.code() == Code.NOT_FOUND
    assert "rule.remote_group_id" in (err.details() or "")
    err = rpc_error(lambda: add_rule(acme, theirs.id, direction="ingress"))
    assert err.code() == Code.NOT_FOUND
    err = rpc_error(lambda: acme.GetSecurityGroup(sgpb.GetSecurityGroupRequest(id=theirs.id)))
    assert err.code() == Code.NOT_FOUND
    other_rule = add_rule(other, theirs.id, direction="ingress", protocol="tcp", port_min=5432)
    err = rpc_error(lambda: acme.DeleteSecurityGroupRule(
        sgpb.DeleteSecurityGroupRuleRequest(id=other_rule.id)))
    assert err.code() == Code.NOT_FOUND
    # A port naming another tenant's group: NOT_FOUND naming the field, no port made.
    net = net_of(acme)
    before = counts(cloud)
    err = rpc_error(lambda: port_on(acme, net, security_group_ids=[theirs.id]))
    assert err.code() == Code.NOT_FOUND
    assert "port.security_group_ids[0]" in (err.details() or "")
    assert counts(cloud) == before


def test_a_port_joins_and_leaves_groups_and_a_group_in_use_stays(
    acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    web = new_group(api, "web")
    db = new_group(api, "db")
    port = port_on(api, net_of(api), name="vm1", security_group_ids=[web.id, db.id])
    assert list(port.security_group_ids) == [web.id, db.id]
    assert groups(api)["default"].port_count == 0
    assert groups(api)["web"].port_count == 1
    add_rule(api, db.id, direction="ingress", remote_group_id=web.id)
    for gid in (web.id, db.id):
        err = rpc_error(lambda g=gid: api.DeleteSecurityGroup(  # type: ignore[misc]
            sgpb.DeleteSecurityGroupRequest(id=g)))
        assert err.code() == Code.FAILED_PRECONDITION
    port = api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id, security_group_ids=[db.id]),
        update_mask=FieldMask(paths=["security_group_ids"])))
    assert list(port.security_group_ids) == [db.id]
    # web filters no port, but db's rule names it as its remote group.
    err = rpc_error(lambda: api.DeleteSecurityGroup(sgpb.DeleteSecurityGroupRequest(id=web.id)))
    assert err.code() == Code.FAILED_PRECONDITION
    assert "remote group" in (err.details() or "")
    port = api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id), update_mask=FieldMask(paths=["security_group_ids"])))
    assert list(port.security_group_ids) == []
    assert groups(api)["default"].port_count == 1
    api.DeleteSecurityGroup(sgpb.DeleteSecurityGroupRequest(id=db.id))
    api.DeleteSecurityGroup(sgpb.DeleteSecurityGroupRequest(id=web.id))
    assert set(groups(api)) == {"default"}


def test_port_security_off_needs_no_groups_and_no_pairs(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    web = new_group(api, "web")
    net = net_of(api)
    port = port_on(api, net, name="fw", port_security=False)
    assert port.port_security is False
    assert groups(api)["default"].port_count == 0
    err = rpc_error(lambda: port_on(api, net, name="x", port_security=False,
                                    security_group_ids=[web.id]))
    assert bad_fields(err) == ["port.security_group_ids"]
    err = rpc_error(lambda: port_on(api, net, name="y", port_security=False,
                                    allowed_address_pairs=[sgpb.AllowedAddressPair(
                                        ip="10.0.0.200")]))
    assert bad_fields(err) == ["port.allowed_address_pairs"]
    on = api.UpdatePort(pb.UpdatePortRequest(port=pb.Port(id=port.id, port_security=True),
                                             update_mask=FieldMask(paths=["port_security"])))
    assert on.port_security is True


def test_allowed_address_pairs_are_kept_normalised(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    net = net_of(api)
    port = port_on(api, net, name="lb1", allowed_address_pairs=[
        sgpb.AllowedAddressPair(ip="10.0.0.200/32"),
        sgpb.AllowedAddressPair(ip="10.0.0.208/29", mac="02:AA:00:00:00:01")])
    assert [(a.ip, a.mac) for a in port.allowed_address_pairs] == [
        ("10.0.0.200", ""), ("10.0.0.208/29", "02:aa:00:00:00:01")]
    # Two ports may share a VRRP address (a pair each).
    twin = port_on(api, net, name="lb2", allowed_address_pairs=[
        sgpb.AllowedAddressPair(ip="10.0.0.200")])
    assert twin.allowed_address_pairs[0].ip == "10.0.0.200"


BAD_PORTS: list[tuple[str, dict[str, Any], str]] = [
    ("group id", {"security_group_ids": ["web"]}, "port.security_group_ids[0]"),
    ("group twice", {"security_group_ids": ["{web}", "{web}"]}, "port.security_group_ids"),
    ("too many groups", {"security_group_ids": [OTHER_ID] * 17}, "port.security_group_ids"),
    ("pair ip", {"allowed_address_pairs": [sgpb.AllowedAddressPair(ip="10.0.0.999")]},
     "port.allowed_address_pairs[0].ip"),
    ("pair ip host bits", {"allowed_address_pairs": [sgpb.AllowedAddressPair(
        ip="10.0.0.9/24")]}, "port.allowed_address_pairs[0].ip"),
    ("pair everything", {"allowed_address_pairs": [sgpb.AllowedAddressPair(ip="0.0.0.0/0")]},
     "port.allowed_address_pairs[0].ip"),
    ("pair multicast mac", {"allowed_address_pairs": [sgpb.AllowedAddressPair(
        ip="10.0.0.200", mac="01:00:5e:00:00:01")]}, "port.allowed_address_pairs[0].mac"),
    ("pair twice", {"allowed_address_pairs": [sgpb.AllowedAddressPair(ip="10.0.0.200")] * 2},
     "port.allowed_address_pairs"),
    ("too many pairs", {"allowed_address_pairs": [sgpb.AllowedAddressPair(
        ip=f"10.0.0.{200 + i}") for i in range(11)]}, "port.allowed_address_pairs"),
    ("pair over the other port", {"allowed_address_pairs": [sgpb.AllowedAddressPair(
        ip="{other}")]}, "port.allowed_address_pairs[0].ip"),
    ("pair network over the other port", {"allowed_address_pairs": [sgpb.AllowedAddressPair(
        ip="10.0.0.0/28")]}, "port.allowed_address_pairs[0].ip"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_PORTS, ids=[c[0] for c in BAD_PORTS])
def test_bad_port_security_is_refused_naming_the_field_and_nothing_is_created(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], case: str, fields: dict[str, Any], field: str
) -> None:
    _, api = acme
    net = net_of(api)
    web = new_group(api, "web")
    other = port_on(api, net, name="other", ip="10.0.0.5")
    ids = [web.id if i == "{web}" else i for i in fields.get("security_group_ids", [])]
    if ids:
        fields = {**fields, "security_group_ids": ids}
    pairs = fields.get("allowed_address_pairs")
    if pairs:
        fields = {**fields, "allowed_address_pairs": [
            sgpb.AllowedAddressPair(ip=other.ip if p.ip == "{other}" else p.ip, mac=p.mac)
            for p in pairs]}
    before = counts(cloud)
    err = rpc_error(lambda: port_on(api, net, name="new", **fields))
    assert err.code() == Code.INVALID_ARGUMENT, case
    assert field in bad_fields(err), (case, bad_fields(err))
    assert counts(cloud) == before
    # The same on an update of an existing port: nothing changes.
    mine = port_on(api, net, name="mine", ip="10.0.0.20")
    err = rpc_error(lambda: api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=mine.id, **fields), update_mask=FieldMask(paths=list(fields)))))
    assert err.code() == Code.INVALID_ARGUMENT, case
    got = api.GetPort(pb.GetPortRequest(id=mine.id))
    assert (list(got.security_group_ids), list(got.allowed_address_pairs)) == ([], [])


def test_a_port_asking_for_an_address_in_another_ports_pair_is_refused(
    cloud: Cloud, acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    net = net_of(api)
    port_on(api, net, name="lb1", allowed_address_pairs=[
        sgpb.AllowedAddressPair(ip="10.0.0.200")])
    before = counts(cloud)
    err = rpc_error(lambda: port_on(api, net, name="thief", ip="10.0.0.200"))
    assert bad_fields(err) == ["port.ip"]
    assert counts(cloud) == before


BAD_GROUPS: list[tuple[str, dict[str, str], str]] = [
    ("empty name", {"name": ""}, "security_group.name"),
    ("bad name", {"name": "web servers"}, "security_group.name"),
    ("long name", {"name": "w" * 64}, "security_group.name"),
    ("description", {"name": "ok", "description": "a\nb"}, "security_group.description"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_GROUPS, ids=[c[0] for c in BAD_GROUPS])
def test_bad_groups_are_refused_naming_the_field(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], case: str, fields: dict[str, str], field: str
) -> None:
    _, api = acme
    groups(api)
    before = counts(cloud)
    err = rpc_error(lambda: api.CreateSecurityGroup(sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(**fields))))
    assert bad_fields(err) == [field], case
    assert counts(cloud) == before
    new_group(api, "web")
    err = rpc_error(lambda: new_group(api, "web"))
    assert err.code() == Code.ALREADY_EXISTS
