"""A valid router config for unit tests, edge rules to add to it, and what the
services render for a config (with a known host, nothing probed)."""

from __future__ import annotations

from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import redundancy_pb2 as rpb

from router.services.base import KnownHost, Rendered, RouterPaths
from router.services.registry import router_services


def good_config() -> pb.RouterConfig:
    return pb.RouterConfig(
        router_id="3f2b8c1e-router", generation=5,
        interfaces=[
            pb.Interface(name="pub0", role=pb.INTERFACE_ROLE_PUBLIC, mac="02:00:00:00:00:10",
                         addresses=["203.0.113.10/24"], segment_id=0),
            pb.Interface(name="g-net1", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:01",
                         addresses=["10.10.0.1/24"], segment_id=100, mtu=1450),
        ],
        routes=[pb.Route(destination="0.0.0.0/0", gateway="203.0.113.1", interface="pub0")],
        guest_networks=[pb.GuestNetwork(
            network_id="net1", interface="g-net1", cidr="10.10.0.0/24", gateway="10.10.0.1",
            domain="tenant.test", domain_search=["tenant.test", "corp.test"], mtu=1450,
            lease_seconds=3600,
            hosts=[
                pb.DhcpHost(port_id="p1", mac="02:AA:00:00:00:11", ip="10.10.0.11",
                            hostname="vm1"),
                pb.DhcpHost(port_id="p2", mac="02:aa:00:00:00:12", ip="10.10.0.12",
                            hostname="web-2"),
            ],
        )],
        dns=pb.Dns(upstream_servers=["198.51.100.10", "198.51.100.11"]),
        source_nats=[pb.SourceNat(network_id="net1", source_cidr="10.10.0.0/24",
                                  public_ip="203.0.113.10", public_interface="pub0")],
    )


# Where a unit test's router lives (nothing is written there: render is pure).
PATHS = RouterPaths("/var/lib/cloudnet/agent/routers/3f2b8c1e-router")
# A host with kernel ESP whose nf_tables looks maps up as sets (nothing probed).
HOST = KnownHost()


def render(service: str, cfg: pb.RouterConfig) -> Rendered:
    """What the router service named ``service`` renders for ``cfg`` (fresh objects)."""
    return {s.name: s for s in router_services(HOST)}[service].render(cfg, PATHS)


# ---- edge rules -------------------------------------------------------------------

PUB = "203.0.113.20"


def edge_config(**extra: list[Any]) -> pb.RouterConfig:
    """good_config() with the public IP PUB and the edge objects given by field."""
    cfg = good_config()
    cfg.interfaces[[i.role for i in cfg.interfaces].index(pb.INTERFACE_ROLE_PUBLIC)] \
        .addresses.append(f"{PUB}/32")
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip=PUB, interface="pub0"))
    for key, values in extra.items():
        getattr(cfg, key).extend(values)
    return cfg


def fwd(i: int = 1, **kw: Any) -> pb.PortForwardRule:
    f: dict[str, Any] = dict(id=f"pf{i}", public_ip=PUB, protocol="tcp", public_port_start=80,
                             public_port_end=80, private_ip="10.10.0.5", private_port_start=8080,
                             private_port_end=8080)
    f.update(kw)
    return pb.PortForwardRule(**f)


# ---- a redundant router's instance ------------------------------------------------

SYNC_SEGMENT = 4000


def redundant(cfg: pb.RouterConfig, instance: int, priority: int = 0,
              sync_segment: int = SYNC_SEGMENT, vrid: int = 51) -> pb.RouterConfig:
    """``cfg`` as instance 0 (intended master) or 1 of a redundant router: its
    own MACs (the last byte's high nibble is the instance), a sync link
    169.254.0.1-2/30 on ``sync_segment``, its priority (200 / 100 by default)."""
    out = pb.RouterConfig()
    out.CopyFrom(cfg)
    for i in out.interfaces:
        i.mac = i.mac[:-2] + f"{(int(i.mac[-2:], 16) + 0x40 * instance) % 256:02x}"
    out.interfaces.append(pb.Interface(
        name="sync0", role=pb.INTERFACE_ROLE_SYNC, mac=f"02:00:00:00:fe:{instance + 1:02x}",
        addresses=[f"169.254.0.{instance + 1}/30"], segment_id=sync_segment))
    out.redundancy.CopyFrom(rpb.Redundancy(
        virtual_router_id=vrid, priority=priority or (200 if instance == 0 else 100),
        instance=instance,
        role_hint="master" if instance == 0 else "backup", sync_interface="sync0",
        peer_address=f"169.254.0.{2 - instance}"))
    return out
