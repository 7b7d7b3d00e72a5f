"""One router as explain sees it: what its table is built from, indexed the
way the table looks things up.

Built from the same ``RouterSnapshot`` the reconciler turns into the router's
config (``netmgr.reconcile.configbuild``), so explain and the router read one
model. Interfaces are named by what they lead to (``Iface``), not by device
name: a tier or isolated network, a private gateway, the public side, a VPN
tunnel, or the router itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any, NamedTuple

from netmgr.model import core as model
from netmgr.model import edge as me
from netmgr.model import vpc as mv
from netmgr.model.edge import EdgeSnapshot
from netmgr.model.vpn import VpnTunnel

IPv4 = ipaddress.IPv4Address
Net = ipaddress.IPv4Network

GUEST, GATEWAY, PUBLIC, TUNNEL, LOCAL = "guest", "gateway", "public", "tunnel", "local"
# Held on the router's loopback, reached through a guest's gateway; keep equal
# to router.services.metadata.METADATA_ADDRESS.
METADATA_ADDRESS = "169.254.169.254"


class Iface(NamedTuple):
    """Where a packet enters or leaves a router: ``kind`` is GUEST (a tier or
    an isolated network: ``ident`` is the network ID), GATEWAY (a private
    gateway), PUBLIC, TUNNEL (a VPN connection) or LOCAL (the router itself)."""

    kind: str
    ident: str = ""

    @property
    def inner(self) -> bool:
        """A VPC router routes between these (and guards them with network ACLs)."""
        return self.kind in (GUEST, GATEWAY)


def net(cidr: str) -> Net:
    return ipaddress.IPv4Network(cidr, strict=False)


def in_any(ip: IPv4, cidrs: Iterable[str]) -> bool:
    # The explainer follows IPv4 packets: IPv6 CIDRs (a VPN's) never match.
    return any(ip in net(c) for c in cidrs if ":" not in c)


class Route(NamedTuple):
    iface: Iface
    why: str
    static_route: mv.StaticRoute | None = None


@dataclasses.dataclass
class Tunnel:
    """A VPN connection on the router and the state the router last reported."""

    spec: VpnTunnel
    sa_status: dict[str, Any]
    error: str = ""  # the router refused the connection


@dataclasses.dataclass
class RouterView:
    snap: model.RouterSnapshot
    tunnels: list[Tunnel]

    def __post_init__(self) -> None:
        snap = self.snap
        self.router = snap.router
        self.id = snap.router.id
        self.networks = sorted(snap.networks, key=lambda n: n.id)
        self.edge = snap.edge or EdgeSnapshot()
        self.vpc = snap.vpc
        # The router's public address: its network's or VPC's source NAT.
        self.public_ip = snap.router.public_ip or (
            self.networks[0].source_nat_ip if self.networks else "")
        # Tenant public IPs: the edge filter guards these (not the source NAT address).
        self.edge_ips = {p.ip: p for p in self.edge.public_ips}
        self.gateways = self.vpc.gateways if self.vpc else ()

    # ---- addresses and routes

    def own_addresses(self) -> dict[str, str]:
        """Every address of the router -> what holds it (for messages)."""
        out = {n.gateway: f"the gateway of {n.name}" for n in self.networks}
        if self.networks:
            out[METADATA_ADDRESS] = "the metadata address"
        for g in self.gateways:
            out[str(ipaddress.IPv4Interface(g.address).ip)] = f"private gateway {g.id}"
        if self.public_ip:
            out[self.public_ip] = "its source NAT address"
            out.update({ip: "a public IP" for ip in self.edge_ips})
        return out

    def source_nat_ips(self) -> set[str]:
        """The networks' source NAT addresses: the router's own, filtered at
        the edge for its port forwards and load balancers only."""
        return {n.source_nat_ip for n in self.networks if n.source_nat_ip}

    def port_at(self, network_id: str, ip: IPv4) -> model.Port | None:
        """The port of a network holding ``ip`` (port security: the only
        sender the router accepts that address from)."""
        return next((p for p in self.snap.ports
                     if p.network_id == network_id and p.ip == str(ip)), None)

    def errors(self) -> dict[tuple[str, str], str]:
        """(kind, ID) -> why the router refused it, for every object of the
        router in ERROR (the router runs its previous version, or nothing)."""
        out: dict[tuple[str, str], str] = {}
        edge = self.edge
        for kind, objs in (("portforward", edge.port_forwards), ("staticnat", edge.static_nats),
                           ("firewall", edge.firewall_rules),
                           ("loadbalancer", edge.load_balancers), ("port", self.snap.ports)):
            for o in objs:
                if o.status.error:
                    out[(kind, o.id)] = o.status.error
        for t in self.tunnels:
            if t.error:
                out[("vpnconnection", t.spec.connection_id)] = t.error
        return out

    def network_of(self, ip: IPv4) -> model.Network | None:
        return next((n for n in self.networks if ip in net(n.cidr)), None)

    def gateway_of(self, ip: IPv4) -> mv.PrivateGateway | None:
        return next((g for g in self.gateways
                     if ip in ipaddress.IPv4Interface(g.address).network), None)

    def network_by_id(self, network_id: str) -> model.Network | None:
        return next((n for n in self.networks if n.id == network_id), None)

    def iface_name(self, iface: Iface) -> str:
        """An interface as a message names it."""
        if iface.kind == GUEST:
            n = self.network_by_id(iface.ident)
            return f"{'tier' if self.vpc else 'network'} {n.name if n else iface.ident}"
        if iface.kind == GATEWAY:
            return f"private gateway {iface.ident}"
        if iface.kind == TUNNEL:
            return f"the tunnel of VPN connection {iface.ident}"
        return "the public side" if iface.kind == PUBLIC else "the router"

    def iface_of_object(self, obj_id: str) -> Iface:
        if any(n.id == obj_id for n in self.networks):
            return Iface(GUEST, obj_id)
        return Iface(GATEWAY, obj_id)

    def route(self, dst: IPv4) -> Route:
        """Where the router sends ``dst``: the longest prefix among its tiers,
        private gateways and static routes (a connected subnet wins a tie),
        else the default route to the provider."""
        found: list[tuple[int, int, Route]] = []
        for n in self.networks:
            if dst in net(n.cidr):
                found.append((net(n.cidr).prefixlen, 1, Route(
                    Iface(GUEST, n.id), f"{n.name} ({n.cidr}) is connected")))
        for g in self.gateways:
            subnet = ipaddress.IPv4Interface(g.address).network
            if dst in subnet:
                found.append((subnet.prefixlen, 1, Route(
                    Iface(GATEWAY, g.id), f"private gateway {g.id} ({subnet}) is connected")))
        for r in (self.vpc.routes if self.vpc else ()):
            if r.via_id and dst in net(r.cidr):
                found.append((net(r.cidr).prefixlen, 0, Route(
                    self.iface_of_object(r.via_id),
                    f"static route {r.cidr} via {r.next_hop}", r)))
        if found:
            return max(found, key=lambda f: (f[0], f[1]))[2]
        if self.public_ip:
            return Route(Iface(PUBLIC), "the default route, to the provider's gateway")
        return Route(Iface(""), "no route: the router has no public side")

    # ---- VPC: who may be routed between tiers

    def inner_sources(self) -> list[str]:
        """Sources the router forwards between tiers and gateways: their
        subnets and the networks static routes reach through them."""
        out = [n.cidr for n in self.networks]
        out += [str(ipaddress.IPv4Interface(g.address).network) for g in self.gateways]
        out += [r.cidr for r in (self.vpc.routes if self.vpc else ()) if r.via_id]
        return out

    def acl_of(self, obj_id: str) -> mv.NetworkAcl | None:
        """The list guarding a tier or private gateway (None: not a VPC)."""
        if self.vpc is None:
            return None
        acl_id = dict(self.vpc.tier_acls).get(obj_id)
        if acl_id is None:
            return None
        return next((a for a in self.vpc.acls if a.id == acl_id),
                    mv.BUILTIN_ACLS.get(acl_id))

    # ---- edge

    def static_nat_in(self, public_ip: str) -> me.StaticNat | None:
        return next((s for s in self.edge.static_nats if s.public_ip == public_ip), None)

    def static_nat_out(self, private_ip: str) -> me.StaticNat | None:
        return next((s for s in self.edge.static_nats if s.private_ip == private_ip), None)

    def egress_denied(self, network_id: str) -> bool:
        return any(p.network_id == network_id and p.default_deny
                   for p in self.edge.egress_policies)

    # ---- VPN

    def tunnel_to(self, dst: IPv4, src: IPv4 | None = None) -> Tunnel | None:
        """The connection whose peer networks hold ``dst`` (one whose local
        networks hold ``src`` first)."""
        mine = [t for t in sorted(self.tunnels, key=lambda t: t.spec.connection_id)
                if in_any(dst, t.spec.peer_cidrs)]
        if src is not None:
            for t in mine:
                if in_any(src, t.spec.local_cidrs):
                    return t
        return mine[0] if mine else None

    def local_vpn_nets(self) -> list[str]:
        return [c for t in self.tunnels for c in t.spec.local_cidrs]
