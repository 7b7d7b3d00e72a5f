"""Gratuitous ARP: a router that takes an address tells its segment.

A public IP moves between routers (released by one network, allocated to
another), and every router has MACs of its own. The upstream gateway keeps
the old MAC in its neighbour table, and traffic to the address goes to a
MAC that is no longer there until that entry is re-resolved: on the
all-in-one's edge an address that moved answered nothing for more than 30 s
(the edge suite on router VMs, whose tests delete their networks and so hand
the next test the same addresses). Linux does not announce an IPv4 address
when it is added (``arp_notify`` covers link up and MAC changes only), so
the router does, like CloudStack's VR (``arping -U``) and keepalived.

Each added address is announced twice, broadcast: as an ARP request and as
an ARP reply, both with sender = target = the address (what Linux and most
gateways take as gratuitous: they update an entry they hold, whatever its
state; the two forms because some devices honour only one).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

from common import netns

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def frames(mac: str, ip: ipaddress.IPv4Address) -> list[bytes]:
    """The two gratuitous ARP frames (request, reply) for `ip` at `mac`."""
    hw = bytes.fromhex(mac.replace(":", ""))
    if len(hw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    out = []
    for op, target_hw in ((1, b"\x00" * 6), (2, hw)):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, hw, ip.packed, target_hw,
                          ip.packed)
        out.append(BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp)
    return out


def announce(ns: str | None, ifname: str, mac: str,
             addresses: Iterable[ipaddress.IPv4Interface]) -> None:
    """Send the gratuitous ARPs for `addresses` out of `ifname` in namespace `ns`
    (None: this process's). Best effort: a neighbour that misses them
    re-resolves in time anyway."""
    packets = [f for a in addresses for f in frames(mac, a.ip)]
    if not packets:
        return
    try:
        sock = netns.create_socket(ns, socket.AF_PACKET, socket.SOCK_RAW,
                                   socket.htons(ETH_P_ARP))
    except OSError as e:
        log.warning("netns %s: no socket for gratuitous ARP on %s: %s", ns, ifname, e)
        return
    with sock:
        try:
            sock.bind((ifname, 0))
            for frame in packets:
                sock.send(frame)
        except OSError as e:
            log.warning("netns %s: gratuitous ARP on %s failed: %s", ns, ifname, e)
