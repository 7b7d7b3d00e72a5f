"""Random, bounded topologies for the explain-versus-trace property test, and
the flows to send through them.

A topology is one router: an isolated network, or a VPC with tiers under
network ACL lists; guests (namespaces holding their DHCP lease); public IPs
with port forwards (single ports and ranges long enough to live in the
router's interval sets), a load balancer, a static NAT, ingress and egress
firewall rules with source CIDRs, an egress policy. Everything is drawn
from one ``random.Random(seed)``, so a seed rebuilds the same topology and
flows (names and IDs aside), and every draw is bounded: a few guests, a few
rules, a few dozen flows.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.allinone import INET_DNS_IP, INET_HOST_IP, WEB_PORT
from tests.lib.allinone import Tenant
from tests.lib.edge import Edge
from tests.lib.vpc import Vpc

NOWHERE = "192.0.2.0/24"  # a source no flow comes from
INET_NET = str(ipaddress.IPv4Network(f"{INET_HOST_IP}/24", strict=False))


@dataclasses.dataclass(frozen=True)
class Flow:
    src: str  # what explain's "from" gets: a port ID or an address
    ns: str  # the namespace the client sends from
    src_ip: str  # the packet's source as the router sees it
    proto: str
    dst: str
    port: int  # 0 for ICMP

    @property
    def to(self) -> str:
        return f"{self.dst}/icmp" if self.proto == "icmp" else \
            f"{self.dst}:{self.port}/{self.proto}"

    def __str__(self) -> str:
        return f"{self.src_ip} ({self.src}) -> {self.to}"


@dataclasses.dataclass
class Guest:
    port: pb.Port
    network: pb.Network
    ns: str


@dataclasses.dataclass
class Topology:
    kind: str
    router_id: str
    guests: list[Guest]
    networks: list[pb.Network]
    public_ips: list[epb.PublicIp]
    snat_ip: str  # the router's source NAT address
    ports_used: set[int]  # ports some object names (flows aim at them)
    targets: list[tuple[str, str, int]]  # (public IP, protocol, port) an object opens
    created: list[str]  # what was made, for the failure message

    def describe(self) -> str:
        return "\n".join(f"    {line}" for line in self.created)


class Builder:
    def __init__(self, t: Tenant, rng: random.Random, inet_ns: str) -> None:
        self.t, self.rng, self.inet_ns = t, rng, inet_ns
        self.e = Edge(t)
        self.created: list[str] = []
        self.ports_used: set[int] = set()
        self.targets: list[tuple[str, str, int]] = []

    def note(self, what: str, obj) -> None:
        self.created.append(f"{what} {getattr(obj, 'id', '')}: "
                            f"{str(obj).replace(chr(10), ' ')[:300]}")

    def cidrs(self, networks: list[pb.Network]) -> list[str]:
        """Source or destination CIDRs of a rule: none, the internet host, its
        network, nowhere, or a guest network."""
        pool: list[list[str]] = [[], [], [f"{INET_HOST_IP}/32"], [INET_NET], [NOWHERE],
                                 ["0.0.0.0/0"]]
        pool += [[n.cidr] for n in networks]
        return self.rng.choice(pool)

    def port_span(self) -> tuple[int, int]:
        """A single port, a short range, or a range the router keeps in an
        interval set (more than 64 ports)."""
        base = self.rng.choice([2000, 3000, 4000, 5000]) + self.rng.randrange(0, 50)
        kind = self.rng.choice(["one", "one", "short", "long"])
        end = base if kind == "one" else base + (4 if kind == "short" else 99)
        self.ports_used.update({base, end, (base + end) // 2})
        return base, end

    def guests(self, net: pb.Network, n: int) -> list[Guest]:
        out = []
        ports = [self.t.port(net.id, hostname=f"g{len(self.created)}x{i}") for i in range(n)]
        self.t.api.wait_router_active(net.router_id)
        for p in ports:
            g = self.t.guest(net, p)
            g.dhcp()
            out.append(Guest(p, net, g.netns))
        return out

    # ---- edge objects

    def edge(self, networks: list[pb.Network], guests: list[Guest]) -> list[epb.PublicIp]:
        rng, e = self.rng, self.e
        ips = []
        for net in rng.sample(networks, k=min(2, len(networks))) * (2 if len(networks) == 1
                                                                      else 1):
            ips.append(e.public_ip(net.id))
        free = list(ips)
        # Port forwards (and a load balancer) on the first IP, or on an isolated
        # network's source NAT address; static NAT on the second IP.
        pf_ip = free.pop(0)
        if len(networks) == 1 and rng.random() < 0.4:
            pf_ip = next(i for i in e.call(e.ips.ListPublicIps, epb.ListPublicIpsRequest(
                network_id=networks[0].id)).public_ips if i.source_nat)
        members = [g for g in guests if g.network.id == networks[0].id] \
            if pf_ip.source_nat else [g for g in guests if g.network.id == pf_ip.network_id]
        taken: list[tuple[str, int, int]] = []
        for _ in range(rng.randint(1, 3)):
            proto = rng.choice(["tcp", "tcp", "udp"])
            lo, hi = self.port_span()
            if any(p == proto and not (hi < a or lo > b) for p, a, b in taken):
                continue
            taken.append((proto, lo, hi))
            target = rng.choice(members)
            private = rng.choice([80, 22, lo + 1000])
            fields = dict(protocol=proto, public_port=lo, public_port_end=hi,
                          port_id=target.port.id, private_port=private,
                          source_cidrs=self.cidrs(networks))
            try:
                f = e.forward(public_ip_id=pf_ip.id, **fields)
            except grpc.RpcError as refused:
                # An API that keeps forwards off the source NAT address: a public IP.
                if not pf_ip.source_nat or \
                        refused.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                pf_ip = ips[0]
                members = [g for g in guests if g.network.id == pf_ip.network_id]
                fields["port_id"] = rng.choice(members).port.id
                f = e.forward(public_ip_id=pf_ip.id, **fields)
            self.note("port forward", f)
            self.targets += [(pf_ip.ip, proto, lo), (pf_ip.ip, proto, hi)]
        if rng.random() < 0.8:
            port = rng.choice([80, 443, 8443])
            if not any(p == "tcp" and a <= port <= b for p, a, b in taken):
                self.ports_used.add(port)
                lb = e.call(e.lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
                    load_balancer=epb.LoadBalancer(
                        public_ip_id=pf_ip.id, public_port=port, private_port=8080,
                        protocol="tcp", source_cidrs=self.cidrs(networks),
                        members=[epb.LoadBalancerMember(port_id=g.port.id)
                                 for g in rng.sample(members, k=min(2, len(members)))])))
                self.note("load balancer", lb)
                self.targets += [(pf_ip.ip, "tcp", port)] * 2
        if free and rng.random() < 0.8:
            nat_ip = free.pop(0)
            target = rng.choice([g for g in guests if g.network.id == nat_ip.network_id])
            self.note("static NAT", e.static_nat(nat_ip.id, target.port.id))
        for _ in range(rng.randint(1, 4)):
            self.ingress_rule(rng.choice(ips), networks)
        for net in networks:
            if rng.random() < 0.35:
                e.call(e.firewall.SetEgressPolicy, epb.SetEgressPolicyRequest(
                    policy=epb.EgressPolicy(network_id=net.id,
                                            default_action=epb.EGRESS_ACTION_DENY)))
                self.created.append(f"egress policy of {net.id}: deny")
            for _ in range(rng.randint(0, 3)):
                self.egress_rule(net, networks)
        return ips

    def _proto_fields(self) -> dict:
        proto = self.rng.choice(["tcp", "tcp", "udp", "icmp", "all"])
        fields: dict = {"protocol": proto}
        if proto in ("tcp", "udp"):
            kind = self.rng.choice(["span", "span", "all-ports", "web"])
            if kind == "span":
                fields["port"], fields["port_end"] = self.port_span()
            elif kind == "web":
                fields["port"] = fields["port_end"] = self.rng.choice([WEB_PORT, 53, 80])
        elif proto == "icmp":
            fields["icmp_type"], fields["icmp_code"] = self.rng.choice(
                [(-1, -1), (8, -1), (8, 0), (0, -1), (3, 3)])
        return fields

    def ingress_rule(self, ip: epb.PublicIp, networks: list[pb.Network]) -> None:
        r = self.e.rule(direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=ip.id,
                        cidrs=self.cidrs(networks), **self._proto_fields())
        self.note("ingress rule", r)
        if r.protocol in ("tcp", "udp"):
            self.targets.append((ip.ip, r.protocol, r.port_end))
        else:
            self.targets.append((ip.ip, self.rng.choice(["tcp", "icmp"]), 0))

    def egress_rule(self, net: pb.Network, networks: list[pb.Network]) -> None:
        r = self.e.rule(direction=epb.FIREWALL_DIRECTION_EGRESS, network_id=net.id,
                        cidrs=self.cidrs(networks), **self._proto_fields())
        self.note("egress rule", r)

    # ---- network ACLs

    def acl(self, v: Vpc, networks: list[pb.Network]) -> str:
        rng = self.rng
        acl = v.acl(f"l{rng.randrange(10**6)}")
        numbers = rng.sample(range(1, 200), k=rng.randint(1, 5))
        for number in sorted(numbers):
            fields = self._proto_fields()
            if fields["protocol"] == "all" and rng.random() < 0.3:
                fields["protocol"] = rng.choice(["6", "17", "1"])
            direction = rng.choice(["ingress", "egress"])
            r = v.rule(acl.id, number, rng.choice(["allow", "allow", "deny"]), direction,
                       cidrs=self.cidrs(networks), **fields)
            self.note(f"acl {acl.id} rule", r)
        for number, direction in ((250, "ingress"), (251, "egress")):
            if rng.random() < 0.5:  # a list that lets the rest through
                self.note(f"acl {acl.id} rule",
                          v.rule(acl.id, number, "allow", direction, "all"))
        return acl.id


def build(t: Tenant, kind: str, rng: random.Random, inet_ns: str, index: int) -> Topology:
    """One random topology of ``kind`` ("network" or "vpc") for tenant ``t``."""
    b = Builder(t, rng, inet_ns)
    second = 70 + index
    if kind == "network":
        net = t.network(name=f"n{index}", cidr=f"10.{second}.{rng.randrange(256)}.0/24")
        t.api.wait_router_active(net.router_id)
        networks = [net]
        guests = b.guests(net, 3)
        router_id, snat_ip = net.router_id, net.source_nat_ip
    else:
        v = Vpc(t, f"v{index}", f"10.{second}.0.0/16")
        v.wait()
        names = ["web", "app", "db"][: rng.randint(2, 3)]
        networks, lists = [], {}
        for i, name in enumerate(names):
            networks.append(v.tier(name, f"10.{second}.{i + 1}.0/24"))
        for net in networks:
            choice = rng.choice(["custom", "custom", "default_allow", "default_deny"])
            if choice == "custom":
                lists[net.id] = b.acl(v, networks)
            else:
                lists[net.id] = v.builtin(choice)
            v.replace(net, lists[net.id])
            b.created.append(f"tier {net.name} {net.id} {net.cidr}: list {choice} "
                             f"{lists[net.id]}")
        guests = []
        for net in networks:
            guests += b.guests(net, rng.randint(1, 2))
        router_id, snat_ip = v.vpc.router_id, v.vpc.source_nat_ip
    for g in guests:
        b.created.append(f"guest {g.port.id} {g.port.ip} on {g.network.name}")
    ips = b.edge(networks, guests)
    for ip in ips:
        b.created.append(f"public ip {ip.id} {ip.ip} of {ip.network_id}")
    b.created.append(f"source NAT address {snat_ip}")
    t.api.wait_router_active(router_id)
    return Topology(kind, router_id, guests, networks, ips, snat_ip, b.ports_used, b.targets,
                    b.created)


def flows(topo: Topology, rng: random.Random, inet_ns: str, count: int) -> list[Flow]:
    """``count`` flows between the topology's guests, the internet host, its
    public IPs and the router, aimed at the ports its objects name."""
    guests = topo.guests
    snat = topo.snat_ip
    public = [ip.ip for ip in topo.public_ips]

    def port() -> int:
        return rng.choice([*sorted(topo.ports_used), 80, 22, 53, 8080, 2999])

    def proto() -> str:
        return rng.choice(["tcp", "tcp", "tcp", "udp", "icmp"])

    def aimed() -> tuple[str, str, int]:
        """A public IP, protocol and port: mostly one some object opens."""
        if topo.targets and rng.random() < 0.7:
            ip, p, dport = rng.choice(topo.targets)
            return ip, p, (dport or port()) if p != "icmp" else 0
        p = proto()
        return rng.choice(public + public + [snat]), p, 0 if p == "icmp" else port()

    def from_inet() -> Flow:
        dst, p, dport = aimed()
        return Flow(INET_HOST_IP, inet_ns, INET_HOST_IP, p, dst, dport)

    def to_inet() -> Flow:
        g = rng.choice(guests)
        p = proto()
        dst = INET_DNS_IP if p == "udp" else INET_HOST_IP
        return Flow(g.port.id, g.ns, g.port.ip, p, dst,
                    0 if p == "icmp" else (53 if p == "udp" else port()))

    def between() -> Flow:
        a, b = rng.sample(guests, 2)
        p = rng.choice(["tcp", "tcp", "icmp"])  # same segment: UDP gets no answer to judge by
        return Flow(a.port.id, a.ns, a.port.ip, p, b.port.ip, 0 if p == "icmp" else port())

    def hairpin() -> Flow:
        g = rng.choice(guests)
        dst, p, dport = aimed()
        return Flow(g.port.id, g.ns, g.port.ip, p, dst, dport)

    def to_router() -> Flow:
        g = rng.choice(guests)
        p, dport = rng.choice([("icmp", 0), ("tcp", 53), ("tcp", 22), ("tcp", 80)])
        dst = rng.choice([g.network.gateway, rng.choice(topo.networks).gateway, snat])
        return Flow(g.port.id, g.ns, g.port.ip, p, dst, dport)

    def to_private() -> Flow:
        g = rng.choice(guests)
        return Flow(INET_HOST_IP, inet_ns, INET_HOST_IP, "tcp", g.port.ip, port())

    makers = [from_inet] * 5 + [to_inet] * 3 + [between] * 3 + [hairpin] * 2 + \
        [to_router] * 2 + [to_private]
    return [rng.choice(makers)() for _ in range(count)]
