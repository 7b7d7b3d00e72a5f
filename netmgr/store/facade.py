"""The network manager's store: one transaction per API call, model objects out.

Every tenant-facing method takes the caller's tenant ID and treats another
tenant's object exactly like a missing one (NotFound), so existence never
leaks. Every change to what a router serves (networks, ports) bumps the
router's ``desired_generation`` in the same transaction, and the changed
port records that generation: the API derives PENDING/ACTIVE from it.

Writes are retried whole when they hit a unique constraint (a concurrent
writer took the same VLAN, IP or MAC first); a retry re-reads and picks the
next free value, or reports ALREADY_EXISTS if the user asked for that value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, NotFound
from netmgr.model import core as model
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import (
    NetworkSpec,
    NetworkUpdate,
    check_id,
    check_network_placement,
    check_network_spec,
    check_network_update,
    check_tenant_name,
    check_token_name,
    check_zone,
    raise_if,
    with_network_defaults,
)
from netmgr.store import ipam, rows
from netmgr.store.base import new_id, zone_columns
from netmgr.store.tables.core import (
    PUBLIC_IP_SOURCE_NAT,
    NetworkRow,
    PortRow,
    PublicIpRow,
    RouterRow,
    TenantRow,
    TokenRow,
    utcnow,
)
from netmgr.store.vpcs import VpcStore
from netmgr.store.vpn import VpnStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# Zone fields whose change alters what every router serves.
TOKEN_PREFIX = "cn_"
ZONE_FIELDS_ROUTERS_SERVE = ("public_cidr", "public_gateway", "upstream_dns")


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store(VpcStore):
    """Tenants, tokens, zone, networks and routers (ports: ``PortStore``; public IPs
    and rules: ``EdgeStore``; load balancers: ``LoadBalancerStore``; the edge
    of a router snapshot and its status: ``EdgeRouterStore``; ACLs:
    ``AclStore``; VPCs and tiers: ``VpcStore``)."""

    # --------------------------------------------------------------- tenants

    def create_tenant(self, name: str) -> model.Tenant:
        name = check_tenant_name(name)

        def tx(s: Session) -> model.Tenant:
            if s.scalar(select(TenantRow.id).where(TenantRow.name == name)) is not None:
                raise AlreadyExists("name", f"a tenant named {name!r} already exists")
            row = TenantRow(id=new_id(), name=name, created_at=utcnow())
            s.add(row)
            s.flush()
            return rows.tenant(row)

        return self._write(tx)

    def get_tenant(self, tenant_id: str) -> model.Tenant:
        return self._read(lambda s: rows.tenant(self._tenant_row(s, tenant_id, "id")))

    def list_tenants(self, page: PageRequest) -> Page[model.Tenant]:
        return self._read(lambda s: rows.paged(
            s, select(TenantRow), TenantRow, page, lambda r: rows.tenant(r[0])))

    def delete_tenant(self, tenant_id: str) -> None:
        def tx(s: Session) -> None:
            row = self._tenant_row(s, tenant_id, "id")
            count = s.scalar(select(func.count()).where(NetworkRow.tenant_id == row.id))
            if count:
                raise FailedPrecondition(
                    f"tenant {row.name!r} still owns {count} network(s); delete them first")
            self._check_no_vpcs(s, row)
            s.execute(delete(TenantRow).where(TenantRow.id == row.id))  # tokens cascade

        self._write(tx)

    # ---------------------------------------------------------------- tokens

    def create_token(self, tenant_id: str, name: str) -> tuple[model.Token, str]:
        """A new bearer token; the secret is returned once and only its hash kept."""
        name = check_token_name(name)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def tx(s: Session) -> model.Token:
            tenant = self._tenant_row(s, tenant_id)
            row = TokenRow(id=new_id(), tenant_id=tenant.id, name=name,
                           secret_sha256=secret_digest(secret), created_at=utcnow())
            s.add(row)
            s.flush()
            return rows.token(row)

        return self._write(tx), secret

    def list_tokens(self, tenant_id: str, page: PageRequest) -> Page[model.Token]:
        """The tokens of one tenant, or of all tenants when ``tenant_id`` is empty."""
        def tx(s: Session) -> Page[model.Token]:
            stmt = select(TokenRow)
            if tenant_id:
                stmt = stmt.where(TokenRow.tenant_id == self._tenant_row(s, tenant_id).id)
            return rows.paged(s, stmt, TokenRow, page, lambda r: rows.token(r[0]))

        return self._read(tx)

    def delete_token(self, token_id: str) -> None:
        def tx(s: Session) -> None:
            row = s.get(TokenRow, check_id(token_id))
            if row is None:
                raise NotFound(f"token {token_id} not found")
            s.delete(row)

        self._write(tx)

    def token_for_secret(self, secret: str) -> model.Token | None:
        """The token whose secret this is, or None."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        digest = secret_digest(secret)

        def tx(s: Session) -> model.Token | None:
            row = s.scalars(select(TokenRow).where(TokenRow.secret_sha256 == digest)).first()
            # The index lookup already matched; compare anyway in constant time
            # so no timing depends on the stored value.
            if row is None or not hmac.compare_digest(row.secret_sha256, digest):
                return None
            return rows.token(row)

        return self._read(tx)

    # ------------------------------------------------------------------ zone

    def get_zone(self) -> model.Zone:
        return self._read(lambda s: rows.zone(self._zone_row(s)))

    def update_zone(self, changes: Mapping[str, Any]) -> tuple[model.Zone, tuple[str, ...]]:
        """Apply ``changes`` (Zone field -> value). Returns the zone and the
        routers whose generation was bumped (to notify after commit)."""

        def tx(s: Session) -> tuple[model.Zone, tuple[str, ...]]:
            row = self._zone_row(s, lock=True)
            old = rows.zone(row)
            new = check_zone(dataclasses.replace(old, **changes))
            self._check_zone_in_use(s, new)
            for key, value in zone_columns(new).items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            bumped: tuple[str, ...] = ()
            if any(getattr(old, f) != getattr(new, f) for f in ZONE_FIELDS_ROUTERS_SERVE):
                bumped = tuple(s.scalars(select(RouterRow.id)))
                for router_id in bumped:
                    self._bump(s, router_id)
            return new, bumped

        return self._write(tx)

    def _check_zone_in_use(self, s: Session, zone: model.Zone) -> None:
        out = sorted(v for v in s.scalars(select(NetworkRow.vlan_id))
                     if not zone.vlan_min <= v <= zone.vlan_max)
        if out:
            raise FailedPrecondition(
                f"zone.vlan_min: VLAN IDs in use fall outside {zone.vlan_min}-{zone.vlan_max}: "
                f"{', '.join(map(str, out[:5]))}")
        start = ipaddress.IPv4Address(zone.public_pool_start)
        end = ipaddress.IPv4Address(zone.public_pool_end)
        ips = [ip for ip in s.scalars(select(PublicIpRow.ip))
               if not start <= ipaddress.IPv4Address(ip) <= end]
        if ips:
            raise FailedPrecondition(
                f"zone.public_pool_start: public addresses in use fall outside the pool: "
                f"{', '.join(sorted(ips)[:5])}")
        public = ipaddress.IPv4Network(zone.public_cidr)
        for net_id, cidr in s.execute(select(NetworkRow.id, NetworkRow.cidr)):
            if public.overlaps(ipaddress.IPv4Network(cidr)):
                raise FailedPrecondition(
                    f"zone.public_cidr: {zone.public_cidr} overlaps network {net_id} ({cidr})")

    # -------------------------------------------------------------- networks

    def create_network(self, tenant_id: str, spec: NetworkSpec) -> model.Network:
        """Create a network with its VLAN, source-NAT IP and router (generation 1)."""
        spec = check_network_spec(spec)
        if spec.vpc_id:
            return self.create_tier(tenant_id, spec)

        def tx(s: Session) -> model.Network:
            zone = rows.zone(self._zone_row(s, lock=True))
            tenant = self._tenant_row(s, tenant_id)
            full = with_network_defaults(spec, tenant.name, zone)
            others = [rows.network(r) for r in s.execute(
                rows.network_select().where(NetworkRow.tenant_id == tenant.id))]
            raise_if(check_network_placement(full.cidr, zone, others))
            now = utcnow()
            network_id, router_id = new_id(), new_id()
            s.add(NetworkRow(
                id=network_id, tenant_id=tenant.id, name=full.name, cidr=full.cidr,
                gateway=full.gateway, domain=full.domain, dns_servers=list(full.dns_servers),
                domain_search=list(full.domain_search), mtu=full.mtu,
                lease_seconds=full.lease_seconds, vlan_id=ipam.allocate_vlan(s, zone),
                created_at=now, updated_at=now))
            s.add(PublicIpRow(
                id=new_id(), ip=ipam.allocate_public_ip(s, zone), kind=PUBLIC_IP_SOURCE_NAT,
                tenant_id=tenant.id, network_id=network_id, created_at=now))
            public_mac = ipam.allocate_mac(s)
            guest_mac = ipam.allocate_mac(s)
            while guest_mac == public_mac:
                guest_mac = ipam.allocate_mac(s)
            s.add(RouterRow(
                id=router_id, tenant_id=tenant.id, network_id=network_id,
                backend=self.default_backend.value,
                host=self.default_host if self.default_backend == model.RouterBackend.NETNS else "",
                desired_generation=1, applied_generation=0, public_mac=public_mac,
                guest_mac=guest_mac, services=[], last_error="", reachable=True,
                created_at=now, updated_at=now))
            s.flush()
            ipam.claim_mac(s, public_mac, router_id=router_id, field="router.public_mac")
            ipam.claim_mac(s, guest_mac, router_id=router_id, field="router.guest_mac")
            s.flush()
            return self._network(s, network_id)

        return self._write(tx)

    def get_network(self, tenant_id: str, network_id: str) -> model.Network:
        def tx(s: Session) -> model.Network:
            return self._network(s, self._network_row(s, tenant_id, network_id).id)

        return self._read(tx)

    def list_networks(self, tenant_id: str, page: PageRequest) -> Page[model.Network]:
        stmt = rows.network_select().where(NetworkRow.tenant_id == tenant_id)
        return self._read(lambda s: rows.paged(s, stmt, NetworkRow, page, rows.network))

    def update_network(self, tenant_id: str, network_id: str,
                       upd: NetworkUpdate) -> model.Network:
        upd = check_network_update(upd)

        def tx(s: Session) -> model.Network:
            row = self._network_row(s, tenant_id, network_id, "network.id")
            changed = False
            for f in dataclasses.fields(upd):
                value = getattr(upd, f.name)
                if value is None:
                    continue
                if isinstance(value, tuple):
                    value = list(value)
                if getattr(row, f.name) != value:
                    setattr(row, f.name, value)
                    changed = True
            if changed:
                row.updated_at = utcnow()
                self._bump(s, self._router_of(s, row.id))
            s.flush()
            return self._network(s, row.id)

        return self._write(tx)

    def delete_network(self, tenant_id: str, network_id: str, *,
                       force: bool = False) -> model.Network:
        """Delete a network, its router, VLAN and source-NAT IP (and with
        ``force`` its ports). Returns what was deleted."""

        def tx(s: Session) -> model.Network:
            row = self._network_row(s, tenant_id, network_id)
            gone = self._network(s, row.id)
            ports = s.scalar(select(func.count()).where(PortRow.network_id == row.id))
            if ports and not force:
                raise FailedPrecondition(
                    f"network {row.id} has {ports} port(s); delete them or set force")
            if row.vpc_id:
                self._drop_tier(s, row)
            # Ports, the router, MACs and public IPs go by ON DELETE CASCADE.
            s.execute(delete(NetworkRow).where(NetworkRow.id == row.id))
            return gone

        return self._write(tx)

    # --------------------------------------------------------------- routers

    def get_router(self, tenant_id: str, router_id: str) -> model.Router:
        def tx(s: Session) -> model.Router:
            r = s.execute(rows.router_select().where(
                RouterRow.id == check_id(router_id), RouterRow.tenant_id == tenant_id)).first()
            if r is None:
                raise NotFound(f"router {router_id} not found")
            return rows.router(r)

        return self._read(tx)

    def restart_router(self, tenant_id: str, router_id: str) -> model.Router:
        """Bump the router's generation for a rebuild, so that it reads
        PROVISIONING until the rebuilt router has applied it."""

        def tx(s: Session) -> model.Router:
            r = s.execute(rows.router_select().where(
                RouterRow.id == check_id(router_id), RouterRow.tenant_id == tenant_id)).first()
            if r is None:
                raise NotFound(f"router {router_id} not found")
            self._bump(s, router_id)
            return rows.router(s.execute(
                rows.router_select().where(RouterRow.id == router_id)).one())

        return self._write(tx)

    def list_routers(self, tenant_id: str, page: PageRequest) -> Page[model.Router]:
        stmt = rows.router_select().where(RouterRow.tenant_id == tenant_id)
        return self._read(lambda s: rows.paged(s, stmt, RouterRow, page, rows.router))

    def list_routers_all(self) -> list[model.Router]:
        """Every router of every tenant (for the reconciler)."""
        stmt = rows.router_select().order_by(RouterRow.created_at, RouterRow.id)
        return self._read(lambda s: [rows.router(r) for r in s.execute(stmt)])

    def router_snapshot(self, router_id: str) -> model.RouterSnapshot:
        """The router and everything it serves, from one consistent read."""

        def tx(s: Session) -> model.RouterSnapshot:
            r = s.execute(rows.router_select().where(RouterRow.id == router_id)).first()
            if r is None:
                raise NotFound(f"router {router_id} not found")
            router = rows.router(r)
            net_ids = self._router_network_ids(s, router.id)
            networks = tuple(rows.network(n) for n in s.execute(
                rows.network_select().where(NetworkRow.id.in_(net_ids))))
            ports = tuple(rows.port(p) for p in s.execute(
                rows.port_select().where(PortRow.network_id.in_(net_ids))
                .order_by(PortRow.created_at, PortRow.id)))
            return model.RouterSnapshot(router=router, networks=networks, ports=ports,
                                        zone=rows.zone(self._zone_row(s)),
                                        edge=self._edge_snapshot(s, net_ids),
                                        vpc=self._vpc_snapshot(s, router),
                                        vpn=VpnStore(self).tunnels(s, net_ids))

        return self._read(tx)

    def record_router_status(
        self,
        router_id: str,
        *,
        applied_generation: int,
        services: Sequence[model.ServiceHealth],
        last_error: str,
        port_errors: Mapping[str, str],
        reachable: bool,
    ) -> None:
        """Store what the router's agent reports. The applied generation is
        taken as reported, even lower than before (an agent that lost its
        state holds less, and must be re-pushed). A router deleted meanwhile
        is ignored."""

        def tx(s: Session) -> None:
            row = s.get(RouterRow, router_id)
            if row is None:
                log.debug("status for deleted router %s ignored", router_id)
                return
            row.applied_generation = applied_generation
            row.services = [dataclasses.asdict(h) for h in services]
            row.last_error = last_error
            row.reachable = reachable
            row.updated_at = utcnow()
            net_ids = self._router_network_ids(s, row.id)
            for port in s.scalars(select(PortRow).where(PortRow.network_id.in_(net_ids))):
                error = port_errors.get(port.id, "")
                if port.error != error:
                    port.error = error

        self._write(tx)

    def mark_router_unreachable(self, router_id: str, error: str) -> None:
        def tx(s: Session) -> None:
            row = s.get(RouterRow, router_id)
            if row is None:
                return
            if row.reachable or row.last_error != error:
                row.reachable = False
                row.last_error = error
                row.updated_at = utcnow()

        self._write(tx)

