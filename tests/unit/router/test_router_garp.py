"""The gratuitous ARP frame a router sends for an address it starts holding."""

from __future__ import annotations

import ipaddress

from scapy.layers.l2 import ARP, Ether

from router import garp


def test_a_gratuitous_arp_names_the_address_as_sender_and_target() -> None:
    raw = garp.frame("02:00:5e:01:02:03", ipaddress.IPv4Address("203.0.113.17"))
    assert len(raw) == 42
    pkt = Ether(raw)
    assert (pkt.dst, pkt.src, pkt.type) == ("ff:ff:ff:ff:ff:ff", "02:00:5e:01:02:03", 0x0806)
    arp = pkt[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (
        1, "02:00:5e:01:02:03", "203.0.113.17", "203.0.113.17")
    assert arp.hwdst == "00:00:00:00:00:00"


def test_nothing_to_announce_sends_nothing() -> None:
    garp.announce("no-such-namespace", "eth0", "02:00:00:00:00:01", [])  # no setns tried
