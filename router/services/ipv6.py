"""IPv6 in a router namespace: the router's address on each dual-stack
guest network's /64 and on the public side, the default route to the edge,
and forwarding. Routed, never translated: the edge routes each /64 here.

The interfaces service owns links and IPv4; this one only the global IPv6
addresses and the IPv6 routes it installs (proto static), so neither undoes
the other. Router advertisements and DHCPv6 are dnsmasq's.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from cloudnet.router.v1 import agent_pb2 as pb

from common import netlink
from common.rtnl import RouteInfo
from router.errors import ApplyError, ConfigError
from router.lib import linkstate
from router.services.base import Capabilities, Context, Rendered, RouterPaths
from router.services.interfaces import set_sysctls, uses_ipv6

MODES = ("slaac", "dhcpv6_stateless", "dhcpv6_stateful")
# The router's addresses are allocated to it: usable at once (no duplicate
# address detection, during which nothing can bind them, bgpd included).
RTPROT_STATIC = 4
MAIN_TABLE = 254
# Forwarding on; no autoconfiguration from RAs on the router's own links (it
# sends them), and no duplicate address detection delay before the router's
# addresses work (they are allocated: no one else holds them).
SYSCTLS = {
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


def parse_ipv6_network(what: str, value: str, kind: str = "",
                       object_id: str = "") -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an IPv6 network", kind, object_id) from None


def parse_ipv6(what: str, value: str, kind: str = "", object_id: str = "") -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an IPv6 address", kind, object_id) from None


def verify(cfg: pb.RouterConfig) -> None:
    """Each dual-stack network: a /64, the router's address in it, a known
    mode, its ports' addresses inside; the uplink an address and gateway."""
    seen: dict[ipaddress.IPv6Network, str] = {}
    for net in cfg.guest_networks:
        if not net.ipv6_cidr:
            continue
        what, kid = f"network {net.network_id}", ("network", net.network_id)
        cidr = parse_ipv6_network(what, net.ipv6_cidr, *kid)
        if cidr.prefixlen != 64:
            raise ConfigError(f"{what}: IPv6 prefix {cidr} is not a /64", *kid)
        if cidr in seen:
            raise ConfigError(f"{what}: {cidr} is also network {seen[cidr]}", *kid)
        seen[cidr] = net.network_id
        gateway = parse_ipv6(what, net.ipv6_gateway, *kid)
        if gateway not in cidr:
            raise ConfigError(f"{what}: IPv6 gateway {gateway} is outside {cidr}", *kid)
        if net.ipv6_mode not in MODES:
            raise ConfigError(f"{what}: IPv6 mode {net.ipv6_mode!r} is not one of "
                              f"{', '.join(MODES)}", *kid)
        for host in net.hosts:
            if host.ipv6:
                addr = parse_ipv6(f"port {host.port_id}", host.ipv6, "port", host.port_id)
                if addr not in cidr or addr == gateway:
                    raise ConfigError(f"port {host.port_id}: IPv6 {addr} is outside {cidr} or "
                                      "the router's", "port", host.port_id)
    _verify_routes(cfg)
    if cfg.HasField("ipv6_uplink"):
        up = cfg.ipv6_uplink
        try:
            iface = ipaddress.IPv6Interface(up.address)
        except ValueError:
            raise ConfigError(f"ipv6 uplink: {up.address!r} is not an IPv6 address/prefix"
                              ) from None
        gw = parse_ipv6("ipv6 uplink", up.gateway)
        if gw not in iface.network:
            raise ConfigError(f"ipv6 uplink: gateway {gw} is outside {iface.network}")


def _verify_routes(cfg: pb.RouterConfig) -> None:
    """Each route: an IPv6 destination (not the default route, which is the
    uplink's), once, through a gateway on a /64 of its interface."""
    on: dict[str, list[ipaddress.IPv6Network]] = {}
    for iface, addrs in wanted_addresses(cfg).items():
        on[iface] = [ipaddress.IPv6Interface(a).network for a in addrs]
    seen: set[ipaddress.IPv6Network] = set()
    for route in cfg.ipv6_routes:
        what = f"ipv6 route {route.destination!r}"
        dst = parse_ipv6_network(what, route.destination)
        if dst.prefixlen == 0 or dst in seen:
            raise ConfigError(f"{what}: the default route or a duplicate")
        seen.add(dst)
        gw = parse_ipv6(what, route.gateway)
        if not any(gw in net for net in on.get(route.interface, [])):
            raise ConfigError(f"{what}: gateway {gw} is not on an IPv6 network of "
                              f"interface {route.interface!r}")


