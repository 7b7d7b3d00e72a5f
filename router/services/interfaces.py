"""Interfaces, addresses, routes and sysctls of a router namespace.

Each Interface of the config is plugged into the fabric (the host creates a
veth whose router end carries the interface's name and MAC), then reconciled
inside the namespace against the kernel: addresses and agent routes are made
exactly the wanted ones, links no longer in the config are removed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

from cloudnet.router.v1 import agent_pb2 as pb

from common import netlink
from common.netns import write_sysctls
from common.rtnl import RouteInfo
from router.errors import ApplyError, ConfigError
from router.lib import garp, linkstate, validate
from router.services.base import (
    NO_CAPABILITIES,
    Capabilities,
    Context,
    HostFeatures,
    Rendered,
    RouterPaths,
    vpn_tun,
)

SYSCTLS = {"net.ipv4.ip_forward": "1"}
IPV6_OFF = ("net.ipv6.conf.all.disable_ipv6",  # the links already there
            "net.ipv6.conf.default.disable_ipv6")  # those made after


def uses_ipv6(cfg: pb.RouterConfig) -> bool:
    """The router routes IPv6: a dual-stack network, an IPv6 uplink or routes."""
    return (any(n.ipv6_cidr for n in cfg.guest_networks) or bool(cfg.ipv6_uplink.address)
            or bool(cfg.ipv6_routes))


def sysctls(cfg: pb.RouterConfig) -> dict[str, str]:
    """IPv6 on the router's links only while it routes IPv6: otherwise each
    link would take a link-local address and announce it (listener reports,
    duplicate-address probes) to every router on its segment, the provider
    segment's thousand included, for nothing."""
    off = "0" if uses_ipv6(cfg) else "1"
    return {**SYSCTLS, **dict.fromkeys(IPV6_OFF, off)}


def fabric_port_name(router_id: str, ifname: str, instance: int = 0) -> str:
    """Fabric-side name of a router interface's attachment (≤ 15 bytes, stable);
    a redundant router's second instance has names of its own (both
    instances may share one fabric)."""
    salt = f"/{instance}" if instance else ""
    return "r" + hashlib.sha1((router_id + ifname + salt).encode()).hexdigest()[:10]


def port_name(cfg: pb.RouterConfig, ifname: str) -> str:
    return fabric_port_name(cfg.router_id, ifname, cfg.redundancy.instance)


def verify(cfg: pb.RouterConfig) -> None:
    validate.check_id("router", cfg.router_id)
    names: set[str] = set()
    macs: dict[str, str] = {}
    segments: dict[int, str] = {}
    addresses: dict[ipaddress.IPv4Address, str] = {}
    publics = 0
    for iface in cfg.interfaces:
        what = f"interface {iface.name!r}"
        validate.check_ifname(what, iface.name)
        if iface.name in names:
            raise ConfigError(f"{what}: duplicate interface name")
        names.add(iface.name)
        mac = validate.check_mac(what, iface.mac)
        if mac in macs:
            raise ConfigError(f"{what}: MAC {mac} is also on interface {macs[mac]!r}")
        macs[mac] = iface.name
        validate.check_mtu(what, iface.mtu)
        if iface.role == pb.INTERFACE_ROLE_PUBLIC:
            publics += 1
            if iface.segment_id != 0:
                raise ConfigError(f"{what}: a public interface is on segment 0")
        elif iface.role in (pb.INTERFACE_ROLE_GUEST, pb.INTERFACE_ROLE_PRIVATE_GATEWAY,
                            pb.INTERFACE_ROLE_SYNC):
            if not 1 <= iface.segment_id <= 16_777_215:
                raise ConfigError(f"{what}: guest segment {iface.segment_id} is not 1..2^24-1")
        else:
            raise ConfigError(f"{what}: role is unspecified")
        if iface.segment_id in segments:
            raise ConfigError(
                f"{what}: segment {iface.segment_id} is also on {segments[iface.segment_id]!r}"
            )
        segments[iface.segment_id] = iface.name
        for text in iface.addresses:
            addr = validate.parse_ipv4_interface(what, text)
            if addr.ip in addresses:
                raise ConfigError(f"{what}: address {addr.ip} is also on {addresses[addr.ip]!r}")
            if addr.network.prefixlen < 31 and addr.ip in (
                addr.network.network_address, addr.network.broadcast_address
            ):
                raise ConfigError(f"{what}: {text} is the network or broadcast address")
            addresses[addr.ip] = iface.name
    if publics > 1:
        raise ConfigError("router: at most one public interface")
    _verify_routes(cfg)


