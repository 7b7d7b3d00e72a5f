"""Whether a namespace's links exist and are up, and which IPv6 addresses
they hold, without pyroute2.

A health check asks this of every router every few seconds; pyroute2's
dump of a router's links (parsed attribute by attribute, through asyncio)
costs milliseconds, most of a 1,000-router host's status call. One socket
opened in the namespace and one SIOCGIFFLAGS ioctl per link costs
microseconds; the addresses are one RTM_GETADDR dump on a raw netlink
socket (``common.rtnl``).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable

from common.netns import run_in_netns
from common.rtnl import Rtnl

SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq (40 bytes): the name, then ifr_flags in the union


def link_flags(netns: str, names: Iterable[str]) -> dict[str, int | None]:
    """Each link's IFF_* flags in ``netns`` (None: no such link)."""
    wanted = list(names)

    def query() -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for name in wanted:
                try:
                    reply = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack(_IFREQ, name.encode(), 0))
                except OSError as e:
                    if e.errno != errno.ENODEV:
                        raise
                    out[name] = None
                    continue
                out[name] = struct.unpack(_IFREQ, reply)[1]
        return out

    return run_in_netns(netns, query)


def links_up(netns: str, names: Iterable[str]) -> dict[str, bool]:
    """Each link: present and administratively up (what `ip link` shows as UP)."""
    return {name: flags is not None and bool(flags & IFF_UP)
            for name, flags in link_flags(netns, names).items()}



def ipv6_addresses(netns: str) -> set[ipaddress.IPv6Interface]:
    """Every IPv6 address (with its prefix) of every link in ``netns``,
    link-local ones left out: one RTM_GETADDR dump."""
    with Rtnl(netns) as sock:
        return global_ipv6(sock.addresses(socket.AF_INET6))


def global_ipv6(addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
                ) -> set[ipaddress.IPv6Interface]:
    """The IPv6 addresses of ``addresses`` that are not link-local."""
    return {a for a in addresses
            if isinstance(a, ipaddress.IPv6Interface) and not a.ip.is_link_local}
