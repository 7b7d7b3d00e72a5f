"""Active probes, built and parsed with scapy (DHCP, ARP, ICMP) and dnslib
(DNS), sent on plain sockets opened inside the router's namespace, or inside
a short-lived probe port namespace plugged into a tenant network's segment
(``ProbePort``): the packets then cross the router like a guest's.

Sockets are opened on a thread that entered the namespace
(``common.netns.run_in_netns``): never a fork of the agent's Python.

scapy is imported by the probes that use it, not with this module: it is the
largest import of the agent's start (a third of it on the host, seconds in a
router VM under TCG), and the agent must answer health before any probe.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import dnslib
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import diag_pb2 as pb

from common import netns
from common.fabric.base import Fabric
from common.grpc_errors import quote
from common.netns import ensure_netns, remove_netns
from router.diag.common import (
    DiagError,
    check_dns_name,
    check_ipv4,
    check_limit,
    check_mac,
    check_unicast_ipv4,
    guest_interface,
    guest_network,
)
from router.lib import garp
from router.lib.proc import in_netns

if TYPE_CHECKING:
    from scapy.layers.dhcp import DHCP
    from scapy.layers.l2 import Ether

T = TypeVar("T")
ETH_P_ALL = 0x0003
DEFAULT_TIMEOUT, MAX_TIMEOUT = 2.0, 30.0
MAX_PING, MAX_HOPS = 20, 30
BUDGET_SECONDS = 60.0  # a ping or traceroute stops there, whatever its count and timeout
QTYPES = ("A", "AAAA", "PTR", "MX", "TXT", "SRV", "CNAME", "NS", "SOA")
_DHCP_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
               7: "RELEASE", 8: "INFORM"}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _l2_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    return s


def _recv_until(sock: socket.socket, deadline: float, accept: Callable[[bytes], T | None]
                ) -> T | None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        got = accept(data)
        if got is not None:
            return got


# --------------------------------------------------------- the request


def check_request(request: pb.ProbeRequest) -> tuple[str, float]:
    """(which probe, timeout): every check that needs no router config, made
    before anything is looked up or plugged."""
    timeout = check_limit("timeout_seconds", request.timeout_seconds, DEFAULT_TIMEOUT,
                          MAX_TIMEOUT)
    which = request.WhichOneof("probe")
    if which is None:
        raise DiagError("probe", "one of dhcp, dns, arp, ping, traceroute, tcp")
    if which == "dhcp":
        if request.dhcp.mac:
            check_mac("dhcp.mac", request.dhcp.mac)
    elif which == "dns":
        q = request.dns
        check_dns_name("dns.name", q.name)
        if (q.qtype or "A").upper() not in QTYPES:
            raise DiagError("dns.qtype", f"one of {', '.join(QTYPES)} (got {quote(q.qtype)})")
        if q.server:
            check_unicast_ipv4("dns.server", q.server)
    elif which == "arp":
        check_ipv4("arp.ip", request.arp.ip)
    elif which == "ping":
        check_unicast_ipv4("ping.destination", request.ping.destination)
        if request.ping.count > MAX_PING:
            raise DiagError("ping.count", f"at most {MAX_PING} (got {request.ping.count})")
    elif which == "traceroute":
        check_unicast_ipv4("traceroute.destination", request.traceroute.destination)
        if request.traceroute.max_hops > MAX_HOPS:
            raise DiagError("traceroute.max_hops",
                            f"at most {MAX_HOPS} (got {request.traceroute.max_hops})")
    else:
        check_unicast_ipv4("tcp.destination", request.tcp.destination)
        if not 0 < request.tcp.port < 65536:
            raise DiagError("tcp.port", f"1-65535 (got {request.tcp.port})")
    source = {"dns": request.dns.source, "ping": request.ping.source,
              "traceroute": request.traceroute.source, "tcp": request.tcp.source}.get(which)
    if source is not None and source.ip:
        check_ipv4("source.ip", source.ip)
    return which, timeout


# ------------------------------------------------------------ probe port


def probe_mac(router_id: str, network_id: str) -> str:
    """A stable, locally administered MAC per router and network (a stale
    neighbour entry in the router then still points at the right place)."""
    h = hashlib.sha256(f"{router_id}/{network_id}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


class ProbePort:
    """A network namespace plugged into a tenant network's segment like a
    guest NIC, with an address of the network (or none, for DHCP)."""

    def __init__(self, fabric: Fabric, prefix: str, segment: int, mac: str,
                 ip: str = "", prefixlen: int = 0, gateway: str = "", mtu: int = 0) -> None:
        tag = uuid.uuid4().hex[:6]
        self.netns = f"{prefix}-probe-{tag}"
        self.fabric_port = f"pr{tag}"
        self.fabric = fabric
        self.segment, self.mac, self.mtu = segment, mac, mtu
        self.ip, self.prefixlen, self.gateway = ip, prefixlen, gateway
        self.ifname = "eth0"

    def __enter__(self) -> ProbePort:
        try:
            ensure_netns(self.netns)
            self.fabric.plug(self.fabric_port, self.segment, self.netns, self.ifname, self.mac,
                             self.mtu)
            if self.ip:
                self._ip(["addr", "add", f"{self.ip}/{self.prefixlen}", "dev", self.ifname])
                if self.gateway:
                    self._ip(["route", "add", "default", "via", self.gateway])
                netns.run_in_netns(self.netns, self._announce)
        except BaseException:
            self.close()
            raise
        return self

    def _ip(self, args: list[str]) -> None:
        subprocess.run(in_netns(self.netns, ["ip", *args]), check=True, capture_output=True,
                       timeout=10)

    def _announce(self) -> None:
        """A gratuitous ARP: the router's neighbour entry follows this port."""
        request, _ = garp.frames(self.mac, ipaddress.IPv4Address(self.ip))
        with _l2_socket(self.ifname) as s:
            s.send(request)

    def close(self) -> None:
        try:
            self.fabric.unplug(self.fabric_port)
        finally:
            remove_netns(self.netns)

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_stale_probe_ports(fabric: Fabric, prefix: str) -> list[str]:
    """Probe ports of an agent that was killed mid-probe (a probe removes its own)."""
    removed = []
    start = f"{prefix}-probe-"
    for name in sorted(os.listdir(netns.NETNS_RUN_DIR)) if os.path.isdir(
            netns.NETNS_RUN_DIR) else []:
        if name.startswith(start):
            tag = name[len(start):]
            try:
                fabric.unplug(f"pr{tag}")
            finally:
                remove_netns(name)
            removed.append(name)
    return removed


