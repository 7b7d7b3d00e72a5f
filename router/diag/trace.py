"""Live nftables trace: which rules a matching packet hits, and their verdicts.

The agent owns a separate table per trace (``inet cloudnet-trace-<id>``)
whose prerouting and output chains, at a priority before every other hook,
set ``meta nftrace`` on matching packets; the router's own table is never
touched. ``nft monitor`` in the router's namespace reports each rule the
packet meets; rules are mapped back to API objects through their comments
(``cn:<kind>:<id>``, see ``router.diag.common.object_of_comment``) by
handle. The table is deleted when the stream ends, whatever the reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

from cloudnet.router.v1 import diag_pb2 as pb

from common.grpc_errors import quote
from router.diag.common import DiagError, check_ipv4_or_cidr, check_limit, object_of_comment
from router.diag.show import parse_counters
from router.lib import libnft
from router.lib.proc import in_netns

DEFAULT_SECONDS, MAX_SECONDS = 30.0, 600.0
DEFAULT_PACKETS, MAX_PACKETS = 10, 1000
PROTOCOLS = ("tcp", "udp", "icmp")
PRIORITY = -350  # before conntrack (-200), DNAT (-100) and the filter hooks (0)
START_TIMEOUT = 30.0
_LINE = re.compile(r"^trace id (\S+) (\S+) (\S+) (\S+) (packet|rule|verdict|policy):? ?(.*)$")
_VERDICT = re.compile(r"\(verdict ([^)]*)\)\s*$")
# nft appends a marked packet's mark to each line (the source-NAT addresses'
# packets are marked by edge_ingress).
_MARK = re.compile(r"\s+meta mark 0x[0-9a-f]+\s*$")
_UNKNOWN = re.compile(r"^unknown rule handle (\d+)")
_COMMENT = re.compile(r'comment "((?:[^"\\]|\\.)*)"')
_NAT = re.compile(r"\b(dnat|snat)(?: ip)? to (\S+)")


def match_expr(req: pb.TraceRequest) -> str:
    """The nft match of a trace request, from validated parts only."""
    parts = []
    if req.source:
        parts.append(f"ip saddr {check_ipv4_or_cidr('source', req.source)}")
    if req.destination:
        parts.append(f"ip daddr {check_ipv4_or_cidr('destination', req.destination)}")
    proto = req.protocol.lower()
    if proto and proto not in PROTOCOLS:
        raise DiagError("protocol", f"one of {', '.join(PROTOCOLS)} (got {quote(req.protocol)})")
    if req.port:
        if not 0 < req.port < 65536:
            raise DiagError("port", f"1-65535 (got {req.port})")
        if proto not in ("tcp", "udp"):
            raise DiagError("port", "a port needs protocol tcp or udp")
        parts.append(f"{proto} dport {req.port}")
    elif proto:
        parts.append(f"meta l4proto {proto}")
    if not parts:
        raise DiagError("source", "name at least a source, destination, protocol or port")
    return " ".join(parts)


def table_text(name: str, match: str) -> str:
    chains = "".join(
        f"\tchain {chain} {{\n\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;\n"
        f"\t\t{match} meta nftrace set 1\n\t}}\n"
        for chain, hook in (("pre", "prerouting"), ("out", "output")))
    return f"table inet {name} {{\n{chains}}}\n"


class _Rules:
    """Handle -> (rule text, comment) of the router's tables, refreshed on a miss."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.by_handle: dict[tuple[str, str, int], tuple[str, str]] = {}
        self.refresh()

    def refresh(self) -> None:
        proc = subprocess.run(in_netns(self.netns, ["nft", "-a", "list", "ruleset"]),
                              capture_output=True, text=True, timeout=15, check=False)
        self.by_handle = {}
        text = proc.stdout
        # parse_counters only sees rules with counters; rules without are rare
        # here (every rule of the agent's table counts), good enough for names.
        for c in parse_counters(text):
            self.by_handle[(c.table, c.chain, c.handle)] = (c.rule, c.comment)

    def get(self, table: str, chain: str, handle: int) -> tuple[str, str]:
        key = (table, chain, handle)
        if key not in self.by_handle:
            self.refresh()
        return self.by_handle.get(key, (f"handle {handle}", ""))


