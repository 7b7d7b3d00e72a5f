"""Small pyroute2 wrappers: every netlink call of the agent goes through here.

Each function opens `IPRoute(netns=..., flags=0)` in a `with` block (flags=0:
never create a namespace by accident), translates errno values into the
exceptions below in one place, and is idempotent: adding what exists or
deleting what is gone is not an error.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# Routes the agent installs carry this protocol, so a reconcile only ever
# removes its own routes (never the kernel's connected ones).
RTPROT_STATIC = 4
MAIN_TABLE = 254


class NetlinkOpError(Exception):
    """A netlink operation failed; the message says what on which interface."""


class NamespaceNotFound(NetlinkOpError):
    pass


class InterfaceNotFound(NetlinkOpError):
    pass


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    kind: str


@contextlib.contextmanager
def iproute(netns: str | None) -> Iterator[IPRoute]:
    """An IPRoute bound to `netns` (None: the agent's own namespace)."""
    try:
        ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
    except FileNotFoundError:
        raise NamespaceNotFound(f"network namespace {netns} does not exist") from None
    with ipr:
        try:
            yield ipr
        except NetlinkError as e:
            raise _translate(e, netns) from e


def _translate(e: NetlinkError, netns: str | None) -> NetlinkOpError:
    where = f" in {netns}" if netns else ""
    if e.code == errno.ENODEV:
        return InterfaceNotFound(f"interface not found{where}: {e}")
    return NetlinkOpError(f"netlink error{where}: {errno.errorcode.get(e.code, e.code)} {e}")


def _link(msg: object) -> Link:
    get = msg.get  # type: ignore[attr-defined]
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")  # type: ignore[attr-defined]
    return Link(
        index=int(msg["index"]),  # type: ignore[index]
        name=str(get("IFLA_IFNAME")),
        mac=str(get("IFLA_ADDRESS") or "").lower(),
        mtu=int(get("IFLA_MTU") or 0),
        up=bool(msg["flags"] & 1),  # type: ignore[index]
        kind=str(kind or ""),
    )


def links(netns: str | None) -> list[Link]:
    with iproute(netns) as ipr:
        return [_link(m) for m in ipr.get_links()]


# Linux interface names are at most 15 bytes (IFNAMSIZ less its NUL).
IFNAME_MAX = 15


def find_link_by_name(netns: str | None, name: str) -> Link | None:
    """The link of that name, asked of the kernel by name: a namespace can
    hold thousands of links (the fabric's, a veth end per router), and a
    dump of them all per lookup would make every plug cost grow with them."""
    if not name or len(name.encode()) > IFNAME_MAX:
        return None
    try:
        with iproute(netns) as ipr:
            found = ipr.link("get", ifname=name)
    except InterfaceNotFound:
        return None
    return _link(found[0]) if found else None


def find_link_by_mac(netns: str | None, mac: str) -> Link | None:
    """Inside the appliance VM, NICs are known by MAC, not by name."""
    mac = mac.lower()
    return next((link for link in links(netns) if link.mac == mac), None)


def set_link(netns: str | None, link: Link, *, mtu: int = 0, name: str = "") -> None:
    """Bring `link` up with the MTU and name asked (0/empty: leave as is)."""
    changes: dict[str, object] = {}
    if mtu and link.mtu != mtu:
        changes["mtu"] = mtu
    if name and link.name != name:
        changes["ifname"] = name
    if not changes and link.up:
        return
    with iproute(netns) as ipr:
        if "ifname" in changes:  # a link must be down to be renamed
            ipr.link("set", index=link.index, state="down")
        ipr.link("set", index=link.index, state="up", **changes)


def delete_link(netns: str | None, index: int) -> None:
    with contextlib.suppress(InterfaceNotFound), iproute(netns) as ipr:
        ipr.link("del", index=index)


def ipv4_addresses(netns: str | None, index: int) -> set[ipaddress.IPv4Interface]:
    with iproute(netns) as ipr:
        return {
            ipaddress.IPv4Interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}")
            for m in ipr.get_addr(family=2, index=index)
        }


def reconcile_ipv4_addresses(
    netns: str | None, index: int, wanted: list[ipaddress.IPv4Interface]
) -> list[ipaddress.IPv4Interface]:
    """Add missing addresses, remove stale IPv4 ones. Returns the addresses added."""
    have = ipv4_addresses(netns, index)
    stale = have - set(wanted)
    missing = [a for a in wanted if a not in have]
    if not stale and not missing:
        return []
    with iproute(netns) as ipr:
        for addr in stale:
            with contextlib.suppress(NetlinkError):  # EADDRNOTAVAIL: already gone
                ipr.addr("del", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        for addr in missing:
            try:
                ipr.addr(
                    "add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen,
                    broadcast=str(addr.network.broadcast_address),
                )
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
    return missing


@dataclass(frozen=True, order=True)
class RouteSpec:
    destination: ipaddress.IPv4Network
    gateway: str
    oif: int


def agent_routes(netns: str | None) -> set[RouteSpec]:
    """IPv4 routes of the main table that the agent installed (proto static)."""
    with iproute(netns) as ipr:
        found = set()
        for m in ipr.get_routes(family=2, table=MAIN_TABLE, proto=RTPROT_STATIC):
            dst = m.get("RTA_DST") or "0.0.0.0"
            found.add(RouteSpec(
                ipaddress.IPv4Network(f"{dst}/{m['dst_len']}"),
                str(m.get("RTA_GATEWAY") or ""),
                int(m.get("RTA_OIF") or 0),
            ))
        return found


def reconcile_routes(netns: str | None, wanted: set[RouteSpec]) -> bool:
    """Make the agent's routes exactly `wanted`. Returns True if anything changed."""
    have = agent_routes(netns)
    if have == wanted:
        return False
    with iproute(netns) as ipr:
        for r in sorted(have - wanted):
            with contextlib.suppress(NetlinkError):  # ESRCH: already gone
                ipr.route("del", **_route_args(r))
        for r in sorted(wanted - have):
            ipr.route("replace", **_route_args(r))
    return True


def _route_args(r: RouteSpec) -> dict[str, object]:
    args: dict[str, object] = {
        "dst": str(r.destination.network_address), "dst_len": r.destination.prefixlen,
        "table": MAIN_TABLE, "proto": RTPROT_STATIC,
    }
    if r.gateway:
        args["gateway"] = r.gateway
    if r.oif:
        args["oif"] = r.oif
    return args