def probe_source_port(fabric: Fabric, prefix: str, cfg: apb.RouterConfig,
                      src: pb.ProbeSource) -> ProbePort:
    net = guest_network(cfg, src.network_id, "source.network_id")
    iface = guest_interface(cfg, src.network_id, "source.network_id")
    cidr = ipaddress.IPv4Network(net.cidr, strict=False)
    taken = {h.ip for h in net.hosts} | {net.gateway}
    if src.ip:
        ip = check_ipv4("source.ip", src.ip)
        if ipaddress.IPv4Address(ip) not in cidr:
            raise DiagError("source.ip", f"{ip} is not in the network's CIDR {cidr}")
        if ip == net.gateway:
            raise DiagError("source.ip", f"{ip} is the router's own address")
    else:
        ip = str(cidr.broadcast_address - 1)
        if ip in taken:
            raise DiagError("source.ip", f"the default probe address {ip} is in use: name one")
    return ProbePort(fabric, prefix, iface.segment_id, probe_mac(cfg.router_id, net.network_id),
                     ip, cidr.prefixlen, net.gateway, net.mtu or iface.mtu)


# ------------------------------------------------------------------ DHCP


def _dhcp_options(pkt: DHCP) -> dict[str, object]:
    out: dict[str, object] = {}
    for opt in pkt.options:
        if isinstance(opt, tuple) and len(opt) >= 2:
            out[str(opt[0])] = opt[1] if len(opt) == 2 else list(opt[1:])
    return out


