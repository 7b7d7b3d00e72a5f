"""Reading rows as model objects: the joined queries and the conversions.

A network's router ID and source-NAT IP, a router's public IP and a port's
state are not columns of their own table; these selects join them in, one
query per list page (no per-row look-ups). ``status`` reads the status
envelope every object a router serves shares.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Row, Select, and_, or_, select
from sqlalchemy.orm import Session

from common.dhcp_options import DhcpOption
from netmgr.model import core as model
from netmgr.model.ipv6_rules import ipv6_gateway
from netmgr.model.paging import Page, PageRequest, encode_token
from netmgr.model.vpc import DEFAULT_ALLOW_ID
from netmgr.store.tables.core import (
    PUBLIC_IP_SOURCE_NAT,
    NetworkRow,
    PortRow,
    PublicIpRow,
    RouterRow,
    TenantRow,
    TokenRow,
    ZoneRow,
)

# A VPC tier's router and source-NAT address are its VPC's.
_SNAT_JOIN = and_(
    or_(PublicIpRow.network_id == NetworkRow.id, PublicIpRow.vpc_id == NetworkRow.vpc_id),
    PublicIpRow.kind == PUBLIC_IP_SOURCE_NAT,
)
ROUTER_OF_NETWORK = or_(RouterRow.network_id == NetworkRow.id,
                        RouterRow.vpc_id == NetworkRow.vpc_id)


T = TypeVar("T")


def aware(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC)


class StatusRow(Protocol):
    """The status columns (``tables.base.StatusColumns``) of a row or a select."""

    @property
    def id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def generation(self) -> int: ...

    @property
    def error(self) -> str: ...

    @property
    def created_at(self) -> dt.datetime: ...


def status(row: StatusRow, applied: int | None = None) -> model.Status:
    """The status envelope of a row; its state is judged against ``applied``,
    the generation the serving router has applied (None: not judged, as in a
    router snapshot, which is what the router is about to apply)."""
    if applied is None:
        return model.Status(row.id, row.tenant_id, row.generation, row.error,
                            aware(row.created_at))
    return model.Status(row.id, row.tenant_id, row.generation, row.error,
                        aware(row.created_at),
                        model.object_state(row.generation, row.error, applied), applied)


def tenant(row: TenantRow) -> model.Tenant:
    return model.Tenant(id=row.id, name=row.name, created_at=aware(row.created_at))


def token(row: TokenRow) -> model.Token:
    return model.Token(id=row.id, tenant_id=row.tenant_id, name=row.name,
                       created_at=aware(row.created_at),
                       expires_at=aware(row.expires_at) if row.expires_at else None,
                       read_only=bool(row.read_only))


def zone(row: ZoneRow) -> model.Zone:
    return model.Zone(
        name=row.name,
        public_cidr=row.public_cidr,
        public_gateway=row.public_gateway,
        public_pool_start=row.public_pool_start,
        public_pool_end=row.public_pool_end,
        vlan_min=row.vlan_min,
        vlan_max=row.vlan_max,
        upstream_dns=tuple(row.upstream_dns),
        domain_suffix=row.domain_suffix,
        private_gateway_vlan_min=row.private_gateway_vlan_min,
        private_gateway_vlan_max=row.private_gateway_vlan_max,
        reserved_vlans=tuple(row.reserved_vlans),
        ipv6_pool=row.ipv6_pool or "",
        routed_pool=row.routed_pool or "",
        public_cidr6=row.public_cidr6 or "",
        public_gateway6=row.public_gateway6 or "",
        bgp_asn=row.bgp_asn or 0,
        bgp_peers=tuple(model.BgpPeer(str(p["address"]), int(p["asn"]))
                        for p in row.bgp_peers or ()),
    )


# --------------------------------------------------------------- networks


def network_select() -> Select[NetworkRow, str, str | None]:
    return (
        select(NetworkRow, RouterRow.id, PublicIpRow.ip)
        .join(RouterRow, ROUTER_OF_NETWORK)
        .outerjoin(PublicIpRow, _SNAT_JOIN)
    )


def network(r: Row[NetworkRow, str, str | None] | tuple[NetworkRow, str, str | None]
            ) -> model.Network:
    row, router_id, snat_ip = r
    return model.Network(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        cidr=row.cidr,
        gateway=row.gateway,
        domain=row.domain,
        dns_servers=tuple(row.dns_servers),
        domain_search=tuple(row.domain_search),
        mtu=row.mtu,
        lease_seconds=row.lease_seconds,
        vlan_id=row.vlan_id,
        source_nat_ip=snat_ip or "",
        router_id=router_id,
        created_at=aware(row.created_at),
        vpc_id=row.vpc_id or "",
        router_mac=row.router_mac or "",
        acl_id=(row.acl_id or DEFAULT_ALLOW_ID) if row.vpc_id else "",
        shared=bool(row.shared),
        shared_tenant_ids=tuple(row.shared_tenant_ids or ()),
        ipv6_cidr=row.ipv6_cidr or "",
        ipv6_gateway=ipv6_gateway(row.ipv6_cidr) if row.ipv6_cidr else "",
        ipv6_mode=model.Ipv6Mode(row.ipv6_mode or ""),
        routed=bool(row.routed),
    )


# ----------------------------------------------------------------- routers


def router_select() -> Select[RouterRow, str | None]:
    return select(RouterRow, PublicIpRow.ip).outerjoin(
        PublicIpRow,
        and_(or_(PublicIpRow.network_id == RouterRow.network_id,
                 PublicIpRow.vpc_id == RouterRow.vpc_id),
             PublicIpRow.kind == PUBLIC_IP_SOURCE_NAT),
    )


def router(r: Row[RouterRow, str | None]) -> model.Router:
    row, public_ip = r
    return model.Router(
        id=row.id,
        tenant_id=row.tenant_id,
        network_id=row.network_id or "",
        backend=model.RouterBackend(row.backend),
        host=row.host,
        desired_generation=row.desired_generation,
        applied_generation=row.applied_generation,
        public_mac=row.public_mac,
        guest_mac=row.guest_mac,
        services=tuple(
            model.ServiceHealth(str(s["name"]), bool(s["healthy"]), str(s.get("detail", "")),
                                str(s.get("version", "")))
            for s in row.services
        ),
        last_error=row.last_error,
        reachable=row.reachable,
        updated_at=aware(row.updated_at),
        public_ip=public_ip or "",
        vpc_id=row.vpc_id or "",
    )


# ------------------------------------------------------------------- ports


def port_select() -> Select[PortRow, str, int, str]:
    return (
        select(PortRow, RouterRow.id, RouterRow.applied_generation, NetworkRow.domain)
        .join(NetworkRow, NetworkRow.id == PortRow.network_id)
        .join(RouterRow, ROUTER_OF_NETWORK)
    )


def port(r: Row[PortRow, str, int, str] | tuple[PortRow, str, int, str]) -> model.Port:
    row, router_id, applied, domain = r
    return model.Port(
        status=status(row, applied),
        network_id=row.network_id,
        name=row.name,
        mac=row.mac,
        ip=row.ip,
        hostname=row.hostname,
        device_id=row.device_id,
        router_id=router_id,
        fqdn=f"{row.hostname}.{domain}",
        user_data=bytes(row.user_data or b""),
        labels=tuple(sorted((row.labels or {}).items())),
        ssh_key_pair_id=row.ssh_key_pair_id or "",
        security_group_ids=tuple(row.security_group_ids or ()),
        port_security=bool(row.port_security),
        allowed_address_pairs=tuple(model.AddressPair(p["ip"], p.get("mac", ""))
                                    for p in row.allowed_address_pairs or ()),
        binding_host=row.binding_host or "",
        ipv6=row.ipv6 or "",
        metadata_tokens=row.metadata_tokens or "optional",
        dhcp_options=tuple(DhcpOption(int(str(o["number"])), str(o["type"]),
                                      tuple(str(x) for x in o["values"]))  # type: ignore[attr-defined]
                           for o in row.dhcp_options or ()),
    )


# ---------------------------------------------------------------- paging


def paged(session: Session, stmt: Any, table: Any, page: PageRequest,
          convert: Callable[[Any], T]) -> Page[T]:
    """One page of ``stmt`` in (created_at, id) order of ``table``."""
    if page.after is not None:
        c = page.after
        stmt = stmt.where(or_(
            table.created_at > c.created_at,
            and_(table.created_at == c.created_at, table.id > c.id),
        ))
    stmt = stmt.order_by(table.created_at, table.id).limit(page.size + 1)
    rows: Sequence[Any] = session.execute(stmt).all()
    items = tuple(convert(r) for r in rows[: page.size])
    next_token = ""
    if len(rows) > page.size:
        last = rows[page.size - 1][0]  # the table's row is first in every select
        next_token = encode_token(last.created_at, last.id)
    return Page(items=items, next_page_token=next_token)


def paged_rows(session: Session, stmt: Any, table: Any, page: PageRequest,
               convert: Callable[[Any], T]) -> Page[T]:
    """``paged`` for a select of one table's rows: ``convert`` takes the row."""
    return paged(session, stmt, table, page, lambda r: convert(r[0]))
