"""Security groups and rules in the store, and what a port's security settings
need checked against it (its groups are the tenant's; its allowed address
pairs cover no other port's address).

Every tenant has a group named ``default`` (made with the tenant, or by
migration 0015 for older tenants): it filters each port that names no group,
and cannot be deleted. A port names its groups in ``ports.security_group_ids``;
membership is read from there (a tenant's ports, scanned once per call).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from netmgr.model import core as model
from netmgr.model.field_rules import show
from netmgr.model.paging import Page, PageRequest
from netmgr.model.security_groups import (
    DEFAULT_GROUP,
    MAX_RULES_PER_GROUP,
    FilteredPort,
    HostFilterSnapshot,
    RuleSpec,
    SecurityGroup,
    SecurityGroupRule,
    check_group,
    check_rule,
    default_rules,
    pair_overlaps,
)
from netmgr.model.validation import check_id
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PortRow
from netmgr.store.tables.hosts import HostRow
from netmgr.store.tables.security_groups import SecurityGroupRow, SecurityGroupRuleRow

RULE_KEY = ("direction", "ethertype", "protocol", "port_min", "port_max", "icmp_type",
            "icmp_code", "remote_cidr", "remote_group_id")


def rule(row: SecurityGroupRuleRow) -> SecurityGroupRule:
    spec = RuleSpec(row.direction, row.ethertype, row.protocol, row.port_min, row.port_max,
                    row.icmp_type, row.icmp_code, row.remote_cidr, row.remote_group_id or "",
                    row.description)
    return SecurityGroupRule(row.id, row.security_group_id, row.tenant_id, spec,
                             rows.aware(row.created_at))


def _add_rule(s: Session, group: SecurityGroupRow, spec: RuleSpec) -> SecurityGroupRuleRow:
    row = SecurityGroupRuleRow(
        id=new_id(), tenant_id=group.tenant_id, security_group_id=group.id,
        direction=spec.direction, ethertype=spec.ethertype, protocol=spec.protocol,
        port_min=spec.port_min, port_max=spec.port_max, icmp_type=spec.icmp_type,
        icmp_code=spec.icmp_code, remote_cidr=spec.remote_cidr,
        remote_group_id=(group.id if spec.remote_group_id == "self"
                         else spec.remote_group_id or None),
        description=spec.description, created_at=utcnow())
    s.add(row)
    return row


_DEFAULT_GROUP = select(SecurityGroupRow.id).where(
    SecurityGroupRow.tenant_id == bindparam("tenant_id"), SecurityGroupRow.name == DEFAULT_GROUP)


def has_default_group(s: Session, tenant_id: str) -> bool:
    """Whether the tenant has its default group (one Core statement: every
    port create asks, and it is there but for the tenant's first)."""
    return s.connection().scalar(_DEFAULT_GROUP, {"tenant_id": tenant_id}) is not None


def ensure_default_group(s: Session, tenant_id: str) -> SecurityGroupRow:
    """The tenant's default group, made (with its rules) if it has none."""
    row = s.scalar(select(SecurityGroupRow).where(SecurityGroupRow.tenant_id == tenant_id,
                                                  SecurityGroupRow.name == DEFAULT_GROUP))
    if row is not None:
        return row
    row = SecurityGroupRow(id=new_id(), tenant_id=tenant_id, name=DEFAULT_GROUP,
                           description="default group", created_at=utcnow())
    s.add(row)
    s.flush()
    for spec in default_rules():
        _add_rule(s, row, spec)
    s.flush()
    return row


def group_row(s: Session, tenant_id: str, group_id: str, field: str = "id") -> SecurityGroupRow:
    return shared.owned(s, SecurityGroupRow, tenant_id, group_id, "security group", field)


def effective_groups(port: PortRow, default_id: str) -> tuple[str, ...]:
    """The groups filtering a port (none without port security)."""
    if not port.port_security:
        return ()
    return tuple(port.security_group_ids or ()) or (default_id,)


def check_port_groups(s: Session, tenant_id: str, ids: Sequence[str],
                      field: str = "port.security_group_ids") -> None:
    """Every group named is the tenant's (another tenant's is a missing one)."""
    if not ids:
        return
    found = set(s.scalars(select(SecurityGroupRow.id).where(
        SecurityGroupRow.tenant_id == tenant_id, SecurityGroupRow.id.in_(list(ids)))))
    for i, gid in enumerate(ids):
        if gid not in found:
            raise NotFound(f"{field}[{i}]: security group {gid} not found")


def check_pairs_against_ports(s: Session, network_id: str, port_id: str,
                              pairs: Sequence[model.AddressPair],
                              field: str = "port.allowed_address_pairs") -> None:
    """No pair may cover another port's address on the network: its guest
    could then take that port's traffic."""
    if not pairs:
        return
    others = s.execute(select(PortRow.id, PortRow.ip).where(
        PortRow.network_id == network_id, PortRow.id != port_id)).all()
    for i, pair in enumerate(pairs):
        for other_id, ip in others:
            if pair_overlaps(pair, ip):
                raise InvalidArgument.one(f"{field}[{i}].ip",
                                          f"{pair.ip} covers {ip}, the address of port {other_id}")


def check_ip_against_pairs(s: Session, network_id: str, ip: str, field: str = "port.ip") -> None:
    """A port asking for an address another port may send from (an allowed
    pair) would share it with that port's guest."""
    for other_id, pairs in s.execute(select(PortRow.id, PortRow.allowed_address_pairs).where(
            PortRow.network_id == network_id)).all():
        for p in pairs or ():
            if pair_overlaps(model.AddressPair(p["ip"], p.get("mac", "")), ip):
                raise InvalidArgument.one(field, f"{ip} is in an allowed address pair "
                                                 f"({p['ip']}) of port {other_id}")


def check_binding_host(s: Session, name: str, field: str = "port.binding_host") -> str:
    """A registered compute host's name, or "" for none."""
    if name and s.scalar(select(HostRow.id).where(HostRow.name == name)) is None:
        raise InvalidArgument.one(field, f"{show(name)} is not a registered host")
    return name


def pairs_json(pairs: Sequence[model.AddressPair]) -> list[dict[str, str]]:
    return [{"ip": p.ip, "mac": p.mac} for p in pairs]


class SecurityGroupStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _group(self, s: Session, row: SecurityGroupRow, members: int | None = None
               ) -> SecurityGroup:
        rule_rows = s.scalars(select(SecurityGroupRuleRow).where(
            SecurityGroupRuleRow.security_group_id == row.id).order_by(
            SecurityGroupRuleRow.created_at, SecurityGroupRuleRow.id)).all()
        if members is None:
            members = self._members(s, row.tenant_id).get(row.id, 0)
        return SecurityGroup(row.id, row.tenant_id, row.name, row.description,
                             tuple(rule(r) for r in rule_rows), members,
                             rows.aware(row.created_at))

    @staticmethod
    def _members(s: Session, tenant_id: str) -> dict[str, int]:
        """Group ID -> how many of the tenant's ports it filters."""
        default_id = s.scalar(select(SecurityGroupRow.id).where(
            SecurityGroupRow.tenant_id == tenant_id, SecurityGroupRow.name == DEFAULT_GROUP))
        counts: dict[str, int] = {}
        for port in s.scalars(select(PortRow).where(PortRow.tenant_id == tenant_id)):
            for gid in effective_groups(port, default_id or ""):
                counts[gid] = counts.get(gid, 0) + 1
        return counts

    def create_group(self, tenant_id: str, name: str, description: str) -> SecurityGroup:
        check_group(name, description)

        def tx(s: Session) -> SecurityGroup:
            shared.tenant_row(s, tenant_id)
            ensure_default_group(s, tenant_id)
            taken = s.scalar(select(SecurityGroupRow.id).where(
                SecurityGroupRow.tenant_id == tenant_id, SecurityGroupRow.name == name))
            if taken is not None:
                raise AlreadyExists("security_group.name",
                                    f"a security group named {name!r} already exists")
            row = SecurityGroupRow(id=new_id(), tenant_id=tenant_id, name=name,
                                   description=description, created_at=utcnow())
            s.add(row)
            s.flush()
            return self._group(s, row, 0)

        return self._db.write(tx)

    def get_group(self, tenant_id: str, group_id: str) -> SecurityGroup:
        return self._db.read(lambda s: self._group(s, group_row(s, tenant_id, group_id)))

    def list_groups(self, tenant_id: str, page: PageRequest) -> Page[SecurityGroup]:
        def tx(s: Session) -> Page[SecurityGroup]:
            ensure_default_group(s, tenant_id)
            members = self._members(s, tenant_id)
            return rows.paged_rows(
                s, select(SecurityGroupRow).where(SecurityGroupRow.tenant_id == tenant_id),
                SecurityGroupRow, page, lambda r: self._group(s, r, members.get(r.id, 0)))

        return self._db.write(tx)

    def default_group(self, tenant_id: str) -> SecurityGroup:
        def tx(s: Session) -> SecurityGroup:
            shared.tenant_row(s, tenant_id)
            return self._group(s, ensure_default_group(s, tenant_id))

        return self._db.write(tx)

    def delete_group(self, tenant_id: str, group_id: str) -> SecurityGroup:
        def tx(s: Session) -> SecurityGroup:
            row = group_row(s, tenant_id, group_id)
            if row.name == DEFAULT_GROUP:
                raise FailedPrecondition("the default security group cannot be deleted")
            gone = self._group(s, row)
            if gone.port_count:
                raise FailedPrecondition(f"security group {row.name!r} filters "
                                         f"{gone.port_count} port(s); change them first")
            user = s.scalar(select(SecurityGroupRuleRow.security_group_id).where(
                SecurityGroupRuleRow.remote_group_id == row.id,
                SecurityGroupRuleRow.security_group_id != row.id).limit(1))
            if user is not None:
                raise FailedPrecondition(f"security group {row.name!r} is the remote group of "
                                         f"a rule of group {user}; delete that rule first")
            s.delete(row)
            return gone

        return self._db.write(tx)

    def create_rule(self, tenant_id: str, group_id: str, spec: RuleSpec) -> SecurityGroupRule:
        group_id = check_id(group_id, "rule.security_group_id")
        spec = check_rule(spec)

        def tx(s: Session) -> SecurityGroupRule:
            group = group_row(s, tenant_id, group_id, "rule.security_group_id")
            if spec.remote_group_id and spec.remote_group_id != "self":
                remote = s.get(SecurityGroupRow, spec.remote_group_id)
                if remote is None or remote.tenant_id != tenant_id:
                    raise NotFound(f"rule.remote_group_id: security group "
                                   f"{spec.remote_group_id} not found")
            existing = s.scalars(select(SecurityGroupRuleRow).where(
                SecurityGroupRuleRow.security_group_id == group.id)).all()
            if len(existing) >= MAX_RULES_PER_GROUP:
                raise FailedPrecondition(f"a group has at most {MAX_RULES_PER_GROUP} rules")
            key = tuple(getattr(spec, k) for k in RULE_KEY)
            for r in existing:
                if tuple(getattr(rule(r).spec, k) for k in RULE_KEY) == key:
                    raise AlreadyExists("rule", f"the group has this rule already ({r.id})")
            row = _add_rule(s, group, spec)
            s.flush()
            return rule(row)

        return self._db.write(tx)

    def get_rule(self, tenant_id: str, rule_id: str) -> SecurityGroupRule:
        return self._db.read(lambda s: rule(shared.owned(
            s, SecurityGroupRuleRow, tenant_id, rule_id, "security group rule")))

    def host_filters(self, host: str) -> HostFilterSnapshot:
        return self._db.read(lambda s: host_filter_snapshot(s, host))

    def bound_hosts(self) -> list[str]:
        """Every host some port is bound to."""
        return self._db.read(lambda s: sorted(set(s.scalars(
            select(PortRow.binding_host).where(PortRow.binding_host != "").distinct()))))

    def delete_rule(self, tenant_id: str, rule_id: str) -> SecurityGroupRule:
        def tx(s: Session) -> SecurityGroupRule:
            row = shared.owned(s, SecurityGroupRuleRow, tenant_id, rule_id,
                               "security group rule")
            gone = rule(row)
            s.delete(row)
            return gone

        return self._db.write(tx)


def host_filter_snapshot(s: Session, host: str) -> HostFilterSnapshot:
    """What `host` enforces (``HostFilterSnapshot``), in the caller's transaction."""
    bound = s.scalars(select(PortRow).where(PortRow.binding_host == host)
                      .order_by(PortRow.id)).all()
    tenants = {p.tenant_id for p in bound}
    defaults = dict(s.execute(select(SecurityGroupRow.tenant_id, SecurityGroupRow.id).where(
        SecurityGroupRow.tenant_id.in_(tenants), SecurityGroupRow.name == DEFAULT_GROUP)).all())
    ports = tuple(FilteredPort(
        p.id, p.mac, p.ip, tuple(model.AddressPair(a["ip"], a.get("mac", ""))
                                 for a in p.allowed_address_pairs or ()),
        effective_groups(p, defaults.get(p.tenant_id, "")), bool(p.port_security),
        p.ipv6 or "")
        for p in bound)
    group_ids = {g for p in ports for g in p.groups}
    rules: dict[str, list[RuleSpec]] = {g: [] for g in group_ids}
    for r in s.scalars(select(SecurityGroupRuleRow).where(
            SecurityGroupRuleRow.security_group_id.in_(group_ids)).order_by(
            SecurityGroupRuleRow.created_at, SecurityGroupRuleRow.id)):
        rules[r.security_group_id].append(rule(r).spec)
    remote = {r.remote_group_id for specs in rules.values() for r in specs
              if r.remote_group_id}
    members: dict[str, list[str]] = {g: [] for g in remote}
    if remote:
        owners = set(s.scalars(select(SecurityGroupRow.tenant_id).where(
            SecurityGroupRow.id.in_(remote))))
        all_defaults = dict(s.execute(select(SecurityGroupRow.tenant_id, SecurityGroupRow.id)
                                      .where(SecurityGroupRow.tenant_id.in_(owners),
                                             SecurityGroupRow.name == DEFAULT_GROUP)).all())
        for p in s.scalars(select(PortRow).where(PortRow.tenant_id.in_(owners))
                           .order_by(PortRow.id)):
            for gid in effective_groups(p, all_defaults.get(p.tenant_id, "")):
                if gid in members:
                    members[gid].append(p.ip)
                    if p.ipv6:
                        members[gid].append(p.ipv6)
                    members[gid] += [a["ip"] for a in p.allowed_address_pairs or ()]
    return HostFilterSnapshot(host, ports, {g: tuple(v) for g, v in rules.items()},
                              {g: tuple(v) for g, v in members.items()})