def _connected(cfg: pb.RouterConfig, ifname: str = "") -> list[ipaddress.IPv4Network]:
    return [
        ipaddress.IPv4Interface(a).network
        for i in cfg.interfaces if not ifname or i.name == ifname
        for a in i.addresses
    ]


def _verify_routes(cfg: pb.RouterConfig) -> None:
    seen: set[ipaddress.IPv4Network] = set()
    names = {i.name for i in cfg.interfaces}
    for route in cfg.routes:
        what = f"route {route.destination!r}"
        dst = validate.parse_ipv4_network(what, route.destination)
        if dst in seen:
            raise ConfigError(f"{what}: duplicate destination")
        seen.add(dst)
        if route.interface and route.interface not in names:
            raise ConfigError(f"{what}: interface {route.interface!r} is not in the config")
        if not route.gateway:
            if not route.interface:
                raise ConfigError(f"{what}: needs a gateway or an interface")
            continue
        gw = validate.parse_ipv4(what, route.gateway)
        if not any(gw in net for net in _connected(cfg, route.interface)):
            raise ConfigError(f"{what}: gateway {gw} is not on a connected network")


def render(cfg: pb.RouterConfig) -> Rendered:
    """The desired kernel state as canonical JSON (diffable, and a debugging aid)."""
    state = {
        "interfaces": [
            {
                "name": i.name, "mac": i.mac.lower(), "mtu": i.mtu, "segment": i.segment_id,
                "addresses": list(i.addresses),
            }
            for i in sorted(cfg.interfaces, key=lambda i: i.name)
        ],
        "routes": sorted(
            ({"destination": r.destination, "gateway": r.gateway, "interface": r.interface}
             for r in cfg.routes),
            key=lambda r: r["destination"],
        ),
        "sysctls": sysctls(cfg),
        # Addresses and routes left to keepalived (a redundant router).
        "virtual": cfg.HasField("redundancy"),
    }
    return {"interfaces.json": json.dumps(state, indent=2, sort_keys=True) + "\n"}


def apply(ctx: Context, cfg: pb.RouterConfig, previous: pb.RouterConfig | None,
          owned: set[str]) -> None:
    """Make the namespace's links, addresses and routes the config's; links
    in ``owned`` belong to a daemon of the router and are left alone."""
    wanted = {i.name for i in cfg.interfaces}
    # Before any link is made: a link is born with IPv6 on or off. A kernel
    # without IPv6 (ipv6.disable=1) has no such keys: off is what it is.
    set_sysctls(ctx.netns, sysctls(cfg), missing_ok=not uses_ipv6(cfg))
    # Unplug interfaces dropped since the last config, then sweep any other
    # link in the namespace the config does not name (kernel is the truth).
    if previous is not None:
        for old in previous.interfaces:
            if old.name not in wanted:
                ctx.fabric.unplug(port_name(previous, old.name))
    for link in netlink.links(ctx.netns):
        if link.name != "lo" and link.name not in wanted | owned:
            netlink.delete_link(ctx.netns, link.index)
    indexes: dict[str, int] = {}
    # A redundant router's addresses and routes (but the sync link's) are
    # keepalived's: added on the master, removed on the backup.
    virtual = cfg.HasField("redundancy")
    for iface in cfg.interfaces:
        port = port_name(cfg, iface.name)
        try:
            ctx.fabric.plug(port, iface.segment_id, ctx.netns, iface.name, iface.mac.lower(),
                            iface.mtu)
        except Exception as e:
            raise ApplyError(f"interface {iface.name}: cannot plug into the fabric: {e}") from e
        plugged = netlink.find_link_by_name(ctx.netns, iface.name)
        if plugged is None:
            raise ApplyError(f"interface {iface.name}: missing after plugging port {port}")
        netlink.set_link(ctx.netns, plugged, mtu=iface.mtu)
        indexes[iface.name] = plugged.index
        if virtual and iface.role != pb.INTERFACE_ROLE_SYNC:
            continue
        added = netlink.reconcile_ipv4_addresses(
            ctx.netns, plugged.index, [ipaddress.IPv4Interface(a) for a in iface.addresses]
        )
        # An address may come from another router (a public IP reallocated):
        # neighbours that still hold that router's MAC learn ours now.
        garp.announce(ctx.netns, iface.name, iface.mac.lower(), added)
    if not virtual:
        reconcile_routes(ctx, cfg, indexes)


