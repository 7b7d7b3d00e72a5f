"""The edge part of the router's nftables table, as data: public IPs, static
NAT, port forwards and firewall rules become elements of a few maps and sets,
looked up by one rule each (no chain of N rules for N user rules).

``verify(cfg)`` checks every edge object (raising ConfigError naming it);
``elements(cfg)`` is pure and gives, per set or map, ``{key: (value,
comment)}`` in nft syntax. The key is what identifies an element (a delete
names only the key), so the agent turns a config change into element
deletes and adds.

Interval sets refuse overlapping elements, while firewall rules (and the
CIDRs of one rule) may overlap: the elements of an allow set are the union
of the rules' boxes cut into disjoint boxes (``disjoint``). Each element's
comment names the API object it comes from, ``cn:<kind>:<id>``.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router.errors import ConfigError
from router.lib import validate

# Kinds of the API objects (ObjectStatus.kind and rule comments).
PUBLIC_IP, STATIC_NAT, PORT_FORWARD, FIREWALL = "publicip", "staticnat", "portforward", "firewall"
FORWARD_PROTOCOLS = ("tcp", "udp")
FIREWALL_PROTOCOLS = ("tcp", "udp", "icmp", "all")
ANY_NET = (0, 2**32 - 1)
ALL_PORTS = (1, 65535)
ANY_ICMP = (0, 255)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

# Every set and map the edge fills, in the table's order.
SETS = ("edge_ips", "lb_in", "pf_dnat", "pf_allow", "fw_in", "fw_in_icmp", "fw_in_all", "eip_in",
        "eip_out", "eg_ports", "eg_icmp", "eg_all", "eg_deny_nets")

# Allowed (public IP, protocol, port, source) tuples live in exact-match
# (hash) sets, one per source prefix length in use, looked up with the source
# address masked to that length: loading and changing them costs the same
# per element at any size. Interval sets with concatenations (nft's pipapo)
# grow quadratically to load (10,000 elements: about 2 s), so they only hold
# what cannot be expanded: port ranges longer than EXPAND_MAX, ICMP and
# "all" rules, egress rules.
ALLOW_PREFIX = "allow_"
EXPAND_MAX = 64

Interval = tuple[int, int]
Box = tuple[Interval, ...]
Elements = dict[str, dict[str, tuple[str, str]]]  # set -> key -> (value, comment)


# ------------------------------------------------------------------ verify


def _id(kind: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise ConfigError(f"{kind}: invalid ID {value!r}", kind, "")


def _port_range(what: str, start: int, end: int, kind: str, oid: str) -> None:
    if not (1 <= start <= 65535 and 1 <= end <= 65535):
        raise ConfigError(f"{what}: port {start}-{end} outside 1-65535", kind, oid)
    if end < start:
        raise ConfigError(f"{what}: range {start}-{end} is reversed", kind, oid)


@functools.lru_cache(maxsize=4096)
def _cidr_ok(value: str) -> bool:
    try:
        validate.parse_ipv4_network("", value)
    except ConfigError:
        return False
    return True


def _cidrs(what: str, values: Iterable[str], kind: str, oid: str) -> None:
    for c in values:
        if not _cidr_ok(c):
            validate.parse_ipv4_network(what, c, kind, oid)


def _icmp(what: str, t: int, c: int, kind: str, oid: str) -> None:
    if not (-1 <= t <= 255 and -1 <= c <= 255):
        raise ConfigError(f"{what}: ICMP type/code {t}/{c} outside -1..255", kind, oid)


def verify(cfg: pb.RouterConfig) -> None:
    publics = {i.name for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_PUBLIC}
    guest_nets = [ipaddress.IPv4Interface(a).network for i in cfg.interfaces
                  if i.role == pb.INTERFACE_ROLE_GUEST for a in i.addresses]
    held: set[str] = set()
    for a in cfg.public_addresses:
        _id(PUBLIC_IP, a.public_ip_id)
        what = f"public IP {a.public_ip_id!r}"
        validate.parse_ipv4(what, a.ip, PUBLIC_IP, a.public_ip_id)
        if a.interface not in publics:
            raise ConfigError(f"{what}: {a.interface!r} is not a public interface",
                              PUBLIC_IP, a.public_ip_id)
        held.add(a.ip)
    # The source-NAT addresses are the router's own (checked with the source
    # NATs): port forwards and load balancers may use them too.
    held.update(n.public_ip for n in cfg.source_nats)

    private_ok: set[str] = set()

    def private(what: str, ip: str, kind: str, oid: str) -> None:
        if ip in private_ok:
            return
        addr = validate.parse_ipv4(what, ip, kind, oid)
        if not any(addr in n for n in guest_nets):
            raise ConfigError(f"{what}: {ip} is not on a guest network of the router", kind, oid)
        private_ok.add(ip)

    def public(what: str, ip: str, kind: str, oid: str) -> None:
        if ip not in held:
            raise ConfigError(f"{what}: {ip!r} is not a public IP the router holds", kind, oid)

    snat_pub: set[str] = set()
    snat_priv: set[str] = set()
    for n in cfg.static_nats:
        _id(STATIC_NAT, n.id)
        what = f"static NAT {n.id!r}"
        public(what, n.public_ip, STATIC_NAT, n.id)
        private(what, n.private_ip, STATIC_NAT, n.id)
        if n.public_ip in snat_pub or n.private_ip in snat_priv:
            raise ConfigError(f"{what}: {n.public_ip} or {n.private_ip} is in another static NAT",
                              STATIC_NAT, n.id)
        snat_pub.add(n.public_ip)
        snat_priv.add(n.private_ip)
    taken: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for f in cfg.port_forwards:
        # Each field read once (a protobuf field read costs about a string's
        # creation; this loop runs per rule on every full apply), the common
        # case tested first, the range checks' calls made only on an error.
        oid, pub, priv, proto = f.id, f.public_ip, f.private_ip, f.protocol
        ps, pe, qs, qe = (f.public_port_start, f.public_port_end, f.private_port_start,
                          f.private_port_end)
        _id(PORT_FORWARD, oid)
        what = f"port forward {oid!r}"
        if pub not in held:
            public(what, pub, PORT_FORWARD, oid)
        if pub in snat_pub:
            raise ConfigError(f"{what}: {pub} is a static NAT address", PORT_FORWARD, oid)
        if priv not in private_ok:
            private(what, priv, PORT_FORWARD, oid)
        if proto not in FORWARD_PROTOCOLS:
            raise ConfigError(f"{what}: protocol {proto!r} is not tcp or udp",
                              PORT_FORWARD, oid)
        if not (1 <= ps <= pe <= 65535 and 1 <= qs <= qe <= 65535):
            _port_range(what, ps, pe, PORT_FORWARD, oid)
            _port_range(what, qs, qe, PORT_FORWARD, oid)
        if pe - ps != qe - qs:
            raise ConfigError(f"{what}: public and private ranges differ in length",
                              PORT_FORWARD, oid)
        taken[(pub, proto)].append((ps, pe, oid))
        cidrs = f.source_cidrs
        if cidrs:
            _cidrs(what, cidrs, PORT_FORWARD, oid)
    for ranges in taken.values():
        ranges.sort()
        for (_, hi, first), (lo, _, second) in itertools.pairwise(ranges):
            if lo <= hi:
                raise ConfigError(f"port forward {second!r}: public ports overlap port forward "
                                  f"{first!r}", PORT_FORWARD, second)
    rules: Sequence[pb.IngressRule | pb.EgressRule]
    for rules, direction in ((cfg.ingress_rules, "ingress"), (cfg.egress_rules, "egress")):
        for r in rules:
            _id(FIREWALL, r.id)
            what = f"{direction} firewall rule {r.id!r}"
            if isinstance(r, pb.IngressRule):
                public(what, r.public_ip, FIREWALL, r.id)
            else:
                validate.parse_ipv4_network(what, r.source_cidr, FIREWALL, r.id)
            if r.protocol not in FIREWALL_PROTOCOLS:
                raise ConfigError(f"{what}: unknown protocol {r.protocol!r}", FIREWALL, r.id)
            if r.protocol in FORWARD_PROTOCOLS:
                _port_range(what, r.port_start, r.port_end, FIREWALL, r.id)
            if r.protocol == "icmp":
                _icmp(what, r.icmp_type, r.icmp_code, FIREWALL, r.id)
            _cidrs(what, r.cidrs, FIREWALL, r.id)
    for p in cfg.egress_policies:
        _id("network", p.network_id)
        validate.parse_ipv4_network(f"egress policy of network {p.network_id!r}", p.source_cidr,
                                    "network", p.network_id)


# ------------------------------------------------------------ disjoint boxes


def _sweep(items: Sequence[tuple[Box, str]]) -> list[tuple[Box, str]]:
    """The union of boxes (all of one dimension count) as disjoint boxes, each
    named after the smallest ID among the boxes that contain it whole.
    Neighbouring pieces are joined only when that name is the same for both
    (that box then holds the joined piece too): a piece never names a box that
    covers just part of it."""
    cuts = sorted({b[0][0] for b, _ in items} | {b[0][1] + 1 for b, _ in items})
    out: list[tuple[Box, str]] = []
    prev: tuple[Interval, list[tuple[Box, str]]] | None = None
    for lo, nxt in itertools.pairwise(cuts):
        covering = [(b, oid) for b, oid in items if b[0][0] <= lo and b[0][1] >= nxt - 1]
        if not covering:
            tails: list[tuple[Box, str]] = []
        elif len(covering[0][0]) == 1:
            tails = [((), min(oid for _, oid in covering))]
        else:
            tails = sorted(_sweep([(b[1:], oid) for b, oid in covering]))
        if prev is not None and prev[1] == tails and prev[0][1] + 1 == lo:
            prev = ((prev[0][0], nxt - 1), tails)
            continue
        if prev is not None:
            out += [((prev[0], *t), owner) for t, owner in prev[1]]
        prev = ((lo, nxt - 1), tails)
    if prev is not None:
        out += [((prev[0], *t), owner) for t, owner in prev[1]]
    return out


def disjoint(boxes: Sequence[tuple[Box, str]]) -> list[tuple[Box, str]]:
    """Disjoint boxes covering exactly the union of ``boxes`` (each with the ID of
    its owner); a box that overlaps no other is kept as it is. A piece of
    overlapping boxes is owned by the smallest ID among the boxes that contain
    it (never one that covers only part of it: its counter and the trace name
    that owner)."""
    uniq = sorted(set(boxes), key=lambda x: (x[0], x[1]))
    # Overlap clusters along the first dimension (boxes that don't overlap
    # there don't overlap at all).
    clusters: list[list[tuple[Box, str]]] = []
    end = -1
    for box, oid in uniq:
        if clusters and box[0][0] <= end:
            clusters[-1].append((box, oid))
        else:
            clusters.append([(box, oid)])
        end = max(end, box[0][1]) if len(clusters[-1]) > 1 else box[0][1]
    out: list[tuple[Box, str]] = []
    for cluster in clusters:
        if len(cluster) == 1:
            out.append(cluster[0])
            continue
        out += _sweep(cluster)
    return out


# ---------------------------------------------------------------- elements


@functools.lru_cache(maxsize=4096)
def _net(cidr: str) -> Interval:
    n = ipaddress.IPv4Network(cidr)
    return int(n.network_address), int(n.broadcast_address)


def _ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def _rng(i: Interval) -> str:
    return f"{i[0]}-{i[1]}"


@functools.lru_cache(maxsize=4096)
def _prefix(cidr: str) -> tuple[str, int]:
    n = ipaddress.IPv4Network(cidr)
    return str(n.network_address), n.prefixlen


def allow_sets(elements: Elements) -> list[tuple[int, str]]:
    """(prefix length, netmask) of every allow set the table needs: /0 always
    (the common case, so its first rule is no table change), others in use."""
    lengths = {0} | {int(name[len(ALLOW_PREFIX):]) for name, elems in elements.items()
                     if name.startswith(ALLOW_PREFIX) and elems}
    return [(n, str(ipaddress.IPv4Network(f"0.0.0.0/{n}").netmask)) for n in sorted(lengths)]


def _order(name: str) -> tuple[int, int, str]:
    if name.startswith(ALLOW_PREFIX):
        return (1, int(name[len(ALLOW_PREFIX):]), name)
    return (0, SETS.index(name) if name in SETS else 99, name)


@functools.lru_cache(maxsize=4096)
def _iprng(i: Interval) -> str:
    return f"{_ip(i[0])}-{_ip(i[1])}"


def _comment(kind: str, oid: str) -> str:
    return f"cn:{kind}:{oid}"


Part = tuple[str, str, str, str]  # set, key, value, comment: one exact element
GroupBox = tuple[tuple[str, str], Box, str]  # (interval set, key head), box, comment
EdgeObject: TypeAlias = (pb.PublicAddress | pb.StaticNatRule | pb.PortForwardRule
                         | pb.LoadBalancerRule | pb.IngressRule | pb.EgressRule)


def object_key(obj: EdgeObject) -> tuple[str, str]:
    """(kind, ID) of an edge object, as its elements' comments name it."""
    if isinstance(obj, pb.PublicAddress):
        return PUBLIC_IP, obj.public_ip_id
    if isinstance(obj, pb.StaticNatRule):
        return STATIC_NAT, obj.id
    if isinstance(obj, pb.PortForwardRule):
        return PORT_FORWARD, obj.id
    if isinstance(obj, pb.LoadBalancerRule):
        return "loadbalancer", obj.id
    return FIREWALL, obj.id


