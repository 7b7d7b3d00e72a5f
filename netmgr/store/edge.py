"""Edge objects in the store: tenant public IPs, static NAT, port forwards,
firewall rules and egress policies.

As with ports, every change bumps the router generation of the network it
touches first (on PostgreSQL that row lock serialises concurrent rule changes
of one network, so overlap checks read committed rules), and the changed row
records that generation: PENDING until the router applied it. Another
tenant's objects are NotFound, never "forbidden".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, NotFound
from netmgr.model import edge as me
from netmgr.model.core import object_state
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
from netmgr.store import ipam, rows
from netmgr.store.base import new_id
from netmgr.store.ports import PortStore
from netmgr.store.tables.core import PUBLIC_IP_SOURCE_NAT, PortRow, PublicIpRow, RouterRow, utcnow
from netmgr.store.tables.edge import (
    PUBLIC_IP_TENANT,
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


class EdgeStore(PortStore):
    # ------------------------------------------------------------- helpers

    def _applied(self, s: Session, network_id: str | None) -> int:
        if not network_id:
            return 0
        gen = s.scalar(select(RouterRow.applied_generation)
                       .where(RouterRow.id == self._router_of(s, network_id)))
        return int(gen or 0)

    def _public_ip_row(self, s: Session, tenant_id: str, ip_id: str,
                       field: str = "id") -> PublicIpRow:
        row = s.get(PublicIpRow, check_id(ip_id, field))
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"public IP {ip_id} not found")
        return row

    def _public_ip(self, s: Session, row: PublicIpRow) -> me.PublicIp:
        return me.PublicIp(
            id=row.id, ip=row.ip, tenant_id=row.tenant_id, network_id=row.network_id or "",
            source_nat=row.kind == PUBLIC_IP_SOURCE_NAT, generation=row.generation,
            error=row.error, created_at=rows.aware(row.created_at),
            state=object_state(row.generation, row.error, applied := self._applied(
                s, row.network_id)), applied_generation=applied,
        )

    def _rule_ip(self, s: Session, tenant_id: str, ip_id: str, field: str) -> PublicIpRow:
        row = self._public_ip_row(s, tenant_id, ip_id, field)
        if row.kind != PUBLIC_IP_TENANT:
            raise FailedPrecondition(
                f"{field}: {row.ip} is a network's source-NAT address; allocate a public IP")
        if not row.network_id:
            raise FailedPrecondition(
                f"{field}: public IP {row.ip} is not associated to a network")
        return row

    def _ip_in_use(self, s: Session, ip_id: str) -> str:
        for table, what in ((StaticNatRow, "static NAT"), (PortForwardRow, "port forwards"),
                            (FirewallRuleRow, "firewall rules"),
                            (LoadBalancerRow, "load balancers")):
            if s.scalar(select(table.id).where(table.public_ip_id == ip_id).limit(1)):
                return what
        return ""

    @staticmethod
    def _page(s: Session, stmt: Any, table: Any, page: PageRequest,
              conv: Any) -> Page[Any]:
        return rows.paged(s, stmt, table, page, lambda r: conv(r[0]))

    def router_of_network(self, network_id: str) -> str:
        return self._read(lambda s: self._router_of(s, network_id))

    # ---------------------------------------------------------- public IPs

    def allocate_public_ip(self, tenant_id: str, network_id: str) -> tuple[me.PublicIp, str]:
        """A new tenant address; returns it and the router to notify ("" if none)."""

        def tx(s: Session) -> tuple[me.PublicIp, str]:
            zone = rows.zone(self._zone_row(s, lock=True))
            tenant = self._tenant_row(s, tenant_id)
            router_id, gen = "", 0
            if network_id:
                net = self._network_row(s, tenant.id, network_id, "network_id")
                router_id = self._router_of(s, net.id)
                gen = self._bump(s, router_id)
            row = PublicIpRow(id=new_id(), ip=ipam.allocate_public_ip(s, zone),
                              kind=PUBLIC_IP_TENANT, tenant_id=tenant.id,
                              network_id=network_id or None, generation=gen, error="",
                              created_at=utcnow())
            s.add(row)
            s.flush()
            return self._public_ip(s, row), router_id

        return self._write(tx)

    def get_public_ip(self, tenant_id: str, ip_id: str) -> me.PublicIp:
        return self._read(lambda s: self._public_ip(s, self._public_ip_row(s, tenant_id, ip_id)))

    def list_public_ips(self, tenant_id: str, page: PageRequest,
                        network_id: str = "") -> Page[me.PublicIp]:
        stmt = select(PublicIpRow).where(PublicIpRow.tenant_id == tenant_id)
        if network_id:
            stmt = stmt.where(PublicIpRow.network_id == check_id(network_id, "network_id"))
        return self._read(lambda s: self._page(s, stmt, PublicIpRow, page,
                                               lambda r: self._public_ip(s, r)))

    def associate_public_ip(self, tenant_id: str, ip_id: str,
                            network_id: str) -> tuple[me.PublicIp, tuple[str, ...]]:
        def tx(s: Session) -> tuple[me.PublicIp, tuple[str, ...]]:
            row = self._public_ip_row(s, tenant_id, ip_id)
            if row.kind != PUBLIC_IP_TENANT:
                raise FailedPrecondition(f"id: {row.ip} is a network's source-NAT address")
            new_net = (self._network_row(s, tenant_id, network_id, "network_id").id
                       if network_id else None)
            if new_net == row.network_id:
                return self._public_ip(s, row), ()
            used = self._ip_in_use(s, row.id)
            if used:
                raise FailedPrecondition(f"public IP {row.ip} is used by {used}; delete them first")
            routers = [self._router_of(s, n) for n in (row.network_id, new_net) if n]
            gens = [self._bump(s, r) for r in routers]
            row.network_id = new_net
            row.generation = gens[-1] if new_net else 0
            row.error = ""
            s.flush()
            return self._public_ip(s, row), tuple(routers)

        return self._write(tx)

    def release_public_ip(self, tenant_id: str, ip_id: str) -> str:
        """Return the address to the pool; the router to notify ("" if none)."""

        def tx(s: Session) -> str:
            row = self._public_ip_row(s, tenant_id, ip_id)
            if row.kind != PUBLIC_IP_TENANT:
                raise FailedPrecondition(
                    f"{row.ip} is a network's source-NAT address; it goes with the network")
            used = self._ip_in_use(s, row.id)
            if used:
                raise FailedPrecondition(f"public IP {row.ip} is used by {used}; delete them first")
            router_id = self._router_of(s, row.network_id) if row.network_id else ""
            if router_id:
                self._bump(s, router_id)
            s.delete(row)
            return router_id

        return self._write(tx)

    # ---------------------------------------------------------- static NAT

    def _static_nat(self, s: Session, row: StaticNatRow) -> me.StaticNat:
        ip = s.get(PublicIpRow, row.public_ip_id)
        port = s.get(PortRow, row.port_id)
        assert ip is not None
        assert port is not None
        return me.StaticNat(
            id=row.id, tenant_id=row.tenant_id, network_id=row.network_id,
            public_ip_id=row.public_ip_id, port_id=row.port_id, public_ip=ip.ip,
            private_ip=port.ip, generation=row.generation, error=row.error,
            created_at=rows.aware(row.created_at),
            state=object_state(row.generation, row.error, applied := self._applied(
                s, row.network_id)), applied_generation=applied)

    def _guest_port(self, s: Session, tenant_id: str, port_id: str, field: str,
                    ip: PublicIpRow) -> PortRow:
        port = self._port_row(s, tenant_id, port_id, field)
        if port.network_id != ip.network_id:
            raise FailedPrecondition(
                f"{field}: port {port.id} is on network {port.network_id}, but public IP "
                f"{ip.ip} is associated to network {ip.network_id}")
        return port

    def create_static_nat(self, tenant_id: str, spec: StaticNatSpec) -> me.StaticNat:
        spec = check_static_nat(spec)

        def tx(s: Session) -> me.StaticNat:
            ip = self._rule_ip(s, tenant_id, spec.public_ip_id, "static_nat.public_ip_id")
            port = self._guest_port(s, tenant_id, spec.port_id, "static_nat.port_id", ip)
            gen = self._bump(s, self._router_of(s, port.network_id))
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
            return self._static_nat(s, row)

        return self._write(tx)

    def _owned(self, s: Session, table: Any, tenant_id: str, obj_id: str, what: str) -> Any:
        row = s.get(table, check_id(obj_id))
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"{what} {obj_id} not found")
        return row

    def get_static_nat(self, tenant_id: str, obj_id: str) -> me.StaticNat:
        return self._read(lambda s: self._static_nat(
            s, self._owned(s, StaticNatRow, tenant_id, obj_id, "static NAT")))

    def list_static_nats(self, tenant_id: str, page: PageRequest,
                         network_id: str = "") -> Page[me.StaticNat]:
        stmt = select(StaticNatRow).where(StaticNatRow.tenant_id == tenant_id)
        if network_id:
            stmt = stmt.where(StaticNatRow.network_id == check_id(network_id, "network_id"))
        return self._read(lambda s: self._page(s, stmt, StaticNatRow, page,
                                               lambda r: self._static_nat(s, r)))

    def _delete_rule(self, table: Any, tenant_id: str, obj_id: str,
                     what: str) -> tuple[str, int]:
        """Returns the router to notify and the generation of the change."""

        def tx(s: Session) -> tuple[str, int]:
            row = self._owned(s, table, tenant_id, obj_id, what)
            router_id = self._router_of(s, row.network_id)
            gen = self._bump(s, router_id)
            s.delete(row)
            return router_id, gen

        return self._write(tx)

    def delete_static_nat(self, tenant_id: str, obj_id: str) -> tuple[str, int]:
        return self._delete_rule(StaticNatRow, tenant_id, obj_id, "static NAT")

    # ------------------------------------------------------- port forwards

    def _port_forward(self, s: Session, row: PortForwardRow) -> me.PortForward:
        ip = s.get(PublicIpRow, row.public_ip_id)
        port = s.get(PortRow, row.port_id)
        assert ip is not None
        assert port is not None
        return me.PortForward(
            id=row.id, tenant_id=row.tenant_id, network_id=row.network_id,
            public_ip_id=row.public_ip_id, protocol=row.protocol, public_port=row.public_port,
            public_port_end=row.public_port_end, port_id=row.port_id,
            private_port=row.private_port, private_port_end=row.private_port_end,
            source_cidrs=tuple(row.source_cidrs), public_ip=ip.ip, private_ip=port.ip,
            generation=row.generation, error=row.error, created_at=rows.aware(row.created_at),
            state=object_state(row.generation, row.error, applied := self._applied(
                s, row.network_id)), applied_generation=applied)

    def create_port_forward(self, tenant_id: str, spec: PortForwardSpec) -> me.PortForward:
        spec = check_port_forward(spec)

        def tx(s: Session) -> me.PortForward:
            ip = self._rule_ip(s, tenant_id, spec.public_ip_id, "port_forward.public_ip_id")
            port = self._guest_port(s, tenant_id, spec.port_id, "port_forward.port_id", ip)
            gen = self._bump(s, self._router_of(s, port.network_id))
            if s.scalar(select(StaticNatRow.id).where(StaticNatRow.public_ip_id == ip.id)):
                raise FailedPrecondition(
                    f"port_forward.public_ip_id: public IP {ip.ip} is a static NAT address")
            self._pf_clash(s, ip, spec, "")
            row = PortForwardRow(
                id=new_id(), tenant_id=tenant_id, network_id=port.network_id, public_ip_id=ip.id,
                protocol=spec.protocol, public_port=spec.public_port,
                public_port_end=spec.public_port_end, port_id=port.id,
                private_port=spec.private_port, private_port_end=spec.private_port_end,
                source_cidrs=list(spec.source_cidrs), generation=gen, error="",
                created_at=utcnow())
            s.add(row)
            s.flush()
            return self._port_forward(s, row)

        return self._write(tx)

    @staticmethod
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

    def update_port_forward(self, tenant_id: str, obj_id: str,
                            changes: Mapping[str, Any]) -> me.PortForward:
        """The forward with `changes` (PortForwardSpec fields) applied, validated
        like a create; unchanged content changes nothing (no generation)."""

        def tx(s: Session) -> me.PortForward:
            row = self._owned(s, PortForwardRow, tenant_id, obj_id, "port forward")
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
            ip = self._rule_ip(s, tenant_id, row.public_ip_id, "port_forward.public_ip_id")
            port = self._guest_port(s, tenant_id, spec.port_id, "port_forward.port_id", ip)
            cols = dict(protocol=spec.protocol, public_port=spec.public_port,
                        public_port_end=spec.public_port_end, port_id=port.id,
                        private_port=spec.private_port, private_port_end=spec.private_port_end,
                        source_cidrs=list(spec.source_cidrs))
            if any(getattr(row, k) != v for k, v in cols.items()):
                row.generation = self._bump(s, self._router_of(s, row.network_id))
                self._pf_clash(s, ip, spec, row.id)
                for k, v in cols.items():
                    setattr(row, k, v)
                row.error = ""
            s.flush()
            return self._port_forward(s, row)

        return self._write(tx)

    def get_port_forward(self, tenant_id: str, obj_id: str) -> me.PortForward:
        return self._read(lambda s: self._port_forward(
            s, self._owned(s, PortForwardRow, tenant_id, obj_id, "port forward")))

    def list_port_forwards(self, tenant_id: str, page: PageRequest,
                           network_id: str = "") -> Page[me.PortForward]:
        stmt = select(PortForwardRow).where(PortForwardRow.tenant_id == tenant_id)
        if network_id:
            stmt = stmt.where(PortForwardRow.network_id == check_id(network_id, "network_id"))
        return self._read(lambda s: self._page(s, stmt, PortForwardRow, page,
                                               lambda r: self._port_forward(s, r)))

    def delete_port_forward(self, tenant_id: str, obj_id: str) -> tuple[str, int]:
        return self._delete_rule(PortForwardRow, tenant_id, obj_id, "port forward")

    # ------------------------------------------------------- firewall rules

    def _firewall_rule(self, s: Session, row: FirewallRuleRow) -> me.FirewallRule:
        ip = s.get(PublicIpRow, row.public_ip_id) if row.public_ip_id else None
        return me.FirewallRule(
            id=row.id, tenant_id=row.tenant_id, direction=row.direction,
            network_id=row.network_id, public_ip_id=row.public_ip_id or "",
            protocol=row.protocol, port=row.port, port_end=row.port_end,
            icmp_type=row.icmp_type, icmp_code=row.icmp_code, cidrs=tuple(row.cidrs),
            public_ip=ip.ip if ip else "", generation=row.generation, error=row.error,
            created_at=rows.aware(row.created_at),
            state=object_state(row.generation, row.error, applied := self._applied(
                s, row.network_id)), applied_generation=applied)

    def create_firewall_rule(self, tenant_id: str, spec: FirewallRuleSpec) -> me.FirewallRule:
        spec = check_firewall_rule(spec)

        def tx(s: Session) -> me.FirewallRule:
            ip_id: str | None = None
            if spec.direction == INGRESS:
                ip = self._rule_ip(s, tenant_id, spec.public_ip_id, "firewall_rule.public_ip_id")
                ip_id, network_id = ip.id, ip.network_id
            else:
                network_id = self._network_row(s, tenant_id, spec.network_id,
                                               "firewall_rule.network_id").id
            assert network_id is not None
            gen = self._bump(s, self._router_of(s, network_id))
            row = FirewallRuleRow(
                id=new_id(), tenant_id=tenant_id, direction=spec.direction,
                network_id=network_id, public_ip_id=ip_id, protocol=spec.protocol,
                port=spec.port, port_end=spec.port_end, icmp_type=spec.icmp_type,
                icmp_code=spec.icmp_code, cidrs=list(spec.cidrs), generation=gen, error="",
                created_at=utcnow())
            s.add(row)
            s.flush()
            return self._firewall_rule(s, row)

        return self._write(tx)

    def update_firewall_rule(self, tenant_id: str, obj_id: str,
                             changes: Mapping[str, Any]) -> me.FirewallRule:
        """The rule with `changes` (FirewallRuleSpec fields) applied, validated
        like a create; its direction, public IP and network stay."""

        def tx(s: Session) -> me.FirewallRule:
            row = self._owned(s, FirewallRuleRow, tenant_id, obj_id, "firewall rule")
            new = dict(changes)
            if "protocol" in new:  # what belonged to the old protocol goes
                for k, default in (("port", 0), ("port_end", 0), ("icmp_type", -1),
                                   ("icmp_code", -1)):
                    new.setdefault(k, default)
            if "port" in new and "port_end" not in new:
                new["port_end"] = 0
            spec = FirewallRuleSpec(
                direction=row.direction, public_ip_id=row.public_ip_id or "",
                network_id=row.network_id if row.direction != INGRESS else "",
                protocol=row.protocol, port=row.port, port_end=row.port_end,
                icmp_type=row.icmp_type, icmp_code=row.icmp_code, cidrs=tuple(row.cidrs))
            spec = check_firewall_rule(dataclasses.replace(spec, **new))
            cols = dict(protocol=spec.protocol, port=spec.port, port_end=spec.port_end,
                        icmp_type=spec.icmp_type, icmp_code=spec.icmp_code,
                        cidrs=list(spec.cidrs))
            if any(getattr(row, k) != v for k, v in cols.items()):
                row.generation = self._bump(s, self._router_of(s, row.network_id))
                for k, v in cols.items():
                    setattr(row, k, v)
                row.error = ""
            s.flush()
            return self._firewall_rule(s, row)

        return self._write(tx)

    def get_firewall_rule(self, tenant_id: str, obj_id: str) -> me.FirewallRule:
        return self._read(lambda s: self._firewall_rule(
            s, self._owned(s, FirewallRuleRow, tenant_id, obj_id, "firewall rule")))

    def list_firewall_rules(self, tenant_id: str, page: PageRequest,
                            network_id: str = "") -> Page[me.FirewallRule]:
        stmt = select(FirewallRuleRow).where(FirewallRuleRow.tenant_id == tenant_id)
        if network_id:
            stmt = stmt.where(FirewallRuleRow.network_id == check_id(network_id, "network_id"))
        return self._read(lambda s: self._page(s, stmt, FirewallRuleRow, page,
                                               lambda r: self._firewall_rule(s, r)))

    def delete_firewall_rule(self, tenant_id: str, obj_id: str) -> tuple[str, int]:
        return self._delete_rule(FirewallRuleRow, tenant_id, obj_id, "firewall rule")

    def get_egress_policy(self, tenant_id: str, network_id: str) -> me.EgressPolicy:
        def tx(s: Session) -> me.EgressPolicy:
            net = self._network_row(s, tenant_id, network_id, "network_id")
            row = s.get(EgressPolicyRow, net.id)
            return me.EgressPolicy(net.id, bool(row and row.default_deny))

        return self._read(tx)

    def set_egress_policy(self, tenant_id: str, network_id: str,
                          default_deny: bool) -> tuple[me.EgressPolicy, str]:
        def tx(s: Session) -> tuple[me.EgressPolicy, str]:
            net = self._network_row(s, tenant_id, network_id, "policy.network_id")
            router_id = self._router_of(s, net.id)
            row = s.get(EgressPolicyRow, net.id)
            if bool(row and row.default_deny) != default_deny:
                self._bump(s, router_id)
                if row is None:
                    s.add(EgressPolicyRow(network_id=net.id, default_deny=default_deny,
                                          updated_at=utcnow()))
                else:
                    row.default_deny = default_deny
                    row.updated_at = utcnow()
            return me.EgressPolicy(net.id, default_deny), router_id

        return self._write(tx)




def lb_health(status: Any) -> dict[str, dict[str, list[str]]]:
    """Load balancer ID -> port ID -> [status, last check] from a RouterStatus."""
    out: dict[str, dict[str, list[str]]] = {}
    for m in status.lb_members:
        out.setdefault(m.load_balancer_id, {})[m.port_id] = [m.status, m.check]
    return out
