"""The gratuitous ARP frames a router sends for an address it takes."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from router.lib import garp


def test_request_and_reply_carry_the_address_as_sender_and_target() -> None:
    ip = ipaddress.IPv4Address("203.0.113.11")
    request, reply = garp.frames("02:AB:00:00:00:01", ip)
    mac = bytes.fromhex("02ab00000001")
    for frame, op, target_hw in ((request, 1, b"\0" * 6), (reply, 2, mac)):
        assert len(frame) == 42
        assert frame[:6] == b"\xff" * 6
        assert frame[6:12] == mac
        assert struct.unpack("!H", frame[12:14])[0] == 0x0806
        htype, ptype, hlen, plen, got_op, sha, spa, tha, tpa = struct.unpack(
            "!HHBBH6s4s6s4s", frame[14:])
        assert (htype, ptype, hlen, plen, got_op) == (1, 0x0800, 6, 4, op)
        assert sha == mac
        assert tha == target_hw
        assert spa == tpa == ip.packed  # sender = target: gratuitous


def test_a_bad_mac_is_refused() -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        garp.frames("02:ab:00", ipaddress.IPv4Address("192.0.2.1"))