def parse_line(line: str, rules: _Rules | None = None, elements: _Elements | None = None,
               packets: dict[str, str] | None = None) -> pb.TraceEvent | None:
    m = _LINE.match(line.strip())
    if not m:
        return None
    trace_id, family, table, chain, kind, rest = m.groups()
    ev = pb.TraceEvent(packet_id=trace_id, table=f"{family} {table}", chain=chain, kind=kind,
                       line=line.strip())
    rest = _MARK.sub("", rest).strip()
    if kind == "packet":
        ev.rule = rest
        if packets is not None:
            packets[trace_id] = rest
        return ev
    if kind in ("policy", "verdict"):
        ev.verdict = rest
        if kind == "policy" and rest == "drop":
            ev.object_kind, ev.object_id = "firewall-default", "drop"
        return ev
    v = _VERDICT.search(rest)
    ev.verdict = v.group(1) if v else ""
    text = _VERDICT.sub("", rest).strip()
    u = _UNKNOWN.match(text)
    if u and rules is not None:
        text, comment = rules.get(f"{family} {table}", chain, int(u.group(1)))
    else:
        c = _COMMENT.search(text)
        comment = c.group(1) if c else ""
    ev.rule = text
    ev.object_kind, ev.object_id = object_of_comment(comment)
    n = _NAT.search(text)
    if n:
        ev.nat_target = n.group(2)
    if elements is not None and packets is not None and "@" in text:
        hit = elements.match(ev.table, text, packet_fields(packets.get(trace_id, "")))
        if hit:
            elem_comment, mapped = hit
            kind2, id2 = object_of_comment(elem_comment)
            if kind2:
                ev.object_kind, ev.object_id = kind2, id2
            if n and mapped:
                ev.nat_target = mapped
    if n and ev.nat_target:
        ev.verdict = f"{n.group(1)} to {ev.nat_target}" + (
            f" ({ev.verdict})" if ev.verdict else "")
    return ev


# ---- map/set elements: which rule of a lookup the packet matched -----------

_PKT_FIELDS = {
    "ip saddr": re.compile(r"\bip saddr (\S+)"),
    "ip daddr": re.compile(r"\bip daddr (\S+)"),
    "meta l4proto": re.compile(r"\bip protocol (\S+)"),
    "th dport": re.compile(r"\b(?:tcp|udp) dport (\d+)"),
    "icmp type": re.compile(r"\bicmp type (\S+)"),
    "icmp code": re.compile(r"\bicmp code (\S+)"),
}
_COMPONENT = r"[a-z0-9]+ [a-z0-9]+(?: & [0-9.]+)?"
_LOOKUP = re.compile(rf"({_COMPONENT}(?: \. {_COMPONENT})*)(?: map| vmap)? @(\w+)")


def packet_fields(packet_line: str) -> dict[str, str]:
    out = {}
    for name, rx in _PKT_FIELDS.items():
        m = rx.search(packet_line)
        if m:
            out[name] = m.group(1)
    return out


# nft prints ICMP types and codes by these names, in set elements and in
# trace lines alike (`nft describe icmp_type`, `nft describe icmp_code`).
_ICMP_NAMES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
    "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "address-mask-request": 17, "address-mask-reply": 18,
    "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2,
    "port-unreachable": 3, "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10,
    "admin-prohibited": 13,
}


