"""Network creates that do not wait for each other (PostgreSQL).

A network create used to lock the zone's row (``SELECT ... FOR UPDATE``)
for its whole transaction, commit included, so that VLAN and source-NAT
address allocation and the tenant's overlap check saw no concurrent create:
every network create of the zone ran one after the other. A plain network
(not shared, no IPv6 or routed prefix to allocate) now takes the zone row
``FOR SHARE`` (it still waits for a zone update, a shared network or an
allocator that locks the zone exclusively) and instead:

* picks the lowest free VLAN and public address that no concurrent create
  is trying, with transaction-level advisory try-locks (the "SKIP LOCKED"
  way: a value another create holds is skipped, never waited for; the
  unique constraints stay the last word);
* serialises only the overlap checks that could conflict: advisory locks on
  the tenant's address space by prefix, exclusive on the network's own
  block (a /8, /16 or /24 boundary) and shared on the blocks that contain
  it, so two creates of overlapping networks wait for each other and
  disjoint ones do not.

Advisory keys are single bigints (a namespace in the high bits); the shard
leases use the two-int form, which PostgreSQL keeps apart.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

_NS_VLAN = 0x434E01
_NS_PUBLIC_IP = 0x434E02
LEVELS = (0, 8, 16, 24)


def postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _key(ns: int, value: int) -> int:
    return (ns << 32) | (value & 0xFFFFFFFF)  # ns < 2**31: a positive bigint


def first_unclaimed(s: Session, candidates: Iterable[int], ns: int) -> int | None:
    """The first candidate no concurrent transaction has claimed; claimed
    now until this transaction ends."""
    for c in candidates:
        if s.scalar(select(func.pg_try_advisory_xact_lock(_key(ns, c)))):
            return c
    return None


def claim_vlan(s: Session, free: Iterable[int]) -> int | None:
    return first_unclaimed(s, free, _NS_VLAN)


def claim_public_ip(s: Session, free: Iterable[int]) -> int | None:
    return first_unclaimed(s, free, _NS_PUBLIC_IP)


def _space_key(tenant_id: str, level: int, block: str) -> int:
    digest = hashlib.blake2b(f"{tenant_id}/{level}/{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_address_space(s: Session, tenant_id: str, cidr: str) -> None:
    """Until the transaction ends: no concurrent create of an overlapping
    network of this tenant checks its overlaps (see the module's doc)."""
    net = ipaddress.ip_network(cidr, strict=False)
    own = max(level for level in LEVELS if level <= net.prefixlen)
    for level in LEVELS:
        if level > own:
            break
        block = net.supernet(new_prefix=level) if level < net.prefixlen else net
        fn = func.pg_advisory_xact_lock if level == own else func.pg_advisory_xact_lock_shared
        s.execute(select(fn(_space_key(tenant_id, level, str(block)))))
