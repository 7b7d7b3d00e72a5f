"""What a client reads while netmgr records an agent's report: once a
router reads the generation applied, the objects the router refused at that
generation read ERROR already (a client that waits for the router, then
reads its objects, must never see a refused one ACTIVE)."""

from __future__ import annotations

from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb

from netmgr.reconcile.agent_report import record_reports
from netmgr.store.edge import KIND_LOAD_BALANCER


class OrderedStore:
    """The two writes of a report, as a reader between them would see them."""

    def __init__(self) -> None:
        self.edge_errors: dict[str, dict[Any, str]] = {}
        self.seen_at_router_status: list[dict[Any, str] | None] = []

    def record_router_statuses(self, reports: Any) -> None:
        for r in reports:
            self.seen_at_router_status.append(self.edge_errors.get(r.router_id))

    def record_edge_statuses(self, reports: Any) -> None:
        for router_id, errors, _ in reports:
            self.edge_errors[router_id] = dict(errors)


class NoVpn:
    def routers_with_connections(self, router_ids: Any) -> set[str]:
        return set()

    def record_status(self, router_id: str, errors: Any, sas: Any) -> None:
        raise AssertionError("no VPN here")


def test_refused_objects_are_recorded_before_the_routers_applied_generation() -> None:
    store = OrderedStore()
    status = pb.RouterStatus(router_id="r1", applied_generation=7, objects=[
        pb.ObjectStatus(kind=KIND_LOAD_BALANCER, id="lb1", ok=False, error="path: bad")])
    record_reports(store, NoVpn(), [("r1", status)])  # type: ignore[arg-type]
    assert store.seen_at_router_status == [{(KIND_LOAD_BALANCER, "lb1"): "path: bad"}]
