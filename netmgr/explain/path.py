"""A packet's way through a router, in the order the router's nftables
table (``router/templates/nftables/cloudnet.nft.j2``) and the kernel take it:

0. port security: a guest network's address only from its own port
   (``netmgr.explain.flows``, where the flow starts).
1. prerouting, edge filter: IKE from a VPN peer passes; a packet to one of
   the router's public IPs, from outside or from a guest (hairpin), passes
   only through an element of a port forward, a load balancer or an ingress
   firewall rule (``edge.edge_opener``), else the edge's default drop; on a
   source NAT address the same elements open its own forwards and listeners,
   and what they do not open is marked: it reaches what the router itself
   serves, never a forward or a listener.
2. prerouting, DNAT: the port forwards' map (address, protocol, port; any
   source, any side), else a static NAT address, rewrite the destination.
3. routing: the router's own addresses (and the metadata address) go to its
   input; else its tiers, private gateways and static routes (longest
   prefix), else the default route to the provider. A VPN peer's networks go
   through the tunnel.
4. input: a marked packet to a listener is dropped; ICMP is answered; a load
   balancer's listener (HAProxy); IKE from a VPN peer; DHCP, DNS and the
   metadata service from guests; anything else is dropped.
5. forward: a guest's packet to a VPN peer's network while the tunnel does
   not carry it is dropped (never in clear); a VPC router then applies the
   network ACL of the tier or gateway the packet leaves, then of the one it
   enters, and routes between them; VPN traffic passes; a DNATed packet
   passes (it was filtered at the edge); a guest's packet to the public side
   meets its network's egress rules and default; anything else is dropped.
6. postrouting: VPN traffic keeps its addresses; a hairpin (a guest to a
   public IP forwarded back into its own network) takes the gateway's
   address; to the public side the port's static NAT address, else its
   network's source NAT address.

Leaving the public side towards another of the tenant's public addresses,
the walk continues at that router. Each step names the object consulted;
the decision names the object whose rule decided, as the router's trace
names it.
"""

from __future__ import annotations

import dataclasses

from cloudnet.netmgr.v1 import debug_pb2 as pb

from netmgr.explain import routed, vpn
from netmgr.explain.edge import (
    Packet,
    edge_opener,
    egress_rule,
    load_balancer_at,
    port_forward_to,
)
from netmgr.explain.result import DROP, Decision, Result, describe
from netmgr.explain.router_view import (
    GATEWAY,
    GUEST,
    PUBLIC,
    TUNNEL,
    Iface,
    RouterView,
    Tunnel,
    in_any,
)
from netmgr.explain.vpc import acl_verdict
from netmgr.explain.world import World

IKE_PORTS = (500, 4500)
# The metadata service (nginx in the router) answers a port's own guest on
# these; keep equal to router.services.nftables.metadata.METADATA_PORTS.
METADATA_PORTS = (80, 8080)
MAX_ROUTERS = 4  # a flow crosses at most this many of the tenant's routers


