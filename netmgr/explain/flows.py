"""Model check: would a flow pass, and which object decides? No packets.

    cloudnet debug explain --from PORT_OR_IP --to IP:PORT/PROTO

Evaluates the model the router's nftables table is built from, following
the packet through each router it crosses in the order the router's table
and kernel take it (``netmgr.explain.path``): the edge filter on public IPs,
port forwards and static NAT, the router's own services and load balancers,
VPN tunnels (from the state the router reports), a VPC's routing between
tiers, private gateways and static routes under their network ACLs, the
egress policy and rules, then source NAT.

``from`` is a port ID, an address, or "internet"; ``to`` is
``IP:PORT/PROTO``, ``IP:PORT`` (tcp), ``IP/icmp`` or a port ID (ICMP echo).
Where the flow starts: a port's network; an address in one of the tenant's
networks; behind a VPC's private gateway or static route; in a VPN peer's
networks; else outside (the internet).
"""

from __future__ import annotations

import ipaddress
import re

from cloudnet.netmgr.v1 import debug_pb2 as pb

from common.grpc_errors import InvalidArgument, NotFound
from netmgr.explain import routed
from netmgr.explain.edge import Packet
from netmgr.explain.path import Walk
from netmgr.explain.result import Result
from netmgr.explain.router_view import GATEWAY, GUEST, Iface
from netmgr.explain.world import World
from netmgr.model import core as model
from netmgr.model.field_rules import show
from netmgr.store.facade import Store

_TO = re.compile(r"(?P<ip>[0-9.]+)(?::(?P<port>\d{1,5}))?(?:/(?P<proto>tcp|udp|icmp))?")
# IPv6: [ADDR]:PORT/PROTO, [ADDR]:PORT, ADDR/icmp or ADDR.
_TO6 = re.compile(r"(?:\[(?P<ip>[0-9a-fA-F:]+)\](?::(?P<port>\d{1,5}))?|(?P<bare>[0-9a-fA-F:]+))"
                  r"(?:/(?P<proto>tcp|udp|icmp))?")
_UUID = re.compile(r"[0-9a-fA-F-]{36}")
INTERNET = "internet"
DEFAULT_OUTSIDE = "198.51.100.1"  # any outside address stands for "the internet"
DEFAULT_OUTSIDE6 = "2001:db8:5100::10"
MAX_FIELD = 64  # longer than any address, port ID or IP:PORT/PROTO


