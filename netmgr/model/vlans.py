"""The zone's VLAN plan: which provider VLANs networks and private gateways
may take.

Three disjoint sets: the guest range (``vlan_min``-``vlan_max``, one VLAN
per network), the private gateway range (``private_gateway_vlan_min``-
``private_gateway_vlan_max``, allocated to tenants' private gateways; 0-0:
none) and the reserved VLANs (the fabric's own: the provider segment, the
router-VM control network). A private gateway is a router interface on a
provider VLAN, so a VLAN a tenant could pick freely would put its router on
another network's wire: tenants never pick one, the admin may, and nobody
gets a guest or reserved VLAN.
"""

from __future__ import annotations

from common.grpc_errors import Violation
from netmgr.model.core import Zone

VLAN_MIN, VLAN_MAX = 1, 4094
MAX_RESERVED_VLANS = 64


def _in(vlan: int, lo: int, hi: int) -> bool:
    return lo <= vlan <= hi


def zone_vlan_violations(zone: Zone, prefix: str = "zone") -> list[Violation]:
    """Every problem of the zone's three VLAN sets, each naming its field."""
    v: list[Violation] = []
    guest_ok = True
    for fld in ("vlan_min", "vlan_max"):
        value = getattr(zone, fld)
        if not VLAN_MIN <= value <= VLAN_MAX:
            v.append(Violation(f"{prefix}.{fld}", f"{value} is not {VLAN_MIN}-{VLAN_MAX}"))
            guest_ok = False
    if guest_ok and zone.vlan_min > zone.vlan_max:
        v.append(Violation(f"{prefix}.vlan_max", "the VLAN range ends before it starts"))
        guest_ok = False
    reserved = zone.reserved_vlans
    if len(reserved) > MAX_RESERVED_VLANS:
        v.append(Violation(f"{prefix}.reserved_vlans", f"more than {MAX_RESERVED_VLANS}"))
        reserved = ()
    for vlan in reserved:
        if not VLAN_MIN <= vlan <= VLAN_MAX:
            v.append(Violation(f"{prefix}.reserved_vlans", f"{vlan} is not {VLAN_MIN}-{VLAN_MAX}"))
        elif guest_ok and _in(vlan, zone.vlan_min, zone.vlan_max):
            # Either side may be the one that changed: both are named.
            bound = "vlan_min" if vlan == zone.vlan_min else "vlan_max"
            v.append(Violation(f"{prefix}.reserved_vlans", f"{vlan} is in the guest range "
                               f"{zone.vlan_min}-{zone.vlan_max}"))
            v.append(Violation(f"{prefix}.{bound}", f"the guest range {zone.vlan_min}-"
                               f"{zone.vlan_max} holds reserved VLAN {vlan}"))
    lo, hi = zone.private_gateway_vlan_min, zone.private_gateway_vlan_max
    if (lo, hi) == (0, 0):
        return v
    pg_ok = True
    for fld, value in (("private_gateway_vlan_min", lo), ("private_gateway_vlan_max", hi)):
        if not VLAN_MIN <= value <= VLAN_MAX:
            v.append(Violation(f"{prefix}.{fld}", f"{value} is not {VLAN_MIN}-{VLAN_MAX} "
                               "(both 0: no private gateway range)"))
            pg_ok = False
    if not pg_ok:
        return v
    if lo > hi:
        v.append(Violation(f"{prefix}.private_gateway_vlan_max",
                           "the private gateway range ends before it starts"))
        return v
    if guest_ok and lo <= zone.vlan_max and zone.vlan_min <= hi:
        v.append(Violation(f"{prefix}.private_gateway_vlan_min",
                           f"the private gateway range {lo}-{hi} overlaps the guest range "
                           f"{zone.vlan_min}-{zone.vlan_max}"))
    clash = sorted(r for r in reserved if _in(r, lo, hi))
    if clash:
        v.append(Violation(f"{prefix}.private_gateway_vlan_max",
                           f"the private gateway range {lo}-{hi} holds reserved VLAN "
                           f"{clash[0]}"))
    return v


def private_gateway_vlan_problem(vlan: int, zone: Zone) -> str:
    """Why a named VLAN cannot carry a private gateway ("" if it can)."""
    if not VLAN_MIN <= vlan <= VLAN_MAX:
        return f"{vlan} is not {VLAN_MIN}-{VLAN_MAX}"
    if _in(vlan, zone.vlan_min, zone.vlan_max):
        return f"{vlan} is in the zone's guest VLAN range {zone.vlan_min}-{zone.vlan_max}"
    if vlan in zone.reserved_vlans:
        return f"{vlan} is reserved by the fabric (zone.reserved_vlans)"
    return ""


def private_gateway_range(zone: Zone) -> range:
    """The VLANs allocated to private gateways, reserved ones left out by the
    zone's check (empty when the zone has no range)."""
    if zone.private_gateway_vlan_min == 0:
        return range(0)
    return range(zone.private_gateway_vlan_min, zone.private_gateway_vlan_max + 1)
