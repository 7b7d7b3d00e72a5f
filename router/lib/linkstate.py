"""Whether a namespace's links exist and are up, and which IPv6 addresses
they hold, without pyroute2.

A health check asks this of every router every few seconds; pyroute2's
dump of a router's links (parsed attribute by attribute, through asyncio)
costs milliseconds, most of a 1,000-router host's status call. One socket
opened in the namespace and one SIOCGIFFLAGS ioctl per link costs
microseconds; the addresses are one RTM_GETADDR dump on a raw netlink
socket (``rawnetlink``).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable

from common import rawnetlink
from common.netns import run_in_netns

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



RTM_NEWADDR, RTM_GETADDR = 20, 22
IFA_ADDRESS = 1
RT_SCOPE_LINK = 253
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index


def ipv6_addresses(netns: str) -> set[ipaddress.IPv6Interface]:
    """Every IPv6 address (with its prefix) of every link in ``netns``,
    link-local ones left out."""

    def query() -> set[ipaddress.IPv6Interface]:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
            s.send(rawnetlink.request(RTM_GETADDR, rawnetlink.NLM_F_DUMP,
                                      _IFADDRMSG.pack(socket.AF_INET6, 0, 0, 0, 0)))
            return global_ipv6(rawnetlink.answers(rawnetlink.received(s), "rtnetlink"))

    return run_in_netns(netns, query)


def global_ipv6(answers: Iterable[tuple[int, bytes]]) -> set[ipaddress.IPv6Interface]:
    """The non-link-local IPv6 addresses of an RTM_GETADDR dump's answers."""
    out: set[ipaddress.IPv6Interface] = set()
    for kind, body in answers:
        if kind != RTM_NEWADDR or len(body) < _IFADDRMSG.size:
            continue
        family, prefixlen, _, scope, _ = _IFADDRMSG.unpack_from(body)
        if family != socket.AF_INET6 or scope == RT_SCOPE_LINK:
            continue
        for attr, value in rawnetlink.attributes(body[_IFADDRMSG.size:]):
            if attr == IFA_ADDRESS and len(value) == 16:
                out.add(ipaddress.IPv6Interface((value, prefixlen)))
    return out
