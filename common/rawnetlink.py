"""Netlink messages read and written with ``struct`` on a raw socket.

The health checks ask the kernel of every router every few seconds;
pyroute2 (a socket through asyncio, attribute-by-attribute parsing) costs
milliseconds there, a raw socket and ``struct`` microseconds. The framing
(linux/netlink.h: nlmsghdr, nlattr, NLMSG_DONE / NLMSG_ERROR) is the same
for every family: this module; each caller knows its own payloads
(``nftshape``: nftables, ``linkstate``: rtnetlink addresses, ``rtnl``:
links, addresses and routes).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator

NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flags
_HDR = struct.Struct("=IHHII")  # struct nlmsghdr
_ATTR = struct.Struct("=HH")  # struct nlattr


def request(kind: int, flags: int, body: bytes, seq: int = 1) -> bytes:
    """One request message (one request in flight per socket; a socket kept
    for several numbers them, so answers left from an earlier one are told
    apart)."""
    return _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def attribute(kind: int, value: bytes) -> bytes:
    return _ATTR.pack(_ATTR.size + len(value), kind) + value + b"\0" * (-len(value) % 4)


def attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in ``data``."""
    at = 0
    while at + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, at)
        if length < _ATTR.size:
            return
        yield kind & NLA_TYPE_MASK, data[at + _ATTR.size:at + length]
        at += (length + 3) & ~3


def received(sock: socket.socket, size: int = 1 << 20) -> Iterator[bytes]:
    """The socket's datagrams (each at most ``size`` bytes), as long as they are asked for."""
    while True:
        yield sock.recv(size)


def answers(datagrams: Iterable[bytes], what: str,
            seq: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each answer, up to the end of a dump (NLMSG_DONE)
    or the ack of a request; an error answer raises OSError with its errno
    (``what`` names the family in the message). With ``seq``, answers to
    another request (left over from one given up) are skipped."""
    for data in datagrams:
        at = 0
        while at + _HDR.size <= len(data):
            length, kind, _, number, _ = _HDR.unpack_from(data, at)
            if length < _HDR.size:
                raise OSError(errno.EPROTO, f"{what}: malformed netlink answer")
            body = data[at + _HDR.size:at + length]
            at += (length + 3) & ~3
            if seq is not None and number != seq:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code:
                    raise OSError(code, f"{what}: {os.strerror(code)}")
                return  # the ack of a request that is not a dump
            yield kind, body
