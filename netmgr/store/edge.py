"""Edge rules in the store: static NAT, port forwards, firewall rules and
egress policies (tenant public IPs: ``public_ips``; load balancers:
``load_balancers``).

As with ports, every change bumps the router generation of the network it
touches first (on PostgreSQL that row lock serialises concurrent rule changes
of one network, so overlap checks read committed rules), and the changed row
records that generation: PENDING until the router applied it. Another
tenant's objects are NotFound, never "forbidden".
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, InvalidArgument
from netmgr.model import edge as me
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.model.validation_edge import (
    INGRESS,
    FirewallRuleSpec,
    PortForwardSpec,
    StaticNatSpec,
    check_firewall_rule,
    check_port_forward,
    check_static_nat,
)
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.ports import port_row
from netmgr.store.public_ips import rule_ip, serves
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PortRow, PublicIpRow
from netmgr.store.tables.edge import (
    EgressPolicyRow,
    FirewallRuleRow,
    LoadBalancerRow,
    PortForwardRow,
    StaticNatRow,
)

# Kinds of ObjectStatus the router reports for edge objects.
KIND_PUBLIC_IP = "publicip"
KIND_STATIC_NAT = "staticnat"
KIND_PORT_FORWARD = "portforward"
KIND_FIREWALL = "firewall"
KIND_LOAD_BALANCER = "loadbalancer"
EDGE_KINDS = (KIND_PUBLIC_IP, KIND_STATIC_NAT, KIND_PORT_FORWARD, KIND_FIREWALL,
              KIND_LOAD_BALANCER)


def _static_nat(s: Session, row: StaticNatRow) -> me.StaticNat:
    ip = s.get_one(PublicIpRow, row.public_ip_id)
    port = s.get_one(PortRow, row.port_id)
    return me.StaticNat(
        status=rows.status(row, shared.applied_generation(s, row.network_id)),
        network_id=row.network_id, public_ip_id=row.public_ip_id, port_id=row.port_id,
        public_ip=ip.ip, private_ip=port.ip)


def _port_forward(s: Session, row: PortForwardRow) -> me.PortForward:
    ip = s.get_one(PublicIpRow, row.public_ip_id)
    port = s.get_one(PortRow, row.port_id)
    return me.PortForward(
        status=rows.status(row, shared.applied_generation(s, row.network_id)),
        network_id=row.network_id, public_ip_id=row.public_ip_id, protocol=row.protocol,
        public_port=row.public_port, public_port_end=row.public_port_end, port_id=row.port_id,
        private_port=row.private_port, private_port_end=row.private_port_end,
        source_cidrs=tuple(row.source_cidrs), public_ip=ip.ip, private_ip=port.ip)


def _firewall_rule(s: Session, row: FirewallRuleRow) -> me.FirewallRule:
    ip = s.get(PublicIpRow, row.public_ip_id) if row.public_ip_id else None
    return me.FirewallRule(
        status=rows.status(row, shared.applied_generation(s, row.network_id)),
        direction=row.direction, network_id=row.network_id,
        public_ip_id=row.public_ip_id or "", protocol=row.protocol, port=row.port,
        port_end=row.port_end, icmp_type=row.icmp_type, icmp_code=row.icmp_code,
        cidrs=tuple(row.cidrs), public_ip=ip.ip if ip else "")


def guest_ingress_network(s: Session, tenant_id: str, spec: FirewallRuleSpec) -> str:
    """The network of an ingress rule to guests' own addresses: routed (its
    IPv4 sources) or dual-stack (its IPv6 sources); each source's family must
    be one the network is reached by."""
    net = shared.network_row(s, tenant_id, spec.network_id, "firewall_rule.network_id")
    if not net.routed and not net.ipv6_cidr:
        raise InvalidArgument.one(
            "firewall_rule.network_id", f"network {net.id} is neither routed nor dual-stack: "
            "its guests are reached through public IPs (name public_ip_id)")
    for i, cidr in enumerate(spec.cidrs):
        version = ipaddress.ip_network(cidr).version
        if version == 4 and not net.routed:
            raise InvalidArgument.one(f"firewall_rule.cidrs[{i}]",
                                      f"{cidr} is IPv4; network {net.id} is routed over IPv6 only")
        if version == 6 and not net.ipv6_cidr:
            raise InvalidArgument.one(f"firewall_rule.cidrs[{i}]",
                                      f"{cidr} is IPv6; network {net.id} has no IPv6")
    return net.id


def _guest_port(s: Session, tenant_id: str, port_id: str, field: str,
                ip: PublicIpRow) -> PortRow:
    port = port_row(s, tenant_id, port_id, field)
    if not serves(s, ip, port.network_id):
        where = (f"associated to network {ip.network_id}" if ip.network_id
                 else f"the source-NAT address of VPC {ip.vpc_id}")
        raise FailedPrecondition(
            f"{field}: port {port.id} is on network {port.network_id}, but public IP "
            f"{ip.ip} is {where}")
    return port


def _pf_clash(s: Session, ip: PublicIpRow, spec: PortForwardSpec, self_id: str) -> None:
    """Refuse public ports another forward or load balancer of the IP uses."""
    clash = s.scalar(select(PortForwardRow.id).where(
        PortForwardRow.public_ip_id == ip.id, PortForwardRow.protocol == spec.protocol,
        PortForwardRow.public_port <= spec.public_port_end,
        PortForwardRow.public_port_end >= spec.public_port,
        PortForwardRow.id != self_id).limit(1))
    if not clash and spec.protocol == "tcp":
        clash = s.scalar(select(LoadBalancerRow.id).where(
            LoadBalancerRow.public_ip_id == ip.id,
            LoadBalancerRow.public_port >= spec.public_port,
            LoadBalancerRow.public_port <= spec.public_port_end).limit(1))
    if clash:
        raise AlreadyExists(
            "port_forward.public_port",
            f"{ip.ip} {spec.protocol} {spec.public_port}-{spec.public_port_end} overlaps "
            f"rule {clash}")


class EdgeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---------------------------------------------------------- static NAT

    def create_static_nat(self, tenant_id: str, spec: StaticNatSpec) -> me.StaticNat:
        spec = check_static_nat(spec)

        def tx(s: Session) -> me.StaticNat:
            ip = rule_ip(s, tenant_id, spec.public_ip_id, "static_nat.public_ip_id")
            port = _guest_port(s, tenant_id, spec.port_id, "static_nat.port_id", ip)
            gen = shared.bump(s, shared.router_of(s, port.network_id))
            if s.scalar(select(StaticNatRow.id).where(StaticNatRow.public_ip_id == ip.id)):
                raise AlreadyExists("static_nat.public_ip_id",
                                    f"public IP {ip.ip} already has a static NAT")
            if s.scalar(select(StaticNatRow.id).where(StaticNatRow.port_id == port.id)):
                raise AlreadyExists("static_nat.port_id",
                                    f"port {port.id} already has a static NAT")
            if s.scalar(select(PortForwardRow.id).where(PortForwardRow.public_ip_id == ip.id)) \
                    or s.scalar(select(LoadBalancerRow.id)
                                .where(LoadBalancerRow.public_ip_id == ip.id)):
                raise FailedPrecondition(f"static_nat.public_ip_id: public IP {ip.ip} has port "
                                         "forwards or load balancers")
            row = StaticNatRow(id=new_id(), tenant_id=tenant_id, network_id=port.network_id,
                               public_ip_id=ip.id, port_id=port.id, generation=gen, error="",
                               created_at=utcnow())
            s.add(row)
            s.flush()
            return _static_nat(s, row)

        return self._db.write(tx)

    def get_static_nat(self, tenant_id: str, obj_id: str) -> me.StaticNat:
        return self._db.read(lambda s: _static_nat(
            s, shared.owned(s, StaticNatRow, tenant_id, obj_id, "static NAT")))

    def list_static_nats(self, tenant_id: TenantScope, page: PageRequest,
                         network_id: str = "") -> Page[me.StaticNat]:
        stmt = of_tenant(select(StaticNatRow), StaticNatRow.tenant_id, tenant_id)
        if network_id:
            stmt = stmt.where(StaticNatRow.network_id == check_id(network_id, "network_id"))
        return self._db.read(lambda s: rows.paged_rows(s, stmt, StaticNatRow, page,
                                                       lambda r: _static_nat(s, r)))

    def delete_static_nat(self, tenant_id: str, obj_id: str) -> tuple[str, int]:
        return self._db.write(
            lambda s: shared.delete_rule(s, StaticNatRow, tenant_id, obj_id, "static NAT"))

    # ------------------------------------------------------- port forwards

    def create_port_forward(self, tenant_id: str, spec: PortForwardSpec) -> me.PortForward:
        spec = check_port_forward(spec)

        def tx(s: Session) -> me.PortForward:
            ip = rule_ip(s, tenant_id, spec.public_ip_id, "port_forward.public_ip_id",
                         source_nat=True)
            port = _guest_port(s, tenant_id, spec.port_id, "port_forward.port_id", ip)
            gen = shared.bump(s, shared.router_of(s, port.network_id))
            if s.scalar(select(StaticNatRow.id).where(StaticNatRow.public_ip_id == ip.id)):
                raise FailedPrecondition(
                    f"port_forward.public_ip_id: public IP {ip.ip} is a static NAT address")
            _pf_clash(s, ip, spec, "")
            row = PortForwardRow(
                id=new_id(), tenant_id=tenant_id, network_id=port.network_id, public_ip_id=ip.id,
                protocol=spec.protocol, public_port=spec.public_port,
                public_port_end=spec.public_port_end, port_id=port.id,
                private_port=spec.private_port, private_port_end=spec.private_port_end,
                source_cidrs=list(spec.source_cidrs), generation=gen, error="",
                created_at=utcnow())
            s.add(row)
            s.flush()
            return _port_forward(s, row)

        return self._db.write(tx)

    def update_port_forward(self, tenant_id: str, obj_id: str,
                            changes: Mapping[str, Any]) -> me.PortForward:
        """The forward with `changes` (PortForwardSpec fields) applied, validated
        like a create; unchanged content changes nothing (no generation)."""

        def tx(s: Session) -> me.PortForward:
            row = shared.owned(s, PortForwardRow, tenant_id, obj_id, "port forward")
            single = row.public_port_end == row.public_port
            spec = PortForwardSpec(
                public_ip_id=row.public_ip_id, protocol=row.protocol,
                public_port=row.public_port, public_port_end=row.public_port_end,
                port_id=row.port_id, private_port=row.private_port,
                private_port_end=row.private_port_end, source_cidrs=tuple(row.source_cidrs))
            new = dict(changes)
            if "public_port" in new and "public_port_end" not in new and single:
                new["public_port_end"] = 0
            if ({"public_port", "public_port_end", "private_port"} & new.keys()
                    and "private_port_end" not in new):
                new["private_port_end"] = 0  # as long as the public range
            spec = check_port_forward(dataclasses.replace(spec, **new))
            ip = rule_ip(s, tenant_id, row.public_ip_id, "port_forward.public_ip_id",
                         source_nat=True)
            port = _guest_port(s, tenant_id, spec.port_id, "port_forward.port_id", ip)
            if port.network_id != row.network_id:  # a VPC's address: another tier
                raise FailedPrecondition(
                    f"port_forward.port_id: port {port.id} is not on the forward's network "
                    f"{row.network_id}")
            cols = dict(protocol=spec.protocol, public_port=spec.public_port,
                        public_port_end=spec.public_port_end, port_id=port.id,
                        private_port=spec.private_port, private_port_end=spec.private_port_end,
                        source_cidrs=list(spec.source_cidrs))
            if any(getattr(row, k) != v for k, v in cols.items()):
                row.generation = shared.bump(s, shared.router_of(s, row.network_id))
                _pf_clash(s, ip, spec, row.id)
                for k, v in cols.items():
                    setattr(row, k, v)
                row.error = ""
            s.flush()
            return _port_forward(s, row)

        return self._db.write(tx)

    def get_port_forward(self, tenant_id: str, obj_id: str) -> me.PortForward:
        return self._db.read(lambda s: _port_forward(
            s, shared.owned(s, PortForwardRow, tenant_id, obj_id, "port forward")))

    def list_port_forwards(self, tenant_id: TenantScope, page: PageRequest,
                           network_id: str = "") -> Page[me.PortForward]:
        stmt = of_tenant(select(PortForwardRow), PortForwardRow.tenant_id, tenant_id)
        if network_id:
            stmt = stmt.where(PortForwardRow.network_id == check_id(network_id, "network_id"))
        return self._db.read(lambda s: rows.paged_rows(s, stmt, PortForwardRow, page,
                                                       lambda r: _port_forward(s, r)))

    def delete_port_forward(self, tenant_id: str, obj_id: str) -> tuple[str, int]:
        return self._db.write(
            lambda s: shared.delete_rule(s, PortForwardRow, tenant_id, obj_id, "port forward"))

    # ------------------------------------------------------- firewall rules

    def create_firewall_rule(self, tenant_id: str, spec: FirewallRuleSpec) -> me.FirewallRule:
        spec = check_firewall_rule(spec)

        def tx(s: Session) -> me.FirewallRule:
            ip_id: str | None = None
            network_id: str | None
            if spec.direction == INGRESS and spec.network_id:
                network_id = guest_ingress_network(s, tenant_id, spec)
            elif spec.direction == INGRESS:
                ip = rule_ip(s, tenant_id, spec.public_ip_id, "firewall_rule.public_ip_id")
                ip_id, network_id = ip.id, ip.network_id
            else:
                network_id = shared.network_row(s, tenant_id, spec.network_id,
                                               "firewall_rule.network_id").id
            assert network_id is not None
            gen = shared.bump(s, shared.router_of(s, network_id))
            row = FirewallRuleRow(
                id=new_id(), tenant_id=tenant_id, direction=spec.direction,
                network_id=network_id, public_ip_id=ip_id, protocol=spec.protocol,
                port=spec.port, port_end=spec.port_end, icmp_type=spec.icmp_type,
                icmp_code=spec.icmp_code, cidrs=list(spec.cidrs), generation=gen, error="",
                created_at=utcnow())
            s.add(row)
            s.flush()
            return _firewall_rule(s, row)

        return self._db.write(tx)

    def update_firewall_rule(self, tenant_id: str, obj_id: str,
                             changes: Mapping[str, Any]) -> me.FirewallRule:
        """The rule with `changes` (FirewallRuleSpec fields) applied, validated
        like a create; its direction, public IP and network stay."""

        def tx(s: Session) -> me.FirewallRule:
            row = shared.owned(s, FirewallRuleRow, tenant_id, obj_id, "firewall rule")
            new = dict(changes)
            if "protocol" in new:  # what belonged to the old protocol goes
                for k, default in (("port", 0), ("port_end", 0), ("icmp_type", -1),
                                   ("icmp_code", -1)):
                    new.setdefault(k, default)
            if "port" in new and "port_end" not in new:
                new["port_end"] = 0
            spec = FirewallRuleSpec(
                direction=row.direction, public_ip_id=row.public_ip_id or "",
                network_id=row.network_id if row.direction != INGRESS or not row.public_ip_id
                else "",
                protocol=row.protocol, port=row.port, port_end=row.port_end,
                icmp_type=row.icmp_type, icmp_code=row.icmp_code, cidrs=tuple(row.cidrs))
            spec = check_firewall_rule(dataclasses.replace(spec, **new))
            if spec.direction == INGRESS and spec.network_id:
                guest_ingress_network(s, tenant_id, spec)  # its sources' families, again
            cols = dict(protocol=spec.protocol, port=spec.port, port_end=spec.port_end,
                        icmp_type=spec.icmp_type, icmp_code=spec.icmp_code,
                        cidrs=list(spec.cidrs))
            if any(getattr(row, k) != v for k, v in cols.items()):
                row.generation = shared.bump(s, shared.router_of(s, row.network_id))
                for k, v in cols.items():
                    setattr(row, k, v)
                row.error = ""
            s.flush()
            return _firewall_rule(s, row)

        return self._db.write(tx)

    def get_firewall_rule(self, tenant_id: str, obj_id: str) -> me.FirewallRule:
        return self._db.read(lambda s: _firewall_rule(
            s, shared.owned(s, FirewallRuleRow, tenant_id, obj_id, "firewall rule")))

    def list_firewall_rules(self, tenant_id: TenantScope, page: PageRequest,
                            network_id: str = "") -> Page[me.FirewallRule]:
        stmt = of_tenant(select(FirewallRuleRow), FirewallRuleRow.tenant_id, tenant_id)
        if network_id:
            stmt = stmt.where(FirewallRuleRow.network_id == check_id(network_id, "network_id"))
        return self._db.read(lambda s: rows.paged_rows(s, stmt, FirewallRuleRow, page,
                                                       lambda r: _firewall_rule(s, r)))

    def delete_firewall_rule(self, tenant_id: str, obj_id: str) -> tuple[str, int]:
        return self._db.write(
            lambda s: shared.delete_rule(s, FirewallRuleRow, tenant_id, obj_id, "firewall rule"))

    def get_egress_policy(self, tenant_id: str, network_id: str) -> me.EgressPolicy:
        def tx(s: Session) -> me.EgressPolicy:
            net = shared.network_row(s, tenant_id, network_id, "network_id")
            row = s.get(EgressPolicyRow, net.id)
            return me.EgressPolicy(net.id, bool(row and row.default_deny))

        return self._db.read(tx)

    def set_egress_policy(self, tenant_id: str, network_id: str,
                          default_deny: bool) -> tuple[me.EgressPolicy, str]:
        def tx(s: Session) -> tuple[me.EgressPolicy, str]:
            net = shared.network_row(s, tenant_id, network_id, "policy.network_id")
            router_id = shared.router_of(s, net.id)
            row = s.get(EgressPolicyRow, net.id)
            if bool(row and row.default_deny) != default_deny:
                shared.bump(s, router_id)
                if row is None:
                    s.add(EgressPolicyRow(network_id=net.id, default_deny=default_deny,
                                          updated_at=utcnow()))
                else:
                    row.default_deny = default_deny
                    row.updated_at = utcnow()
            return me.EgressPolicy(net.id, default_deny), router_id

        return self._db.write(tx)


def lb_health(status: Any) -> dict[str, dict[str, list[str]]]:
    """Load balancer ID -> port ID -> [status, last check] from a RouterStatus."""
    out: dict[str, dict[str, list[str]]] = {}
    for m in status.lb_members:
        out.setdefault(m.load_balancer_id, {})[m.port_id] = [m.status, m.check]
    return out