def wanted_addresses(cfg: pb.RouterConfig) -> dict[str, list[str]]:
    """Interface -> its global IPv6 addresses (CIDR form)."""
    out: dict[str, list[str]] = {}
    for net in cfg.guest_networks:
        if net.ipv6_cidr:
            out.setdefault(net.interface, []).append(f"{net.ipv6_gateway}/64")
    if cfg.HasField("ipv6_uplink") and cfg.ipv6_uplink.address:
        public = next((i.name for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_PUBLIC), "")
        if public:
            out.setdefault(public, []).append(cfg.ipv6_uplink.address)
    return {k: sorted(v) for k, v in sorted(out.items())}


def render(cfg: pb.RouterConfig) -> Rendered:
    if not uses_ipv6(cfg):
        return {}
    state = {"addresses": wanted_addresses(cfg),
             "default_route": cfg.ipv6_uplink.gateway if cfg.ipv6_uplink.address else "",
             "routes": sorted([r.destination, r.gateway, r.interface] for r in cfg.ipv6_routes)}
    return {"ipv6.json": json.dumps(state, indent=2, sort_keys=True) + "\n"}


def apply(ctx: Context, cfg: pb.RouterConfig) -> None:
    set_sysctls(ctx.netns, SYSCTLS)
    wanted = wanted_addresses(cfg)
    # The config's interfaces only: another link (a router VM's control NIC)
    # keeps whatever addresses it has.
    ours = {i.name for i in cfg.interfaces}
    try:
        with netlink.rtnl(ctx.netns) as sock:
            links = {link.name: link.index for link in sock.links() if link.name in ours}
            for name, index in links.items():
                have = linkstate.global_ipv6(sock.addresses(socket.AF_INET6, index))
                want = sorted({ipaddress.IPv6Interface(a) for a in wanted.get(name, [])})
                try:
                    netlink.sync_addresses(sock, index, set(have), [*want], nodad=True)
                except OSError as e:
                    raise ApplyError(f"ipv6: {e.strerror} on {name}") from e
            try:
                netlink.sync_routes(sock, socket.AF_INET6, _routes(cfg, links))
            except OSError as e:
                raise ApplyError(f"ipv6: {e.strerror}") from e
    except netlink.NetlinkOpError as e:
        raise ApplyError(f"ipv6: {e}") from e


def _routes(cfg: pb.RouterConfig, links: dict[str, int]) -> set[RouteInfo]:
    """The default route to the edge and the config's other routes (proto
    static: routes the kernel or a daemon made are left alone)."""
    want: set[RouteInfo] = set()
    public = next((i.name for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_PUBLIC), "")
    if cfg.ipv6_uplink.address and public in links:
        want.add(RouteInfo("::", 0, str(ipaddress.IPv6Address(cfg.ipv6_uplink.gateway)),
                           links[public]))
    for r in cfg.ipv6_routes:
        if r.interface in links:
            net = ipaddress.IPv6Network(r.destination)
            want.add(RouteInfo(str(net.network_address), net.prefixlen,
                               str(ipaddress.IPv6Address(r.gateway)), links[r.interface]))
    return want


class Ipv6:
    """``base.Service``: the router's IPv6 addresses, routes, forwarding."""

    name = "ipv6"

    def __init__(self) -> None:
        self.capabilities: Capabilities = Capabilities(conditional=self)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return uses_ipv6(cfg)

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        """Nothing to ask a daemon: verify() checked what the kernel would."""

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, cfg)

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        if not uses_ipv6(cfg):
            # Nothing of ours in the kernel to look for: no netlink dump of a
            # namespace (the health pass asks every router, most have no IPv6).
            return pb.ServiceStatus(name=self.name, healthy=True, detail="no IPv6")
        try:
            # One raw dump (linkstate): pyroute2's socket and per-link dumps
            # were most of a dual-stack router's health pass.
            have = {str(a) for a in linkstate.ipv6_addresses(ctx.netns)}
        except OSError as e:
            # The namespace gone (deleted under the router): sick, and the
            # repair makes it again; never an exception out of a health pass.
            return pb.ServiceStatus(name=self.name, healthy=False, detail=str(e))
        want = {a for addrs in wanted_addresses(cfg).values() for a in addrs}
        missing = sorted(want - have)
        return pb.ServiceStatus(name=self.name, healthy=not missing,
                                detail=f"missing: {', '.join(missing)}" if missing
                                else f"{len(want)} addresses")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        """The namespace goes with the router: its addresses and routes too."""


