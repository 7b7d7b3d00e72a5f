"""The RouterDiagnostics gRPC service of the router agent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import diag_pb2 as pb
from cloudnet.router.v1 import diag_pb2_grpc

from common import netns
from router.agent.registry import RouterRegistry
from router.diag import capture as cap
from router.diag import probes, show
from router.diag import trace as tr
from router.diag.common import (
    DiagBusy,
    DiagError,
    DiagUnavailable,
    check_ipv4,
    check_not_broadcast,
    guest_interface,
    guest_network,
    resolve_interface,
)
from router.runtime import RouterRuntime
from router.services import bgp, haproxy
from router.services.nftables import port_security

log = logging.getLogger("router.diag")
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["RouterDiagnostics"].full_name
# Streams and probes hold one of the agent's gRPC threads each: bounded, so
# that diagnostics can never starve ApplyConfig.
MAX_STREAMS_PER_ROUTER = 2
MAX_STREAMS = 4
MAX_PROBES = 4
PROBE_WAIT = 5.0
# How long a trace waits for the start's sweep of stale trace tables.
SWEEP_WAIT = 60.0
NO_PROBE_PORTS = ("this probe needs a probe port on the tenant network's segment, and a router "
                  "VM has no switch inside to plug one into: probe from the router itself "
                  "(no source network) or capture on its interface")


def _cancel_event(context: grpc.ServicerContext) -> threading.Event:
    ev = threading.Event()
    context.add_callback(ev.set)
    return ev


class DiagnosticsServicer(diag_pb2_grpc.RouterDiagnosticsServicer):
    def __init__(self, registry: RouterRegistry) -> None:
        self.registry = registry
        self._probe_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._streams: dict[str, int] = {}
        self._probes = threading.BoundedSemaphore(MAX_PROBES)
        # Set once the trace tables a killed agent left are removed (in the
        # background at start: a fork-free look into every router).
        self.swept = threading.Event()

    def _stream_slot(self, router_id: str) -> None:
        with self._locks_lock:
            if sum(self._streams.values()) >= MAX_STREAMS:
                raise DiagBusy(f"{MAX_STREAMS} captures or traces are running on this agent")
            if self._streams.get(router_id, 0) >= MAX_STREAMS_PER_ROUTER:
                raise DiagBusy(f"{MAX_STREAMS_PER_ROUTER} captures or traces are running on "
                               "this router")
            self._streams[router_id] = self._streams.get(router_id, 0) + 1

    def _release_stream(self, router_id: str) -> None:
        with self._locks_lock:
            self._streams[router_id] -= 1
            if not self._streams[router_id]:
                del self._streams[router_id]

    def _router(self, router_id: str) -> tuple[RouterRuntime, apb.RouterConfig]:
        rt = self.registry.runtime(router_id, create=False)
        cfg = rt.config
        if cfg is None:
            raise DiagUnavailable(f"router {router_id} has no applied config")
        return rt, cfg

    def _probe_lock(self, router_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._probe_locks.setdefault(router_id, threading.Lock())

    # ---- capture ---------------------------------------------------------------

    def Capture(self, request: pb.CaptureRequest, context: Any) -> Iterator[pb.CaptureChunk]:
        limits = cap.check_limits(request.max_packets, request.max_seconds, request.max_bytes,
                                  request.snaplen)
        cap.check_filter_text(request.filter)
        rt, cfg = self._router(request.router_id)
        iface = resolve_interface(cfg, request.interface, "interface")
        cap.compile_filter(rt.ctx.netns, iface.name, request.filter)
        cancelled = _cancel_event(context)
        result = cap.Result()
        self._stream_slot(request.router_id)
        try:
            for data in cap.capture(rt.ctx.netns, iface.name, request.filter, limits, cancelled,
                                    result=result):
                yield pb.CaptureChunk(data=data)
        finally:
            self._release_stream(request.router_id)
        yield pb.CaptureChunk(summary=pb.CaptureSummary(
            packets=result.packets, bytes=result.bytes, stopped_by=result.stopped_by,
            interface=iface.name))

    # ---- trace -----------------------------------------------------------------

    def Trace(self, request: pb.TraceRequest, context: Any) -> Iterator[pb.TraceEvent]:
        tr.check_request(request)  # the errors before anything is looked up or installed
        rt, _ = self._router(request.router_id)
        tr.match_expr(request)  # the errors before anything is installed
        self.swept.wait(SWEEP_WAIT)  # its new table must not be taken for a stale one
        self._stream_slot(request.router_id)
        try:
            yield from tr.trace(rt.ctx.netns, request, _cancel_event(context))
        finally:
            self._release_stream(request.router_id)

    # ---- show ------------------------------------------------------------------

    def Show(self, request: pb.ShowRequest, context: Any) -> pb.ShowResponse:
        rt, cfg = self._router(request.router_id)
        ns = rt.ctx.netns
        kind = request.kind
        if kind == pb.SHOW_KIND_LEASES:
            return pb.ShowResponse(leases=show.leases(rt.ctx.paths.dhcp_leases, cfg))
        if kind == pb.SHOW_KIND_CONNTRACK:
            address = check_ipv4("address", request.address) if request.address else ""
            return pb.ShowResponse(conntrack=show.conntrack(ns, address))
        if kind == pb.SHOW_KIND_COUNTERS:
            return pb.ShowResponse(counters=show.counters(ns))
        if kind == pb.SHOW_KIND_INTERFACES:
            return pb.ShowResponse(interfaces=show.interfaces(ns, cfg))
        if kind == pb.SHOW_KIND_ROUTES:
            return pb.ShowResponse(routes=show.routes(ns))
        if kind == pb.SHOW_KIND_LB_MEMBERS:
            return pb.ShowResponse(lb_members=haproxy.member_status(rt.ctx, cfg))
        if kind == pb.SHOW_KIND_BGP:
            return pb.ShowResponse(bgp_sessions=bgp.sessions(rt.ctx))
        raise DiagError("kind", "one of leases, conntrack, counters, interfaces, routes, "
                        "lb-members, bgp")

    # ---- probes ----------------------------------------------------------------

    def Probe(self, request: pb.ProbeRequest, context: Any) -> pb.ProbeResult:
        which, timeout = probes.check_request(request)
        rt, cfg = self._router(request.router_id)
        if not self._probes.acquire(blocking=False):
            raise DiagBusy(f"{MAX_PROBES} probes are running on this agent")
        try:
            lock = self._probe_lock(request.router_id)
            if not lock.acquire(timeout=PROBE_WAIT):
                raise DiagBusy("another probe is running on this router")
            try:
                return self._probe(rt, cfg, request, which, timeout)
            finally:
                lock.release()
        finally:
            self._probes.release()

    def _probe(self, rt: RouterRuntime, cfg: apb.RouterConfig, request: pb.ProbeRequest,
               which: str, timeout: float) -> pb.ProbeResult:
        ns = rt.ctx.netns
        prefix = self.registry.netns_prefix
        if which == "dhcp":
            d = request.dhcp
            iface = guest_interface(cfg, d.network_id, "dhcp.network_id")
            mac = probes.check_mac_or_random(d.mac)
            # A guest's lease must survive the probe: never release what it holds.
            held = any(lease.mac == mac for lease in
                       show.leases(rt.ctx.paths.dhcp_leases, cfg))
            port = self._probe_port(probes.ProbePort(rt.ctx.fabric, prefix, iface.segment_id, mac))
            with port:
                return netns.run_in_netns(port.netns, lambda: probes.dhcp(
                    port.ifname, mac, d.request, timeout, release=not held))
        if which == "dns":
            q = request.dns
            if q.server:
                server = check_not_broadcast("dns.server", q.server, cfg)
            else:
                nid = q.network_id or q.source.network_id or (
                    cfg.guest_networks[0].network_id if cfg.guest_networks else "")
                server = guest_network(cfg, nid, "dns.network_id").gateway
            return self._from(rt, cfg, q.source,
                              lambda: probes.dns(q.name, q.qtype, server, timeout))
        if which == "arp":
            a = request.arp
            ip = check_ipv4("arp.ip", a.ip)
            iface = guest_interface(cfg, a.network_id, "arp.network_id")
            net = guest_network(cfg, a.network_id, "arp.network_id")
            return netns.run_in_netns(
                ns, lambda: probes.arp(iface.name, iface.mac, net.gateway, ip, timeout))
        if which == "ping":
            p = request.ping
            dest = check_not_broadcast("ping.destination", p.destination, cfg)
            return self._from(rt, cfg, p.source, lambda: probes.ping(dest, p.count, timeout))
        if which == "traceroute":
            t = request.traceroute
            dest = check_not_broadcast("traceroute.destination", t.destination, cfg)
            return self._from(rt, cfg, t.source,
                              lambda: probes.traceroute(dest, t.max_hops, timeout))
        c = request.tcp
        dest = check_not_broadcast("tcp.destination", c.destination, cfg)
        return self._from(rt, cfg, c.source, lambda: probes.tcp(dest, c.port, timeout))

    def _from(self, rt: RouterRuntime, cfg: apb.RouterConfig, src: pb.ProbeSource,
              fn: Callable[[], pb.ProbeResult]) -> pb.ProbeResult:
        if not src.network_id:
            if src.ip:
                raise DiagError("source.network_id", "a source address needs its network")
            return netns.run_in_netns(rt.ctx.netns, fn)
        port = self._probe_port(probes.probe_source_port(
            rt.ctx.fabric, self.registry.netns_prefix, cfg, src))
        iface = guest_interface(cfg, src.network_id, "source.network_id")
        # The router's port security lets the probe port in, for the probe only.
        with port_security.admitted(rt.ctx.netns, iface.name, port.mac, port.ip), port:
            return netns.run_in_netns(port.netns, fn)

    def _probe_port(self, port: probes.ProbePort) -> probes.ProbePort:
        """``port``, not plugged yet, if this agent's fabric can plug one."""
        if not self.registry.probe_ports:
            raise DiagUnavailable(NO_PROBE_PORTS)
        return port


def add_to_server(registry: RouterRegistry, server: grpc.Server) -> str:
    """Registers the service; returns its full name (for reflection and health)."""
    try:  # a listing of /run/netns: before serving
        probes.remove_stale_probe_ports(registry.fabric, registry.netns_prefix)
    except Exception:
        log.exception("cannot remove stale probe ports")
    servicer = DiagnosticsServicer(registry)
    threading.Thread(target=_sweep_traces, args=(registry, servicer.swept), name="diag-sweep",
                     daemon=True).start()
    diag_pb2_grpc.add_RouterDiagnosticsServicer_to_server(servicer, server)
    return SERVICE_NAME


def _sweep_traces(registry: RouterRegistry, done: threading.Event) -> None:
    """Trace tables of a previous agent that was killed mid-stream: a look into
    every router, after the start (a trace waits for it)."""
    for rt in registry.runtimes():
        try:
            tr.remove_stale_tables(rt.ctx.netns)
        except Exception:
            log.warning("router %s: cannot look for stale trace tables", rt.ctx.router_id)
    done.set()
