"""One flow sent for real with a live trace running on the router, read back
as a verdict to set against ``debug explain``'s.

``send_traced`` starts ``debug trace`` on the router for exactly the flow's
first packet (source, destination, protocol, port), sends it with a real
client from a namespace (socat for TCP and UDP, ping for ICMP) and returns
what the router's own table did with it (``Live``): dropped or passed, the
object the dropping rule names, every object the trace names on the way,
and the address translations it applied. A packet the router never saw (a
flow inside one segment, or one the provider's edge does not route) is
judged by the client alone: answered or not.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import time

import grpc
from cloudnet.router.v1 import diag_pb2 as dpb

from tests.lib.diag import Background, Debug

ROUTER_TABLE = "inet cloudnet"
# How long a trace waits for a packet that never reaches the router.
UNSEEN_SECONDS = 4.0


@dataclasses.dataclass
class Live:
    traced: bool  # the router's table saw the packet
    allowed: bool | None  # None: unseen by the router, and no answer to judge by (UDP)
    answered: bool | None  # the client got an answer (None: UDP, nothing to wait for)
    drop: tuple[str, str] | None  # the object the dropping rule names ("", "" if none)
    objects: set[tuple[str, str]]  # every (kind, id) the trace names
    unnamed: set[str]  # kinds of rules the trace could not map to an object
    snat: str
    dnat: str
    lines: list[str]

    def describe(self) -> str:
        return "\n".join(["  trace:", *(f"    {line}" for line in self.lines)]) \
            if self.lines else "  trace: the router saw no packet"


def _object(ev: dpb.TraceEvent) -> tuple[str, str]:
    """(kind, id) the way explain names it: an ACL rule's comment carries
    "<rule id>:<number>", explain the rule ID as kind "aclrule"."""
    kind, ident = ev.object_kind, ev.object_id
    if kind == "acl" and ident:
        return "aclrule", ident.split(":")[0]
    return kind, ident


def _is_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text.rsplit(":", 1)[0] if text.count(":") == 1 else text)
    except ValueError:
        return False
    return True


def read_events(events: list[dpb.TraceEvent], answered: bool | None) -> Live:
    mine = [e for e in events if e.table == ROUTER_TABLE and not e.ready]
    named = [_object(e) for e in mine]
    objects = {o for o in named if o[0] and o[1]}
    unnamed = {k for k, i in named if k and not i}
    drop: tuple[str, str] | None = None
    snat = dnat = ""
    for i, ev in enumerate(mine):
        verdict = ev.verdict.split(" (")[0]
        if verdict.startswith("snat to ") and _is_address(ev.nat_target):
            snat = ev.nat_target
        if verdict.startswith("dnat to ") and _is_address(ev.nat_target):
            dnat = ev.nat_target
        if verdict == "drop" and drop is None:
            drop = named[i]
            if drop[0] and not drop[1]:
                # A rule reached through a set lookup (``goto egress_rule``):
                # the lookup's element named the object.
                drop = next((o for o in reversed(named[:i]) if o[0] == drop[0] and o[1]),
                            drop)
    traced = bool(mine)
    return Live(traced=traced, allowed=(drop is None) if traced else answered,
                answered=answered, drop=drop, objects=objects, unnamed=unnamed, snat=snat,
                dnat=dnat,
                lines=[e.line for e in mine])


def client(ns: str, proto: str, dst: str, port: int, timeout: float = 1.5) -> bool | None:
    """Sends the flow's packet from namespace ``ns``: did anything answer?
    TCP: connected or refused (a reset came back); ICMP: an echo reply; UDP:
    None (a datagram gets no answer of its own)."""
    base = ["ip", "netns", "exec", ns]
    if proto == "icmp":
        r = subprocess.run([*base, "busybox", "ping", "-c", "1", "-W", str(int(timeout + 0.5)),
                            dst], capture_output=True, text=True, timeout=30)
        return r.returncode == 0
    if proto == "udp":
        subprocess.run([*base, "socat", "-T0.2", "-", f"UDP:{dst}:{port}"], input="x\n",
                       capture_output=True, text=True, timeout=30)
        return None
    r = subprocess.run([*base, "socat", f"-T{timeout}", "-",
                        f"TCP:{dst}:{port},connect-timeout={timeout}"], input="x\n",
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0 or "refused" in r.stderr.lower()


def send_traced(dbg: Debug, router_id: str, ns: str, src_ip: str, proto: str, dst: str,
                port: int) -> Live:
    """Trace the flow's first packet on ``router_id`` while a real client sends it."""
    req = dpb.TraceRequest(router_id=router_id, source=src_ip, destination=dst,
                           protocol=proto, port=port if proto != "icmp" else 0,
                           max_packets=1, max_seconds=UNSEEN_SECONDS + 4)
    stream = dbg.trace(req, timeout=60)
    bg = Background(stream)
    assert bg.started.wait(30), "the trace did not start"
    assert bg.items, bg.error
    assert bg.items[0].ready, bg.error
    answered = client(ns, proto, dst, port)
    # The agent ends the stream half a second after the traced packet's last
    # event (bounded by max_seconds): wait for that end, however slowly a
    # starved router VM prints the events. A packet the router never saw
    # leaves the stream open: cut it short.
    deadline = time.monotonic() + UNSEEN_SECONDS
    while bg.thread.is_alive() and time.monotonic() < deadline:
        if len(bg.items) > 1:
            bg.thread.join(req.max_seconds + 10)
            break
        time.sleep(0.05)
    if bg.thread.is_alive():
        stream.cancel()
    bg.join()
    if bg.error is not None and bg.error.code() != grpc.StatusCode.CANCELLED:
        raise AssertionError(f"trace failed: {bg.error}")
    return read_events(list(bg.items), answered)
