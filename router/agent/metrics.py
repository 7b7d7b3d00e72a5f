"""Prometheus metrics of the router agent (prometheus-client), collected at
scrape time from the routers the agent holds. Names: see docs/metrics.md.

    cloudnet-router-agent --metrics-listen 127.0.0.1:9101
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common import netns
from router.agent.registry import RouterRegistry
from router.diag import show
from router.services import haproxy

log = logging.getLogger("router.agent.metrics")


def _conntrack_count(ns: str) -> int:
    def read() -> int:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            return int(f.read().strip() or 0)
    try:
        return netns.run_in_netns(ns, read)
    except (OSError, ValueError):
        return 0


class AgentCollector(Collector):
    def __init__(self, routers: RouterRegistry) -> None:
        self.routers = routers

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        gen = GaugeMetricFamily("cloudnet_router_applied_generation",
                                "Generation of the config the router runs", labels=["router"])
        rejected = GaugeMetricFamily("cloudnet_router_rejected_generation",
                                     "Generation of the last rejected config (0: none)",
                                     labels=["router"])
        apply_s = GaugeMetricFamily("cloudnet_router_apply_seconds",
                                    "Seconds the last successful apply took", labels=["router"])
        healthy = GaugeMetricFamily("cloudnet_router_service_healthy",
                                    "1 if the router's service is healthy",
                                    labels=["router", "service"])
        leases = GaugeMetricFamily("cloudnet_router_dhcp_leases",
                                   "DHCP leases held, per network",
                                   labels=["router", "network"])
        ct = GaugeMetricFamily("cloudnet_router_conntrack_entries",
                               "Connection tracking entries in the router's namespace",
                               labels=["router"])
        pkts = CounterMetricFamily("cloudnet_router_rule_packets",
                                   "Packets counted by an nftables rule",
                                   labels=["router", "chain", "object_kind", "object_id", "rule"])
        byts = CounterMetricFamily("cloudnet_router_rule_bytes",
                                   "Bytes counted by an nftables rule",
                                   labels=["router", "chain", "object_kind", "object_id", "rule"])
        lb = GaugeMetricFamily("cloudnet_router_lb_member_up",
                               "1 if HAProxy reports the load balancer member UP",
                               labels=["router", "load_balancer", "port"])
        routers = GaugeMetricFamily("cloudnet_router_agent_routers",
                                    "Routers held by this agent")
        runtimes = self.routers.runtimes()
        routers.add_metric([], len(runtimes))
        for rt in runtimes:
            rid = rt.ctx.router_id
            try:
                status, cfg = rt.status_and_config()
                gen.add_metric([rid], status.applied_generation)
                rejected.add_metric([rid], status.rejected_generation)
                apply_s.add_metric([rid], status.apply_seconds)
                for s in status.services:
                    healthy.add_metric([rid, s.name], 1.0 if s.healthy else 0.0)
                if cfg is None:
                    continue
                per_net: dict[str, int] = {n.network_id: 0 for n in cfg.guest_networks}
                for lease in show.leases(rt.ctx.paths.dhcp_leases, cfg):
                    per_net[lease.network_id] = per_net.get(lease.network_id, 0) + 1
                for nid, n in per_net.items():
                    leases.add_metric([rid, nid], n)
                ct.add_metric([rid], _conntrack_count(rt.ctx.netns))
                for m in haproxy.member_status(rt.ctx, cfg):
                    lb.add_metric([rid, m.load_balancer_id, m.port_id],
                                  1.0 if m.status.startswith("UP") else 0.0)
                for c in show.counters(rt.ctx.netns):
                    if not c.table.endswith(" cloudnet"):
                        continue
                    labels = [rid, c.chain, c.object_kind, c.object_id, c.comment or str(c.handle)]
                    pkts.add_metric(labels, c.packets)
                    byts.add_metric(labels, c.bytes)
            except Exception:  # one broken router must not hide the others
                log.exception("metrics of router %s", rid)
        yield from (routers, gen, rejected, apply_s, healthy, leases, ct, pkts, byts, lb)


def registry_for(routers: RouterRegistry) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(routers))
    return registry


def serve(routers: RouterRegistry, listen: str) -> int:
    """Serve /metrics on HOST:PORT (port 0 picks one); returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1",
                                        registry=registry_for(routers))
    return int(server.server_address[1])
