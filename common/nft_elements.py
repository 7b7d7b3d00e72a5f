"""Adds and deletes elements of nftables sets by netlink, without libnftables.

libnftables (1.0.6, Debian 12) reads every chain of the namespace into its
cache before it adds a set element, so with per-port chains adding one
address to a remote group's set costs O(ports). The kernel needs none of
that: a NEWSETELEM/DELSETELEM message names the table, the set and the
element's key bytes. This module sends those messages, all of one change in
one nfnetlink batch (one transaction: all of it or nothing), for sets keyed
on one address (``ipv4_addr``, ``ipv6_addr``, no intervals), and for
concatenated interval sets (``flags interval`` with ``a . b . c`` keys, the
kernel's pipapo sets), whose element is a key and a key end: each the
concatenation of its fields' bytes, every field padded to 4 bytes.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Sequence

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 0x2
NLA_F_NESTED = 0x8000
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_KEY_END = 10
NFTA_DATA_VALUE = 1
FAMILIES = {"inet": 1, "ip": 2, "bridge": 7, "ip6": 10, "netdev": 5}

_seq = itertools.count(int.from_bytes(os.urandom(2), "big"))


class ElementError(Exception):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _msg(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    nfgen = struct.pack("=BBH", family, 0, socket.htons(res_id))
    return struct.pack("=IHHII", 16 + 4 + len(body), kind, flags, seq, 0) + nfgen + body


def key_bytes(address: str) -> bytes:
    """An address as a set key: its bytes in network order."""
    return ipaddress.ip_address(address).packed


# A key, or a concatenated interval set's (key, key end).
Key = bytes | tuple[bytes, bytes]


def _element(key: Key) -> bytes:
    if isinstance(key, tuple):
        start, end = key
        body = (_attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _attr(NFTA_DATA_VALUE, start))
                + _attr(NFTA_SET_ELEM_KEY_END | NLA_F_NESTED, _attr(NFTA_DATA_VALUE, end)))
    else:
        body = _attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _attr(NFTA_DATA_VALUE, key))
    return _attr(NFTA_LIST_ELEM | NLA_F_NESTED, body)


def elements_message(op: int, family: str, table: str, set_name: str,
                     keys: Sequence[Key], seq: int) -> bytes:
    elems = b"".join(_element(k) for k in keys)
    body = (_attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, elems))
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if op == NFT_MSG_NEWSETELEM else 0)
    return _msg((NFNL_SUBSYS_NFTABLES << 8) | op, flags, seq, FAMILIES[family], 0, body)


# (op: "add" | "delete", set name, keys)
Change = tuple[str, str, Sequence[Key]]
# A message holds at most this many elements (well under a page each).
CHUNK = 64


def element_messages(family: str, table: str, changes: Sequence[Change]) -> list[bytes]:
    """NEWSETELEM/DELSETELEM messages of `changes` (for send_batch)."""
    msgs: list[bytes] = []
    for op, set_name, keys in changes:
        kind = NFT_MSG_NEWSETELEM if op == "add" else NFT_MSG_DELSETELEM
        for i in range(0, len(keys), CHUNK):
            msgs.append(elements_message(kind, family, table, set_name, keys[i:i + CHUNK],
                                         next(_seq) & 0xFFFFFFFF))
    return msgs


def apply_here(family: str, table: str, changes: Sequence[Change]) -> None:
    """One batch of element changes in the current network namespace; raises
    ElementError with the kernel's error (nothing applied) on a failure."""
    send_batch(element_messages(family, table, changes), f"set elements in {family} {table}")


def open_socket() -> socket.socket:
    """An nfnetlink socket of the current network namespace (it stays that
    namespace's whichever thread uses it). Keep it: closing a socket that
    sent a batch of rule changes waits for an RCU grace period (~10 ms
    here)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.settimeout(10)
    sock.bind((0, 0))
    return sock


def send_batch(msgs: Sequence[bytes], what: str = "nftables batch",
               sock: socket.socket | None = None) -> None:
    """nf_tables messages (each asking for an ack) as one nfnetlink batch,
    one transaction; raises ElementError with the kernel's first error (then
    nothing was applied). On `sock` (open_socket), or a socket of the
    current namespace opened for it."""
    if not msgs:
        return
    if sock is None:
        with open_socket() as own:
            send_batch(msgs, what, own)
        return
    seqs = [struct.unpack_from("=I", m, 8)[0] for m in msgs]
    begin = _msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next(_seq) & 0xFFFFFFFF, 0,
                 NFNL_SUBSYS_NFTABLES, b"")
    end = _msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, next(_seq) & 0xFFFFFFFF, 0,
               NFNL_SUBSYS_NFTABLES, b"")
    sock.sendall(begin + b"".join(msgs) + end)
    waiting = set(seqs)
    failed = None
    while waiting:
        data = sock.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
            off += (length + 3) & ~3
            if kind != NLMSG_ERROR or seq not in waiting:
                continue  # an ack of an earlier batch (a kept socket)
            waiting.discard(seq)
            (code,) = struct.unpack_from("=i", data, off - ((length + 3) & ~3) + 16)
            if code and failed is None:
                name = errno.errorcode.get(-code, str(-code))
                failed = ElementError(f"{what}: {name} ({os.strerror(-code)})")
                # The kernel aborts the batch at its first error and acks
                # nothing after it.
                break
        if failed is not None:
            raise failed
