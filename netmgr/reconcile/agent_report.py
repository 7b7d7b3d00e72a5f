"""An agent's report on one router (``router.v1.RouterStatus``), recorded in the model.

The reverse of ``configbuild``: configbuild turns model objects into what the
agent sees, this turns what the agent says back into model values (per-object
errors, service health, load balancer member health, VPN SA states) for the
store. The host agents' reports come through the reconciler's pushes and
resyncs; a VM router's through the VM backend's watch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb
from google.protobuf.json_format import MessageToDict

from netmgr.model.core import RouterReport, ServiceHealth
from netmgr.reconcile.store_view import ObjectRef, ReconcilerStore, VpnStatusStore
from netmgr.store.edge import EDGE_KINDS
from netmgr.store.vpn import KIND_VPN_CONNECTION

REJECTED = "rejected by the router"
# The router's kinds of a port's DHCP options and of a DNS record (router/objects.py).
KIND_DHCP_OPTIONS = "dhcpoptions"
KIND_DNS_RECORD = "dnsrecord"


def object_errors(status: pb.RouterStatus, kinds: Collection[str]) -> dict[ObjectRef, str]:
    """(kind, id) -> why the router refused it, for the objects of these kinds."""
    return {(o.kind, o.id): (o.error or REJECTED)
            for o in status.objects if not o.ok and o.kind in kinds}


def port_errors(status: pb.RouterStatus) -> dict[str, str]:
    """Port ID -> why the router refused it, or its DHCP options (the port
    runs without them: it is ERROR all the same, and says why)."""
    out = {i: f"DHCP options: {e}" for (_, i), e in
           object_errors(status, (KIND_DHCP_OPTIONS,)).items()}
    out.update({i: e for (_, i), e in object_errors(status, ("port",)).items()})
    return out


def lb_health(status: pb.RouterStatus) -> dict[str, dict[str, list[str]]]:
    """Load balancer ID -> port ID -> [status, last check]."""
    out: dict[str, dict[str, list[str]]] = {}
    for m in status.lb_members:
        out.setdefault(m.load_balancer_id, {})[m.port_id] = [m.status, m.check]
    return out


def vpn_sa_status(status: pb.RouterStatus, now: dt.datetime) -> dict[str, dict[str, Any]]:
    """Connection ID -> its SA status as a dict, stamped with `now` (naive UTC)."""
    stamp = now.isoformat() + "Z"
    return {c.connection_id: {**MessageToDict(c, preserving_proto_field_name=True),
                              "update_time": stamp}
            for c in status.vpn_connections}


def record_report(store: ReconcilerStore, vpn: VpnStatusStore, router_id: str,
                  status: pb.RouterStatus) -> None:
    """Store everything the agent reported on this router."""
    record_reports(store, vpn, [(router_id, status)])


def record_reports(store: ReconcilerStore, vpn: VpnStatusStore,
                   statuses: Sequence[tuple[str, pb.RouterStatus]]) -> None:
    """Store everything an agent reported on these routers: each router's
    objects first, then the routers' own status in one transaction. In that
    order a client that waits for a router to read its generation applied,
    then reads the router's objects, sees the ones the router refused ERROR
    already, never ACTIVE for a moment."""
    # One transaction for every router's edge objects, one read for which
    # have VPN connections: a resync records a host's reports together.
    store.record_edge_statuses([(router_id, object_errors(status, EDGE_KINDS), lb_health(status))
                                for router_id, status in statuses])
    vpn_errors = {router_id: {i: e for (_, i), e in
                              object_errors(status, (KIND_VPN_CONNECTION,)).items()}
                  for router_id, status in statuses}
    silent = [router_id for router_id, status in statuses
              if not vpn_errors[router_id] and not status.vpn_connections]
    with_vpn = vpn.routers_with_connections(silent) if silent else set()
    for router_id, status in statuses:
        if router_id in silent and router_id not in with_vpn:
            continue  # no VPN on this router: no write transaction
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        vpn.record_status(router_id, vpn_errors[router_id], vpn_sa_status(status, now))
    store.record_router_statuses([RouterReport(
        router_id, status.applied_generation,
        tuple(ServiceHealth(s.name, s.healthy, s.detail, s.version) for s in status.services),
        status.last_error,
        port_errors(status), True,
        {i: e for (_, i), e in object_errors(status, (KIND_DNS_RECORD,)).items()})
        for router_id, status in statuses])