def _ip(field: str, text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidArgument.one(field, f"not an IPv4 address: {show(text)}") from None


def _port(store: Store, tenant_id: str, text: str, field: str) -> model.Port | None:
    if _UUID.fullmatch(text):
        try:
            return store.get_port(tenant_id, text)
        except NotFound:
            raise InvalidArgument.one(field, f"no port {show(text)}") from None
    return None


def parse(store: Store, tenant_id: str,
          request: pb.ExplainRequest) -> tuple[Packet, model.Port | None]:
    """The flow of a request, and the port it starts from (if one was named)."""
    src_text = getattr(request, "from").strip()
    dst_text = request.to.strip()
    if not src_text:
        raise InvalidArgument.one("from", "a port ID, an address or 'internet'")
    if not dst_text:
        raise InvalidArgument.one("to", "IP:PORT/PROTO, IP/icmp or a port ID")
    for field, text in (("from", src_text), ("to", dst_text)):
        if len(text) > MAX_FIELD:
            raise InvalidArgument.one(field, f"at most {MAX_FIELD} characters: {show(text)}")
    src_port = _port(store, tenant_id, src_text, "from")
    if src_port is not None:
        src = _ip("from", src_port.ip)
    elif src_text.lower() == INTERNET:
        src = ipaddress.IPv4Address(DEFAULT_OUTSIDE)
    else:
        src = _ip("from", src_text)
    dst_port = _port(store, tenant_id, dst_text, "to")
    if dst_port is not None:
        return Packet(src, _ip("to", dst_port.ip), "icmp", 0), src_port
    m = _TO.fullmatch(dst_text)
    if not m:
        raise InvalidArgument.one("to", f"expected IP:PORT/PROTO, got {show(dst_text)}")
    proto = m["proto"] or ("tcp" if m["port"] else "icmp")
    port = int(m["port"] or 0)
    if proto != "icmp" and not 0 < port < 65536:
        raise InvalidArgument.one("to", "a TCP or UDP destination needs a port 1-65535")
    if proto == "icmp" and port:
        raise InvalidArgument.one("to", "ICMP has no port")
    return Packet(src, _ip("to", m["ip"]), proto, port), src_port


def _is_ipv6_flow(request: pb.ExplainRequest) -> bool:
    dst, src = request.to.strip(), getattr(request, "from").strip()
    return dst.startswith("[") or dst.count(":") > 1 or src.count(":") > 1


def parse6(store: Store, tenant_id: str, request: pb.ExplainRequest) -> tuple[
        ipaddress.IPv6Address, ipaddress.IPv6Address, str, int]:
    """An IPv6 flow: (source, destination, protocol, port)."""
    src_text, dst_text = getattr(request, "from").strip(), request.to.strip()
    for field, text in (("from", src_text), ("to", dst_text)):
        if not text:
            raise InvalidArgument.one(field, "a port ID, an address or 'internet'")
        if len(text) > MAX_FIELD:
            raise InvalidArgument.one(field, f"at most {MAX_FIELD} characters: {show(text)}")
    src_port = _port(store, tenant_id, src_text, "from")
    if src_port is not None:
        if not src_port.ipv6:
            raise InvalidArgument.one("from", f"port {src_port.id} has no IPv6 address")
        src_text = src_port.ipv6
    elif src_text.lower() == INTERNET:
        src_text = DEFAULT_OUTSIDE6
    dst_port = _port(store, tenant_id, dst_text, "to")
    if dst_port is not None:
        if not dst_port.ipv6:
            raise InvalidArgument.one("to", f"port {dst_port.id} has no IPv6 address")
        dst_text = dst_port.ipv6
    m = _TO6.fullmatch(dst_text)
    if not m:
        raise InvalidArgument.one("to", f"expected [IPV6]:PORT/PROTO, got {show(dst_text)}")
    proto = m["proto"] or ("tcp" if m["port"] else "icmp")
    port = int(m["port"] or 0)
    if proto != "icmp" and not 0 < port < 65536:
        raise InvalidArgument.one("to", "a TCP or UDP destination needs a port 1-65535")
    out = []
    for field, text in (("from", src_text), ("to", m["ip"] or m["bare"])):
        try:
            out.append(ipaddress.IPv6Address(text))
        except ValueError:
            raise InvalidArgument.one(field, f"not an IPv6 address (the flow is IPv6): "
                                      f"{show(text)}") from None
    return out[0], out[1], proto, port


def explain(store: Store, tenant_id: str, request: pb.ExplainRequest) -> pb.ExplainResponse:
    world = World(store, tenant_id)
    if _is_ipv6_flow(request):
        answer = routed.explain6(world, *parse6(store, tenant_id, request))
    else:
        pkt, src_port = parse(store, tenant_id, request)
        answer = _walk(world, pkt, src_port)
    # An object the router refused runs as it was before (or not at all, if
    # it was new): the model's version of it may not be what the router holds.
    errors = world.errors()
    seen: set[tuple[str, str]] = set()
    for obj in [(answer.decided_by_kind, answer.decided_by_id),
                *((s.object_kind, s.object_id) for s in answer.steps)]:
        if obj in errors and obj not in seen:
            seen.add(obj)
            answer.steps.append(pb.ExplainStep(
                object_kind=obj[0], object_id=obj[1],
                result=f"in ERROR, refused by the router ({errors[obj][:200]}): it runs "
                       "the previous version of it, or none if it was new"))
    return answer


def _walk(world: World, pkt: Packet, src_port: model.Port | None) -> pb.ExplainResponse:
    res = Result()
    walk = Walk(world, res)
    src_net = None
    if src_port is not None:
        src_net = next((n for n in world.networks if n.id == src_port.network_id), None)
    src_net = src_net or world.source_network(pkt.src)
    if src_net is not None:
        return _from_network(walk, src_net, pkt, src_port)
    behind = world.behind(pkt.src)
    if behind is not None:
        rv, kind, ident = behind
        res.router_id = rv.id
        what = {"privategateway": "private gateway", "staticroute": "static route"}[kind]
        res.step(kind, ident, f"source {pkt.src} is behind {what} {ident} of router {rv.id}")
        iface = Iface(GATEWAY, ident) if kind == "privategateway" else rv.route(pkt.src).iface
        return walk.through(rv, pkt, iface)
    peer = world.tunnel_from(pkt.src)
    if peer is not None:
        return walk.from_tunnel(*peer, pkt)
    return walk.outside(pkt)


def _from_network(walk: Walk, net: model.Network, pkt: Packet,
                  port: model.Port | None) -> pb.ExplainResponse:
    res = walk.res
    res.router_id = net.router_id
    res.step("network", net.id, f"source {pkt.src} is in {net.cidr}")
    cidr = ipaddress.IPv4Network(net.cidr)
    if pkt.dst in cidr and str(pkt.dst) != net.gateway:
        return res.done(True, "network", net.id, f"{pkt.dst} is on the same segment")
    if not net.router_id:
        return res.done(False, "network", net.id, "the network has no router")
    rv = walk.world.router(net.router_id)
    if port is None:
        # Port security: the router takes a guest network's address only
        # from the port holding it (its interface and MAC).
        port = rv.port_at(net.id, pkt.src)
        if port is None:
            return res.done(False, "port-spoof", net.id,
                            f"no port of {net.name} holds {pkt.src}: the router drops it "
                            "(a guest address only from its own port)")
        res.step("port", port.id, f"{pkt.src} is port {port.name or port.id}'s ({port.mac})")
    return walk.through(rv, pkt, Iface(GUEST, net.id))