def _fmt(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace").rstrip("\0")
    if isinstance(value, list):
        return ",".join(_fmt(v) for v in value)
    return str(value)


def dhcp(ifname: str, mac: str, request: bool, timeout: float, release: bool = True
         ) -> pb.ProbeResult:
    """DISCOVER (and REQUEST) from `mac`; runs inside the probe port's namespace.

    After an ACK the lease is released again, unless `release` is false (the
    MAC already held a lease, a guest's: the REQUEST only renewed it)."""
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    xid = int.from_bytes(os.urandom(4), "big")
    chaddr = bytes.fromhex(mac.replace(":", ""))

    def packet(msg: str, extra: list[tuple[str, object]]) -> bytes:
        return bytes(
            Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
            / BOOTP(op=1, chaddr=chaddr, xid=xid, flags=0x8000)
            / DHCP(options=[("message-type", msg), *extra,
                            ("param_req_list", [1, 3, 6, 15, 26, 51, 54, 119]), "end"]))

    def reply(data: bytes) -> tuple[Ether, DHCP] | None:
        frame = Ether(data)
        if BOOTP not in frame or DHCP not in frame:
            return None
        b = frame[BOOTP]
        if b.op != 2 or b.xid != xid:
            return None
        return frame, frame[DHCP]

    fields: list[pb.KeyValue] = []
    with _l2_socket(ifname) as s:
        started = time.monotonic()
        s.send(packet("discover", []))
        got = _recv_until(s, started + timeout, reply)
        if got is None:
            return pb.ProbeResult(ok=False, summary=f"no DHCP OFFER for {mac} in {timeout:g} s")
        frame, d = got
        rtt = time.monotonic() - started
        opts = _dhcp_options(d)
        yiaddr = frame[BOOTP].yiaddr
        kind = _DHCP_TYPES.get(int(opts.get("message-type", 0)), "?")  # type: ignore[call-overload]
        fields.append(pb.KeyValue(key="reply", value=kind))
        fields.append(pb.KeyValue(key="yiaddr", value=str(yiaddr)))
        fields.append(pb.KeyValue(key="server_mac", value=frame.src))
        fields.extend(pb.KeyValue(key=k, value=_fmt(v)) for k, v in opts.items()
                      if k != "message-type")
        server = str(opts.get("server_id", ""))
        summary = f"{kind} {yiaddr} from {server} in {_ms(rtt)} ms"
        ok = kind == "OFFER"
        if ok and request:
            started = time.monotonic()
            s.send(packet("request", [("requested_addr", yiaddr), ("server_id", server)]))
            got = _recv_until(s, started + timeout, reply)
            if got is None:
                return pb.ProbeResult(ok=False, summary=summary + "; no ACK to the REQUEST",
                                      fields=fields, rtt_ms=_ms(rtt))
            frame2, d2 = got
            kind2 = _DHCP_TYPES.get(int(_dhcp_options(d2).get("message-type", 0)),  # type: ignore[call-overload]
                                    "?")
            fields.append(pb.KeyValue(key="request_reply", value=kind2))
            ok = kind2 == "ACK"
            summary += f"; REQUEST: {kind2}"
            if ok and release:  # give the address back: a probe must not hold a lease
                s.send(bytes(
                    Ether(src=mac, dst=frame2.src) / IP(src=yiaddr, dst=server)
                    / UDP(sport=68, dport=67)
                    / BOOTP(op=1, chaddr=chaddr, ciaddr=yiaddr, xid=xid)
                    / DHCP(options=[("message-type", "release"), ("server_id", server), "end"])))
    return pb.ProbeResult(ok=ok, summary=summary, fields=fields, rtt_ms=_ms(rtt))


# ------------------------------------------------------------------- DNS


def dns(name: str, qtype: str, server: str, timeout: float) -> pb.ProbeResult:
    name = check_dns_name("dns.name", name)
    qtype = (qtype or "A").upper()
    if qtype not in QTYPES:
        raise DiagError("dns.qtype", f"one of {', '.join(QTYPES)} (got {quote(qtype)})")
    q = dnslib.DNSRecord.question(name, qtype)
    started = time.monotonic()
    try:
        raw = q.send(server, 53, timeout=timeout)
    except TimeoutError:
        return pb.ProbeResult(ok=False, summary=f"no answer from {server} in {timeout:g} s")
    except OSError as e:
        return pb.ProbeResult(ok=False, summary=f"{server}: {e.strerror or e}")
    rtt = time.monotonic() - started
    reply = dnslib.DNSRecord.parse(raw)
    rcode = dnslib.RCODE.get(reply.header.rcode)
    records = []
    for section, rrs in (("answer", reply.rr), ("authority", reply.auth),
                         ("additional", reply.ar)):
        for rr in rrs:
            records.append(pb.DnsRecord(section=section, name=str(rr.rname),
                                        type=dnslib.QTYPE.get(rr.rtype), ttl=rr.ttl,
                                        data=str(rr.rdata)))
    answers = [r.data for r in records if r.section == "answer"]
    return pb.ProbeResult(
        ok=rcode == "NOERROR" and bool(answers), rcode=rcode, records=records, rtt_ms=_ms(rtt),
        summary=f"{name} {qtype} @{server}: {rcode} {' '.join(answers)} in {_ms(rtt)} ms")


# ------------------------------------------------------------------- ARP


def arp(ifname: str, mac: str, source_ip: str, ip: str, timeout: float) -> pb.ProbeResult:
    """Who has `ip`? Every answer in the window (two means a conflict)."""
    from scapy.layers.l2 import ARP, Ether

    req = bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=mac, psrc=source_ip, pdst=ip))
    hops: list[pb.Hop] = []
    with _l2_socket(ifname) as s:
        started = time.monotonic()
        s.send(req)
        deadline = started + timeout

        def answer(data: bytes) -> None:
            frame = Ether(data)
            if ARP in frame and frame[ARP].op == 2 and frame[ARP].psrc == ip:
                hops.append(pb.Hop(address=ip, mac=frame[ARP].hwsrc, kind="is-at",
                                   rtt_ms=_ms(time.monotonic() - started)))
                if len(hops) == 1:  # wait a little more for a conflicting second answer
                    nonlocal deadline
                    deadline = min(deadline, time.monotonic() + 0.3)
            return None

        while time.monotonic() < deadline:
            _recv_until(s, deadline, answer)
    if not hops:
        return pb.ProbeResult(ok=False, summary=f"no ARP answer for {ip} in {timeout:g} s")
    macs = ", ".join(h.mac for h in hops)
    return pb.ProbeResult(ok=True, hops=hops, rtt_ms=hops[0].rtt_ms,
                          summary=f"{ip} is at {macs}" + (" (CONFLICT)" if len(hops) > 1 else ""))


