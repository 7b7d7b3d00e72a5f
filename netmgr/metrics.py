"""Prometheus metrics of the network manager (prometheus-client), read from
the store at scrape time. Names: see docs/metrics.md.

    listen = "127.0.0.1:7070"
    metrics_listen = "127.0.0.1:9100"     # in the TOML config, or --metrics-listen
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from netmgr.model.core import RouterState
from netmgr.store.facade import Store

log = logging.getLogger(__name__)


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        desired = GaugeMetricFamily("cloudnet_netmgr_router_desired_generation",
                                    "Generation the router should run",
                                    labels=["router", "tenant", "host"])
        applied = GaugeMetricFamily("cloudnet_netmgr_router_applied_generation",
                                    "Generation the router's agent acknowledged",
                                    labels=["router", "tenant", "host"])
        state = GaugeMetricFamily("cloudnet_netmgr_router_state",
                                  "1 for the router's current state",
                                  labels=["router", "tenant", "state"])
        healthy = GaugeMetricFamily("cloudnet_netmgr_router_service_healthy",
                                    "1 if the service was healthy at the last report",
                                    labels=["router", "service"])
        total = GaugeMetricFamily("cloudnet_netmgr_routers", "Routers per state",
                                  labels=["state"])
        counts = {s.name: 0 for s in RouterState}
        try:
            routers = self.store.list_routers_all()
        except Exception:
            log.exception("metrics: cannot list routers")
            routers = []
        for r in routers:
            labels = [r.id, r.tenant_id, r.host]
            desired.add_metric(labels, r.desired_generation)
            applied.add_metric(labels, r.applied_generation)
            st = r.state.name
            counts[st] = counts.get(st, 0) + 1
            state.add_metric([r.id, r.tenant_id, st], 1)
            for s in r.services:
                healthy.add_metric([r.id, s.name], 1.0 if s.healthy else 0.0)
        for name, n in counts.items():
            total.add_metric([name], n)
        yield from (total, desired, applied, state, healthy)


def registry_for(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return registry


def serve(store: Store, listen: str) -> int:
    """Serve /metrics on HOST:PORT (port 0 picks one); returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1",
                                        registry=registry_for(store))
    return int(server.server_address[1])
