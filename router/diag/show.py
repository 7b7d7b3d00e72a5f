"""Show commands: the router's state as the kernel and the daemons hold it."""

from __future__ import annotations

import ipaddress
import json
import re

from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import diag_pb2 as pb

from router.diag.common import object_of_comment, run_in_router


def leases(lease_file: str, cfg: apb.RouterConfig) -> list[pb.Lease]:
    """dnsmasq's lease file: ``expiry mac ip hostname client-id`` per line."""
    nets = [(ipaddress.IPv4Network(n.cidr, strict=False), n.network_id)
            for n in cfg.guest_networks if n.cidr]
    out = []
    try:
        with open(lease_file) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or ":" in parts[2]:  # IPv6 leases (duid line) are not ours
            continue
        expiry, mac, ip, host = parts[:4]
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            continue
        network_id = next((nid for cidr, nid in nets if addr in cidr), "")
        out.append(pb.Lease(mac=mac, ip=ip, hostname="" if host == "*" else host,
                            expires=int(expiry) if expiry.isdigit() else 0,
                            network_id=network_id))
    return sorted(out, key=lambda lease: ipaddress.IPv4Address(lease.ip))


def parse_conntrack_line(line: str) -> pb.ConntrackEntry | None:
    parts = line.split()
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    entry = pb.ConntrackEntry(protocol=parts[0], line=line.strip())
    if parts[2].isdigit():
        entry.timeout = int(parts[2])
    seen: dict[str, int] = {}
    for tok in parts[3:]:
        if "=" not in tok:
            if tok.isupper() and not tok.startswith("["):
                entry.state = tok
            continue
        key, _, value = tok.partition("=")
        n = seen.get(key, 0)
        seen[key] = n + 1
        reply = n == 1
        if key == "src":
            if reply:
                entry.reply_source = value
            else:
                entry.source = value
        elif key == "dst":
            if reply:
                entry.reply_destination = value
            else:
                entry.destination = value
        elif key in ("sport", "dport") and value.isdigit():
            field = {("sport", False): "source_port", ("dport", False): "destination_port",
                     ("sport", True): "reply_source_port",
                     ("dport", True): "reply_destination_port"}[(key, reply)]
            setattr(entry, field, int(value))
    nat = []
    if entry.reply_destination and entry.reply_destination != entry.source:
        nat.append("snat")
    if entry.reply_source and entry.reply_source != entry.destination:
        nat.append("dnat")
    entry.nat = "+".join(nat)
    return entry


def conntrack(netns: str, address: str = "") -> list[pb.ConntrackEntry]:
    text = run_in_router(netns, ["conntrack", "-L"])
    out = []
    for line in text.splitlines():
        e = parse_conntrack_line(line)
        if e is None:
            continue
        if address and address not in (e.source, e.destination, e.reply_source,
                                       e.reply_destination):
            continue
        out.append(e)
    return out


_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_CHAIN = re.compile(r"^chain (\S+) \{")
_COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")
_COMMENT = re.compile(r'comment "((?:[^"\\]|\\.)*)"')
_HANDLE = re.compile(r"# handle (\d+)$")


def parse_counters(text: str) -> list[pb.RuleCounter]:
    """Every rule with a counter in ``nft -a list ruleset`` output."""
    out = []
    table = chain = ""
    for raw in text.splitlines():
        line = raw.strip()
        if m := _TABLE.match(line):
            table, chain = f"{m.group(1)} {m.group(2)}", ""
            continue
        if m := _CHAIN.match(line):
            chain = m.group(1)
            continue
        if line == "}":
            continue
        c = _COUNTER.search(line)
        if not chain or not c:
            continue
        comment_m = _COMMENT.search(line)
        comment = comment_m.group(1) if comment_m else ""
        h = _HANDLE.search(line)
        rule = _HANDLE.sub("", line).strip()
        kind, ident = object_of_comment(comment)
        out.append(pb.RuleCounter(
            table=table, chain=chain, handle=int(h.group(1)) if h else 0, rule=rule,
            comment=comment, packets=int(c.group(1)), bytes=int(c.group(2)),
            object_kind=kind, object_id=ident))
    return out


def counters(netns: str) -> list[pb.RuleCounter]:
    return parse_counters(run_in_router(netns, ["nft", "-a", "list", "ruleset"]))


def interfaces(netns: str, cfg: apb.RouterConfig) -> list[pb.InterfaceInfo]:
    by_name = {i.name: i for i in cfg.interfaces}
    data = json.loads(run_in_router(netns, ["ip", "-j", "-s", "addr", "show"]) or "[]")
    out = []
    for link in data:
        name = link.get("ifname", "")
        iface = by_name.get(name)
        role = ("loopback" if link.get("link_type") == "loopback" else
                "guest" if iface and iface.role == apb.INTERFACE_ROLE_GUEST else
                "public" if iface and iface.role == apb.INTERFACE_ROLE_PUBLIC else "")
        stats = link.get("stats64", {})
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        out.append(pb.InterfaceInfo(
            name=name, role=role, network_id=iface.network_id if iface else "",
            mac=link.get("address", ""), mtu=int(link.get("mtu", 0)),
            state=link.get("operstate", ""),
            addresses=[f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                       if "local" in a],
            rx_packets=rx.get("packets", 0), rx_bytes=rx.get("bytes", 0),
            tx_packets=tx.get("packets", 0), tx_bytes=tx.get("bytes", 0),
            rx_dropped=rx.get("dropped", 0), tx_dropped=tx.get("dropped", 0)))
    return out


def routes(netns: str) -> list[pb.RouteInfo]:
    data = json.loads(run_in_router(netns, ["ip", "-j", "-4", "route", "show", "table", "all"])
                      or "[]")
    out = []
    for r in data:
        if r.get("table") == "local" or r.get("type") in ("local", "broadcast"):
            continue
        out.append(pb.RouteInfo(
            destination=r.get("dst", ""), gateway=r.get("gateway", ""),
            interface=r.get("dev", ""), protocol=r.get("protocol", ""),
            scope=r.get("scope", ""), source=r.get("prefsrc", "")))
    return out
