"""The config builder: model snapshot in, router desired state out (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from netmgr.model.core import (
    Network,
    Port,
    Router,
    RouterBackend,
    RouterSnapshot,
    Status,
    Zone,
)
from netmgr.reconcile.configbuild.router import build_router_config, guest_interface_name

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ZONE = Zone("zone1", "203.0.113.0/24", "203.0.113.1", "203.0.113.10", "203.0.113.250",
            100, 999, ("198.51.100.53",), "cloud.internal")
NET = Network(
    id="6f1c2a9e-0000-4000-8000-000000000001", tenant_id="t1", name="web",
    cidr="10.1.1.0/24", gateway="10.1.1.1", domain="web.demo.cloud.internal",
    dns_servers=(), domain_search=("demo.cloud.internal",), mtu=1400, lease_seconds=3600,
    vlan_id=101, source_nat_ip="203.0.113.10", router_id="r1", created_at=NOW)
ROUTER = Router(
    id="r1", tenant_id="t1", network_id=NET.id, backend=RouterBackend.NETNS, host="local",
    desired_generation=7, applied_generation=5, public_mac="02:00:00:00:00:01",
    guest_mac="02:00:00:00:00:02", services=(), last_error="", reachable=True, updated_at=NOW)


def port(n: int, ip: str) -> Port:
    return Port(status=Status(id=f"p{n}", tenant_id="t1", generation=3, error="", created_at=NOW),
                network_id=NET.id, name=f"vm{n}", mac=f"02:00:00:00:01:{n:02x}", ip=ip,
                hostname=f"vm{n}", device_id="")


def snapshot(*ports: Port, **router_changes) -> RouterSnapshot:
    return RouterSnapshot(router=dataclasses.replace(ROUTER, **router_changes),
                          networks=(NET,), ports=ports, zone=ZONE)


def test_interfaces_carry_addresses_macs_and_segments():
    cfg = build_router_config(snapshot())
    by_role = {i.role: i for i in cfg.interfaces}
    public, guest = by_role[pb.INTERFACE_ROLE_PUBLIC], by_role[pb.INTERFACE_ROLE_GUEST]
    assert list(public.addresses) == ["203.0.113.10/24"]
    assert public.mac == ROUTER.public_mac
    assert public.segment_id == 0
    assert list(guest.addresses) == ["10.1.1.1/24"]
    assert guest.mac == ROUTER.guest_mac
    assert guest.segment_id == NET.vlan_id
    assert guest.mtu == 1400
    assert guest.network_id == NET.id
    assert len(guest.name) <= 15


def test_default_route_via_zone_gateway_and_snat_to_network_ip():
    cfg = build_router_config(snapshot())
    assert [(r.destination, r.gateway) for r in cfg.routes] == [("0.0.0.0/0", "203.0.113.1")]
    (snat,) = cfg.source_nats
    assert (snat.source_cidr, snat.public_ip) == ("10.1.1.0/24", "203.0.113.10")
    assert snat.public_interface in {i.name for i in cfg.interfaces}


def test_dhcp_hosts_are_the_ports_in_address_order():
    cfg = build_router_config(snapshot(port(2, "10.1.1.20"), port(1, "10.1.1.3")))
    (gn,) = cfg.guest_networks
    assert [(h.port_id, h.ip, h.hostname) for h in gn.hosts] == [
        ("p1", "10.1.1.3", "vm1"), ("p2", "10.1.1.20", "vm2")]
    assert gn.interface == guest_interface_name(NET.id)
    assert (gn.domain, gn.lease_seconds, list(gn.domain_search)) == (
        NET.domain, 3600, ["demo.cloud.internal"])
    assert list(cfg.dns.upstream_servers) == ["198.51.100.53"]


def test_generation_is_the_routers_desired_generation():
    assert build_router_config(snapshot(desired_generation=42)).generation == 42


def test_pure_same_snapshot_same_bytes_whatever_the_port_order():
    a = build_router_config(snapshot(port(1, "10.1.1.3"), port(2, "10.1.1.4")))
    b = build_router_config(snapshot(port(2, "10.1.1.4"), port(1, "10.1.1.3")))
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@pytest.mark.parametrize("net_id", ["6f1c2a9e-0000-4000-8000-000000000001", "abcdef01-2345"])
def test_guest_interface_names_fit_ifnamsiz(net_id):
    name = guest_interface_name(net_id)
    assert len(name) <= 15
    assert name.isascii()
    assert " " not in name
