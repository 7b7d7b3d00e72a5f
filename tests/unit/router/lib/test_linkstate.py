"""The IPv6 address dump's reader (rtnl's, with rawnetlink's framing), on answers
built as the kernel lays them out (struct nlmsghdr, struct ifaddrmsg,
rtattrs: linux/netlink.h, linux/if_addr.h).
A real namespace's dump is read in tests/integration/router/test_router_ipv6.py."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest

from common import rawnetlink
from common.rtnl import addresses_of
from router.lib.linkstate import global_ipv6

RTM_NEWADDR, NLMSG_DONE, NLMSG_ERROR = 20, 3, 2
IFA_ADDRESS, IFA_LABEL, IFA_CACHEINFO = 1, 3, 6
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253


def attr(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def message(kind: int, body: bytes) -> bytes:
    out = struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body
    return out + b"\0" * (-len(out) % 4)


def address(addr: str, prefixlen: int, scope: int = SCOPE_UNIVERSE,
            family: int = socket.AF_INET6, index: int = 2) -> bytes:
    packed = ipaddress.ip_address(addr).packed
    body = struct.pack("=BBBBI", family, prefixlen, 0x80, scope, index)
    # The kernel sends more than the address: a label, cache info.
    body += attr(IFA_ADDRESS, packed) + attr(IFA_LABEL, b"eth0\0") + attr(IFA_CACHEINFO, b"\0" * 16)
    return message(RTM_NEWADDR, body)


DONE = message(NLMSG_DONE, b"\0" * 4)


def read(*datagrams: bytes) -> list[str]:
    answers = rawnetlink.answers(datagrams, "rtnetlink")
    return sorted(str(a) for a in global_ipv6(addresses_of(answers, socket.AF_INET6)))


@pytest.mark.parametrize(("datagrams", "addresses"), [
    ((address("2001:db8::1", 64) + address("2001:db8:1::9", 128), DONE),
     ["2001:db8:1::9/128", "2001:db8::1/64"]),
    ((address("fe80::1", 64, scope=SCOPE_LINK) + address("2001:db8::1", 64) + DONE,),
     ["2001:db8::1/64"]),
    ((DONE,), []),
    # An IPv4 answer (a kernel that ignored the family of the request) is skipped.
    ((address("10.0.0.1", 24, family=socket.AF_INET) + DONE,), []),
    # The end of the dump ends the reading: nothing after it is taken.
    ((address("2001:db8::1", 64) + DONE, address("2001:db8::2", 64)), ["2001:db8::1/64"]),
], ids=["two datagrams", "link-local left out", "empty dump", "IPv4 skipped",
        "nothing after the end"])
def test_reads_the_global_ipv6_addresses_of_a_dump(datagrams: tuple[bytes, ...],
                                                   addresses: list[str]) -> None:
    assert read(*datagrams) == addresses


def test_an_error_answer_raises_its_errno() -> None:
    with pytest.raises(OSError, match="rtnetlink") as e:
        read(message(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + b"\0" * 16))
    assert e.value.errno == errno.EPERM


def test_a_truncated_header_is_an_error_not_a_loop() -> None:
    with pytest.raises(OSError, match="malformed"):
        read(struct.pack("=IHHII", 8, RTM_NEWADDR, 0, 1, 0))
