"""Send a DHCPRELEASE to the router's own dnsmasq on behalf of a deleted port.

Removing a port's dhcp-hosts file and sending SIGHUP makes dnsmasq forget the
static host, but not the lease it handed out: the lease keeps the address
bound to the old MAC (a new port given that address would be refused, see
CloudStack #10436) and keeps the old name in DNS until it expires. dnsmasq's
own `dhcp_release` tool (dnsmasq-utils, not installed here) does what this
does: a RELEASE from "the client", sent from inside the router to the
server address on the guest interface.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from common import netns

DHCP_SERVER_PORT = 67
_COOKIE = 0x63825363
_DHCPRELEASE = 7


def release_packet(ip: str, mac: str, server: str) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128sI",
        1, 1, 6, 0, int.from_bytes(os.urandom(4), "big"), 0, 0,
        ipaddress.IPv4Address(ip).packed, bytes(4), bytes(4), bytes(4),
        chaddr, bytes(64), bytes(128), _COOKIE,
    )
    options = bytes([53, 1, _DHCPRELEASE, 54, 4]) + ipaddress.IPv4Address(server).packed
    return header + options + bytes([255])


def release(netns_name: str, ifname: str, server: str, ip: str, mac: str) -> None:
    packet = release_packet(ip, mac, server)

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            s.sendto(packet, (server, DHCP_SERVER_PORT))

    netns.run_in_netns(netns_name, send)
