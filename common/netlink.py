"""The netlink calls of the agents (links, addresses, routes of a namespace),
with errors translated into the exceptions below in one place.

Each function opens one ``rtnl.Rtnl`` socket in the namespace for what it
does (a namespace is never created by accident), and is idempotent: adding
what exists or deleting what is gone is not an error.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from common.rtnl import LinkInfo, RouteInfo, Rtnl

# Routes the agent installs carry this protocol, so a reconcile only ever
# removes its own routes (never the kernel's connected ones).
RTPROT_STATIC = 4
MAIN_TABLE = 254


class NetlinkOpError(Exception):
    """A netlink operation failed; the message says what on which interface."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code  # the kernel's errno (0: not the kernel's)


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
def rtnl(netns: str | None) -> Iterator[Rtnl]:
    """An rtnetlink socket in `netns` (None: the process's own namespace);
    the kernel's refusals inside the block come out translated."""
    try:
        sock = Rtnl(netns)
    except FileNotFoundError:
        raise NamespaceNotFound(f"network namespace {netns} does not exist",
                                errno.ENOENT) from None
    with sock:
        try:
            yield sock
        except OSError as e:
            raise _translate(e, netns) from e


def _translate(e: OSError, netns: str | None) -> NetlinkOpError:
    where = f" in {netns}" if netns else ""
    code = e.errno or 0
    if code == errno.ENODEV:
        return InterfaceNotFound(f"interface not found{where}: {e.strerror or e}", code)
    return NetlinkOpError(
        f"netlink error{where}: {errno.errorcode.get(code, code)} {e.strerror or e}", code)


def _link(info: LinkInfo) -> Link:
    return Link(index=info.index, name=info.name, mac=info.mac, mtu=info.mtu, up=info.up,
                kind=info.kind)


def links(netns: str | None) -> list[Link]:
    with rtnl(netns) as sock:
        return [_link(info) for info in sock.links()]


# Linux interface names are at most 15 bytes (IFNAMSIZ less its NUL).
IFNAME_MAX = 15


def find_link_by_name(netns: str | None, name: str) -> Link | None:
    """The link of that name, asked of the kernel by name: a namespace can
    hold thousands of links (the fabric's, a veth end per router), and a
    dump of them all per lookup would make every plug cost grow with them."""
    if not name or len(name.encode()) > IFNAME_MAX:
        return None
    with rtnl(netns) as sock:
        found = sock.link(name=name)
    return _link(found) if found else None


def find_link_by_mac(netns: str | None, mac: str) -> Link | None:
    """Inside the appliance VM, NICs are known by MAC, not by name."""
    mac = mac.lower()
    return next((link for link in links(netns) if link.mac == mac), None)


def set_link(netns: str | None, link: Link, *, mtu: int = 0, name: str = "") -> None:
    """Bring `link` up with the MTU and name asked (0/empty: leave as is)."""
    mtu = mtu if mtu and link.mtu != mtu else 0
    name = name if name and link.name != name else ""
    if not mtu and not name and link.up:
        return
    with rtnl(netns) as sock:
        if name:  # a link must be down to be renamed
            sock.set_link(link.index, up=False)
        sock.set_link(link.index, up=True, mtu=mtu, name=name)


def delete_link(netns: str | None, index: int) -> None:
    with contextlib.suppress(InterfaceNotFound), rtnl(netns) as sock:
        sock.delete_link(index)


def ipv4_addresses(netns: str | None, index: int) -> set[ipaddress.IPv4Interface]:
    with rtnl(netns) as sock:
        return {ipaddress.IPv4Interface(a) for a in sock.addresses(socket.AF_INET, index)}


Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def sync_addresses(sock: Rtnl, index: int, have: set[Address], wanted: list[Address],
                   *, nodad: bool = False) -> list[Address]:
    """Make link ``index`` hold ``wanted`` where it holds ``have`` (the
    addresses of the family the caller manages). Returns the ones added; a
    refusal is OSError naming the address."""
    for addr in have - set(wanted):
        with contextlib.suppress(OSError):  # EADDRNOTAVAIL: already gone
            sock.delete_address(index, addr)
    missing = [a for a in wanted if a not in have]
    for addr in missing:
        try:
            sock.add_address(index, addr, nodad=nodad)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise OSError(e.errno, f"{addr}: {e.strerror}") from e
    return missing


def reconcile_ipv4_addresses(
    netns: str | None, index: int, wanted: list[ipaddress.IPv4Interface]
) -> list[ipaddress.IPv4Interface]:
    """Add missing addresses, remove stale IPv4 ones. Returns the addresses added."""
    with rtnl(netns) as sock:
        have = set(sock.addresses(socket.AF_INET, index))
        return [ipaddress.IPv4Interface(a) for a in sync_addresses(sock, index, have, [*wanted])]


def sync_routes(sock: Rtnl, family: int, wanted: set[RouteInfo]) -> bool:
    """Make the main table's routes the agent installed (proto static) of
    ``family`` exactly ``wanted``. Returns True if anything changed; a
    refusal is OSError naming the route."""
    have = set(sock.routes(family, MAIN_TABLE, RTPROT_STATIC))
    if have == wanted:
        return False
    for r in sorted(have - wanted):
        with contextlib.suppress(OSError):  # ESRCH: already gone
            sock.delete_route(family, r, MAIN_TABLE, RTPROT_STATIC)
    for r in sorted(wanted - have):
        try:
            sock.replace_route(family, r, MAIN_TABLE, RTPROT_STATIC)
        except OSError as e:
            raise OSError(e.errno, f"route {r.destination}/{r.prefixlen} via "
                                   f"{r.gateway or 'its link'}: {e.strerror}") from e
    return True


def reconcile_routes(netns: str | None, wanted: set[RouteInfo]) -> bool:
    """Make the agent's IPv4 routes exactly `wanted`. Returns True if anything changed."""
    with rtnl(netns) as sock:
        return sync_routes(sock, socket.AF_INET, wanted)


def configure_link(netns: str | None, ifname: str, addresses: Iterable[Address] = (), *,
                   flush: bool = False, mtu: int = 0,
                   routes: Iterable[RouteInfo] = ()) -> None:
    """Link ``ifname`` up, holding ``addresses`` (added where missing;
    ``flush``: every other address of either family removed first), with
    ``mtu`` if given, and the IPv4 ``routes`` (proto static) put in place."""
    wanted = list(addresses)
    with rtnl(netns) as sock:
        link = sock.link(name=ifname)
        if link is None:
            raise InterfaceNotFound(f"no interface {ifname}" + (f" in {netns}" if netns else ""),
                                    errno.ENODEV)
        have: set[Address] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            have |= set(sock.addresses(family, link.index))
        sync_addresses(sock, link.index, have if flush else have & set(wanted), wanted)
        sock.set_link(link.index, up=True, mtu=mtu)
        for route in routes:
            sock.replace_route(socket.AF_INET, route, MAIN_TABLE, RTPROT_STATIC)
