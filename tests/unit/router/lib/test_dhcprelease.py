from __future__ import annotations

from router.lib.dhcprelease import release_packet


def test_release_packet_is_a_dhcprelease_for_the_port() -> None:
    pkt = release_packet("10.10.0.11", "02:aa:00:00:00:11", "10.10.0.1")
    assert pkt[0] == 1
    assert pkt[1:3] == b"\x01\x06"
    assert pkt[12:16] == bytes([10, 10, 0, 11])  # ciaddr: the leased address
    assert pkt[28:34] == bytes.fromhex("02aa00000011")  # chaddr
    assert pkt[236:240] == bytes.fromhex("63825363")  # magic cookie
    assert pkt[240:] == bytes([53, 1, 7, 54, 4, 10, 10, 0, 1, 255])  # RELEASE, server id