def _scalar(v: object) -> int | ipaddress.IPv4Address | None:
    """An element bound or a packet field as a comparable value: a number (ports,
    protocols, ICMP types and codes by number or name) or an IPv4 address."""
    if isinstance(v, int):
        return v
    text = str(v)
    if text in _ICMP_NAMES:
        return _ICMP_NAMES[text]
    if text.isdigit():
        return int(text)
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _component_matches(elem: object, value: str) -> bool:
    if isinstance(elem, dict):
        if "prefix" in elem:
            p = elem["prefix"]
            try:
                return ipaddress.IPv4Address(value) in ipaddress.IPv4Network(
                    f"{p['addr']}/{p['len']}", strict=False)
            except ValueError:
                return False
        if "range" in elem:
            lo, hi = (_scalar(x) for x in elem["range"])
            v = _scalar(value)
            if lo is None or hi is None or v is None:
                return False
            if isinstance(lo, int) and isinstance(hi, int) and isinstance(v, int):
                return lo <= v <= hi
            if all(isinstance(x, ipaddress.IPv4Address) for x in (lo, hi, v)):
                return lo <= v <= hi  # type: ignore[operator]
            return False
        return False
    if str(elem) == value:
        return True
    a, b = _scalar(elem), _scalar(value)
    return a is not None and type(a) is type(b) and a == b


def _fmt_value(v: object) -> str:
    if isinstance(v, dict) and "concat" in v:
        parts = [str(x) for x in v["concat"]]
        return ":".join(parts) if len(parts) == 2 else " . ".join(parts)
    return str(v)


class _Elements:
    """Elements (with their comments) of the router table's sets and maps."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.cache: dict[str, list[tuple[list[object], str, object]]] = {}

    def get(self, table: str, name: str) -> list[tuple[list[object], str, object]]:
        if name not in self.cache:
            family, _, tname = table.partition(" ")
            proc = subprocess.run(
                in_netns(self.netns, ["nft", "-j", "list", "ruleset"]),
                capture_output=True, text=True, timeout=15, check=False)
            self.cache = {}
            try:
                data = json.loads(proc.stdout or "{}").get("nftables", [])
            except ValueError:
                data = []
            for item in data:
                obj = item.get("set") or item.get("map")
                if not obj or obj.get("family") != family or obj.get("table") != tname:
                    continue
                elems = []
                for e in obj.get("elem", []):
                    value: object = None
                    if isinstance(e, list) and len(e) == 2:  # map: [key, value]
                        e, value = e
                    comment = ""
                    if isinstance(e, dict) and "elem" in e:
                        comment = e["elem"].get("comment", "")
                        e = e["elem"].get("val")
                    key = e["concat"] if isinstance(e, dict) and "concat" in e else [e]
                    elems.append((key, comment, value))
                self.cache[obj["name"]] = elems
        return self.cache.get(name, [])

    def match(self, table: str, rule: str, fields: dict[str, str]
              ) -> tuple[str, str] | None:
        """(comment, mapped value) of the element the packet matched."""
        m = _LOOKUP.search(rule)
        if not m:
            return None
        values: list[str] = []
        for expr in (x.strip() for x in m.group(1).split(" . ")):
            name, _, mask = expr.partition(" & ")
            value = fields.get(name)
            if value is None:
                return None
            if mask:  # a masked lookup (one set per prefix length)
                try:
                    value = str(ipaddress.IPv4Address(
                        int(ipaddress.IPv4Address(value)) & int(ipaddress.IPv4Address(mask))))
                except ValueError:
                    return None
            values.append(value)
        for key, comment, mapped in self.get(table, m.group(2)):
            if len(key) == len(values) and all(
                    _component_matches(k, v) for k, v in zip(key, values, strict=True)):
                return comment, _fmt_value(mapped) if mapped is not None else ""
        return None


def check_request(req: pb.TraceRequest) -> tuple[str, float, int]:
    """(the nft match, seconds, packets): every check, before anything runs."""
    match = match_expr(req)
    seconds = check_limit("max_seconds", req.max_seconds, DEFAULT_SECONDS, MAX_SECONDS)
    packets = int(check_limit("max_packets", req.max_packets, DEFAULT_PACKETS, MAX_PACKETS))
    return match, seconds, packets


class PacketWindow:
    """Which packets a trace follows, and when it may end: ``packets``
    packets, then ``quiet`` seconds after the last event of any of them.
    The kernel emits a packet's trace events as it goes, but ``nft monitor``
    (starved in an emulated router VM) may print them with pauses, so the
    end is counted from the last event seen, not from the packet's first."""

    def __init__(self, packets: int, quiet: float) -> None:
        self.packets = packets
        self.quiet = quiet
        self._ours: set[str] = set()
        self._last = 0.0

    def admit(self, packet_id: str, now: float) -> bool:
        """Is this event's packet one the trace follows? (It takes the
        packet on while fewer than ``packets`` are followed.)"""
        if packet_id not in self._ours:
            if len(self._ours) >= self.packets:
                return False
            self._ours.add(packet_id)
        self._last = now
        return True

    def follows(self, packet_id: str) -> bool:
        return packet_id in self._ours

    def ends_at(self, deadline: float) -> float:
        if len(self._ours) < self.packets:
            return deadline
        return min(deadline, self._last + self.quiet)