# ------------------------------------------------------------ ICMP, TCP


def _icmp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def _import_scapy() -> None:
    """Before a probe's clock starts: the first import takes seconds under TCG."""
    import scapy.layers.inet  # noqa: F401


def _echo(ident: int, seq: int) -> bytes:
    from scapy.layers.inet import ICMP

    return bytes(ICMP(type=8, id=ident, seq=seq) / (b"cloudnet-probe" + bytes(18)))


def _match_echo(ident: int, seq: int, dest: str) -> Callable[[bytes], tuple[str, str] | None]:
    from scapy.layers.inet import ICMP, IP

    def match(data: bytes) -> tuple[str, str] | None:
        ip = IP(data)
        if ICMP not in ip:
            return None
        icmp = ip[ICMP]
        if icmp.type == 0 and ip.src == dest and icmp.id == ident and icmp.seq == seq:
            return ip.src, "echo-reply"
        if icmp.type in (3, 11):
            inner = IP(bytes(icmp.payload))  # scapy's IPerror/ICMPerror, parsed plainly
            if ICMP in inner:
                e = inner[ICMP]
                if e.id == ident and e.seq == seq:
                    kind = "time-exceeded" if icmp.type == 11 else f"unreachable/{icmp.code}"
                    return ip.src, kind
        return None
    return match


