"""Network ACL lists and their numbered rules in the store.

A list belongs to a VPC; the two built-in lists (``netmgr.model.vpc.BUILTIN_ACLS``)
belong to every VPC and cannot change. A rule's number is unique in its list
(a unique constraint guards concurrent writers; the loser's retry reports the
number as taken). Every change bumps the VPC router's generation and the
changed rule records it, so the API shows PENDING until the router applied
it; a tier's list is replaced the same way.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from netmgr.model import vpc as mv
from netmgr.model.validation import check_id
from netmgr.model.validation_vpc import MAX_ACL_RULES, AclRuleSpec, check_acl_name, check_acl_rule
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import NetworkRow
from netmgr.store.tables.vpc import AclRuleRow, NetworkAclRow, PrivateGatewayRow


def acl_row(s: Session, tenant_id: TenantScope, acl_id: str,
            field: str = "id") -> NetworkAclRow | mv.NetworkAcl:
    """A tenant's list, or a built-in list (a model object)."""
    acl_id = check_id(acl_id, field)
    if acl_id in mv.BUILTIN_ACLS:
        return mv.BUILTIN_ACLS[acl_id]
    row = s.get(NetworkAclRow, acl_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"network ACL {acl_id} not found")
    return row


def _own_acl_row(s: Session, tenant_id: str, acl_id: str, field: str) -> NetworkAclRow:
    row = acl_row(s, tenant_id, acl_id, field)
    if isinstance(row, mv.NetworkAcl):
        raise FailedPrecondition(f"{field}: {row.name} is a built-in list; it cannot change")
    return row


def _acl_rule(s: Session, row: AclRuleRow, applied: int | None = None) -> mv.AclRule:
    if applied is None:
        applied = shared.vpc_router(s, s.get_one(NetworkAclRow, row.acl_id).vpc_id
                                    ).applied_generation
    return mv.AclRule(
        status=rows.status(row, applied), acl_id=row.acl_id, number=row.number,
        action=row.action, direction=row.direction, protocol=row.protocol, port=row.port,
        port_end=row.port_end, icmp_type=row.icmp_type, icmp_code=row.icmp_code,
        cidrs=tuple(row.cidrs))


def _tiers_of(s: Session, acl_id: str, vpc_id: str | None = None) -> tuple[str, ...]:
    stmt = select(NetworkRow.id).where(NetworkRow.vpc_id.is_not(None))
    if acl_id == mv.DEFAULT_ALLOW_ID:
        stmt = stmt.where((NetworkRow.acl_id == acl_id) | NetworkRow.acl_id.is_(None))
    else:
        stmt = stmt.where(NetworkRow.acl_id == acl_id)
    if vpc_id is not None:
        stmt = stmt.where(NetworkRow.vpc_id == vpc_id)
    return tuple(s.scalars(stmt.order_by(NetworkRow.created_at, NetworkRow.id)))


def network_acl(s: Session, row: NetworkAclRow | mv.NetworkAcl, vpc_id: str | None = None,
                with_rules: bool = False) -> mv.NetworkAcl:
    """The model of a list (a built-in one: with its tiers in ``vpc_id``)."""
    if isinstance(row, mv.NetworkAcl):
        tiers = _tiers_of(s, row.id, vpc_id) if vpc_id else ()
        return mv.NetworkAcl(row.id, vpc_id or "", row.name, row.description, True,
                             tiers, None, row.rules)
    rules: tuple[mv.AclRule, ...] = ()
    if with_rules:
        applied = shared.vpc_router(s, row.vpc_id).applied_generation
        rules = tuple(_acl_rule(s, r, applied) for r in s.scalars(
            select(AclRuleRow).where(AclRuleRow.acl_id == row.id)
            .order_by(AclRuleRow.number)))
    return mv.NetworkAcl(row.id, row.vpc_id, row.name, row.description, False,
                         _tiers_of(s, row.id), rows.aware(row.created_at), rules, row.tenant_id)


def acl_snapshot(s: Session, vpc_id: str) -> tuple[tuple[mv.NetworkAcl, ...],
                                                   tuple[tuple[str, str], ...]]:
    """The lists the VPC's tiers use, with their rules, and tier -> list."""
    tiers = [(n, a or mv.DEFAULT_ALLOW_ID) for n, a in s.execute(
        select(NetworkRow.id, NetworkRow.acl_id).where(NetworkRow.vpc_id == vpc_id)
        .order_by(NetworkRow.id))]
    acls = []
    for acl_id in sorted({a for _, a in tiers}):
        row = mv.BUILTIN_ACLS.get(acl_id) or s.get(NetworkAclRow, acl_id)
        if row is not None:
            acls.append(network_acl(s, row, vpc_id, with_rules=True))
    return tuple(acls), tuple(tiers)


