"""VPC domain objects: the VPC, and what a VPC router serves beyond its tiers
(network ACLs, static routes)."""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True, slots=True)
class Vpc:
    id: str
    tenant_id: str
    name: str
    cidr: str
    domain: str
    created_at: dt.datetime
    router_id: str = ""
    source_nat_ip: str = ""
    tier_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class VpcSnapshot:
    """The VPC of a VPC router, read in the router snapshot's transaction."""

    vpc: Vpc
