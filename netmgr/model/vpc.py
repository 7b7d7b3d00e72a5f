"""VPC domain objects: the VPC, and what a VPC router serves beyond its tiers
(network ACLs, static routes)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from netmgr.model.core import ObjectState, Status, WithStatus


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
    """The VPC of a VPC router, read in the router snapshot's transaction:
    the lists its tiers use (with their rules) and each tier's list."""

    vpc: Vpc
    acls: tuple[NetworkAcl, ...] = ()
    # network ID -> ACL ID
    tier_acls: tuple[tuple[str, str], ...] = ()
    routes: tuple[StaticRoute, ...] = ()
    gateways: tuple[PrivateGateway, ...] = ()


ALLOW, DENY = "allow", "deny"
INGRESS, EGRESS = "ingress", "egress"


@dataclasses.dataclass(frozen=True, slots=True)
class AclRule(WithStatus):
    status: Status
    acl_id: str
    number: int
    action: str  # allow | deny
    direction: str  # ingress | egress
    protocol: str  # tcp | udp | icmp | all | "0".."255"
    port: int
    port_end: int
    icmp_type: int
    icmp_code: int
    cidrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkAcl:
    id: str
    vpc_id: str
    name: str
    description: str = ""
    builtin: bool = False
    network_ids: tuple[str, ...] = ()
    created_at: dt.datetime | None = None
    rules: tuple[AclRule, ...] = ()
    tenant_id: str = ""  # "" for the built-in lists, every tenant's


# The built-in lists: fixed IDs, in every VPC, not stored.
DEFAULT_ALLOW_ID = "00000000-0000-4000-8000-0000000000a1"
DEFAULT_DENY_ID = "00000000-0000-4000-8000-0000000000d1"


def _all(acl_id: str, number: int, direction: str) -> AclRule:
    status = Status(id=f"{acl_id[:-2]}{number:02x}", tenant_id="", generation=0, error="",
                    created_at=None, state=ObjectState.ACTIVE)
    return AclRule(status=status, acl_id=acl_id, number=number, action=ALLOW,
                   direction=direction, protocol="all", port=0, port_end=0, icmp_type=-1,
                   icmp_code=-1, cidrs=())


BUILTIN_ACLS = {
    DEFAULT_ALLOW_ID: NetworkAcl(
        id=DEFAULT_ALLOW_ID, vpc_id="", name="default_allow", builtin=True,
        description="allows all traffic into and out of the tier",
        rules=(_all(DEFAULT_ALLOW_ID, 1, INGRESS), _all(DEFAULT_ALLOW_ID, 2, EGRESS))),
    DEFAULT_DENY_ID: NetworkAcl(
        id=DEFAULT_DENY_ID, vpc_id="", name="default_deny", builtin=True,
        description="denies all traffic into and out of the tier (replies pass)"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class StaticRoute(WithStatus):
    status: Status
    vpc_id: str
    cidr: str
    next_hop: str
    via_id: str = ""  # the tier or private gateway holding the next hop


@dataclasses.dataclass(frozen=True, slots=True)
class PrivateGateway(WithStatus):
    status: Status
    vpc_id: str
    vlan_id: int
    address: str  # CIDR form: the router's address and the subnet
    gateway: str
    acl_id: str
    router_mac: str
