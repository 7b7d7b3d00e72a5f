"""Security group rules as elements of nftables sets (pure).

On the Linux-bridge fabric a rule is not an nft rule: it is an element of a
concatenated interval set keyed by the port, so that a rule change is
NEWSETELEM/DELSETELEM only. A commit that adds or deletes rules makes the
kernel validate the table's whole chain graph (every port's chains, when
each port has its own), which grows with the ports; a commit of elements of
a set that holds no verdicts validates nothing (docs/security-groups.md,
"the kernel's commit").

Per direction (``eg``: from the port, keyed by its input name; ``in``: to
the port, keyed by the mark the bridge's forward hook gives the port a
frame leaves by) and IP version:

* ``c<v>x_<dir>``: ``port . l4proto . th sport . th dport . address``, for
  tcp and udp (source ports any, destination ports the rule's range) and
  icmp (the first two bytes of an ICMP header are its type and code, so
  ``th sport`` is type * 256 + code: a type with any code is a range);
* ``c<v>y_<dir>``: ``port . l4proto . address``, for ``all`` (l4proto
  0-255) and protocols by number (their headers need not have ports);

the address being the rule's CIDR (or every address). A rule naming a
remote group is an element of the group's own sets, the same keys without
the address (``r<v><x|y><e|i>_<group>``), matched by one rule per group and
kind: ``ip saddr @<group's members> <port . l4proto ...> @<group's rule set>``.

The kernel's interval sets of concatenations (pipapo) refuse an element that
overlaps another, so a port's rules in one set become disjoint boxes first
(their union is what the rules allow: every rule accepts).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from typing import Protocol

# A field's range, inclusive.
Span = tuple[int, int]
# An element after its port: one span per field.
Box = tuple[Span, ...]
PROTO, L4PORT, ADDR4, ADDR6 = "proto", "port", "addr4", "addr6"
ANY_PORT: Span = (0, 65535)
ANY_PROTO: Span = (0, 255)


class RuleLike(Protocol):
    @property
    def direction(self) -> str: ...
    @property
    def ethertype(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    @property
    def port_min(self) -> int: ...
    @property
    def port_max(self) -> int: ...
    @property
    def icmp_type(self) -> int: ...
    @property
    def icmp_code(self) -> int: ...
    @property
    def remote_cidr(self) -> str: ...
    @property
    def remote_group_id(self) -> str: ...


def _dir(direction: str) -> str:
    return "eg" if direction == "egress" else "in"


def cidr_set(version: int, kind: str, direction: str) -> str:
    return f"c{version}{kind}_{_dir(direction)}"


def hashed_name(prefix: str, key: str) -> str:
    """A table object's name for `key` (an ID or a device name): nft names
    are short, and the same key always gives the same name."""
    return prefix + hashlib.sha1(key.encode()).hexdigest()[:16]


def group_rule_set(group_id: str, version: int, kind: str, direction: str) -> str:
    d = "e" if direction == "egress" else "i"
    return hashed_name(f"r{version}{kind}{d}_", group_id)


def fields(kind: str, version: int, with_address: bool) -> tuple[str, ...]:
    out = (PROTO, L4PORT, L4PORT) if kind == "x" else (PROTO,)
    return (*out, ADDR4 if version == 4 else ADDR6) if with_address else out


def set_key(kind: str, version: int, direction: str, with_address: bool) -> str:
    """The set's ``typeof`` key, as its lookup's expression."""
    port = "iifname" if direction == "egress" else "meta mark"
    parts = [port, "meta l4proto", *(["th sport", "th dport"] if kind == "x" else [])]
    if with_address:
        ip = "ip" if version == 4 else "ip6"
        parts.append(f"{ip} {'daddr' if direction == 'egress' else 'saddr'}")
    return " . ".join(parts)


def _protocol_spans(rule: RuleLike, version: int) -> tuple[str, Box]:
    """(kind, spans before the address) of a rule's protocol and ports."""
    proto = rule.protocol
    if proto in ("tcp", "udp"):
        number = 6 if proto == "tcp" else 17
        if rule.port_min:
            lo, hi = int(rule.port_min), int(rule.port_max or rule.port_min)
            return "x", ((number, number), ANY_PORT, (lo, hi))
        return "x", ((number, number), ANY_PORT, ANY_PORT)
    if proto == "icmp":
        number = 1 if version == 4 else 58
        kind = ANY_PORT
        if rule.icmp_type >= 0:
            t = int(rule.icmp_type) << 8
            kind = (t, t | 255) if rule.icmp_code < 0 else (t | int(rule.icmp_code),) * 2
        return "x", ((number, number), kind, ANY_PORT)
    if proto == "all":
        return "y", (ANY_PROTO,)
    return "y", ((int(proto), int(proto)),)