def config_field(obj: EdgeObject) -> str:
    """The RouterConfig repeated field an object changed by deltas lives in."""
    if isinstance(obj, pb.StaticNatRule):
        return "static_nats"
    if isinstance(obj, pb.PortForwardRule):
        return "port_forwards"
    if isinstance(obj, pb.IngressRule):
        return "ingress_rules"
    if isinstance(obj, pb.EgressRule):
        return "egress_rules"
    raise TypeError(type(obj).__name__)


def delta_objects(delta: epb.EdgeDelta) -> list[EdgeObject]:
    """The objects a delta adds (or replaces)."""
    return [*delta.static_nats, *delta.port_forwards, *delta.ingress_rules,
            *delta.egress_rules]


def config_objects(cfg: pb.RouterConfig) -> Iterable[EdgeObject]:
    """Every edge object of a config, in the order their elements are made."""
    yield from cfg.public_addresses
    yield from cfg.static_nats
    yield from cfg.port_forwards
    yield from cfg.load_balancers
    yield from cfg.ingress_rules
    yield from cfg.egress_rules


def object_parts(obj: EdgeObject,
                 key: tuple[str, str] | None = None) -> tuple[list[Part], list[GroupBox]]:
    """What one object puts in the table: exact elements (its own, whatever
    the other objects) and boxes of interval sets (cut into disjoint
    elements together with the other boxes of the same set and head).
    `key`: the object's (kind, ID), when the caller has it."""
    exact: list[Part] = []
    boxes: list[GroupBox] = []
    c = _comment(*(key or object_key(obj)))

    def allow(fallback: str, ip: str, proto: str, lo: int, hi: int,
              cidrs: Sequence[str]) -> None:
        # Exact elements per source prefix length where the ports expand to
        # few elements; else interval sets grouped by the exact part of the key.
        if hi - lo + 1 > EXPAND_MAX:
            for cidr in cidrs or ["0.0.0.0/0"]:
                boxes.append(((fallback, f"{ip} . {proto}"), ((lo, hi), _net(cidr)), c))
            return
        for cidr in cidrs or ["0.0.0.0/0"]:
            address, plen = _prefix(cidr)
            name = f"{ALLOW_PREFIX}{plen}"
            if lo == hi:  # the common case, without a generator
                exact.append((name, f"{ip} . {proto} . {lo} . {address}", "", c))
                continue
            exact.extend((name, f"{ip} . {proto} . {port} . {address}", "", c)
                         for port in range(lo, hi + 1))

    if isinstance(obj, pb.PublicAddress):
        exact.append(("edge_ips", obj.ip, "", c))
    elif isinstance(obj, pb.StaticNatRule):
        exact.append(("eip_in", obj.public_ip, obj.private_ip, c))
        exact.append(("eip_out", obj.private_ip, obj.public_ip, c))
    elif isinstance(obj, pb.PortForwardRule):
        shift = obj.private_port_start - obj.public_port_start
        if obj.public_port_start == obj.public_port_end:
            exact.append(("pf_dnat", f"{obj.public_ip} . {obj.protocol} . "
                          f"{obj.public_port_start}",
                          f"{obj.private_ip} . {obj.private_port_start}", c))
        else:
            exact.extend(("pf_dnat", f"{obj.public_ip} . {obj.protocol} . {port}",
                          f"{obj.private_ip} . {port + shift}", c)
                         for port in range(obj.public_port_start, obj.public_port_end + 1))
        allow("pf_allow", obj.public_ip, obj.protocol, obj.public_port_start,
              obj.public_port_end, obj.source_cidrs)
    elif isinstance(obj, pb.LoadBalancerRule):
        exact.append(("lb_in", f"{obj.public_ip} . tcp . {obj.public_port}", "", c))
        allow("pf_allow", obj.public_ip, "tcp", obj.public_port, obj.public_port,
              obj.source_cidrs)
    else:
        ingress = isinstance(obj, pb.IngressRule)
        prefix = "fw_in" if ingress else "eg"
        head = obj.public_ip if isinstance(obj, pb.IngressRule) else _iprng(_net(obj.source_cidr))
        if ingress and obj.protocol in FORWARD_PROTOCOLS:
            allow("fw_in", head, obj.protocol, obj.port_start, obj.port_end, obj.cidrs)
            return exact, boxes
        for cidr in obj.cidrs or ["0.0.0.0/0"]:
            net = _net(cidr)
            if obj.protocol in FORWARD_PROTOCOLS:
                boxes.append(((f"{prefix}_ports" if prefix == "eg" else "fw_in",
                               f"{head} . {obj.protocol}"),
                              ((obj.port_start, obj.port_end), net), c))
            elif obj.protocol == "icmp":
                t = ANY_ICMP if obj.icmp_type < 0 else (obj.icmp_type, obj.icmp_type)
                code = ANY_ICMP if obj.icmp_code < 0 else (obj.icmp_code, obj.icmp_code)
                boxes.append(((f"{prefix}_icmp", head), (t, code, net), c))
            else:
                boxes.append(((f"{prefix}_all", head), (net,), c))
    return exact, boxes


