"""The router's side of the edge objects in the store: the edge part of a
router snapshot, the delta path's read of rule kinds (``edge_rule_kinds``),
and what the router reports back (per-object errors, load balancer member
health).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from common.grpc_errors import NotFound
from netmgr.model import edge as me
from netmgr.model.validation import check_id
from netmgr.store import rows, shared
from netmgr.store.base import Database
from netmgr.store.edge import (
    KIND_FIREWALL,
    KIND_LOAD_BALANCER,
    KIND_PORT_FORWARD,
    KIND_PUBLIC_IP,
    KIND_STATIC_NAT,
)
from netmgr.store.load_balancers import load_balancer
from netmgr.store.public_ips import public_ip
from netmgr.store.tables.core import PUBLIC_IP_SOURCE_NAT, NetworkRow, PortRow, PublicIpRow
from netmgr.store.tables.edge import (
    PUBLIC_IP_TENANT,
    EgressPolicyRow,
    FirewallRuleRow,
    LoadBalancerRow,
    PortForwardRow,
    StaticNatRow,
)


def edge_snapshot(s: Session, network_ids: Iterable[str]) -> me.EdgeSnapshot:
    """The edge objects a router serves (its networks: ``network_ids``), for its
    RouterSnapshot."""
    nets = list(network_ids)
    ips = tuple(public_ip(s, r) for r in s.scalars(
        select(PublicIpRow).where(PublicIpRow.network_id.in_(nets),
                                  PublicIpRow.kind == PUBLIC_IP_TENANT)
        .order_by(PublicIpRow.ip)))
    by_ip = {ip.id: ip.ip for ip in ips}
    # Port forwards and load balancers may use the source-NAT address (the
    # network's, or the VPC's for a tier): it is the router's own, not a
    # public address of the config.
    vpcs = select(NetworkRow.vpc_id).where(NetworkRow.id.in_(nets))
    snat = select(PublicIpRow.id, PublicIpRow.ip).where(
        PublicIpRow.kind == PUBLIC_IP_SOURCE_NAT,
        or_(PublicIpRow.network_id.in_(nets), PublicIpRow.vpc_id.in_(vpcs)))
    by_ip.update((ip_id, ip) for ip_id, ip in s.execute(snat))
    port_ips = dict(s.execute(select(PortRow.id, PortRow.ip)
                              .where(PortRow.network_id.in_(nets))).all())
    snats = tuple(
        me.StaticNat(status=rows.status(r), network_id=r.network_id,
                     public_ip_id=r.public_ip_id, port_id=r.port_id,
                     public_ip=by_ip[r.public_ip_id], private_ip=port_ips[r.port_id])
        for r in s.scalars(select(StaticNatRow).where(StaticNatRow.network_id.in_(nets))
                           .order_by(StaticNatRow.id)))
    # Plain column tuples, not ORM objects: a router may have 50,000 rules.
    pf = PortForwardRow
    pfs = tuple(
        me.PortForward(
            status=rows.status(r), network_id=r.network_id, public_ip_id=r.public_ip_id,
            protocol=r.protocol, public_port=r.public_port, public_port_end=r.public_port_end,
            port_id=r.port_id, private_port=r.private_port,
            private_port_end=r.private_port_end, source_cidrs=tuple(r.source_cidrs),
            public_ip=by_ip[r.public_ip_id], private_ip=port_ips[r.port_id])
        for r in s.execute(select(
            pf.id, pf.tenant_id, pf.network_id, pf.public_ip_id, pf.protocol,
            pf.public_port, pf.public_port_end, pf.port_id, pf.private_port,
            pf.private_port_end, pf.source_cidrs, pf.generation, pf.error, pf.created_at)
            .where(pf.network_id.in_(nets)).order_by(pf.id)))
    fw = FirewallRuleRow
    fws = tuple(
        me.FirewallRule(
            status=rows.status(r), direction=r.direction, network_id=r.network_id,
            public_ip_id=r.public_ip_id or "", protocol=r.protocol, port=r.port,
            port_end=r.port_end, icmp_type=r.icmp_type, icmp_code=r.icmp_code,
            cidrs=tuple(r.cidrs), public_ip=by_ip.get(r.public_ip_id or "", ""))
        for r in s.execute(select(
            fw.id, fw.tenant_id, fw.direction, fw.network_id, fw.public_ip_id, fw.protocol,
            fw.port, fw.port_end, fw.icmp_type, fw.icmp_code, fw.cidrs, fw.generation,
            fw.error, fw.created_at).where(fw.network_id.in_(nets)).order_by(fw.id)))
    policies = tuple(
        me.EgressPolicy(r.network_id, r.default_deny)
        for r in s.scalars(select(EgressPolicyRow).where(EgressPolicyRow.network_id.in_(nets))
                           .order_by(EgressPolicyRow.network_id)))
    lbs = tuple(
        load_balancer(s, r, port_ips, by_ip.get(r.public_ip_id, ""), with_state=False)
        for r in s.scalars(select(LoadBalancerRow)
                           .where(LoadBalancerRow.network_id.in_(nets))
                           .order_by(LoadBalancerRow.id)))
    return me.EdgeSnapshot(ips, snats, pfs, fws, policies, lbs)


# (router ID, (kind, object ID) -> error, load balancer -> port -> [status, check]).
EdgeReport = tuple[str, Mapping[tuple[str, str], str], Mapping[str, Mapping[str, list[str]]] | None]


class EdgeRouterStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Routers whose edge objects this process left without an error
        # (``record_edge_status``).
        self._edge_clean: set[str] = set()

    def edge_rule_kinds(self, tenant_id: str, network_id: str,
                        ids: Iterable[str]) -> tuple[str, dict[str, str]]:
        """(router, {rule ID: kind}) of a tenant's network: the rules named (all
        when none); an ID that is no rule of that network is NotFound."""
        wanted = [check_id(i, f"ids[{n}]") for n, i in enumerate(ids)]

        def tx(s: Session) -> tuple[str, dict[str, str]]:
            net = shared.network_row(s, tenant_id, network_id, "network_id")
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
            return shared.router_of(s, net.id), out

        return self._db.read(tx)

    def record_edge_status(self, router_id: str, errors: Mapping[tuple[str, str], str],
                           lb_health: Mapping[str, Mapping[str, list[str]]] | None = None) -> None:
        """The router's per-object errors ((kind, id) -> reason) for edge objects;
        objects not named are cleared."""
        self.record_edge_statuses([(router_id, errors, lb_health)])

    def record_edge_statuses(self, reports: Sequence[EdgeReport]) -> None:
        """``record_edge_status`` of several routers (a resync's reports of one
        host) in one transaction."""
        # Only this method sets a rule's error: when it left none for a
        # router and none is reported, the scan of its rule rows (60,000 at
        # scale, on every resync) is skipped.
        clean = self._edge_clean
        errors_of = {router_id: errors for router_id, errors, _ in reports}
        health_of = {router_id: health or {} for router_id, _, health in reports}
        if not errors_of:
            return

        def tx(s: Session) -> None:
            nets_of = shared.routers_network_ids(s, errors_of)  # a VPC router: its tiers
            owner = {net: router_id for router_id, nets in nets_of.items() for net in nets}
            # Rules: every row of a router that reports errors; only the rows
            # holding an error of one that reports none and may have some.
            full = [n for r, nets in nets_of.items() if errors_of[r] for n in nets]
            dirty = [n for r, nets in nets_of.items()
                     if not errors_of[r] and r not in clean for n in nets]
            tables: list[tuple[str, Any]] = [
                (KIND_STATIC_NAT, StaticNatRow), (KIND_PORT_FORWARD, PortForwardRow),
                (KIND_FIREWALL, FirewallRuleRow), (KIND_LOAD_BALANCER, LoadBalancerRow)]
            for kind, table in tables:
                for nets, only_errors in ((full, False), (dirty, True)):
                    for chunk in shared.chunks(nets):
                        stmt = select(table).where(table.network_id.in_(chunk))
                        if only_errors:
                            stmt = stmt.where(table.error != "")
                        for row in s.scalars(stmt):
                            err = errors_of[owner[row.network_id]].get((kind, row.id), "")
                            if row.error != err:
                                row.error = err
            every = list(owner)
            for chunk in shared.chunks(every):
                for lb in s.scalars(select(LoadBalancerRow)
                                    .where(LoadBalancerRow.network_id.in_(chunk))):
                    health = {k: list(v) for k, v in
                              health_of[owner[lb.network_id]].get(lb.id, {}).items()}
                    if (lb.member_health or {}) != health:
                        lb.member_health = health
                for ip in s.scalars(select(PublicIpRow).where(
                        PublicIpRow.network_id.in_(chunk),
                        PublicIpRow.kind == PUBLIC_IP_TENANT)):
                    router_id = owner[ip.network_id or ""]  # the IN above: never None
                    err = errors_of[router_id].get((KIND_PUBLIC_IP, ip.id), "")
                    if ip.error != err:
                        ip.error = err

        self._db.write_if_changed(tx)
        for router_id, errors in errors_of.items():
            if errors:
                clean.discard(router_id)
            else:
                clean.add(router_id)
