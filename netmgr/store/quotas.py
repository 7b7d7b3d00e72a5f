"""Quotas in the store: the limits, the usage, and the check every write
transaction runs before it flushes new rows.

The check is a ``before_flush`` hook on the write session
(``QuotaSession``), so every create path (a network, a VPC tier, a rule,
the source-NAT address a network takes) is counted without each repository
calling it. It is race-free: on PostgreSQL the tenant's row is locked
(``SELECT ... FOR UPDATE``) before counting, so two concurrent creates of
one tenant count one after the other (READ COMMITTED: the second count sees
the first's committed row); on SQLite every write transaction already holds
the database's write lock (``BEGIN IMMEDIATE``). A refusal raises before
anything is written, and the transaction rolls back whole. A resource with
no limit (no quota row for the tenant or the zone) takes no lock: a limit
set while creates are in flight binds the creates that start after it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import ResourceExhausted
from netmgr.model import quotas as mq
from netmgr.store import shared
from netmgr.store.tables.audit import DEFAULT_SCOPE, QuotaLimitRow
from netmgr.store.tables.core import NetworkRow, PortRow, PublicIpRow, TenantRow
from netmgr.store.tables.edge import (
    FirewallRuleRow,
    LoadBalancerRow,
    PortForwardRow,
    StaticNatRow,
)
from netmgr.store.tables.vpc import (
    AclRuleRow,
    NetworkAclRow,
    PrivateGatewayRow,
    StaticRouteRow,
    VpcRow,
)
from netmgr.store.tables.vpn import CustomerGatewayRow, VpnConnectionRow, VpnGatewayRow

if TYPE_CHECKING:
    from netmgr.store.base import Database

TABLES: dict[str, Any] = {
    "networks": NetworkRow, "vpcs": VpcRow, "ports": PortRow, "public_ips": PublicIpRow,
    "load_balancers": LoadBalancerRow, "static_nats": StaticNatRow,
    "port_forwards": PortForwardRow, "firewall_rules": FirewallRuleRow,
    "network_acls": NetworkAclRow, "acl_rules": AclRuleRow, "static_routes": StaticRouteRow,
    "private_gateways": PrivateGatewayRow, "vpn_gateways": VpnGatewayRow,
    "customer_gateways": CustomerGatewayRow, "vpn_connections": VpnConnectionRow,
}
assert tuple(TABLES) == mq.RESOURCES
RESOURCE_OF = {table: name for name, table in TABLES.items()}


class QuotaExceeded(ResourceExhausted):
    def __init__(self, resource: str, limit: int, used: int) -> None:
        super().__init__(f"quota.{resource}",
                         f"the tenant's quota of {limit} {resource} is reached "
                         f"({used} in use); nothing was created")
        self.resource = resource
        self.limit = limit


class QuotaSession(Session):
    """The session of write transactions: its flushes are quota-checked."""


def _changes(s: Session) -> Counter[tuple[str, str]]:
    """(tenant, resource) -> objects this flush adds, net of those it deletes."""
    change: Counter[tuple[str, str]] = Counter()
    for obj in s.new:
        resource = RESOURCE_OF.get(type(obj))
        if resource is not None:
            change[(obj.tenant_id, resource)] += 1
    for obj in s.deleted:
        resource = RESOURCE_OF.get(type(obj))
        if resource is not None and (obj.tenant_id, resource) in change:
            change[(obj.tenant_id, resource)] -= 1
    return change


def limit_of(s: Session, tenant_id: str, resource: str) -> tuple[int, bool]:
    """The tenant's limit of a resource and whether it is its own override."""
    found = dict(s.execute(select(QuotaLimitRow.scope, QuotaLimitRow.max_count).where(
        QuotaLimitRow.resource == resource,
        QuotaLimitRow.scope.in_((tenant_id, DEFAULT_SCOPE)))).all())
    if tenant_id in found:
        return found[tenant_id], True
    return found.get(DEFAULT_SCOPE, mq.UNLIMITED), False


