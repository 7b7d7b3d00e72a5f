"""``cloudnet debug ...``: packet tools on a tenant's router (DebugService).

    cloudnet debug capture ROUTER --network N --filter 'udp port 67' -w out.pcap
    cloudnet debug capture ROUTER --public -w - | tshark -r -
    cloudnet debug probe dhcp|dns|arp|ping|trace|tcp ROUTER ...
    cloudnet debug trace ROUTER --dst 203.0.113.10 --proto tcp --port 22
    cloudnet debug show ROUTER leases|conntrack|counters|interfaces|routes
    cloudnet debug explain --from PORT_OR_IP --to IP:PORT/PROTO

Tables for people by default, ``-o json`` for programs (the trace prints one
JSON object per line as events arrive).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any, BinaryIO

from cloudnet.netmgr.v1 import debug_pb2
from cloudnet.router.v1 import diag_pb2 as dpb

from netmgr.cli.commands import Command, Context, Group, Leaf
from netmgr.cli.output import format_table, to_dict, to_json
from netmgr.cli.requests import UsageError

SHOW_KINDS = {
    "leases": dpb.SHOW_KIND_LEASES,
    "conntrack": dpb.SHOW_KIND_CONNTRACK,
    "counters": dpb.SHOW_KIND_COUNTERS,
    "interfaces": dpb.SHOW_KIND_INTERFACES,
    "routes": dpb.SHOW_KIND_ROUTES,
    "lb-members": dpb.SHOW_KIND_LB_MEMBERS,
    "bgp": dpb.SHOW_KIND_BGP,
}
STREAM_GRACE = 30.0  # added to a stream's own limit for the call's deadline


def _stream_kw(ctx: Context, seconds: float, default: float) -> dict[str, Any]:
    # Streams bypass the client's unary interceptor: pass auth metadata here.
    return {"metadata": ctx.client.metadata(), "timeout": (seconds or default) + STREAM_GRACE}


# ------------------------------------------------------------ capture


def cmd_capture(ctx: Context, args: argparse.Namespace) -> int:
    if bool(args.network) == bool(args.public):
        raise UsageError("name the interface: --network NETWORK_ID or --public")
    req = dpb.CaptureRequest(
        router_id=args.router, interface=dpb.InterfaceRef(network_id=args.network or "",
                                                         public=args.public),
        filter=args.filter or "", max_packets=args.count or 0, max_seconds=args.seconds or 0,
        max_bytes=args.bytes or 0, snaplen=args.snaplen or 0)
    out: BinaryIO
    if args.write == "-":
        out = getattr(ctx.out, "buffer", sys.stdout.buffer)
        close = False
    else:
        out = open(args.write, "wb")  # noqa: SIM115 (closed below)
        close = True
    summary = None
    try:
        for chunk in ctx.client.debug.Capture(req, **_stream_kw(ctx, args.seconds or 0, 10)):
            if chunk.data:
                out.write(chunk.data)
                out.flush()
            if chunk.HasField("summary"):
                summary = chunk.summary
    finally:
        if close:
            out.close()
    if summary is not None:
        ctx.note(f"captured {summary.packets} packets, {summary.bytes} bytes on "
                 f"{summary.interface} (stopped by {summary.stopped_by})")
    return 0


# ------------------------------------------------------------ probes


def _source(args: argparse.Namespace) -> dpb.ProbeSource:
    return dpb.ProbeSource(network_id=args.from_network or "", ip=args.source_ip or "")


def _probe(ctx: Context, args: argparse.Namespace, **probe: Any) -> int:
    req = dpb.ProbeRequest(router_id=args.router, timeout_seconds=args.wait or 0, **probe)
    r = ctx.client.debug.Probe(req, timeout=max(ctx.settings.timeout, 120.0))
    if ctx.json:
        ctx.print(to_json(r))
        return 0 if r.ok else 1
    ctx.print(r.summary)
    if r.fields:
        ctx.print(format_table(["FIELD", "VALUE"], [(f.key, f.value) for f in r.fields]))
    if r.records:
        ctx.print(format_table(["SECTION", "NAME", "TYPE", "TTL", "DATA"],
                               [(x.section, x.name, x.type, x.ttl, x.data) for x in r.records]))
    if r.hops:
        ctx.print(format_table(["#", "ADDRESS", "MAC", "KIND", "RTT_MS"],
                               [(h.ttl or "", h.address or "*", h.mac, h.kind,
                                 f"{h.rtt_ms:.3f}" if h.rtt_ms else "") for h in r.hops]))
    return 0 if r.ok else 1


def cmd_probe_dhcp(ctx: Context, args: argparse.Namespace) -> int:
    return _probe(ctx, args, dhcp=dpb.DhcpProbe(network_id=args.network, mac=args.mac or "",
                                               request=args.request))


def cmd_probe_dns(ctx: Context, args: argparse.Namespace) -> int:
    return _probe(ctx, args, dns=dpb.DnsProbe(name=args.name, qtype=args.type,
                                             server=args.resolver or "",
                                             network_id=args.network or "",
                                             source=_source(args)))


def cmd_probe_arp(ctx: Context, args: argparse.Namespace) -> int:
    return _probe(ctx, args, arp=dpb.ArpProbe(network_id=args.network, ip=args.ip))


def cmd_probe_ping(ctx: Context, args: argparse.Namespace) -> int:
    return _probe(ctx, args, ping=dpb.PingProbe(destination=args.destination, count=args.count,
                                               source=_source(args)))


def cmd_probe_trace(ctx: Context, args: argparse.Namespace) -> int:
    return _probe(ctx, args, traceroute=dpb.TracerouteProbe(
        destination=args.destination, max_hops=args.max_hops, source=_source(args)))


def cmd_probe_tcp(ctx: Context, args: argparse.Namespace) -> int:
    host, sep, port = args.target.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"expected IP:PORT, got {args.target!r}")
    return _probe(ctx, args, tcp=dpb.TcpProbe(destination=host, port=int(port),
                                             source=_source(args)))


# ------------------------------------------------------------ trace


def _trace_row(e: dpb.TraceEvent) -> str:
    obj = f"{e.object_kind}:{e.object_id}" if e.object_kind else ""
    what = e.rule if e.kind in ("rule", "packet") else e.kind
    return "  ".join(x for x in (e.packet_id, f"{e.table}/{e.chain}", e.verdict or "-", obj,
                                 what) if x)


def cmd_trace(ctx: Context, args: argparse.Namespace) -> int:
    req = dpb.TraceRequest(router_id=args.router, source=args.src or "",
                           destination=args.dst or "", protocol=args.proto or "",
                           port=args.port or 0, max_seconds=args.seconds or 0,
                           max_packets=args.count or 0)
    for e in ctx.client.debug.Trace(req, **_stream_kw(ctx, args.seconds or 0, 30)):
        if e.ready:
            ctx.note("trace armed: send the packet now (Ctrl-C to stop)")
            continue
        ctx.print(json.dumps(to_dict(e)) if ctx.json else _trace_row(e))
        ctx.out.flush()
    return 0


# ------------------------------------------------------------ show


def _when(ts: int) -> str:
    if not ts:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show_table(kind: str, r: dpb.ShowResponse) -> str:
    if kind == "bgp":
        return format_table(["PEER", "AS", "STATE", "SENT", "RECEIVED"],
                            [(s.peer, s.peer_asn, s.state, s.prefixes_sent, s.prefixes_received)
                             for s in r.bgp_sessions])
    if kind == "leases":
        return format_table(["MAC", "IP", "HOSTNAME", "EXPIRES", "NETWORK"],
                            [(x.mac, x.ip, x.hostname, _when(x.expires), x.network_id)
                             for x in r.leases])
    if kind == "conntrack":
        return format_table(
            ["PROTO", "STATE", "SOURCE", "DESTINATION", "REPLY FROM", "REPLY TO", "NAT", "TTL"],
            [(c.protocol, c.state, f"{c.source}:{c.source_port}",
              f"{c.destination}:{c.destination_port}",
              f"{c.reply_source}:{c.reply_source_port}",
              f"{c.reply_destination}:{c.reply_destination_port}", c.nat, c.timeout)
             for c in r.conntrack])
    if kind == "counters":
        return format_table(["CHAIN", "PACKETS", "BYTES", "OBJECT", "COMMENT"],
                            [(f"{c.table}/{c.chain}", c.packets, c.bytes,
                              f"{c.object_kind}:{c.object_id}" if c.object_kind else "",
                              c.comment) for c in r.counters])
    if kind == "interfaces":
        return format_table(
            ["NAME", "ROLE", "NETWORK", "MAC", "ADDRESSES", "STATE", "RX PKTS", "TX PKTS",
             "DROPS"],
            [(i.name, i.role, i.network_id, i.mac, " ".join(i.addresses), i.state, i.rx_packets,
              i.tx_packets, i.rx_dropped + i.tx_dropped) for i in r.interfaces])
    if kind == "lb-members":
        return format_table(["LOAD BALANCER", "PORT", "STATUS", "CHECK"],
                            [(m.load_balancer_id, m.port_id, m.status, m.check)
                             for m in r.lb_members])
    return format_table(["DESTINATION", "GATEWAY", "INTERFACE", "PROTOCOL", "SOURCE"],
                        [(x.destination, x.gateway, x.interface, x.protocol, x.source)
                         for x in r.routes])


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.client.debug.Show(dpb.ShowRequest(router_id=args.router, kind=SHOW_KINDS[args.what],
                                        address=args.address or ""))
    if ctx.json:
        # An object like every other command's: the kind's list under its name.
        field = {"lb-members": "lb_members", "bgp": "bgp_sessions"}.get(args.what, args.what)
        ctx.print(to_json({field: [to_dict(m) for m in getattr(r, field)]}))
    else:
        ctx.print(_show_table(args.what, r))
    return 0


# ------------------------------------------------------------ explain


def cmd_explain(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.client.debug.Explain(debug_pb2.ExplainRequest(**{"from": args.source, "to": args.to}))
    if ctx.json:
        ctx.print(to_json(r))
    else:
        verdict = "ALLOWED" if r.allowed else "BLOCKED"
        ctx.print(f"{verdict} by {r.decided_by_kind}"
                  + (f" {r.decided_by_id}" if r.decided_by_id else "") + f": {r.reason}")
        if r.steps:
            ctx.print(format_table(["OBJECT", "ID", "RESULT"],
                                   [(s.object_kind, s.object_id, s.result) for s in r.steps]))
    return 0 if r.allowed else 1


# ------------------------------------------------------------ parser


def add_commands(group: Group, leaf: Leaf) -> None:
    """Adds ``debug ...`` with the CLI's own group/leaf helpers."""
    s = group("debug", "diagnose a router: capture, probes, live trace, show, explain")

    p = leaf(s, "capture", cmd_capture, "capture packets on a router interface (pcap)")
    p.add_argument("router", metavar="ROUTER")
    p.add_argument("--network", metavar="NETWORK_ID", help="the interface facing this network")
    p.add_argument("--public", action="store_true", help="the public interface")
    p.add_argument("--filter", metavar="BPF", help="pcap-filter expression, e.g. 'udp port 67'")
    p.add_argument("-c", "--count", type=int, help="stop after N packets (default 100)")
    p.add_argument("--seconds", type=float, help="stop after S seconds (default 10)")
    p.add_argument("--bytes", type=int, help="stop before the pcap passes B bytes")
    p.add_argument("--snaplen", type=int, help="bytes kept per packet")
    p.add_argument("-w", "--write", metavar="FILE", required=True,
                   help="pcap file to write, '-' for stdout (| tshark -r -)")

    probe = s.add_parser("probe", help="active probes from the router or a probe port",
                         description="active probes from the router or a probe port")
    ps = probe.add_subparsers(dest="probe", metavar="PROBE", required=True)

    def probe_leaf(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = leaf(ps, name, func, help)
        p.add_argument("router", metavar="ROUTER")
        p.add_argument("--wait", type=float, metavar="SECONDS",
                       help="seconds to wait for each answer (default 2)")
        return p

    def source(p: argparse.ArgumentParser) -> None:
        p.add_argument("--from-network", metavar="NETWORK_ID",
                       help="send from a probe port on this network (through the router)")
        p.add_argument("--source-ip", metavar="IP", help="the probe port's address")

    p = probe_leaf("dhcp", cmd_probe_dhcp, "DHCP DISCOVER (and REQUEST) on a network")
    p.add_argument("--network", required=True, metavar="NETWORK_ID")
    p.add_argument("--mac", help="client MAC (a port's MAC gets its address)")
    p.add_argument("--request", action="store_true", help="also REQUEST the offer (then release)")
    p = probe_leaf("dns", cmd_probe_dns, "DNS query to the router's resolver or a server")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", default="A")
    p.add_argument("--resolver", metavar="IP", help="resolver to ask (default: the router)")
    p.add_argument("--network", metavar="NETWORK_ID")
    source(p)
    p = probe_leaf("arp", cmd_probe_arp, "who has IP on a network")
    p.add_argument("ip", metavar="IP")
    p.add_argument("--network", required=True, metavar="NETWORK_ID")
    p = probe_leaf("ping", cmd_probe_ping, "ICMP echo")
    p.add_argument("destination", metavar="IP")
    p.add_argument("-c", "--count", type=int, default=3)
    source(p)
    p = probe_leaf("trace", cmd_probe_trace, "traceroute (TTL-stepped ICMP echo)")
    p.add_argument("destination", metavar="IP")
    p.add_argument("--max-hops", type=int, default=16)
    source(p)
    p = probe_leaf("tcp", cmd_probe_tcp, "TCP connect to IP:PORT")
    p.add_argument("target", metavar="IP:PORT")
    source(p)

    p = leaf(s, "trace", cmd_trace, "live nftables trace of matching packets")
    p.add_argument("router", metavar="ROUTER")
    p.add_argument("--src", metavar="IP_OR_CIDR")
    p.add_argument("--dst", metavar="IP_OR_CIDR")
    p.add_argument("--proto", choices=("tcp", "udp", "icmp"))
    p.add_argument("--port", type=int)
    p.add_argument("-c", "--count", type=int, help="packets to trace (default 10)")
    p.add_argument("--seconds", type=float, help="how long (default 30)")

    p = leaf(s, "show", cmd_show,
             "router state: leases, conntrack, counters, interfaces, routes, LB members")
    p.add_argument("router", metavar="ROUTER")
    p.add_argument("what", choices=tuple(SHOW_KINDS))
    p.add_argument("--address", metavar="IP", help="conntrack: only entries with this address")

    p = leaf(s, "explain", cmd_explain, "check a path in the model (no packets)")
    p.add_argument("--from", dest="source", required=True, metavar="PORT_OR_IP")
    p.add_argument("--to", required=True, metavar="IP:PORT/PROTO")