def trace(netns: str, req: pb.TraceRequest, cancelled: threading.Event
          ) -> Iterator[pb.TraceEvent]:
    match, seconds, packets = check_request(req)
    name = f"cloudnet-trace-{uuid.uuid4().hex[:8]}"
    rules = _Rules(netns)
    elements = _Elements(netns)
    packet_lines: dict[str, str] = {}
    mon = subprocess.Popen(in_netns(netns, ["nft", "monitor"]), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert mon.stdout is not None
        for line in mon.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, name="nft-monitor", daemon=True).start()
    loaded = False
    try:
        time.sleep(0.1)
        subprocess.run(in_netns(netns, ["nft", "-f", "-"]), input=table_text(name, match),
                       text=True, capture_output=True, timeout=15, check=True)
        loaded = True
        # The monitor listens once it reports a change of our table. A slow
        # start (an emulated router VM) can miss the table's creation: then
        # an empty chain is added, and again, until one is seen.
        armed_by = time.monotonic() + START_TIMEOUT
        pokes = 0
        while True:
            try:
                line = lines.get(timeout=min(1.0, max(0.0, armed_by - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= armed_by:
                    raise
                pokes += 1
                subprocess.run(in_netns(netns, ["nft", "add", "chain", "inet", name,
                                                f"armed{pokes}"]),
                               capture_output=True, timeout=15, check=True)
                continue
            if line is None:
                raise RuntimeError("nft monitor ended")
            if line.startswith((f"add table inet {name}", f"add chain inet {name} armed")):
                break
        yield pb.TraceEvent(ready=True)
        deadline = time.monotonic() + seconds
        window = PacketWindow(packets, quiet=0.5)
        while not cancelled.is_set():
            now = time.monotonic()
            end = window.ends_at(deadline)
            if now >= end:
                break
            try:
                line = lines.get(timeout=min(0.2, end - now))
            except queue.Empty:
                continue
            if line is None:
                break
            ev = parse_line(line, rules, elements, packet_lines)
            if ev is None:
                continue
            if ev.table == f"inet {name}":
                window.admit(ev.packet_id, time.monotonic())
                continue  # our own marking rule is noise to the user
            if window.follows(ev.packet_id):
                window.admit(ev.packet_id, time.monotonic())
                yield ev
    except queue.Empty:
        raise RuntimeError("nft monitor did not start in time") from None
    finally:
        if loaded:
            subprocess.run(in_netns(netns, ["nft", "delete", "table", "inet", name]),
                           capture_output=True, timeout=15, check=False)
        if mon.poll() is None:
            mon.send_signal(signal.SIGTERM)
            try:
                mon.wait(5)
            except subprocess.TimeoutExpired:
                mon.kill()
                mon.wait()


def remove_stale_tables(netns: str) -> None:
    """Trace tables left by a killed agent (the stream's end removes its own);
    in-process: an agent start looks in every router."""
    try:
        listed = libnft.run(netns, "list tables", terse=True)
    except libnft.NftError:
        return
    for line in listed.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].startswith("cloudnet-trace-"):
            with contextlib.suppress(libnft.NftError):  # gone meanwhile
                libnft.run(netns, f"delete table {parts[1]} {parts[2]}")
