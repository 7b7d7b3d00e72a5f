"""A fingerprint of one nftables table's chains and rules, read over netlink.

libnftables lists a table with every set's elements (1.7 s at 50,000 edge
rules, even terse), which a health check cannot afford. The kernel dumps a
table's chains and rules without them: two netlink dumps whose cost follows
the number of rules (tens), not of edge elements. A counter's values change
with traffic and are left out; everything else of a chain (name, hook,
type, policy, flags) and of a rule (chain, expressions, comment) is in.

``generation`` is the namespace's nftables ruleset generation, which the
kernel moves on at every committed change (a rule, a chain, a set's
elements; not a counter or a set the data path updates): while it stands
still, the fingerprint cannot have changed, and one small request replaces
the two dumps.

Run both on a thread that entered the router's namespace
(``common.netns.run_in_netns``).
"""

from __future__ import annotations

import errno
import hashlib
import socket
import struct

from common.rawnetlink import NLM_F_ACK, NLM_F_DUMP, answers, attribute, received, request
from common.rawnetlink import attributes as _attrs

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETGEN = 1, 4, 7, 16
NFTA_GEN_ID = 1
NFPROTO_INET = 1
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_USE, NFTA_CHAIN_COUNTERS = 1, 2, 6, 8
NFTA_RULE_TABLE, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 3, 4
NFTA_RULE_POSITION = 8
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
_NFGEN = struct.Struct("=BBH")


def _request(sock: socket.socket, msg_type: int, flags: int, payload: bytes) -> list[bytes]:
    """Send one nftables request; the attribute payloads of every answer."""
    body = _NFGEN.pack(NFPROTO_INET, 0, 0) + payload
    sock.send(request((NFNL_SUBSYS_NFTABLES << 8) | msg_type, flags, body))
    return [msg[_NFGEN.size:] for _, msg in answers(received(sock), "nftables")]


def _expressions(data: bytes) -> bytes:
    """A rule's expressions with every counter's values left out."""
    kept = []
    for kind, elem in _attrs(data):
        if kind != NFTA_LIST_ELEM:
            continue
        fields = dict(_attrs(elem))
        if fields.get(NFTA_EXPR_NAME, b"").rstrip(b"\0") == b"counter":
            kept.append(b"counter")
        else:
            kept.append(elem)
    return b"\0\0".join(kept)


def generation() -> int:
    """The current namespace's nftables ruleset generation."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        for answer in _request(sock, NFT_MSG_GETGEN, NLM_F_ACK, b""):
            for kind, value in _attrs(answer):
                if kind == NFTA_GEN_ID and len(value) == 4:
                    return int(struct.unpack("!I", value)[0])
    raise OSError(errno.EPROTO, "nftables: no generation in the kernel's answer")


def fingerprint(table: str) -> str | None:
    """sha256 of the chains and rules of ``inet <table>`` in the current
    network namespace; None if the table does not exist."""
    name = attribute(NFTA_TABLE_NAME, table.encode() + b"\0")
    digest = hashlib.sha256()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        try:
            _request(sock, NFT_MSG_GETTABLE, NLM_F_ACK, name)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        # Dumps are filtered by table in the request (kernel 4.x and later);
        # answers of other tables are skipped too, whatever the kernel did.
        for chain in _request(sock, NFT_MSG_GETCHAIN, NLM_F_DUMP, name):
            fields = dict(_attrs(chain))
            if fields.get(NFTA_CHAIN_TABLE, b"").rstrip(b"\0") != table.encode():
                continue
            for kind, value in sorted(fields.items()):
                if kind not in (NFTA_CHAIN_HANDLE, NFTA_CHAIN_USE, NFTA_CHAIN_COUNTERS):
                    digest.update(struct.pack("=HI", kind, len(value)) + value)
        for rule in _request(sock, NFT_MSG_GETRULE, NLM_F_DUMP, name):
            fields = dict(_attrs(rule))
            if fields.get(NFTA_RULE_TABLE, b"").rstrip(b"\0") != table.encode():
                continue
            for kind, value in sorted(fields.items()):
                if kind in (NFTA_RULE_HANDLE, NFTA_RULE_POSITION):
                    continue
                if kind == NFTA_RULE_EXPRESSIONS:
                    value = _expressions(value)
                digest.update(struct.pack("=HI", kind, len(value)) + value)
    return digest.hexdigest()
