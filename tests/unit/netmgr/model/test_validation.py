"""Validation rules, table-driven: pure functions, no server."""

from __future__ import annotations

import dataclasses

import pytest

from common.grpc_errors import InvalidArgument
from netmgr.model.core import Network
from netmgr.model.field_rules import requested_ip_problem
from netmgr.model.validation import (
    NETWORK_UPDATABLE,
    NetworkSpec,
    NetworkUpdate,
    PortSpec,
    PortUpdate,
    check_id,
    check_network_placement,
    check_network_spec,
    check_network_update,
    check_port_spec,
    check_port_update,
    check_tenant_name,
    check_zone,
    default_hostname,
    resolve_update_mask,
    with_network_defaults,
)
from netmgr.store.base import DEFAULT_ZONE

NET_ID = "5b0c6f3e-2b8a-4c41-9d0e-3f7a2d9c1e55"


def fields_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


def net(**kw: object) -> NetworkSpec:
    return dataclasses.replace(NetworkSpec(name="web", cidr="10.0.0.0/24"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [
    net(),
    net(name="a", cidr="10.0.0.0/16"),
    net(name="A.b_c-9", cidr="192.168.8.0/29"),
    net(gateway="10.0.0.254"),
    net(domain="Corp.Example"),
    net(dns_servers=("1.1.1.1", "8.8.8.8", "9.9.9.9")),
    net(domain_search=("a.example",) * 6),
    net(mtu=576), net(mtu=9000), net(mtu=0),
    net(lease_seconds=120), net(lease_seconds=31536000),
])
def test_good_networks(spec: NetworkSpec) -> None:
    check_network_spec(spec)


@pytest.mark.parametrize(("spec", "field"), [
    (net(name=""), "network.name"),
    (net(name="x" * 64), "network.name"),
    (net(name="-web"), "network.name"),
    (net(name="web\nx"), "network.name"),
    (net(name="web x"), "network.name"),
    (net(cidr="10.0.0.0/33"), "network.cidr"),
    (net(cidr="10.0.0.1/24"), "network.cidr"),  # host bits set
    (net(cidr="10.0.0.0/15"), "network.cidr"),
    (net(cidr="10.0.0.0/30"), "network.cidr"),
    (net(cidr="10.0.0.0"), "network.cidr"),
    (net(cidr="fd00::/64"), "network.cidr"),
    (net(cidr="banana"), "network.cidr"),
    (net(cidr="169.254.0.0/24"), "network.cidr"),
    (net(cidr="127.0.0.0/24"), "network.cidr"),
    (net(cidr="224.0.0.0/24"), "network.cidr"),
    (net(cidr="10.0.0.0/24\n"), "network.cidr"),
    (net(gateway="10.0.1.1"), "network.gateway"),
    (net(gateway="10.0.0.0"), "network.gateway"),
    (net(gateway="10.0.0.255"), "network.gateway"),
    (net(gateway="nope"), "network.gateway"),
    (net(domain="-bad.example"), "network.domain"),
    (net(domain="bad_.example"), "network.domain"),
    (net(domain="a..b"), "network.domain"),
    (net(domain=("a" * 63 + ".") * 4 + "com"), "network.domain"),
    (net(domain="x.example\nserver=1.2.3.4"), "network.domain"),
    (net(dns_servers=("1.1.1.1",) * 4), "network.dns_servers"),
    (net(dns_servers=("224.0.0.1",)), "network.dns_servers[0]"),
    (net(dns_servers=("1.1.1.1", "x")), "network.dns_servers[1]"),
    (net(domain_search=("a.example",) * 7), "network.domain_search"),
    (net(domain_search=("bad domain",)), "network.domain_search[0]"),
    (net(mtu=575), "network.mtu"),
    (net(mtu=9001), "network.mtu"),
    (net(lease_seconds=119), "network.lease_seconds"),
    (net(lease_seconds=31536001), "network.lease_seconds"),
])
def test_bad_networks_name_the_field(spec: NetworkSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_network_spec(spec)
    assert field in fields_of(exc)
    message = str(exc.value)
    assert message.startswith(f"{fields_of(exc)[0]}: ")
    assert "\n" not in message
    assert message.isprintable()


def test_all_violations_are_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_network_spec(net(name="", cidr="x", mtu=1))
    assert fields_of(exc) == ["network.name", "network.cidr", "network.mtu"]


def test_network_defaults() -> None:
    spec = check_network_spec(net(name="My.Web_Net", cidr="10.9.0.0/24"))
    assert spec.lease_seconds == 86400
    full = with_network_defaults(spec, "acme", DEFAULT_ZONE)
    assert full.gateway == "10.9.0.1"
    assert full.domain == "my-web-net.acme.cloud.internal"


def _network(cidr: str, name: str = "other") -> Network:
    import datetime as dt

    return Network(id=NET_ID, tenant_id="t", name=name, cidr=cidr, gateway="", domain="",
                   dns_servers=(), domain_search=(), mtu=0, lease_seconds=0, vlan_id=1,
                   source_nat_ip="", router_id="", created_at=dt.datetime.now(dt.UTC))


@pytest.mark.parametrize(("cidr", "others", "problem"), [
    ("10.0.0.0/24", [], None),
    ("10.0.1.0/24", ["10.0.0.0/24"], None),
    ("10.0.0.0/24", ["10.0.0.0/24"], "overlaps network 'other'"),
    ("10.0.0.0/16", ["10.0.200.0/24"], "overlaps network 'other'"),
    ("10.0.0.128/29", ["10.0.0.0/24"], "overlaps network 'other'"),
    ("10.0.1.0/24", ["10.0.0.0/23"], "overlaps network 'other'"),
    ("10.0.2.0/24", ["10.0.0.0/23"], None),
    ("10.0.1.255/32", ["10.0.0.0/23"], "overlaps network 'other'"),
    ("10.0.2.0/32", ["10.0.0.0/23"], None),
    ("10.0.0.0/8", ["192.168.0.0/24", "10.255.255.248/29"], "overlaps network 'other'"),
    ("203.0.113.0/28", [], "public network"),
])
def test_placement(cidr: str, others: list[str], problem: str | None) -> None:
    found = check_network_placement(cidr, DEFAULT_ZONE, [_network(o) for o in others])
    if problem is None:
        assert found == []
    else:
        assert found[0].field == "network.cidr"
        assert problem in found[0].reason


def test_placement_reads_only_id_name_and_cidr_of_the_others() -> None:
    """The store hands rows of three columns, not whole networks."""
    from typing import NamedTuple

    class Placed(NamedTuple):
        id: str
        name: str
        cidr: str

    found = check_network_placement("10.0.0.0/24", DEFAULT_ZONE,
                                    [Placed(NET_ID, "web", "10.0.0.64/26")])
    assert found[0].reason == f"10.0.0.0/24 overlaps network 'web' ({NET_ID}, 10.0.0.64/26)"


@pytest.mark.parametrize(("hostname", "ok"), [
    ("vm1", True), ("a", True), ("A-b-9", True), ("x" * 63, True),
    ("", True),  # empty: derived later
    ("x" * 64, False), ("-vm", False), ("vm-", False), ("vm_1", False), ("vm.example", False),
    ("vm\n1", False), ("vm 1", False), ("vm'1", False), ('vm"1', False), ("vm;reboot", False),
    ("$(reboot)", False), ("vm\x00", False), ("é", False),
    ("router", False), ("Router", False),  # router.<domain> is the router itself
    ("routers", True),
])
def test_port_hostnames(hostname: str, ok: bool) -> None:
    spec = PortSpec(network_id=NET_ID, hostname=hostname)
    if ok:
        assert check_port_spec(spec).hostname == hostname.lower()
    else:
        with pytest.raises(InvalidArgument) as exc:
            check_port_spec(spec)
        assert fields_of(exc) == ["port.hostname"]


@pytest.mark.parametrize(("spec", "field"), [
    (PortSpec(network_id="nope"), "port.network_id"),
    (PortSpec(network_id=""), "port.network_id"),
    (PortSpec(network_id=NET_ID, mac="01:00:5e:00:00:01"), "port.mac"),  # multicast
    (PortSpec(network_id=NET_ID, mac="00:00:00:00:00:00"), "port.mac"),
    (PortSpec(network_id=NET_ID, mac="02:00:00:00:00"), "port.mac"),
    (PortSpec(network_id=NET_ID, mac="02-00-00-00-00-01"), "port.mac"),
    (PortSpec(network_id=NET_ID, ip="10.0.0.256"), "port.ip"),
    (PortSpec(network_id=NET_ID, ip="10.0.0.1\n"), "port.ip"),
    (PortSpec(network_id=NET_ID, device_id="vm 1"), "port.device_id"),
    (PortSpec(network_id=NET_ID, device_id="x" * 65), "port.device_id"),
    (PortSpec(network_id=NET_ID, name="a\nb"), "port.name"),
    (PortSpec(network_id=NET_ID, name="a\tb"), "port.name"),
    (PortSpec(network_id=NET_ID, name="x" * 65), "port.name"),
])
def test_bad_ports(spec: PortSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_port_spec(spec)
    assert fields_of(exc) == [field]


def test_port_normalisation() -> None:
    spec = check_port_spec(PortSpec(network_id=NET_ID, mac="02:AA:bb:CC:dd:EE",
                                    name="Web server #1", device_id="vm-1:a.b_c"))
    assert spec.network_id == NET_ID
    assert spec.mac == "02:aa:bb:cc:dd:ee"
    # IDs are not normalised: one form only (lower case), anything else refused.
    with pytest.raises(InvalidArgument) as exc:
        check_port_spec(PortSpec(network_id=NET_ID.upper()))
    assert fields_of(exc) == ["port.network_id"]


@pytest.mark.parametrize(("ip", "problem"), [
    ("10.0.0.5", None),
    ("10.0.0.254", None),
    ("10.0.1.5", "not inside"),
    ("10.0.0.0", "network or broadcast"),
    ("10.0.0.255", "network or broadcast"),
    ("10.0.0.1", "gateway"),
])
def test_requested_ip(ip: str, problem: str | None) -> None:
    found = requested_ip_problem(ip, "10.0.0.0/24", "10.0.0.1")
    assert (found is None) if problem is None else (problem in (found or ""))


@pytest.mark.parametrize(("name", "ip", "expected"), [
    ("web1", "10.0.0.5", "web1"),
    ("Web1", "10.0.0.5", "web1"),
    ("web server", "10.0.0.5", "host-10-0-0-5"),
    ("", "10.0.0.5", "host-10-0-0-5"),
    ("-x", "10.0.0.5", "host-10-0-0-5"),
])
def test_default_hostname(name: str, ip: str, expected: str) -> None:
    assert default_hostname(name, ip) == expected


@pytest.mark.parametrize(("value", "ok"), [
    ("5b0c6f3e-2b8a-4c41-9d0e-3f7a2d9c1e55", True),
    ("5B0C6F3E-2B8A-4C41-9D0E-3F7A2D9C1E55", False),
    ("", False), ("5b0c6f3e", False), ("{5b0c6f3e-2b8a-4c41-9d0e-3f7a2d9c1e55}", False),
    ("5b0c6f3e-2b8a-4c41-9d0e-3f7a2d9c1e55\n", False), ("../etc/passwd", False),
])
def test_ids(value: str, ok: bool) -> None:
    if ok:
        assert check_id(value) == value.lower()
    else:
        with pytest.raises(InvalidArgument) as exc:
            check_id(value)
        assert fields_of(exc) == ["id"]


@pytest.mark.parametrize(("name", "ok"), [
    ("acme", True), ("a", True), ("acme-2", True), ("9lives", True),
    ("", False), ("Acme", False), ("-acme", False), ("ac me", False), ("a" * 64, False),
    ("acme\n", False), ("acme_1", False),
])
def test_tenant_names(name: str, ok: bool) -> None:
    if ok:
        check_tenant_name(name)
    else:
        with pytest.raises(InvalidArgument):
            check_tenant_name(name)


@pytest.mark.parametrize(("changes", "field"), [
    ({"vlan_min": 0}, "zone.vlan_min"),
    ({"vlan_max": 5000}, "zone.vlan_max"),
    ({"vlan_min": 500, "vlan_max": 400}, "zone.vlan_max"),
    ({"public_cidr": "203.0.113.0/33"}, "zone.public_cidr"),
    ({"public_gateway": "198.51.100.1"}, "zone.public_gateway"),
    ({"public_pool_start": "203.0.113.200", "public_pool_end": "203.0.113.100"},
     "zone.public_pool_end"),
    ({"upstream_dns": ("x",)}, "zone.upstream_dns[0]"),
    ({"domain_suffix": "bad suffix"}, "zone.domain_suffix"),
    ({"name": "zone\n1"}, "zone.name"),
])
def test_bad_zones(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_zone(dataclasses.replace(DEFAULT_ZONE, **changes))  # type: ignore[arg-type]
    assert field in fields_of(exc)


def test_updates() -> None:
    assert check_network_update(NetworkUpdate(lease_seconds=0)).lease_seconds == 86400
    with pytest.raises(InvalidArgument):
        check_network_update(NetworkUpdate(name="bad name"))
    with pytest.raises(InvalidArgument):
        check_port_update(PortUpdate(hostname="bad;host"))
    assert check_port_update(PortUpdate(hostname="VM2")).hostname == "vm2"


@pytest.mark.parametrize(("paths", "present", "expected"), [
    ([], {"name", "mtu", "cidr"}, {"name", "mtu"}),
    (["mtu"], {"name"}, {"mtu"}),
    (["name", "dns_servers"], set(), {"name", "dns_servers"}),
])
def test_update_masks(paths: list[str], present: set[str], expected: set[str]) -> None:
    assert resolve_update_mask(paths, NETWORK_UPDATABLE, present) == expected


@pytest.mark.parametrize("paths", [["cidr"], ["vlan_id"], ["nonsense"], ["name", "gateway"]])
def test_update_mask_refuses_immutable_and_unknown_paths(paths: list[str]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        resolve_update_mask(paths, NETWORK_UPDATABLE, set())
    assert fields_of(exc) == ["update_mask"]
