"""A port's guest metadata replaced by an edge delta (kind ``guest-metadata``).

The nftables table does not change: the (interface, MAC, IP) check and
nginx's config stay as they are, so a delta may only replace the metadata of
a guest the router already serves with the same interface, MAC, IP and token
setting. Anything else (a new guest, a moved address, tokens turned on) is
refused as stale and goes as a full push.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router.errors import StaleDelta

GUEST_METADATA = "guest-metadata"

_FIXED = ("interface", "mac", "ip", "tokens_required")


def replacements(cfg: pb.RouterConfig, delta: epb.EdgeDelta) -> list[mpb.GuestMetadata]:
    """The delta's guest metadata, checked against ``cfg`` (StaleDelta if it
    cannot be applied in place)."""
    named = {r.id for r in delta.removed if r.kind == GUEST_METADATA}
    given = {g.port_id for g in delta.guest_metadata}
    if named != given:
        raise StaleDelta("guest metadata named and given differ")
    current = {g.port_id: g for g in cfg.guest_metadata}
    for g in delta.guest_metadata:
        old = current.get(g.port_id)
        if old is None:
            raise StaleDelta(f"no guest metadata for port {g.port_id}")
        if any(getattr(old, f) != getattr(g, f) for f in _FIXED):
            raise StaleDelta(f"port {g.port_id}: its address or token setting changed")
    return list(delta.guest_metadata)


def put(cfg: pb.RouterConfig, items: Sequence[mpb.GuestMetadata]) -> None:
    """Replace the guests' entries in place (the config's order kept)."""
    by_port = {g.port_id: g for g in items}
    for entry in cfg.guest_metadata:
        new = by_port.get(entry.port_id)
        if new is not None:
            entry.CopyFrom(new)
