"""Load balancers in the store: a public IP and port spread over member
ports of the same network (HAProxy in the router). Like every edge object, a
change bumps the router generation of its network and the row records it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition
from netmgr.model import edge as me
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id
from netmgr.model.validation_edge import LoadBalancerSpec, check_load_balancer
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.ports import port_row
from netmgr.store.public_ips import rule_ip, serves
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PortRow, PublicIpRow
from netmgr.store.tables.edge import (
    LoadBalancerRow,
    PortForwardRow,
    StaticNatRow,
)


def load_balancer(s: Session, row: LoadBalancerRow, port_ips: Mapping[str, str] | None = None,
                  public_ip: str | None = None, with_state: bool = True) -> me.LoadBalancer:
    """The model of a row; a router snapshot passes what it read already
    (member addresses, the public address) and leaves the state unjudged."""
    if public_ip is None:
        ip = s.get(PublicIpRow, row.public_ip_id)
        public_ip = ip.ip if ip else ""
    if port_ips is None:
        ids = [m["port_id"] for m in row.members]
        port_ips = dict(s.execute(select(PortRow.id, PortRow.ip)
                                  .where(PortRow.id.in_(ids))).all())
    health = row.member_health or {}
    members = tuple(
        me.LbMember(port_id=m["port_id"], weight=m["weight"], private_port=m["private_port"],
                    ip=port_ips.get(m["port_id"], ""),
                    health=(health.get(m["port_id"]) or ["", ""])[0],
                    last_check=(health.get(m["port_id"]) or ["", ""])[1])
        for m in row.members)
    h = row.health_check
    applied = shared.applied_generation(s, row.network_id) if with_state else None
    return me.LoadBalancer(
        status=rows.status(row, applied), network_id=row.network_id,
        public_ip_id=row.public_ip_id, name=row.name, public_ip=public_ip,
        public_port=row.public_port, protocol=row.protocol, algorithm=row.algorithm,
        private_port=row.private_port, stickiness=row.stickiness,
        health_check=(h["type"], h["path"], h["expect_status"], h["interval_ms"], h["rise"],
                      h["fall"]),
        members=members, source_cidrs=tuple(row.source_cidrs))


def _lb_members(s: Session, tenant_id: str, spec: LoadBalancerSpec,
                network_id: str) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(spec.members):
        field = f"load_balancer.members[{i}].port_id"
        port = port_row(s, tenant_id, m.port_id, field)
        if port.network_id != network_id:
            raise FailedPrecondition(
                f"{field}: port {port.id} is on network {port.network_id}, not on the load "
                f"balancer's network {network_id}")
        out.append({"port_id": port.id, "weight": m.weight, "private_port": m.private_port})
    return out


def _members_tier(s: Session, tenant_id: str, spec: LoadBalancerSpec,
                  ip: PublicIpRow) -> str:
    """The tier a load balancer on a VPC's source-NAT address serves: its
    members' (one tier, as a tier's own address would)."""
    tiers = {port_row(s, tenant_id, m.port_id, f"load_balancer.members[{i}].port_id").network_id
             for i, m in enumerate(spec.members)}
    if len(tiers) != 1:
        raise FailedPrecondition(
            f"load_balancer.members: on VPC {ip.vpc_id}'s source-NAT address {ip.ip}, a load "
            "balancer serves one tier: name members, all on that tier")
    (tier,) = tiers
    if not serves(s, ip, tier):
        raise FailedPrecondition(
            f"load_balancer.members[0].port_id: the port is not on a tier of VPC {ip.vpc_id}")
    return tier


def _lb_columns(spec: LoadBalancerSpec) -> dict[str, Any]:
    h = spec.health_check
    return dict(
        name=spec.name, protocol=spec.protocol, algorithm=spec.algorithm,
        private_port=spec.private_port, stickiness=spec.stickiness,
        health_check={"type": h.type, "path": h.path, "expect_status": h.expect_status,
                      "interval_ms": h.interval_ms, "rise": h.rise, "fall": h.fall},
        source_cidrs=list(spec.source_cidrs))


class LoadBalancerStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_load_balancer(self, tenant_id: str,
                             spec: LoadBalancerSpec) -> me.LoadBalancer:
        spec = check_load_balancer(spec)

        def tx(s: Session) -> me.LoadBalancer:
            ip = rule_ip(s, tenant_id, spec.public_ip_id, "load_balancer.public_ip_id",
                         source_nat=True)
            network_id = ip.network_id or _members_tier(s, tenant_id, spec, ip)
            gen = shared.bump(s, shared.router_of(s, network_id))
            members = _lb_members(s, tenant_id, spec, network_id)
            if s.scalar(select(StaticNatRow.id).where(StaticNatRow.public_ip_id == ip.id)):
                raise FailedPrecondition(
                    f"load_balancer.public_ip_id: public IP {ip.ip} is a static NAT address")
            clash = s.scalar(select(LoadBalancerRow.id).where(
                LoadBalancerRow.public_ip_id == ip.id,
                LoadBalancerRow.public_port == spec.public_port)) or s.scalar(
                select(PortForwardRow.id).where(
                    PortForwardRow.public_ip_id == ip.id, PortForwardRow.protocol == "tcp",
                    PortForwardRow.public_port <= spec.public_port,
                    PortForwardRow.public_port_end >= spec.public_port).limit(1))
            if clash:
                raise AlreadyExists("load_balancer.public_port",
                                    f"{ip.ip} tcp {spec.public_port} is used by rule {clash}")
            row = LoadBalancerRow(
                id=new_id(), tenant_id=tenant_id, network_id=network_id, public_ip_id=ip.id,
                public_port=spec.public_port, members=members, member_health={}, generation=gen,
                error="", created_at=utcnow(), **_lb_columns(spec))
            s.add(row)
            s.flush()
            return load_balancer(s, row)

        return self._db.write(tx)

    def update_load_balancer(self, tenant_id: str, lb_id: str,
                             spec: LoadBalancerSpec) -> me.LoadBalancer:
        def tx(s: Session) -> me.LoadBalancer:
            row = shared.owned(s, LoadBalancerRow, tenant_id, lb_id, "load balancer")
            full = check_load_balancer(dataclasses.replace(
                spec, public_ip_id=row.public_ip_id, public_port=row.public_port))
            members = _lb_members(s, tenant_id, full, row.network_id)
            cols = _lb_columns(full)
            if members != row.members or any(getattr(row, k) != v for k, v in cols.items()):
                row.generation = shared.bump(s, shared.router_of(s, row.network_id))
                row.members = members
                for k, v in cols.items():
                    setattr(row, k, v)
                row.error = ""
            s.flush()
            return load_balancer(s, row)

        return self._db.write(tx)

    def get_load_balancer(self, tenant_id: str, lb_id: str) -> me.LoadBalancer:
        return self._db.read(lambda s: load_balancer(
            s, shared.owned(s, LoadBalancerRow, tenant_id, lb_id, "load balancer")))

    def list_load_balancers(self, tenant_id: TenantScope, page: PageRequest,
                            network_id: str = "") -> Page[me.LoadBalancer]:
        stmt = of_tenant(select(LoadBalancerRow), LoadBalancerRow.tenant_id, tenant_id)
        if network_id:
            stmt = stmt.where(LoadBalancerRow.network_id == check_id(network_id, "network_id"))
        return self._db.read(lambda s: rows.paged_rows(s, stmt, LoadBalancerRow, page,
                                                       lambda r: load_balancer(s, r)))

    def delete_load_balancer(self, tenant_id: str, lb_id: str) -> str:
        return self._db.write(lambda s: shared.delete_rule(
            s, LoadBalancerRow, tenant_id, lb_id, "load balancer"))[0]
