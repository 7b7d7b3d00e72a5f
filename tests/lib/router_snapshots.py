"""A router snapshot of one network (the model's input to the config builder),
with ports made to order: the reconciler's unit tests build configs from it."""

from __future__ import annotations

import dataclasses
import datetime as dt

from netmgr.model.core import (
    Network,
    Port,
    Router,
    RouterBackend,
    RouterSnapshot,
    Status,
    Zone,
)

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
