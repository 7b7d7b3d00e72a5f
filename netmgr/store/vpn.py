"""VPN gateways, customer gateways and connections in the store.

A gateway sits on the router of a VPC (the VPC's CIDR is what the tunnels
carry) or of an isolated network (its CIDR); the router's source-NAT address
is the tunnels' local end. Customer
gateways are the tenant's remote sites and touch no router until a
connection uses one. Creating, resetting or deleting a connection bumps the
router's generation, and the connection records it (PENDING until the
router applied it), as edge rules do. Another tenant's objects are NotFound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, InvalidArgument
from netmgr.model import vpn as mv
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.model.validation_vpn import (
    CustomerGatewaySpec,
    check_customer_gateway,
    check_peer_cidrs,
)
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.secrets import SecretBox, SecretsKeyMismatch
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PUBLIC_IP_SOURCE_NAT, NetworkRow, PublicIpRow, RouterRow
from netmgr.store.tables.vpc import VpcRow
from netmgr.store.tables.vpn import CustomerGatewayRow, VpnConnectionRow, VpnGatewayRow

# ObjectStatus.kind of a connection in the router's status.
KIND_VPN_CONNECTION = "vpnconnection"


def _router(s: Session, gw: VpnGatewayRow) -> RouterRow:
    """The router carrying a gateway: its VPC's, or its network's."""
    where = (RouterRow.vpc_id == gw.vpc_id) if gw.vpc_id else (
        RouterRow.network_id == gw.network_id)
    return s.scalars(select(RouterRow).where(where)).one()


def _local(s: Session, gw: VpnGatewayRow) -> tuple[str, tuple[str, ...]]:
    """The gateway's public address and local networks: the IPv4 CIDR (its
    network's, or its VPC's), then the IPv6 /64s (its network's, or its
    VPC tiers')."""
    if gw.vpc_id:
        cidr = s.get_one(VpcRow, gw.vpc_id).cidr
        owner = PublicIpRow.vpc_id == gw.vpc_id
        of = NetworkRow.vpc_id == gw.vpc_id
    else:
        cidr = s.get_one(NetworkRow, gw.network_id).cidr
        owner = PublicIpRow.network_id == gw.network_id
        of = NetworkRow.id == gw.network_id
    ip = s.scalar(select(PublicIpRow.ip).where(owner, PublicIpRow.kind == PUBLIC_IP_SOURCE_NAT))
    v6 = s.scalars(select(NetworkRow.ipv6_cidr).where(of, NetworkRow.ipv6_cidr.is_not(None),
                                                      NetworkRow.ipv6_cidr != ""))
    return ip or "", (cidr, *sorted({c for c in v6 if c}, key=ipaddress.IPv6Network))


def _selectors(local: tuple[str, ...], peer: Iterable[str]) -> tuple[str, ...]:
    """The local networks a tunnel carries: IPv6 ones only to IPv6 peer networks."""
    if any(":" in c for c in peer):
        return local
    return tuple(c for c in local if ":" not in c)


def _gateway(s: Session, row: VpnGatewayRow) -> mv.VpnGateway:
    public_ip, cidrs = _local(s, row)
    return mv.VpnGateway(
        status=rows.status(row, _router(s, row).applied_generation), vpc_id=row.vpc_id or "",
        network_id=row.network_id or "", public_ip=public_ip, local_cidrs=cidrs)


def _customer_gateway(row: CustomerGatewayRow) -> mv.CustomerGateway:
    return mv.CustomerGateway(
        id=row.id, tenant_id=row.tenant_id, name=row.name, peer_address=row.peer_address,
        peer_cidrs=tuple(row.peer_cidrs), ike_version=row.ike_version,
        ike_proposals=tuple(row.ike_proposals), esp_proposals=tuple(row.esp_proposals),
        ike_lifetime=row.ike_lifetime, esp_lifetime=row.esp_lifetime,
        dpd_delay=row.dpd_delay, dpd_timeout=row.dpd_timeout, force_encap=row.force_encap,
        created_at=rows.aware(row.created_at))


def _connection(s: Session, row: VpnConnectionRow) -> mv.VpnConnection:
    gw = s.get_one(VpnGatewayRow, row.vpn_gateway_id)
    return mv.VpnConnection(
        status=rows.status(row, _router(s, gw).applied_generation),
        vpn_gateway_id=row.vpn_gateway_id, customer_gateway_id=row.customer_gateway_id,
        vpc_id=gw.vpc_id or "", network_id=gw.network_id or "", passive=row.passive,
        sa_status=dict(row.sa_status or {}))


def _router_of_connection(s: Session, row: VpnConnectionRow) -> str:
    return _router(s, s.get_one(VpnGatewayRow, row.vpn_gateway_id)).id


def _gateways_of(s: Session, network_ids: Iterable[str]) -> list[VpnGatewayRow]:
    """The gateways on the router serving these networks (its network's, or
    its VPC's: the networks are then the VPC's tiers)."""
    ids = list(network_ids)
    vpcs = select(NetworkRow.vpc_id).where(NetworkRow.id.in_(ids),
                                           NetworkRow.vpc_id.is_not(None))
    return list(s.scalars(select(VpnGatewayRow).where(
        or_(VpnGatewayRow.network_id.in_(ids), VpnGatewayRow.vpc_id.in_(vpcs)))))


def tunnels(s: Session, network_ids: Iterable[str],
            box: SecretBox) -> tuple[mv.VpnTunnel, ...]:
    """Every connection of the router serving these networks, for its
    RouterSnapshot (the keys opened with ``box``: the router needs them)."""
    out = []
    gws = {g.id: g for g in _gateways_of(s, network_ids)}
    for row in s.scalars(select(VpnConnectionRow)
                         .where(VpnConnectionRow.vpn_gateway_id.in_(list(gws)))
                         .order_by(VpnConnectionRow.id)):
        cgw = s.get_one(CustomerGatewayRow, row.customer_gateway_id)
        public_ip, local = _local(s, gws[row.vpn_gateway_id])
        out.append(mv.VpnTunnel(
            connection_id=row.id, local_address=public_ip, peer_address=cgw.peer_address,
            local_cidrs=_selectors(local, cgw.peer_cidrs), peer_cidrs=tuple(cgw.peer_cidrs),
            psk=box.open(cgw.psk_sealed, cgw.id),
            ike_version=cgw.ike_version, ike_proposals=tuple(cgw.ike_proposals),
            esp_proposals=tuple(cgw.esp_proposals), ike_lifetime=cgw.ike_lifetime,
            esp_lifetime=cgw.esp_lifetime, dpd_delay=cgw.dpd_delay,
            dpd_timeout=cgw.dpd_timeout, force_encap=cgw.force_encap, passive=row.passive,
            reset_serial=row.reset_serial))
    return tuple(out)


def _router_connections(s: Session, router_id: str) -> list[VpnConnectionRow]:
    router = s.get(RouterRow, router_id)
    if router is None:
        return []
    where = (VpnGatewayRow.vpc_id == router.vpc_id) if router.vpc_id else (
        VpnGatewayRow.network_id == router.network_id)
    gws = select(VpnGatewayRow.id).where(where)
    return list(s.scalars(select(VpnConnectionRow)
                          .where(VpnConnectionRow.vpn_gateway_id.in_(gws))))


class VpnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------ gateways

    def create_gateway(self, tenant_id: str, vpc_id: str, network_id: str) -> mv.VpnGateway:
        """On a VPC's router (vpc_id) or an isolated network's (network_id)."""
        if bool(vpc_id) == bool(network_id):
            raise InvalidArgument.one("vpn_gateway.vpc_id",
                                      "set exactly one of vpc_id and network_id")

        def tx(s: Session) -> mv.VpnGateway:
            if vpc_id:
                field = "vpn_gateway.vpc_id"
                vpc = shared.vpc_row(s, tenant_id, vpc_id, field)
                row = VpnGatewayRow(id=new_id(), tenant_id=tenant_id, vpc_id=vpc.id,
                                    network_id=None, generation=0, error="",
                                    created_at=utcnow())
                taken = VpnGatewayRow.vpc_id == vpc.id
            else:
                field = "vpn_gateway.network_id"
                net = shared.network_row(s, tenant_id, network_id, field)
                if net.vpc_id:
                    raise InvalidArgument.one(field, f"network {net.id} is a tier of VPC "
                                                     f"{net.vpc_id}: set vpc_id instead")
                row = VpnGatewayRow(id=new_id(), tenant_id=tenant_id, vpc_id=None,
                                    network_id=net.id, generation=0, error="",
                                    created_at=utcnow())
                taken = VpnGatewayRow.network_id == net.id
            if s.scalar(select(VpnGatewayRow.id).where(taken)):
                raise AlreadyExists(field, "this router already has a VPN gateway")
            if not _local(s, row)[0]:
                raise FailedPrecondition(f"{field}: the router has no public address")
            row.generation = _router(s, row).desired_generation
            s.add(row)
            s.flush()
            return _gateway(s, row)

        return self._db.write(tx)

    def get_gateway(self, tenant_id: str, gw_id: str) -> mv.VpnGateway:
        return self._db.read(lambda s: _gateway(
            s, shared.owned(s, VpnGatewayRow, tenant_id, gw_id, "VPN gateway")))

    def list_gateways(self, tenant_id: TenantScope, page: PageRequest) -> Page[mv.VpnGateway]:
        stmt = of_tenant(select(VpnGatewayRow), VpnGatewayRow.tenant_id, tenant_id)
        return self._db.read(lambda s: rows.paged_rows(s, stmt, VpnGatewayRow, page,
                                                       lambda r: _gateway(s, r)))

    def delete_gateway(self, tenant_id: str, gw_id: str) -> str:
        """Deletes the gateway and its connections; the router to notify ("" if none)."""

        def tx(s: Session) -> str:
            row = shared.owned(s, VpnGatewayRow, tenant_id, gw_id, "VPN gateway")
            conns = s.scalars(select(VpnConnectionRow)
                              .where(VpnConnectionRow.vpn_gateway_id == row.id)).all()
            router_id = ""
            if conns:
                router_id = _router(s, row).id
                shared.bump(s, router_id)
                for c in conns:
                    s.delete(c)
            s.delete(row)
            return router_id

        return self._db.write(tx)

    # --------------------------------------------------- customer gateways

    def create_customer_gateway(self, tenant_id: str,
                                spec: CustomerGatewaySpec) -> mv.CustomerGateway:
        spec = check_customer_gateway(spec)

        def tx(s: Session) -> mv.CustomerGateway:
            shared.tenant_row(s, tenant_id)
            row_id = new_id()
            row = CustomerGatewayRow(
                id=row_id, tenant_id=tenant_id, name=spec.name,
                peer_address=spec.peer_address, peer_cidrs=list(spec.peer_cidrs),
                psk_sealed=self._db.secrets.seal(spec.psk, row_id),
                ike_version=spec.ike_version, ike_proposals=list(spec.ike_proposals),
                esp_proposals=list(spec.esp_proposals), ike_lifetime=spec.ike_lifetime,
                esp_lifetime=spec.esp_lifetime, dpd_delay=spec.dpd_delay,
                dpd_timeout=spec.dpd_timeout, force_encap=spec.force_encap,
                created_at=utcnow())
            s.add(row)
            s.flush()
            return _customer_gateway(row)

        return self._db.write(tx)

    def get_customer_gateway(self, tenant_id: str, cgw_id: str) -> mv.CustomerGateway:
        return self._db.read(lambda s: _customer_gateway(
            shared.owned(s, CustomerGatewayRow, tenant_id, cgw_id, "customer gateway")))

    def list_customer_gateways(self, tenant_id: TenantScope,
                               page: PageRequest) -> Page[mv.CustomerGateway]:
        stmt = of_tenant(select(CustomerGatewayRow), CustomerGatewayRow.tenant_id, tenant_id)
        return self._db.read(lambda s: rows.paged_rows(s, stmt, CustomerGatewayRow, page,
                                                       _customer_gateway))

    def delete_customer_gateway(self, tenant_id: str, cgw_id: str) -> None:
        def tx(s: Session) -> None:
            row = shared.owned(s, CustomerGatewayRow, tenant_id, cgw_id, "customer gateway")
            used = s.scalar(select(VpnConnectionRow.id)
                            .where(VpnConnectionRow.customer_gateway_id == row.id).limit(1))
            if used:
                raise FailedPrecondition(
                    f"customer gateway {row.id} is used by VPN connection {used}; delete it first")
            s.delete(row)

        self._db.write(tx)

    # --------------------------------------------------------- connections

    def create_connection(self, tenant_id: str, gw_id: str, cgw_id: str,
                          passive: bool) -> mv.VpnConnection:
        def tx(s: Session) -> mv.VpnConnection:
            gw = shared.owned(s, VpnGatewayRow, tenant_id, gw_id, "VPN gateway",
                              "vpn_connection.vpn_gateway_id")
            cgw = shared.owned(s, CustomerGatewayRow, tenant_id, cgw_id, "customer gateway",
                               "vpn_connection.customer_gateway_id")
            public_ip, local = _local(s, gw)
            field = "vpn_connection.customer_gateway_id"
            check_peer_cidrs(cgw.peer_cidrs, local, field)
            if cgw.peer_address == public_ip:
                raise InvalidArgument.one(field, f"the peer address {public_ip} is the "
                                                 "gateway's own address")
            router_id = _router(s, gw).id
            gen = shared.bump(s, router_id)
            for other in s.scalars(select(VpnConnectionRow)
                                   .where(VpnConnectionRow.vpn_gateway_id == gw.id)):
                peer = s.get(CustomerGatewayRow, other.customer_gateway_id)
                assert peer is not None
                if peer.peer_address == cgw.peer_address:
                    raise AlreadyExists(field, f"connection {other.id} already joins this "
                                               f"gateway to {cgw.peer_address}")
                clash = _overlap(peer.peer_cidrs, cgw.peer_cidrs)
                if clash:
                    raise InvalidArgument.one(
                        field, f"peer CIDR {clash[1]} overlaps {clash[0]} of connection "
                               f"{other.id}")
            row = VpnConnectionRow(
                id=new_id(), tenant_id=tenant_id, vpn_gateway_id=gw.id,
                customer_gateway_id=cgw.id, passive=passive,
                reset_serial=0, generation=gen, error="", sa_status={}, created_at=utcnow())
            s.add(row)
            s.flush()
            return _connection(s, row)

        return self._db.write(tx)

    def get_connection(self, tenant_id: str, conn_id: str) -> mv.VpnConnection:
        return self._db.read(lambda s: _connection(
            s, shared.owned(s, VpnConnectionRow, tenant_id, conn_id, "VPN connection")))

    def list_connections(self, tenant_id: TenantScope, page: PageRequest,
                         gw_id: str = "") -> Page[mv.VpnConnection]:
        stmt = of_tenant(select(VpnConnectionRow), VpnConnectionRow.tenant_id, tenant_id)
        if gw_id:
            stmt = stmt.where(VpnConnectionRow.vpn_gateway_id == check_id(gw_id,
                                                                          "vpn_gateway_id"))
        return self._db.read(lambda s: rows.paged_rows(s, stmt, VpnConnectionRow, page,
                                                       lambda r: _connection(s, r)))

    def router_of_connection(self, conn: mv.VpnConnection) -> str:
        def tx(s: Session) -> str:
            row = s.get(VpnConnectionRow, conn.id)
            return _router_of_connection(s, row) if row is not None else ""

        return self._db.read(tx)

    def delete_connection(self, tenant_id: str, conn_id: str) -> str:
        def tx(s: Session) -> str:
            row = shared.owned(s, VpnConnectionRow, tenant_id, conn_id, "VPN connection")
            router_id = _router_of_connection(s, row)
            shared.bump(s, router_id)
            s.delete(row)
            return router_id

        return self._db.write(tx)

    def reset_connection(self, tenant_id: str, conn_id: str) -> tuple[mv.VpnConnection, str]:
        def tx(s: Session) -> tuple[mv.VpnConnection, str]:
            row = shared.owned(s, VpnConnectionRow, tenant_id, conn_id, "VPN connection")
            router_id = _router_of_connection(s, row)
            row.generation = shared.bump(s, router_id)
            row.reset_serial += 1
            row.error = ""
            s.flush()
            return _connection(s, row), router_id

        return self._db.write(tx)

    def check_secrets_key(self) -> None:
        """SecretsKeyMismatch unless the store's key opens the sealed keys
        (one tried: they are all sealed with the same key)."""

        def tx(s: Session) -> None:
            row = s.execute(select(CustomerGatewayRow.id, CustomerGatewayRow.psk_sealed)
                            .limit(1)).first()
            if row is None:
                return
            try:
                self._db.secrets.open(row.psk_sealed, row.id)
            except ValueError as e:
                raise SecretsKeyMismatch(
                    f"the database's VPN keys do not open with the secrets key "
                    f"{self._db.secrets.key_id} ({e}): start netmgr with the key file they "
                    "were sealed with (secrets_key_file)") from None

        self._db.read(tx)

    # ---------------------------------------------------------- router status

    def has_connections(self, router_id: str) -> bool:
        return self._db.read(lambda s: bool(_router_connections(s, router_id)))

    def routers_with_connections(self, router_ids: Collection[str]) -> set[str]:
        """Those of these routers whose network or VPC has a VPN connection
        (one read for a resync's reports, not one per router)."""
        ids = list(router_ids)

        def tx(s: Session) -> set[str]:
            out: set[str] = set()
            for chunk in shared.chunks(ids):
                gateway_of_router = or_(
                    and_(RouterRow.vpc_id.is_not(None), VpnGatewayRow.vpc_id == RouterRow.vpc_id),
                    and_(RouterRow.network_id.is_not(None),
                         VpnGatewayRow.network_id == RouterRow.network_id))
                out.update(s.scalars(
                    select(RouterRow.id).distinct()
                    .join(VpnGatewayRow, gateway_of_router)
                    .join(VpnConnectionRow, VpnConnectionRow.vpn_gateway_id == VpnGatewayRow.id)
                    .where(RouterRow.id.in_(chunk))))
            return out

        return self._db.read(tx) if ids else set()

    def record_status(self, router_id: str, errors: Mapping[str, str],
                      sa_status: Mapping[str, dict[str, Any]]) -> None:
        """The router's errors (connection ID -> reason) and SA states for its
        connections; connections not named are cleared."""

        def tx(s: Session) -> None:
            for row in _router_connections(s, router_id):
                err = errors.get(row.id, "")
                if row.error != err:
                    row.error = err
                st = sa_status.get(row.id, {})
                if (row.sa_status or {}) != st:
                    row.sa_status = st

        self._db.write(tx)


def _overlap(a: Iterable[str], b: Iterable[str]) -> tuple[str, str] | None:
    for x in a:
        for y in b:
            nx, ny = ipaddress.ip_network(x), ipaddress.ip_network(y)
            if nx.version == ny.version and nx.overlaps(ny):
                return x, y
    return None


def record_vpn_status(vpn: VpnStore, router_id: str, status: Any) -> None:
    """From a router.v1.RouterStatus: connection errors and SA states."""
    from google.protobuf.json_format import MessageToDict

    errors = {o.id: (o.error or "rejected by the router") for o in status.objects
              if not o.ok and o.kind == KIND_VPN_CONNECTION}
    if not errors and not status.vpn_connections \
            and not vpn.has_connections(router_id):
        return  # no VPN on this router: no write transaction
    now = utcnow().isoformat() + "Z"
    sas = {c.connection_id: {**MessageToDict(c, preserving_proto_field_name=True),
                             "update_time": now}
           for c in status.vpn_connections}
    vpn.record_status(router_id, errors, sas)
