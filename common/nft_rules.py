"""Replaces the rules of one nftables chain by netlink, without libnftables
reading the namespace's ruleset.

libnftables (1.0.6, Debian 12) lists every chain of the namespace into its
cache before it adds a rule, so with per-port chains a port's rule change
costs O(ports). The kernel needs none of that: a DELRULE naming a table and
a chain empties the chain, a NEWRULE names the table, the chain and the
rule's expressions. Writing the expressions is libnftables' job (its
parser and its code generator), so this module has it do exactly that in a
namespace of its own that holds only the rules being compiled (a private
network namespace, unshared by one worker thread and kept), reads the
compiled expressions back from the kernel there, and sends them, with the
chain's flush, as part of one nfnetlink batch in the real namespace
(``nft_elements.send_batch``: one transaction, all or nothing).

Sets the rules name (``@name``) are declared empty in the scratch table
under the same names: a lookup names its set, which the real table has.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import itertools
import os
import socket
import struct
from collections.abc import Sequence

from common import libnft, nft_elements

NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_DELRULE = 8
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLMSG_DONE = 3
NLMSG_ERROR = 2
CLONE_NEWNET = 0x40000000
SCRATCH_CHAIN = "compile"

_seq = itertools.count(int.from_bytes(os.urandom(2), "big") + 1)


class CompileError(Exception):
    pass


def _attr_str(kind: int, value: str) -> bytes:
    return nft_elements._attr(kind, value.encode() + b"\0")


def _padded(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 4)


def flush_message(family: str, table: str, chain: str) -> bytes:
    """DELRULE of every rule of `chain` (what ``flush chain`` sends)."""
    body = _attr_str(NFTA_RULE_TABLE, table) + _attr_str(NFTA_RULE_CHAIN, chain)
    return nft_elements._msg((nft_elements.NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE,
                             nft_elements.NLM_F_REQUEST | nft_elements.NLM_F_ACK,
                             next(_seq) & 0xFFFFFFFF, nft_elements.FAMILIES[family], 0, body)


def rule_message(family: str, table: str, chain: str, expressions: bytes) -> bytes:
    """NEWRULE appending a rule of compiled `expressions` (an
    NFTA_RULE_EXPRESSIONS attribute, as compile returns them) to `chain`."""
    body = (_attr_str(NFTA_RULE_TABLE, table) + _attr_str(NFTA_RULE_CHAIN, chain)
            + _padded(expressions))
    flags = (nft_elements.NLM_F_REQUEST | nft_elements.NLM_F_ACK | NLM_F_CREATE
             | NLM_F_APPEND)
    return nft_elements._msg((nft_elements.NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
                             flags, next(_seq) & 0xFFFFFFFF, nft_elements.FAMILIES[family],
                             0, body)


def _dump_expressions(family: str, table: str, chain: str) -> list[bytes]:
    """The NFTA_RULE_EXPRESSIONS attribute of each rule of `chain`, in order,
    from the kernel of the current namespace."""
    body = _attr_str(NFTA_RULE_TABLE, table) + _attr_str(NFTA_RULE_CHAIN, chain)
    seq = next(_seq) & 0xFFFFFFFF
    req = nft_elements._msg((nft_elements.NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
                            nft_elements.NLM_F_REQUEST | NLM_F_DUMP, seq,
                            nft_elements.FAMILIES[family], 0, body)
    out: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                       nft_elements.NETLINK_NETFILTER) as sock:
        sock.settimeout(10)
        sock.bind((0, 0))
        sock.sendall(req)
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, got, _pid = struct.unpack_from("=IHHII", data, off)
                if got == seq and kind == NLMSG_DONE:
                    return out
                if got == seq and kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + 16)
                    if code:
                        raise CompileError(f"reading compiled rules: {os.strerror(-code)}")
                elif got == seq and kind & 0xFF == NFT_MSG_NEWRULE:
                    a = off + 20
                    while a + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype & 0x3FFF == NFTA_RULE_EXPRESSIONS:
                            out.append(bytes(data[a:a + alen]))
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3


# (family, table, declarations of the sets the rules name, rules)
ChainSpec = tuple[str, str, Sequence[str], Sequence[str]]


class Compiler:
    """nft rule texts compiled to kernel expressions by libnftables, in a
    private network namespace kept by one worker thread. Thread-safe.

    Each compile fills new chains there and deletes nothing: a transaction
    that deletes makes the next netlink request wait for an RCU grace period
    (about 10 ms here). Every `RESET_EVERY` compiles the scratch tables are
    deleted at once (their listing is libnftables' cache there)."""

    RESET_EVERY = 64

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="nft-compile", initializer=self._enter)
        self._nft: libnft.Context | None = None
        self._count = 0
        self._tables: set[tuple[str, str]] = set()

    @staticmethod
    def _enter() -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")

    def compile(self, chains: Sequence[ChainSpec]) -> list[list[bytes]]:
        """Each chain's rules (nft statements of a chain of `family` `table`)
        as their NFTA_RULE_EXPRESSIONS attributes. Set declarations are
        ``name { type ...; }``."""
        return self._pool.submit(self._compile, chains).result()

    def _compile(self, chains: Sequence[ChainSpec]) -> list[list[bytes]]:
        if self._nft is None:
            self._nft = libnft.Context("")
        text: list[str] = []
        if self._count >= self.RESET_EVERY:
            text += [f"delete table {f} {t}" for f, t in sorted(self._tables)]
            self._tables.clear()
            self._count = 0
        self._count += 1
        names = []
        for i, (family, table, set_decls, rules) in enumerate(chains):
            head = f"{family} {table}"
            name = f"c{self._count}_{i}"
            names.append(name)
            self._tables.add((family, table))
            text += [f"add table {head}", *(f"add set {head} {d}" for d in set_decls),
                     f"add chain {head} {name}", *(f"add rule {head} {name} {r}" for r in rules)]
        try:
            self._nft.run("\n".join(text) + "\n")
        except libnft.NftError as e:
            raise CompileError(str(e)[:500]) from e
        out = []
        for (family, table, _, rules), name in zip(chains, names, strict=True):
            exprs = _dump_expressions(family, table, name)
            if len(exprs) != len(rules):
                raise CompileError(f"compiled {len(exprs)} rules of {len(rules)}")
            out.append(exprs)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False)