def _address_span(cidr: str, version: int) -> Span:
    if not cidr:
        return (0, 2 ** (32 if version == 4 else 128) - 1)
    net = ipaddress.ip_network(cidr)
    return int(net.network_address), int(net.broadcast_address)


def rule_boxes(rules: Iterable[RuleLike]) -> dict[str, list[Box]]:
    """Each set's boxes for a port's rules (overlapping, as the rules are)."""
    out: dict[str, list[Box]] = {}
    for rule in rules:
        version = 4 if rule.ethertype == "ipv4" else 6
        kind, spans = _protocol_spans(rule, version)
        if rule.remote_group_id:
            name = group_rule_set(rule.remote_group_id, version, kind, rule.direction)
            out.setdefault(name, []).append(spans)
        else:
            name = cidr_set(version, kind, rule.direction)
            out.setdefault(name, []).append((*spans, _address_span(rule.remote_cidr, version)))
    return out


def disjoint(boxes: Sequence[Box]) -> list[Box]:
    """The union of `boxes` (all of one width) as disjoint boxes: split on the
    first field's bounds, the rest of each piece made disjoint in turn, and
    neighbouring pieces with the same rest joined again. Deterministic (the
    same union gives the same boxes, whatever the order of the rules)."""
    if not boxes:
        return []
    if len(boxes[0]) == 1:
        spans = sorted(b[0] for b in boxes)
        merged = [spans[0]]
        for lo, hi in spans[1:]:
            if lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return [(s,) for s in merged]
    cuts = sorted({b[0][0] for b in boxes} | {b[0][1] + 1 for b in boxes})
    by_start = sorted(boxes, key=lambda b: b[0][0])
    active: list[Box] = []
    nxt = 0
    pieces: list[tuple[Span, tuple[Box, ...]]] = []
    for lo, end in itertools.pairwise(cuts):
        while nxt < len(by_start) and by_start[nxt][0][0] <= lo:
            active.append(by_start[nxt])
            nxt += 1
        active = [b for b in active if b[0][1] >= lo]
        if not active:
            continue
        rest = tuple(disjoint([b[1:] for b in active]))
        if pieces and pieces[-1][1] == rest and pieces[-1][0][1] + 1 == lo:
            pieces[-1] = ((pieces[-1][0][0], end - 1), rest)
        else:
            pieces.append(((lo, end - 1), rest))
    return [(span, *r) for span, rest in pieces for r in rest]


def port_elements(rules: Iterable[RuleLike]) -> dict[str, frozenset[Box]]:
    """A port's elements, per set, disjoint within each set."""
    return {name: frozenset(disjoint(boxes)) for name, boxes in rule_boxes(rules).items()}


def set_fields(name: str) -> tuple[str, ...]:
    """The fields after the port of a set named by cidr_set or group_rule_set."""
    version = int(name[1])
    kind = name[2]
    return fields(kind, version, name[0] == "c")


def set_direction(name: str) -> str:
    if name[0] == "c":
        return "egress" if name.endswith("_eg") else "ingress"
    return "egress" if name[3] == "e" else "ingress"


def _field_bytes(field: str, value: int) -> bytes:
    if field == PROTO:
        return bytes([value, 0, 0, 0])
    if field == L4PORT:
        return value.to_bytes(2, "big") + b"\0\0"
    return value.to_bytes(4 if field == ADDR4 else 16, "big")


def port_key_bytes(direction: str, device: str, mark: int) -> bytes:
    """The port field: its name (16 bytes, as ``iifname``) or its mark
    (``meta mark``, which nft turns to network order in a concatenation)."""
    if direction == "egress":
        return device.encode().ljust(16, b"\0")
    return mark.to_bytes(4, "big")


def element_bytes(name: str, device: str, mark: int, box: Box) -> tuple[bytes, bytes]:
    """(key, key end) of a box of set `name`, as the kernel keeps it."""
    head = port_key_bytes(set_direction(name), device, mark)
    names = set_fields(name)
    return (head + b"".join(_field_bytes(f, s[0]) for f, s in zip(names, box, strict=True)),
            head + b"".join(_field_bytes(f, s[1]) for f, s in zip(names, box, strict=True)))


def _field_text(field: str, span: Span) -> str:
    if field in (ADDR4, ADDR6):
        cls = ipaddress.IPv4Address if field == ADDR4 else ipaddress.IPv6Address
        lo, hi = cls(span[0]), cls(span[1])
        return str(lo) if lo == hi else f"{lo}-{hi}"
    return str(span[0]) if span[0] == span[1] else f"{span[0]}-{span[1]}"


def element_text(name: str, device: str, mark: int, box: Box) -> str:
    """The same element as nft writes it (for libnftables transactions)."""
    head = f'"{device}"' if set_direction(name) == "egress" else str(mark)
    names = set_fields(name)
    return " . ".join([head, *(_field_text(f, s) for f, s in zip(names, box, strict=True))])