def limits_of(s: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """``limit_of`` for several (tenant, resource) pairs, in one statement
    (a create adds several kinds of rows, each checked at every flush)."""
    keys = list(keys)
    found = {(scope, resource): n for scope, resource, n in s.execute(
        select(QuotaLimitRow.scope, QuotaLimitRow.resource, QuotaLimitRow.max_count).where(
            QuotaLimitRow.resource.in_({r for _, r in keys}),
            QuotaLimitRow.scope.in_({t for t, _ in keys} | {DEFAULT_SCOPE})))}
    return {(t, r): found.get((t, r), found.get((DEFAULT_SCOPE, r), mq.UNLIMITED))
            for t, r in keys}


def used(s: Session, tenant_id: str, resource: str) -> int:
    table = TABLES[resource]
    return int(s.scalar(select(func.count()).select_from(table)
                        .where(table.tenant_id == tenant_id)) or 0)


@event.listens_for(QuotaSession, "before_flush")
def _enforce(s: Session, _context: Any, _instances: Any) -> None:
    change = _changes(s)
    enforce(s, {key: n for key, n in change.items() if n > 0})


def enforce(s: Session, adding: dict[tuple[str, str], int]) -> None:
    """QuotaExceeded unless each (tenant, resource) can take ``n`` more. The
    flush hook runs it for ORM rows; a write that inserts rows with Core
    statements (the hottest creates) calls it itself, before inserting."""
    if not adding:
        return
    # Only a limited resource is counted, under its tenant's row lock: the
    # lock serialises every create of the tenant until it commits, which an
    # unlimited one (no quota row: the default) need not pay.
    limits = limits_of(s, adding)
    limited = {key: (n, limits[key]) for key, n in sorted(adding.items())
               if limits[key] != mq.UNLIMITED}
    # Lock each tenant first (in one order: no deadlock between two
    # transactions), then count: see the module's docstring.
    for tenant_id in sorted({tenant for tenant, _ in limited}):
        s.execute(select(TenantRow.id).where(TenantRow.id == tenant_id).with_for_update())
    for (tenant_id, resource), (n, limit) in limited.items():
        in_use = used(s, tenant_id, resource)
        if in_use + n > limit:
            raise QuotaExceeded(resource, limit, in_use)


class QuotaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def quotas(self, tenant_id: str) -> list[mq.Quota]:
        """Every resource's limit and usage for one tenant."""
        def tx(s: Session) -> list[mq.Quota]:
            tenant = shared.tenant_row(s, tenant_id)
            out = []
            for resource in mq.RESOURCES:
                limit, own = limit_of(s, tenant.id, resource)
                out.append(mq.Quota(resource, limit, used(s, tenant.id, resource), own))
            return out

        return list(self._db.read(tx))

    def default_quotas(self) -> list[mq.Quota]:
        """The zone-wide defaults (usage: the zone's total)."""
        def tx(s: Session) -> list[mq.Quota]:
            limits = dict(s.execute(select(QuotaLimitRow.resource, QuotaLimitRow.max_count)
                                    .where(QuotaLimitRow.scope == DEFAULT_SCOPE)).all())
            return [mq.Quota(r, limits.get(r, mq.UNLIMITED),
                             int(s.scalar(select(func.count()).select_from(TABLES[r])) or 0),
                             r in limits)
                    for r in mq.RESOURCES]

        return list(self._db.read(tx))

    def set_quota(self, tenant_id: str, resource: str, limit: int | None) -> None:
        """Set a tenant's override ("" : the zone-wide default); None removes it."""
        resource = mq.check_resource(resource)
        if limit is not None:
            limit = mq.check_limit(limit)

        def tx(s: Session) -> None:
            scope = shared.tenant_row(s, tenant_id).id if tenant_id else DEFAULT_SCOPE
            s.execute(delete(QuotaLimitRow).where(QuotaLimitRow.scope == scope,
                                                  QuotaLimitRow.resource == resource))
            if limit is not None:
                s.add(QuotaLimitRow(scope=scope, resource=resource, max_count=limit))

        self._db.write(tx)