@dataclasses.dataclass
class Walk:
    world: World
    res: Result
    routers: int = 0

    # ------------------------------------------------------------ entering

    def outside(self, pkt: Packet, before: Decision | None = None) -> pb.ExplainResponse:
        """``pkt`` is on the provider's network (from the internet, or out of
        a router's public side): a public address of one of the tenant's
        routers takes it in, a private address of the tenant is not routed."""
        holder = self.world.holder_of(pkt.dst)
        if holder is not None and self.routers < MAX_ROUTERS:
            return self.through(holder, pkt, Iface(PUBLIC))
        other = self.world.network_of(pkt.dst)
        if other is not None and other.routed and other.router_id:
            self.res.router_id = other.router_id
            return routed.guest_ingress(self.res, self.world.router(other.router_id), other,
                                        pkt.src, pkt.dst, pkt.proto, pkt.port)
        if other is not None:
            self.res.router_id = other.router_id
            return self.res.done(False, "network", other.id,
                                 f"{pkt.dst} is private to network {other.name} "
                                 f"({other.cidr}): nothing routes it from outside")
        if before is not None:
            return self.res.decide(before)
        return self.res.done(False, "", "", f"{pkt.dst} is not an address of this tenant's "
                             "networks (outside: not cloudnet's to decide)")

    def from_tunnel(self, rv: RouterView, t: Tunnel, pkt: Packet) -> pb.ExplainResponse:
        """From a VPN peer's network: it arrives decrypted, if the tunnel carries it."""
        cid = t.spec.connection_id
        self.res.router_id = rv.id
        self.res.step("vpnconnection", cid, f"source {pkt.src} is in the peer's networks "
                      f"({', '.join(t.spec.peer_cidrs)})")
        if not in_any(pkt.dst, t.spec.local_cidrs):
            return self.outside(pkt)
        carried, why = vpn.carries(t, pkt.dst, pkt.src)
        if not carried:
            return self.res.done(False, "vpnconnection", cid, why)
        return self.through(rv, pkt, Iface(TUNNEL, cid))

    # ------------------------------------------------------------ a router

    def through(self, rv: RouterView, pkt: Packet, iif: Iface) -> pb.ExplainResponse:
        self.routers += 1
        res = self.res
        res.router_id = rv.id
        dst = str(pkt.dst)
        # 1. The edge filter: IKE from a VPN peer passes; a tenant public IP
        # only through an element; a source NAT address keeps its own traffic
        # (marked: only its forwards and listeners are closed to the source).
        opener: tuple[str, str] | None = None
        marked = False
        snat_ips = rv.source_nat_ips()
        if rv.public_ip and (dst in rv.edge_ips or dst in snat_ips) \
                and self.ike_peer(rv, pkt) is None:
            if dst in rv.edge_ips:
                res.step("public-ip", rv.edge_ips[dst].id,
                         f"{dst} is a public IP of router {rv.id}")
            else:
                res.step("router", rv.id, f"{dst} is the source NAT address of router {rv.id}")
            opener = edge_opener(rv, pkt)
            if opener is not None:
                res.step(*opener, f"opens {describe(pkt)} on {dst} to {pkt.src} at the edge")
            elif dst in rv.edge_ips:
                return res.done(*DROP, f"no port forward, load balancer or firewall rule "
                                f"opens {describe(pkt)} on {dst} to {pkt.src}")
            else:
                marked = True
        # 2. DNAT.
        dnat: Decision | None = None
        forward = port_forward_to(rv, pkt)
        if forward is not None:
            f, private_port = forward
            res.step("portforward", f.id, f"DNAT to {f.private_ip}:{private_port}")
            pkt = dataclasses.replace(pkt, dst=type(pkt.dst)(f.private_ip), port=private_port)
            dnat = (True, "portforward", f.id, f"forwarded to {f.private_ip}:{private_port}")
            if marked:
                return res.done(*DROP, f"port forward {f.id} on the source NAT address is not "
                                f"open to {pkt.src} (its source CIDRs), and no rule opens it")
        elif (snat := rv.static_nat_in(dst)) is not None:
            res.step("staticnat", snat.id, f"DNAT to {snat.private_ip}")
            pkt = dataclasses.replace(pkt, dst=type(pkt.dst)(snat.private_ip))
            # Static NAT opens nothing itself: the ingress rule that let it
            # through the edge decides.
            by = opener or ("staticnat", snat.id)
            dnat = (True, *by, f"{'ingress rule allows it' if opener else 'static NAT'} "
                    f"to {snat.private_ip}")
        # 3. Routing.
        own = rv.own_addresses()
        if str(pkt.dst) in own:
            return self.local(rv, pkt, iif, own[str(pkt.dst)], marked)
        return self.forward(rv, pkt, iif, dnat)

    def ike_peer(self, rv: RouterView, pkt: Packet) -> str | None:
        """The VPN connection whose peer this is, sending IKE to its local address."""
        if pkt.proto != "udp" or pkt.port not in IKE_PORTS:
            return None
        return next((t.spec.connection_id for t in rv.tunnels
                     if t.spec.peer_address == str(pkt.src)
                     and t.spec.local_address == str(pkt.dst)), None)

    def local(self, rv: RouterView, pkt: Packet, iif: Iface, what: str,
              marked: bool = False) -> pb.ExplainResponse:
        """Input: the router itself is the destination. ``marked``: to a source
        NAT address, and no element opened it to this source."""
        res = self.res
        at = f"{pkt.dst} ({what})"
        lb = load_balancer_at(rv, pkt)
        if lb is not None and marked:
            # The listener's lookup names the load balancer in the router's trace.
            return res.done(False, "loadbalancer", lb.id,
                            f"load balancer {lb.name or lb.id} on the source NAT address is "
                            f"not open to {pkt.src} (its source CIDRs), and no rule opens it")
        if pkt.proto == "icmp":
            return res.done(True, "router", rv.id, f"the router answers ICMP on {at}")
        if lb is not None:
            members = len([m for m in lb.members if m.ip])
            return res.done(True, "loadbalancer", lb.id,
                            f"load balancer {lb.name or lb.id} listens on {pkt.dst}:{pkt.port} "
                            f"(HAProxy in the router, {members} member(s))")
        peer = self.ike_peer(rv, pkt)
        if peer:
            return res.done(True, "vpnconnection", peer, "IKE from the connection's peer")
        if iif.kind == GUEST:
            service = {("udp", 67): "DHCP", ("udp", 53): "DNS", ("tcp", 53): "DNS"}.get(
                (pkt.proto, pkt.port))
            if service:
                return res.done(True, "router", rv.id,
                                f"the router answers {service} from guests on {at}")
            if pkt.proto == "tcp" and pkt.port in METADATA_PORTS:
                # The source passed port security: it is its port's own guest.
                return res.done(True, "router", rv.id,
                                f"the router's metadata service answers a port's own guest "
                                f"on {at}")
        return res.done(*DROP, f"the router serves nothing on {describe(pkt)} at {at}")

    def forward(self, rv: RouterView, pkt: Packet, iif: Iface,
                dnat: Decision | None) -> pb.ExplainResponse:
        """Forward: ``dnat`` is the decision of the port forward or static
        NAT that rewrote the destination, if one did."""
        res = self.res
        route = rv.route(pkt.dst)
        oif = route.iface
        if not oif.kind:
            return res.done(False, "router", rv.id, route.why)
        tunnel = rv.tunnel_to(pkt.dst, pkt.src) if oif.kind == PUBLIC else None
        if tunnel is not None:
            cid = tunnel.spec.connection_id
            carried, why = vpn.carries(tunnel, pkt.src, pkt.dst)
            res.step("vpnconnection", cid, f"{pkt.dst} is in the peer's networks of VPN "
                     f"connection {cid}")
            if iif.kind == GUEST and not carried:
                return res.done(False, "vpnconnection", cid, why)
            oif = Iface(TUNNEL, cid)
        elif route.static_route is not None:
            res.step("staticroute", route.static_route.id, route.why)
        elif oif.kind == GATEWAY:
            res.step("privategateway", oif.ident, route.why)
        decided: Decision | None = None
        # A VPC router: the list of the tier or gateway the packet leaves,
        # then of the one it enters, then routed between them.
        if rv.vpc is not None:
            if iif.inner and oif.inner:
                into = rv.iface_name(oif)
                res.step("vpc", rv.vpc.vpc.id, f"{pkt.dst} is routed to {into}")
            for side, direction in ((iif, "egress"), (oif, "ingress")):
                acl = rv.acl_of(side.ident) if side.inner else None
                if acl is None:
                    continue
                decided = acl_verdict(acl, direction, pkt, rv.iface_name(side))
                res.step(*decided[1:])
                if not decided[0]:
                    return res.decide(decided)
            if iif.inner and oif.inner and in_any(pkt.src, rv.inner_sources()):
                if decided is not None:
                    decided = (True, decided[1], decided[2],
                               f"routed to {rv.iface_name(oif)}; {decided[3]}")
                return self.leave(rv, pkt, iif, oif, dnat, dnat or decided or (
                    True, "vpc", rv.vpc.vpc.id, f"routed to {rv.iface_name(oif)}"))
        if tunnel is not None:
            cid = tunnel.spec.connection_id
            if iif.kind == GUEST and in_any(pkt.src, rv.local_vpn_nets()):
                return self.leave(rv, pkt, iif, oif, dnat,
                                  (True, "vpnconnection", cid, vpn.carries(
                                      tunnel, pkt.src, pkt.dst)[1]))
            return res.done(*DROP, f"only a guest's own traffic goes through VPN "
                            f"connection {cid}: dropped")
        if iif.kind == TUNNEL:
            return self.leave(rv, pkt, iif, oif, dnat, (
                True, "vpnconnection", iif.ident,
                f"decrypted from the tunnel of VPN connection {iif.ident}"))
        if dnat is not None:  # filtered at the edge, before DNAT
            return self.leave(rv, pkt, iif, oif, dnat, dnat)
        if iif.kind == GUEST and oif.kind == PUBLIC:
            src_net = rv.network_of(pkt.src)
            if src_net is not None:
                return self.egress(rv, pkt, iif, oif, src_net.id)
        return res.done(*DROP, f"the router forwards nothing from {rv.iface_name(iif)} "
                        f"to {rv.iface_name(oif)} that no rule lets through")

    def egress(self, rv: RouterView, pkt: Packet, iif: Iface, oif: Iface,
               network_id: str) -> pb.ExplainResponse:
        """A guest's new connection out of the public side: its network's
        default, flipped by its first matching egress rule."""
        deny = rv.egress_denied(network_id)
        rule = egress_rule(rv, network_id, pkt)
        if rule is not None:
            decided: Decision = (deny, "firewall", rule.id,
                                 f"egress rule {'allows' if deny else 'denies'} "
                                 f"{describe(pkt)} to {pkt.dst}")
        elif deny:
            # The router's element of its deny set names the network (its policy).
            net = rv.network_by_id(network_id)
            decided = (False, "network", network_id,
                       f"egress is denied by default on {net.name if net else network_id} "
                       f"(its egress policy) and no egress rule opens {describe(pkt)} "
                       f"to {pkt.dst}")
        else:
            decided = (True, "egress-default", network_id, "egress is allowed by default")
        self.res.step(*decided[1:])
        if not decided[0]:
            return self.res.decide(decided)
        return self.leave(rv, pkt, iif, oif, None, decided)

    # ------------------------------------------------------------ leaving

    def leave(self, rv: RouterView, pkt: Packet, iif: Iface, oif: Iface,
              dnat: Decision | None, decided: Decision) -> pb.ExplainResponse:
        """Postrouting's source NAT, then where the packet goes."""
        res = self.res
        if oif.kind == TUNNEL or (in_any(pkt.src, rv.local_vpn_nets()) and rv.tunnel_to(
                pkt.dst) is not None):
            pass  # VPN traffic keeps its addresses
        elif oif.kind == GUEST and dnat is not None:
            net = rv.network_by_id(oif.ident)
            if net is not None and rv.network_of(pkt.src) is net:
                res.step("hairpin", net.id, f"source becomes {net.gateway} (the reply comes "
                         "back through the router)")
                pkt = dataclasses.replace(pkt, src=type(pkt.src)(net.gateway))
        elif oif.kind == PUBLIC:
            static = rv.static_nat_out(str(pkt.src))
            src_net = rv.network_of(pkt.src)
            if static is not None:
                res.step("staticnat", static.id, f"source becomes {static.public_ip}")
                pkt = dataclasses.replace(pkt, src=type(pkt.src)(static.public_ip))
            elif src_net is not None and src_net.routed:
                res.step("network", src_net.id, f"{src_net.name} is routed: no source NAT, "
                         f"the source stays {pkt.src}")
            elif src_net is not None and src_net.source_nat_ip:
                res.step("snat", src_net.id, f"source becomes {src_net.source_nat_ip}")
                pkt = dataclasses.replace(pkt, src=type(pkt.src)(src_net.source_nat_ip))
        if oif.kind == PUBLIC:
            return self.outside(pkt, decided)
        return res.decide(decided)
