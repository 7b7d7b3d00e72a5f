"""Model check: would a flow pass, and which object decides? No packets.

    cloudnet debug explain --from PORT_OR_IP --to IP:PORT/PROTO

Evaluates the same model the router's nftables table is built from
(networks, source NAT, public IPs, port forwards, static NAT, ingress and
egress firewall) in the order the router applies it:

* inside a network: the segment itself (same CIDR), the router's own
  services (DHCP, DNS, ICMP), no route to any other network;
* guest to outside: the network's egress policy and rules, then source NAT
  (or the port's static NAT address);
* outside to a public IP: port forwards (with their source CIDRs), ingress
  firewall rules (a static NAT IP then reaches its port), else the default drop;
* outside to a private address: no route.

``from`` is a port ID, an address, or "internet"; ``to`` is
``IP:PORT/PROTO``, ``IP:PORT`` (tcp), ``IP/icmp`` or a port ID.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from cloudnet.netmgr.v1 import debug_pb2 as pb

from common.grpc_errors import InvalidArgument, NotFound, quote
from netmgr.explain import vpc as explain_vpc
from netmgr.model import core as model
from netmgr.model.edge import EdgeSnapshot
from netmgr.model.paging import MAX_PAGE_SIZE, PageRequest, decode_token
from netmgr.store.facade import Store

_TO = re.compile(r"(?P<ip>[0-9.]+)(?::(?P<port>\d{1,5}))?(?:/(?P<proto>tcp|udp|icmp))?")
ROUTER_SERVICES = {("udp", 67): "dhcp", ("udp", 53): "dns", ("tcp", 53): "dns"}
INTERNET = "internet"
DEFAULT_OUTSIDE = "198.51.100.1"  # any outside address stands for "the internet"


@dataclasses.dataclass
class Flow:
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    proto: str
    port: int
    src_port: model.Port | None = None


class _Result:
    def __init__(self) -> None:
        self.steps: list[pb.ExplainStep] = []
        self.router_id = ""

    def step(self, kind: str, ident: str, result: str) -> None:
        self.steps.append(pb.ExplainStep(object_kind=kind, object_id=ident, result=result))

    def done(self, allowed: bool, kind: str, ident: str, reason: str) -> pb.ExplainResponse:
        return pb.ExplainResponse(allowed=allowed, decided_by_kind=kind, decided_by_id=ident,
                                  reason=reason, steps=self.steps, router_id=self.router_id)


def _ip(field: str, text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidArgument.one(field, f"not an IPv4 address: {quote(text)}") from None


def _networks(store: Store, tenant_id: str) -> list[model.Network]:
    out: list[model.Network] = []
    page = PageRequest(size=MAX_PAGE_SIZE)
    while True:
        got = store.list_networks(tenant_id, page)
        out.extend(got.items)
        if not got.next_page_token:
            return out
        page = PageRequest(size=MAX_PAGE_SIZE, after=decode_token(got.next_page_token))


def _port(store: Store, tenant_id: str, text: str, field: str) -> model.Port | None:
    if re.fullmatch(r"[0-9a-fA-F-]{36}", text):
        try:
            return store.get_port(tenant_id, text)
        except NotFound:
            raise InvalidArgument.one(field, f"no port {quote(text)}") from None
    return None


def _in_cidrs(ip: ipaddress.IPv4Address, cidrs: tuple[str, ...]) -> bool:
    return not cidrs or any(ip in ipaddress.IPv4Network(c, strict=False) for c in cidrs)


def _ports_match(proto: str, port: int, rule_proto: str, lo: int, hi: int) -> bool:
    if rule_proto not in ("", "all", "any") and rule_proto != proto:
        return False
    if proto == "icmp" or not lo:
        return True
    return lo <= port <= (hi or lo)


def explain(store: Store, tenant_id: str, request: pb.ExplainRequest) -> pb.ExplainResponse:
    src_text = getattr(request, "from").strip()
    dst_text = request.to.strip()
    if not src_text:
        raise InvalidArgument.one("from", "a port ID, an address or 'internet'")
    if not dst_text:
        raise InvalidArgument.one("to", "IP:PORT/PROTO, IP/icmp or a port ID")
    networks = _networks(store, tenant_id)

    src_port = _port(store, tenant_id, src_text, "from")
    if src_port is not None:
        src = _ip("from", src_port.ip)
    elif src_text.lower() == INTERNET:
        src = ipaddress.IPv4Address(DEFAULT_OUTSIDE)
    else:
        src = _ip("from", src_text)

    dst_port = _port(store, tenant_id, dst_text, "to")
    if dst_port is not None:
        dst, proto, port = _ip("to", dst_port.ip), "icmp", 0
    else:
        m = _TO.fullmatch(dst_text)
        if not m:
            raise InvalidArgument.one("to", f"expected IP:PORT/PROTO, got {quote(dst_text)}")
        dst = _ip("to", m["ip"])
        proto = m["proto"] or ("tcp" if m["port"] else "icmp")
        port = int(m["port"] or 0)
        if proto != "icmp" and not 0 < port < 65536:
            raise InvalidArgument.one("to", "a TCP or UDP destination needs a port 1-65535")
        if proto == "icmp" and port:
            raise InvalidArgument.one("to", "ICMP has no port")
    flow = Flow(src, dst, proto, port, src_port)

    src_net = next((n for n in networks if src in ipaddress.IPv4Network(n.cidr)), None)
    if src_port is not None:
        src_net = next((n for n in networks if n.id == src_port.network_id), src_net)
    res = _Result()
    if src_net is not None:
        return _from_inside(store, networks, src_net, flow, res)
    return _from_outside(store, networks, flow, res)


def _snapshot(store: Store, net: model.Network) -> model.RouterSnapshot:
    return store.router_snapshot(net.router_id)


def _from_inside(store: Store, networks: list[model.Network], net: model.Network, flow: Flow,
                 res: _Result) -> pb.ExplainResponse:
    res.router_id = net.router_id
    cidr = ipaddress.IPv4Network(net.cidr)
    res.step("network", net.id, f"source {flow.src} is in {net.cidr}")
    if flow.dst == ipaddress.IPv4Address(net.gateway):
        service = ROUTER_SERVICES.get((flow.proto, flow.port))
        if flow.proto == "icmp" or service:
            return res.done(True, "router", net.router_id,
                            f"the router answers {service or 'ICMP'} on its guest address")
        return res.done(False, "firewall-default", "drop",
                        f"the router serves nothing on {flow.proto}/{flow.port}")
    if flow.dst in cidr:
        return res.done(True, "network", net.id, f"{flow.dst} is on the same segment")
    other = next((n for n in networks if flow.dst in ipaddress.IPv4Network(n.cidr)), None)
    snap = _snapshot(store, net)
    edge = snap.edge or EdgeSnapshot()
    public = {p.ip: p for p in edge.public_ips}
    if other is not None and net.vpc_id and other.vpc_id == net.vpc_id:
        return explain_vpc.between_tiers(snap, net, other, flow, res)  # VPC tiers (ACLs)
    if other is not None and str(flow.dst) not in public:
        return res.done(False, "network", net.id,
                        f"isolated network: no route to {other.name} ({other.cidr})")
    if str(flow.dst) in public or flow.dst == ipaddress.IPv4Address(net.source_nat_ip):
        # Hairpin: DNAT on the way in, the egress policy is not consulted.
        res.step("hairpin", net.id, f"{flow.dst} is this router's own public address")
        return _from_outside(store, networks, Flow(flow.src, flow.dst, flow.proto, flow.port),
                             res, hairpin=True)
    if net.vpc_id:  # a VPC tier's egress list comes first
        verdict = explain_vpc.acl_verdict(snap, net.id, "egress", flow, res)
        if not verdict[0]:
            return res.done(*verdict)
    # Egress: the network's default, flipped by matching egress rules.
    deny = any(p.network_id == net.id and p.default_deny for p in edge.egress_policies)
    decided: tuple[bool, str, str, str] = (
        (False, "firewall-default", "drop", "egress is denied by default on this network")
        if deny else (True, "egress-default", net.id, "egress is allowed by default"))
    for rule in edge.firewall_rules:
        if rule.direction != "egress" or rule.network_id != net.id:
            continue
        if _ports_match(flow.proto, flow.port, rule.protocol, rule.port, rule.port_end) and \
                _in_cidrs(flow.dst, rule.cidrs):
            decided = (deny, "firewall", rule.id,
                       f"egress rule {'allows' if deny else 'denies'} {flow.proto} to {flow.dst}")
            break
    res.step(decided[1], decided[2], decided[3])
    if not decided[0]:
        return res.done(*decided)
    snat = next((s for s in edge.static_nats if flow.src_port is not None
                 and s.port_id == flow.src_port.id), None)
    if snat is not None:
        res.step("staticnat", snat.id, f"source becomes {snat.public_ip}")
    else:
        res.step("snat", net.id, f"source becomes {net.source_nat_ip}")
    if any(n.source_nat_ip == str(flow.dst) for n in networks):
        # Another of the tenant's networks, reached through its public address.
        return _from_outside(store, networks, Flow(flow.src, flow.dst, flow.proto, flow.port),
                             res, hairpin=True)
    return res.done(*decided)


def _from_outside(store: Store, networks: list[model.Network], flow: Flow, res: _Result,
                  hairpin: bool = False) -> pb.ExplainResponse:
    dst = str(flow.dst)
    for net in networks:
        snap = _snapshot(store, net)
        edge = snap.edge or EdgeSnapshot()
        ips = {p.ip: p for p in edge.public_ips}
        if dst not in ips and dst != net.source_nat_ip:
            continue
        res.router_id = net.router_id
        res.step("public-ip", ips[dst].id if dst in ips else net.id, f"{dst} is on router "
                 f"{net.router_id}" + (" (source NAT address)" if dst == net.source_nat_ip
                                       else ""))
        for pf in edge.port_forwards:
            if pf.public_ip != dst or pf.protocol != flow.proto:
                continue
            if not pf.public_port <= flow.port <= (pf.public_port_end or pf.public_port):
                continue
            if not _in_cidrs(flow.src, pf.source_cidrs):
                res.step("portforward", pf.id, f"source {flow.src} is not in its source CIDRs")
                continue
            target = pf.private_port + (flow.port - pf.public_port)
            res.step("portforward", pf.id, f"DNAT to {pf.private_ip}:{target}")
            return res.done(True, "portforward", pf.id,
                            f"forwarded to {pf.private_ip}:{target}")
        snat = next((s for s in edge.static_nats if s.public_ip == dst), None)
        for rule in edge.firewall_rules:
            if rule.direction != "ingress" or rule.public_ip != dst:
                continue
            if _ports_match(flow.proto, flow.port, rule.protocol, rule.port, rule.port_end) \
                    and _in_cidrs(flow.src, rule.cidrs):
                if snat is not None:
                    res.step("staticnat", snat.id, f"DNAT to {snat.private_ip}")
                    return res.done(True, "firewall", rule.id,
                                    f"ingress rule allows it to {snat.private_ip}")
                res.step("firewall", rule.id, "allowed at the edge, but nothing is behind it")
                return res.done(False, "firewall-default", "drop",
                                "the router itself serves nothing on its public address")
        if dst == net.source_nat_ip and dst not in ips:
            return res.done(False, "firewall-default", "drop",
                            "the source NAT address accepts no new connections from outside")
        return res.done(False, "firewall-default", "drop",
                        f"no port forward or firewall rule opens {flow.proto}"
                        + (f"/{flow.port}" if flow.port else "") + f" on {dst}")
    for net in networks:
        if flow.dst in ipaddress.IPv4Network(net.cidr):
            res.router_id = net.router_id
            return res.done(False, "network", net.id,
                            f"{dst} is private to network {net.name}: no route from outside")
    return res.done(False, "", "", f"{dst} is not an address of this tenant's networks"
                    + (" (outside: not cloudnet's to decide)" if not hairpin else ""))
