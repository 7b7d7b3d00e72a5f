"""Gratuitous ARP for addresses a router starts holding.

A public IP released by one router and allocated to another (or moved
between tiers) keeps its old MAC in the upstream's neighbour cache until
that entry times out and re-resolves (several seconds of lost traffic).
Announcing each address the moment it is added (sender = target = the
address, to broadcast; CloudStack's router does the same with arping)
updates those entries at once. Built by hand, not with scapy: importing
scapy costs seconds in a router VM under TCG.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

from compute import netns

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806


def frame(mac: str, ip: ipaddress.IPv4Address) -> bytes:
    """An ARP request from `mac` for its own `ip`, to broadcast."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ip.packed
    return (b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr)


def announce(ns: str, ifname: str, mac: str, ips: Iterable[ipaddress.IPv4Address]) -> None:
    """Send one gratuitous ARP per address from `ifname` in namespace `ns`.
    Best effort: a failure is logged, never fails the apply (it is a courtesy
    to neighbours; their caches re-resolve anyway)."""
    frames = [frame(mac, ip) for ip in ips]
    if not frames:
        return

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
            s.bind((ifname, 0))
            for f in frames:
                s.send(f)

    try:
        if ns:
            netns.run_in_netns(ns, send)
        else:
            send()
    except OSError as e:
        log.warning("gratuitous ARP from %s in %s failed: %s", ifname, ns, e)