def check_tier_acl(s: Session, tenant_id: str, vpc_id: str, acl_id: str, field: str) -> str:
    """The ID of the list a tier or private gateway of ``vpc_id`` may use."""
    found = acl_row(s, tenant_id, acl_id, field)
    if isinstance(found, NetworkAclRow) and found.vpc_id != vpc_id:
        raise InvalidArgument.one(field, f"list {found.id} belongs to another VPC")
    return found.id


def _check_number_free(s: Session, acl_id: str, number: int, except_id: str = "") -> None:
    other = s.scalar(select(AclRuleRow.id).where(
        AclRuleRow.acl_id == acl_id, AclRuleRow.number == number, AclRuleRow.id != except_id))
    if other:
        raise InvalidArgument.one("rule.number",
                                  f"number {number} is already rule {other} of the list")


def _rule_row(s: Session, tenant_id: str, rule_id: str, field: str) -> AclRuleRow:
    rule_id = check_id(rule_id, field)
    if any(r.id == rule_id for a in mv.BUILTIN_ACLS.values() for r in a.rules):
        raise FailedPrecondition(f"{field}: rules of the built-in lists cannot change")
    row = s.get(AclRuleRow, rule_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"ACL rule {rule_id} not found")
    return row


class AclStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---------------------------------------------------------------- lists

    def create_network_acl(self, tenant_id: str, vpc_id: str, name: str,
                           description: str = "") -> mv.NetworkAcl:
        check_acl_name(name, description)

        def tx(s: Session) -> mv.NetworkAcl:
            vpc = shared.vpc_row(s, tenant_id, vpc_id, "network_acl.vpc_id")
            if name in {a.name for a in mv.BUILTIN_ACLS.values()} or s.scalar(
                    select(NetworkAclRow.id).where(NetworkAclRow.vpc_id == vpc.id,
                                                   NetworkAclRow.name == name)):
                raise InvalidArgument.one("network_acl.name",
                                          f"the VPC already has a list named {name!r}")
            row = NetworkAclRow(id=new_id(), tenant_id=tenant_id, vpc_id=vpc.id, name=name,
                                description=description, created_at=utcnow())
            s.add(row)
            s.flush()
            return network_acl(s, row)

        return self._db.write(tx)

    def get_network_acl(self, tenant_id: str, acl_id: str) -> mv.NetworkAcl:
        return self._db.read(lambda s: network_acl(s, acl_row(s, tenant_id, acl_id)))

    def list_network_acls(self, tenant_id: TenantScope, vpc_id: str) -> list[mv.NetworkAcl]:
        def tx(s: Session) -> list[mv.NetworkAcl]:
            vpc = shared.vpc_row(s, tenant_id, vpc_id, "vpc_id")
            own = s.scalars(select(NetworkAclRow).where(NetworkAclRow.vpc_id == vpc.id)
                            .order_by(NetworkAclRow.created_at, NetworkAclRow.id))
            return [network_acl(s, a, vpc.id) for a in (*mv.BUILTIN_ACLS.values(), *own)]

        return self._db.read(tx)

    def delete_network_acl(self, tenant_id: str, acl_id: str) -> None:
        def tx(s: Session) -> None:
            row = _own_acl_row(s, tenant_id, acl_id, "id")
            tiers = _tiers_of(s, row.id) + tuple(s.scalars(
                select(PrivateGatewayRow.id).where(PrivateGatewayRow.acl_id == row.id)))
            if tiers:
                raise FailedPrecondition(
                    f"list {row.name!r} guards {', '.join(tiers)}; replace it first")
            s.execute(delete(NetworkAclRow).where(NetworkAclRow.id == row.id))

        self._db.write(tx)

    def replace_network_acl(self, tenant_id: str, network_id: str, acl_id: str) -> str:
        """Put a tier (or a private gateway, by its ID) under another list;
        returns the router to notify."""

        def tx(s: Session) -> str:
            gw = s.get(PrivateGatewayRow, check_id(network_id, "network_id"))
            if gw is not None and gw.tenant_id == tenant_id:  # a private gateway's list
                new = check_tier_acl(s, tenant_id, gw.vpc_id, acl_id, "acl_id")
                router = shared.vpc_router(s, gw.vpc_id)
                if gw.acl_id != new:
                    gw.acl_id = new
                    gw.generation = shared.bump(s, router.id)
                return router.id
            net = shared.network_row(s, tenant_id, network_id, "network_id")
            if net.vpc_id is None:
                raise InvalidArgument.one("network_id",
                                          f"network {net.id} is not a VPC tier; it has no ACL")
            new = check_tier_acl(s, tenant_id, net.vpc_id, acl_id, "acl_id")
            router = shared.vpc_router(s, net.vpc_id)
            if (net.acl_id or mv.DEFAULT_ALLOW_ID) != new:
                net.acl_id = new
                net.updated_at = utcnow()
                shared.bump(s, router.id)
            return router.id

        return self._db.write(tx)

    def acl_counter_targets(self, tenant_id: str,
                            acl_id: str) -> tuple[str, tuple[mv.AclRule, ...]]:
        """(the VPC router, the list's rules) for reading a list's counters."""

        def tx(s: Session) -> tuple[str, tuple[mv.AclRule, ...]]:
            row = _own_acl_row(s, tenant_id, acl_id, "acl_id")
            return shared.vpc_router(s, row.vpc_id).id, network_acl(s, row, with_rules=True).rules

        return self._db.read(tx)

    # ---------------------------------------------------------------- rules

    def create_acl_rule(self, tenant_id: str, acl_id: str,
                        spec: AclRuleSpec) -> tuple[mv.AclRule, str]:
        spec = check_acl_rule(spec)

        def tx(s: Session) -> tuple[mv.AclRule, str]:
            acl = _own_acl_row(s, tenant_id, acl_id, "rule.acl_id")
            _check_number_free(s, acl.id, spec.number)
            count = s.scalar(select(func.count()).where(AclRuleRow.acl_id == acl.id)) or 0
            if count >= MAX_ACL_RULES:
                raise ResourceExhausted("rule.acl_id",
                                        f"a list holds at most {MAX_ACL_RULES} rules")
            router = shared.vpc_router(s, acl.vpc_id)
            gen = shared.bump(s, router.id)
            row = AclRuleRow(id=new_id(), tenant_id=tenant_id, acl_id=acl.id,
                             generation=gen, error="", created_at=utcnow(), **_columns(spec))
            s.add(row)
            s.flush()
            return _acl_rule(s, row), router.id

        return self._db.write(tx)

    def get_acl_rule(self, tenant_id: str, rule_id: str) -> mv.AclRule:
        def tx(s: Session) -> mv.AclRule:
            for acl in mv.BUILTIN_ACLS.values():
                for r in acl.rules:
                    if r.id == rule_id:
                        return r
            return _acl_rule(s, _rule_row(s, tenant_id, rule_id, "id"))

        return self._db.read(tx)

    def list_acl_rules(self, tenant_id: TenantScope, acl_id: str) -> tuple[mv.AclRule, ...]:
        def tx(s: Session) -> tuple[mv.AclRule, ...]:
            row = acl_row(s, tenant_id, acl_id, "acl_id")
            if isinstance(row, mv.NetworkAcl):
                return row.rules
            return network_acl(s, row, with_rules=True).rules

        return self._db.read(tx)

    def update_acl_rule(self, tenant_id: str, rule_id: str,
                        spec: AclRuleSpec) -> tuple[mv.AclRule, str]:
        spec = check_acl_rule(spec)

        def tx(s: Session) -> tuple[mv.AclRule, str]:
            row = _rule_row(s, tenant_id, rule_id, "rule.id")
            _check_number_free(s, row.acl_id, spec.number, except_id=row.id)
            acl = s.get(NetworkAclRow, row.acl_id)
            assert acl is not None
            router = shared.vpc_router(s, acl.vpc_id)
            cols = _columns(spec)
            if any(getattr(row, k) != v for k, v in cols.items()):
                for k, v in cols.items():
                    setattr(row, k, v)
                row.generation = shared.bump(s, router.id)
                row.error = ""
            s.flush()
            return _acl_rule(s, row), router.id

        return self._db.write(tx)

    def delete_acl_rule(self, tenant_id: str, rule_id: str) -> str:
        def tx(s: Session) -> str:
            row = _rule_row(s, tenant_id, rule_id, "id")
            acl = s.get(NetworkAclRow, row.acl_id)
            assert acl is not None
            router = shared.vpc_router(s, acl.vpc_id)
            shared.bump(s, router.id)
            s.delete(row)
            return router.id

        return self._db.write(tx)


def _columns(spec: AclRuleSpec) -> dict[str, object]:
    return dict(number=spec.number, action=spec.action, direction=spec.direction,
                protocol=spec.protocol, port=spec.port, port_end=spec.port_end,
                icmp_type=spec.icmp_type, icmp_code=spec.icmp_code, cidrs=list(spec.cidrs))
