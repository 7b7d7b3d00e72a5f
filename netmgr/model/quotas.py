"""Quotas: how many objects of each kind a tenant may hold.

A limit is a zone-wide default or a tenant's override of it (the override
wins); no limit set means unlimited. ``public_ips`` counts every address a
tenant holds from the zone's pool, the source-NAT address of each network
and VPC included: that pool is what one tenant could otherwise drain.
"""

from __future__ import annotations

import dataclasses

from common.grpc_errors import InvalidArgument, quote

# The resources with a quota, in the order they are shown.
RESOURCES = (
    "networks", "vpcs", "ports", "public_ips", "load_balancers",
    "static_nats", "port_forwards", "firewall_rules",
    "network_acls", "acl_rules", "static_routes", "private_gateways",
    "vpn_gateways", "customer_gateways", "vpn_connections",
)
UNLIMITED = -1
MAX_LIMIT = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    resource: str
    # UNLIMITED (-1) or the most objects the tenant may hold.
    limit: int
    used: int
    # The limit is the tenant's own (else the zone-wide default, or none).
    overridden: bool = False


def check_resource(resource: str, field: str = "resource") -> str:
    if resource not in RESOURCES:
        raise InvalidArgument.one(field, f"{quote(resource)} is not a quota; one of "
                                         f"{', '.join(RESOURCES)}")
    return resource


def check_limit(limit: int, field: str = "limit") -> int:
    if limit != UNLIMITED and not 0 <= limit <= MAX_LIMIT:
        raise InvalidArgument.one(field, f"must be -1 (unlimited) or 0 to {MAX_LIMIT} "
                                         f"(got {limit})")
    return limit