def group_elements(name: str, head: str,
                   boxes: Sequence[tuple[Box, str]]) -> dict[str, tuple[str, str]]:
    """The elements of one interval set's group (same set, same key head)."""
    out: dict[str, tuple[str, str]] = {}
    for box, c in disjoint(boxes):
        if name in ("pf_allow", "fw_in", "eg_ports"):
            key = f"{head} . {_rng(box[0])} . {_iprng(box[1])}"
        elif name.endswith("_icmp"):
            key = f"{head} . {_rng(box[0])} . {_rng(box[1])} . {_iprng(box[2])}"
        else:
            key = f"{head} . {_iprng(box[0])}"
        out[key] = ("", c)
    return out


def elements(cfg: pb.RouterConfig) -> Elements:
    """Every edge set's elements (pure). Assumes ``verify(cfg)`` passed.

    The same elements as ``object_parts`` of every object, assembled (an exact
    element two objects share names the first); written out flat because it
    runs on every full render (2-3x faster at 10,000 rules). A unit test
    checks both agree."""
    out: Elements = {name: {} for name in SETS}
    for a in cfg.public_addresses:
        out["edge_ips"][a.ip] = ("", _comment(PUBLIC_IP, a.public_ip_id))
    for n in cfg.static_nats:
        c = _comment(STATIC_NAT, n.id)
        out["eip_in"][n.public_ip] = (n.private_ip, c)
        out["eip_out"][n.private_ip] = (n.public_ip, c)
    # Allow sets: exact elements per source prefix length where the ports
    # expand to few elements; else interval sets grouped by the exact part of
    # the key, overlaps cut per group.
    groups: dict[tuple[str, str], list[tuple[Box, str]]] = defaultdict(list)

    def allow(fallback: str, ip: str, proto: str, lo: int, hi: int, cidrs: Sequence[str],
              c: str) -> None:
        if hi - lo + 1 > EXPAND_MAX:
            for cidr in cidrs or ["0.0.0.0/0"]:
                groups[(fallback, f"{ip} . {proto}")].append((((lo, hi), _net(cidr)), c))
            return
        for cidr in cidrs or ["0.0.0.0/0"]:
            address, plen = _prefix(cidr)
            elems = out.setdefault(f"{ALLOW_PREFIX}{plen}", {})
            for port in range(lo, hi + 1):
                elems.setdefault(f"{ip} . {proto} . {port} . {address}", ("", c))
    pf_dnat = out["pf_dnat"]
    allow_0 = out.setdefault(f"{ALLOW_PREFIX}0", {})
    for f in cfg.port_forwards:
        c = f"cn:{PORT_FORWARD}:{f.id}"
        pub, proto, priv, lo, hi = (f.public_ip, f.protocol, f.private_ip, f.public_port_start,
                                    f.public_port_end)
        cidrs = f.source_cidrs
        if lo == hi:  # one port, the common case: no loops
            pf_dnat[f"{pub} . {proto} . {lo}"] = (f"{priv} . {f.private_port_start}", c)
            if not cidrs:
                allow_0.setdefault(f"{pub} . {proto} . {lo} . 0.0.0.0", ("", c))
                continue
        else:
            shift = f.private_port_start - lo
            for port in range(lo, hi + 1):
                pf_dnat[f"{pub} . {proto} . {port}"] = (f"{priv} . {port + shift}", c)
        allow("pf_allow", pub, proto, lo, hi, cidrs, c)
    for lb in cfg.load_balancers:
        c = f"cn:loadbalancer:{lb.id}"
        out["lb_in"][f"{lb.public_ip} . tcp . {lb.public_port}"] = ("", c)
        allow("pf_allow", lb.public_ip, "tcp", lb.public_port, lb.public_port, lb.source_cidrs, c)
    rules: Sequence[pb.IngressRule | pb.EgressRule]
    for rules, prefix in ((cfg.ingress_rules, "fw_in"), (cfg.egress_rules, "eg")):
        for r in rules:
            c = _comment(FIREWALL, r.id)
            head = r.public_ip if isinstance(r, pb.IngressRule) else _iprng(_net(r.source_cidr))
            if isinstance(r, pb.IngressRule) and r.protocol in FORWARD_PROTOCOLS:
                allow("fw_in", r.public_ip, r.protocol, r.port_start, r.port_end, r.cidrs, c)
                continue
            for cidr in r.cidrs or ["0.0.0.0/0"]:
                net = _net(cidr)
                if r.protocol in FORWARD_PROTOCOLS:
                    groups[(f"{prefix}_ports" if prefix == "eg" else "fw_in",
                            f"{head} . {r.protocol}")].append(
                        (((r.port_start, r.port_end), net), c))
                elif r.protocol == "icmp":
                    t = ANY_ICMP if r.icmp_type < 0 else (r.icmp_type, r.icmp_type)
                    code = ANY_ICMP if r.icmp_code < 0 else (r.icmp_code, r.icmp_code)
                    groups[(f"{prefix}_icmp", head)].append(((t, code, net), c))
                else:
                    groups[(f"{prefix}_all", head)].append(((net,), c))
    for (name, head), boxes in groups.items():
        out[name].update(group_elements(name, head, boxes))
    deny = [((_net(p.source_cidr),), p.network_id) for p in cfg.egress_policies
            if p.default_deny]
    for box, network_id in disjoint(deny):
        out["eg_deny_nets"][_iprng(box[0])] = ("", f"cn:network:{network_id}")
    return out