def _send(sock: socket.socket, packet: bytes, dest: str) -> pb.ProbeResult | None:
    """Send, or the failed result if the kernel refuses (a destination the
    request checks could not know of, such as a broadcast address a route says)."""
    try:
        sock.sendto(packet, (dest, 0))
    except OSError as e:
        return pb.ProbeResult(ok=False, summary=f"{dest}: cannot send: {e.strerror or e}")
    return None


def ping(dest: str, count: int, timeout: float) -> pb.ProbeResult:
    count = count or 3
    if count > MAX_PING:
        raise DiagError("ping.count", f"at most {MAX_PING} (got {count})")
    ident = int.from_bytes(os.urandom(2), "big")
    _import_scapy()
    hops = []
    budget = time.monotonic() + BUDGET_SECONDS
    with _icmp_socket() as s:
        for seq in range(1, count + 1):
            if time.monotonic() > budget:
                break
            started = time.monotonic()
            if (error := _send(s, _echo(ident, seq), dest)) is not None:
                return error
            got = _recv_until(s, started + timeout, _match_echo(ident, seq, dest))
            if got and got[1] == "echo-reply":
                hops.append(pb.Hop(ttl=seq, address=got[0], kind=got[1],
                                   rtt_ms=_ms(time.monotonic() - started)))
            else:
                hops.append(pb.Hop(ttl=seq, kind=got[1] if got else "timeout",
                                   address=got[0] if got else ""))
    replies = [h for h in hops if h.kind == "echo-reply"]
    avg = sum(h.rtt_ms for h in replies) / len(replies) if replies else 0.0
    return pb.ProbeResult(ok=bool(replies), hops=hops, rtt_ms=round(avg, 3),
                          summary=f"{dest}: {len(replies)}/{len(hops)} replies"
                          + (f", avg {avg:.3f} ms" if replies else ""))


def traceroute(dest: str, max_hops: int, timeout: float) -> pb.ProbeResult:
    max_hops = max_hops or 16
    if max_hops > MAX_HOPS:
        raise DiagError("traceroute.max_hops", f"at most {MAX_HOPS} (got {max_hops})")
    ident = int.from_bytes(os.urandom(2), "big")
    _import_scapy()
    hops = []
    reached = False
    budget = time.monotonic() + BUDGET_SECONDS
    with _icmp_socket() as s:
        for ttl in range(1, max_hops + 1):
            if time.monotonic() > budget:
                break
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            started = time.monotonic()
            if (error := _send(s, _echo(ident, ttl), dest)) is not None:
                return error
            got = _recv_until(s, started + timeout, _match_echo(ident, ttl, dest))
            if got is None:
                hops.append(pb.Hop(ttl=ttl, kind="timeout"))
                continue
            hops.append(pb.Hop(ttl=ttl, address=got[0], kind=got[1],
                               rtt_ms=_ms(time.monotonic() - started)))
            if got[1] != "time-exceeded":
                reached = got[1] == "echo-reply"
                break
    path = " ".join(h.address or "*" for h in hops)
    return pb.ProbeResult(ok=reached, hops=hops,
                          summary=f"{dest} {'reached' if reached else 'not reached'}: {path}")


def tcp(dest: str, port: int, timeout: float) -> pb.ProbeResult:
    if not 0 < port < 65536:
        raise DiagError("tcp.port", f"1-65535 (got {port})")
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((dest, port))
            kind, ok = "syn-ack", True
        except ConnectionRefusedError:
            kind, ok = "rst", False
        except TimeoutError:
            kind, ok = "timeout", False
        except OSError as e:
            kind, ok = errno.errorcode.get(e.errno or 0, str(e)).lower(), False
    rtt = _ms(time.monotonic() - started)
    word = {"syn-ack": "open", "rst": "refused (RST)", "timeout": "no answer (filtered?)"}
    return pb.ProbeResult(ok=ok, rtt_ms=rtt if kind != "timeout" else 0.0,
                          hops=[pb.Hop(address=dest, kind=kind, rtt_ms=rtt)],
                          summary=f"{dest}:{port} {word.get(kind, kind)}")


def check_mac_or_random(value: str) -> str:
    if value:
        return check_mac("dhcp.mac", value)
    return "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))
