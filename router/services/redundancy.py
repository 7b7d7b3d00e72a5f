"""What the keepalived and conntrackd services share of a redundant router's
config: its verification and the values both render.

A redundant router has two instances on two hosts, each with the whole
config; the ``redundancy`` section says which instance this is (its VRRP
priority) and names the sync link between the two (an interface of role
SYNC, its address the instance's own). Every other address of the router
(the guests' gateways, the source-NAT address, the public IPs, private
gateways) and every route is a VRRP virtual address or route: keepalived
adds them on the master and removes them on the backup.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cloudnet.router.v1 import agent_pb2 as pb

from common import netlink
from router.errors import ConfigError
from router.lib import validate

DEFAULT_ADVERT_MS = 200
ROLE_HINTS = ("", "master", "backup")
# Addresses that move with the master: everything but the sync link's.
VIRTUAL_ROLES = (pb.INTERFACE_ROLE_GUEST, pb.INTERFACE_ROLE_PUBLIC,
                 pb.INTERFACE_ROLE_PRIVATE_GATEWAY)


@dataclass(frozen=True)
class SyncLink:
    """The link between the two instances, as this instance sees it."""

    interface: str
    local: ipaddress.IPv4Interface
    peer: ipaddress.IPv4Address


def verify(cfg: pb.RouterConfig) -> None:
    syncs = [i for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_SYNC]
    if not cfg.HasField("redundancy"):
        if syncs:
            raise ConfigError(f"interface {syncs[0].name!r}: a sync link needs a redundancy "
                              "section")
        return
    r = cfg.redundancy
    if not 1 <= r.virtual_router_id <= 255:
        raise ConfigError(f"redundancy: virtual router ID {r.virtual_router_id} is not 1-255")
    if not 1 <= r.priority <= 254:
        raise ConfigError(f"redundancy: priority {r.priority} is not 1-254")
    if r.role_hint not in ROLE_HINTS:
        raise ConfigError(f"redundancy: role hint {r.role_hint[:16]!r} is not master or backup")
    if r.instance not in (0, 1):
        raise ConfigError(f"redundancy: instance {r.instance} is not 0 or 1")
    ms = r.advert_interval_ms
    if ms and not (50 <= ms <= 1000 and ms % 10 == 0):
        raise ConfigError(f"redundancy: advert interval {ms} ms is not 50-1000 in steps of 10")
    if len(syncs) != 1 or syncs[0].name != r.sync_interface:
        raise ConfigError(f"redundancy: sync interface {r.sync_interface[:16]!r} is not the "
                          "router's one interface of role SYNC")
    sync = syncs[0]
    if len(sync.addresses) != 1:
        raise ConfigError(f"interface {sync.name!r}: a sync link has exactly one address")
    local = validate.parse_ipv4_interface(f"interface {sync.name!r}", sync.addresses[0])
    peer = validate.parse_ipv4("redundancy: peer address", r.peer_address)
    if peer not in local.network or peer == local.ip:
        raise ConfigError(f"redundancy: peer address {peer} is not another address of "
                          f"the sync link {local.network}")
    if not any(a for i in cfg.interfaces if i.role in VIRTUAL_ROLES for a in i.addresses):
        raise ConfigError("redundancy: the router has no address to move")


def sync_link(cfg: pb.RouterConfig) -> SyncLink:
    """The sync link of a verified redundant config."""
    r = cfg.redundancy
    sync = next(i for i in cfg.interfaces if i.name == r.sync_interface)
    return SyncLink(sync.name, ipaddress.IPv4Interface(sync.addresses[0]),
                    ipaddress.IPv4Address(r.peer_address))


def virtual_addresses(cfg: pb.RouterConfig) -> list[tuple[ipaddress.IPv4Interface, str]]:
    """Every address that moves with the master, and its interface, in order."""
    return [(ipaddress.IPv4Interface(a), i.name)
            for i in sorted(cfg.interfaces, key=lambda i: (i.role, i.name))
            if i.role in VIRTUAL_ROLES for a in i.addresses]


def tracked_interfaces(cfg: pb.RouterConfig) -> list[str]:
    """The links whose loss puts the instance in FAULT: the uplink and every
    guest-facing one (a master that lost one would black-hole its traffic)."""
    return sorted(i.name for i in cfg.interfaces if i.role in VIRTUAL_ROLES)


def advert_seconds(cfg: pb.RouterConfig) -> str:
    ms = cfg.redundancy.advert_interval_ms or DEFAULT_ADVERT_MS
    return f"{ms / 1000:.2f}"


def holds_virtual(netns: str, cfg: pb.RouterConfig) -> bool:
    """Whether the instance in ``netns`` holds the router's first virtual
    address (the master does: keepalived adds them all together)."""
    vips = virtual_addresses(cfg)
    if not vips:
        return False
    address, dev = vips[0]
    link = netlink.find_link_by_name(netns, dev)
    if link is None:
        return False
    return address in netlink.ipv4_addresses(netns, link.index)
