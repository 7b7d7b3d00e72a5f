"""The router's side of the edge objects in the store: the edge part of a
router snapshot, the delta path's reads (``router_head``,
``edge_rule_kinds``), and what the router reports back (per-object errors,
load balancer member health, the applied generation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import NotFound
from netmgr.model import edge as me
from netmgr.model.validation import check_id
from netmgr.store.edge import (
    KIND_FIREWALL,
    KIND_LOAD_BALANCER,
    KIND_PORT_FORWARD,
    KIND_PUBLIC_IP,
    KIND_STATIC_NAT,
)
from netmgr.store.load_balancers import LoadBalancerStore
from netmgr.store.tables.core import NetworkRow, PortRow, PublicIpRow, RouterRow, utcnow
from netmgr.store.tables.edge import (
    PUBLIC_IP_TENANT,
    EgressPolicyRow,
    FirewallRuleRow,
    LoadBalancerRow,
    PortForwardRow,
    StaticNatRow,
)


class EdgeRouterStore(LoadBalancerStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Routers whose edge objects this process left without an error
        # (``record_edge_status``).
        self._edge_clean: set[str] = set()

    # ------------------------------------------------- router snapshot/status

    def router_head(self, router_id: str) -> tuple[str, int, str]:
        """(host, desired generation, backend) of a router: one row, for the
        delta path."""

        def tx(s: Session) -> tuple[str, int, str]:
            r = s.execute(select(RouterRow.host, RouterRow.desired_generation,
                                 RouterRow.backend).where(RouterRow.id == router_id)).first()
            if r is None:
                raise NotFound(f"router {router_id} not found")
            return r[0], int(r[1]), str(r[2])

        return self._read(tx)

    def edge_rule_kinds(self, tenant_id: str, network_id: str,
                        ids: Iterable[str]) -> tuple[str, dict[str, str]]:
        """(router, {rule ID: kind}) of a tenant's network: the rules named (all
        when none); an ID that is no rule of that network is NotFound."""
        wanted = [check_id(i, f"ids[{n}]") for n, i in enumerate(ids)]

        def tx(s: Session) -> tuple[str, dict[str, str]]:
            net = self._network_row(s, tenant_id, network_id, "network_id")
            out: dict[str, str] = {}
            for kind, table in ((KIND_STATIC_NAT, StaticNatRow),
                                (KIND_PORT_FORWARD, PortForwardRow),
                                (KIND_FIREWALL, FirewallRuleRow),
                                (KIND_LOAD_BALANCER, LoadBalancerRow)):
                stmt = select(table.id).where(table.network_id == net.id)
                if wanted:
                    stmt = stmt.where(table.id.in_(wanted))
                out.update({i: kind for i in s.scalars(stmt)})
            missing = [i for i in wanted if i not in out]
            if missing:
                raise NotFound(f"no rule {missing[0]} on network {net.id}")
            return self._router_of(s, net.id), out

        return self._read(tx)

    def network_cidr(self, network_id: str) -> str:
        return self._read(lambda s: s.scalar(
            select(NetworkRow.cidr).where(NetworkRow.id == network_id)) or "")

    def record_edge_delta_applied(self, router_id: str, applied_generation: int) -> None:
        """The router applied an edge delta: its generation moves on (services,
        ports and other objects are as the last full status said)."""

        def tx(s: Session) -> None:
            row = s.get(RouterRow, router_id)
            if row is None:
                return
            row.applied_generation = max(row.applied_generation, applied_generation)
            row.last_error = ""
            row.reachable = True
            row.updated_at = utcnow()

        self._write(tx)

    def _edge_snapshot(self, s: Session, network_ids: Iterable[str]) -> me.EdgeSnapshot:
        nets = list(network_ids)
        ips = tuple(self._public_ip(s, r) for r in s.scalars(
            select(PublicIpRow).where(PublicIpRow.network_id.in_(nets),
                                      PublicIpRow.kind == PUBLIC_IP_TENANT)
            .order_by(PublicIpRow.ip)))
        by_ip = {ip.id: ip.ip for ip in ips}
        port_ips = dict(s.execute(select(PortRow.id, PortRow.ip)
                                  .where(PortRow.network_id.in_(nets))).all())
        snats = tuple(
            me.StaticNat(id=r.id, tenant_id=r.tenant_id, network_id=r.network_id,
                         public_ip_id=r.public_ip_id, port_id=r.port_id,
                         public_ip=by_ip[r.public_ip_id], private_ip=port_ips[r.port_id],
                         generation=r.generation, error=r.error, created_at=r.created_at)
            for r in s.scalars(select(StaticNatRow).where(StaticNatRow.network_id.in_(nets))
                               .order_by(StaticNatRow.id)))
        # Plain column tuples, not ORM objects: a router may have 50,000 rules.
        pf = PortForwardRow
        pfs = tuple(
            me.PortForward(
                id=r.id, tenant_id=r.tenant_id, network_id=r.network_id,
                public_ip_id=r.public_ip_id, protocol=r.protocol, public_port=r.public_port,
                public_port_end=r.public_port_end, port_id=r.port_id,
                private_port=r.private_port, private_port_end=r.private_port_end,
                source_cidrs=tuple(r.source_cidrs), public_ip=by_ip[r.public_ip_id],
                private_ip=port_ips[r.port_id], generation=r.generation, error=r.error,
                created_at=r.created_at)
            for r in s.execute(select(
                pf.id, pf.tenant_id, pf.network_id, pf.public_ip_id, pf.protocol,
                pf.public_port, pf.public_port_end, pf.port_id, pf.private_port,
                pf.private_port_end, pf.source_cidrs, pf.generation, pf.error, pf.created_at)
                .where(pf.network_id.in_(nets)).order_by(pf.id)))
        fw = FirewallRuleRow
        fws = tuple(
            me.FirewallRule(
                id=r.id, tenant_id=r.tenant_id, direction=r.direction, network_id=r.network_id,
                public_ip_id=r.public_ip_id or "", protocol=r.protocol, port=r.port,
                port_end=r.port_end, icmp_type=r.icmp_type, icmp_code=r.icmp_code,
                cidrs=tuple(r.cidrs),
                public_ip=by_ip.get(r.public_ip_id or "", ""), generation=r.generation,
                error=r.error, created_at=r.created_at)
            for r in s.execute(select(
                fw.id, fw.tenant_id, fw.direction, fw.network_id, fw.public_ip_id, fw.protocol,
                fw.port, fw.port_end, fw.icmp_type, fw.icmp_code, fw.cidrs, fw.generation,
                fw.error, fw.created_at).where(fw.network_id.in_(nets)).order_by(fw.id)))
        policies = tuple(
            me.EgressPolicy(r.network_id, r.default_deny)
            for r in s.scalars(select(EgressPolicyRow).where(EgressPolicyRow.network_id.in_(nets))
                               .order_by(EgressPolicyRow.network_id)))
        lbs = tuple(
            self._load_balancer(s, r, port_ips, by_ip.get(r.public_ip_id, ""), with_state=False)
            for r in s.scalars(select(LoadBalancerRow)
                               .where(LoadBalancerRow.network_id.in_(nets))
                               .order_by(LoadBalancerRow.id)))
        return me.EdgeSnapshot(ips, snats, pfs, fws, policies, lbs)

    def record_edge_status(self, router_id: str, errors: Mapping[tuple[str, str], str],
                           lb_health: Mapping[str, Mapping[str, list[str]]] | None = None) -> None:
        """The router's per-object errors ((kind, id) -> reason) for edge objects;
        objects not named are cleared."""

        # Only this method sets a rule's error: when it left none for this
        # router and none is reported, the scan of every rule row (60,000 at
        # scale, on every resync) is skipped.
        clean = self._edge_clean
        skip_rules = not errors and router_id in clean

        def tx(s: Session) -> None:
            net_ids = self._router_network_ids(s, router_id)  # a VPC router: its tiers
            tables: list[tuple[str, Any]] = [
                (KIND_STATIC_NAT, StaticNatRow), (KIND_PORT_FORWARD, PortForwardRow),
                (KIND_FIREWALL, FirewallRuleRow), (KIND_LOAD_BALANCER, LoadBalancerRow)]
            for kind, table in [] if skip_rules else tables:
                stmt = select(table).where(table.network_id.in_(net_ids))
                if not errors:
                    stmt = stmt.where(table.error != "")
                for row in s.scalars(stmt):
                    err = errors.get((kind, row.id), "")
                    if row.error != err:
                        row.error = err
            for lb in s.scalars(select(LoadBalancerRow)
                                .where(LoadBalancerRow.network_id.in_(net_ids))):
                health = {k: list(v) for k, v in (lb_health or {}).get(lb.id, {}).items()}
                if (lb.member_health or {}) != health:
                    lb.member_health = health
            for ip in s.scalars(select(PublicIpRow).where(PublicIpRow.network_id.in_(net_ids),
                                                          PublicIpRow.kind == PUBLIC_IP_TENANT)):
                err = errors.get((KIND_PUBLIC_IP, ip.id), "")
                if ip.error != err:
                    ip.error = err

        self._write(tx)
        if errors:
            clean.discard(router_id)
        else:
            clean.add(router_id)