def reconcile_routes(ctx: Context, cfg: pb.RouterConfig, indexes: dict[str, int]) -> None:
    routes = set()
    for r in cfg.routes:
        net = ipaddress.IPv4Network(r.destination)
        routes.add(RouteInfo(str(net.network_address), net.prefixlen, r.gateway,
                             indexes.get(r.interface, 0)))
    netlink.reconcile_routes(ctx.netns, routes)


def hold_addresses(ctx: Context, cfg: pb.RouterConfig) -> None:
    """Put back every address and route of ``cfg`` (a router no longer
    redundant, after keepalived stopped and took its virtual ones away)."""
    indexes: dict[str, int] = {}
    for iface in cfg.interfaces:
        link = netlink.find_link_by_name(ctx.netns, iface.name)
        if link is None:
            raise ApplyError(f"interface {iface.name}: missing")
        indexes[iface.name] = link.index
        added = netlink.reconcile_ipv4_addresses(
            ctx.netns, link.index, [ipaddress.IPv4Interface(a) for a in iface.addresses])
        garp.announce(ctx.netns, iface.name, iface.mac.lower(), added)
    reconcile_routes(ctx, cfg, indexes)


def set_sysctls(netns: str, values: dict[str, str], missing_ok: bool = False) -> None:
    """No `ip netns exec sysctl`: two execs that cost a router VM's first
    apply under TCG."""
    try:
        write_sysctls(netns, dict(sorted(values.items())), missing_ok)
    except OSError as e:
        raise ApplyError(f"sysctl in {netns}: {e}") from e


def _kernel() -> str:
    with open("/proc/sys/kernel/osrelease") as f:
        return "linux " + f.read().strip()


class Interfaces:
    """``base.Service``: the router's links, addresses, routes and sysctls."""

    name = "interfaces"
    capabilities: Capabilities = NO_CAPABILITIES

    def __init__(self, host: HostFeatures) -> None:
        self.host = host

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        """Nothing to ask a daemon: verify() checked everything the kernel would."""

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        # Links a daemon of the router owns (charon's libipsec TUN) are not ours.
        owned = {vpn_tun(self.host)} if cfg.vpn_connections else set()
        apply(ctx, cfg, previous, owned)

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        try:
            up = linkstate.links_up(ctx.netns, [i.name for i in cfg.interfaces])
        except OSError as e:  # the namespace is gone
            return pb.ServiceStatus(name=self.name, healthy=False, detail=str(e))
        missing = [name for name, ok in up.items() if not ok]
        detail = f"down or missing: {', '.join(missing)}" if missing else "all up"
        return pb.ServiceStatus(name=self.name, healthy=not missing, detail=detail,
                                version=_kernel())

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        if cfg is not None:
            for iface in cfg.interfaces:
                ctx.fabric.unplug(port_name(cfg, iface.name))