def element_text(key: str, value: str, comment: str) -> str:
    text = f'{key} comment "{comment}"'
    return f"{text} : {value}" if value else text


def commands(family: str, table: str, old: Elements, new: Elements,
             set_tables: Mapping[str, tuple[str, str]] | None = None) -> str:
    """nft commands turning the elements ``old`` into ``new`` (deletes first);
    empty when they hold the same keys and values. ``set_tables``: the
    (family, table) of a set that is not in ``family table``."""
    dels, adds = [], []
    for name in sorted(set(old) | set(new), key=_order):
        before, after = old.get(name, {}), new.get(name, {})
        gone = [k for k, v in before.items() if k not in after or after[k][0] != v[0]]
        come = [k for k, v in after.items() if k not in before or before[k][0] != v[0]]
        fam, tab = (set_tables or {}).get(name, (family, table))
        if gone:
            dels.append(f"delete element {fam} {tab} {name} {{ {', '.join(gone)} }}")
        if come:
            adds.append(f"add element {fam} {tab} {name} {{ "
                        + ", ".join(element_text(k, *after[k]) for k in come) + " }")
    return "\n".join(dels + adds) + ("\n" if dels or adds else "")


def full_commands(family: str, table: str, new: Elements,
                  set_tables: Mapping[str, tuple[str, str]] | None = None) -> str:
    return commands(family, table, {}, new, set_tables)
