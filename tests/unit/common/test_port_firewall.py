"""What a security group rule becomes in nftables (pure), and which
transaction a change is: only the changed port's chains and elements, or a
group's changed elements (the runner is replaced; no root needed)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from common.fabric.ovs_firewall import OvsFirewall, Plugged, _port_ranges, cookie
from common.fabric.port_firewall import (
    Port,
    PortFirewall,
    Rule,
    address_element_ops,
    group_objects,
    group_set,
    l2_chain_rules,
    link_local,
    v6_sources,
)
from common.fabric.sg_elements import cidr_set, group_rule_set, port_elements

GID = "00000000-0000-4000-8000-00000000000a"


ANY4 = (0, 2 ** 32 - 1)


@pytest.mark.parametrize(("rule", "elements"), [
    (Rule("ingress"), {"c4y_in": {((0, 255), ANY4)}}),
    (Rule("egress", "ipv6"), {"c6y_eg": {((0, 255), (0, 2 ** 128 - 1))}}),
    (Rule("ingress", protocol="tcp", port_min=22, port_max=22, remote_cidr="192.0.2.0/24"),
     {"c4x_in": {((6, 6), (0, 65535), (22, 22), (0xC0000200, 0xC00002FF))}}),
    (Rule("egress", protocol="udp", port_min=1000, port_max=2000, remote_cidr="10.0.0.0/8"),
     {"c4x_eg": {((17, 17), (0, 65535), (1000, 2000), (0x0A000000, 0x0AFFFFFF))}}),
    # ICMP's type and code are the first two bytes of its header: th sport.
    (Rule("ingress", protocol="icmp", icmp_type=8, icmp_code=0),
     {"c4x_in": {((1, 1), (0x800, 0x800), (0, 65535), ANY4)}}),
    (Rule("ingress", protocol="icmp", icmp_type=3),
     {"c4x_in": {((1, 1), (0x300, 0x3FF), (0, 65535), ANY4)}}),
    (Rule("ingress", "ipv6", protocol="icmp", icmp_type=128),
     {"c6x_in": {((58, 58), (0x8000, 0x80FF), (0, 65535), (0, 2 ** 128 - 1))}}),
    (Rule("ingress", protocol="icmp"), {"c4x_in": {((1, 1), (0, 65535), (0, 65535), ANY4)}}),
    (Rule("ingress", protocol="47"), {"c4y_in": {((47, 47), ANY4)}}),
    (Rule("ingress", protocol="tcp", port_min=80, remote_group_id=GID),
     {group_rule_set(GID, 4, "x", "ingress"): {((6, 6), (0, 65535), (80, 80))}}),
    (Rule("egress", remote_group_id=GID), {group_rule_set(GID, 4, "y", "egress"): {((0, 255),)}}),
])
def test_a_rule_is_elements_of_its_sets(rule: Rule, elements: dict[str, set]) -> None:
    assert port_elements([rule]) == {k: frozenset(v) for k, v in elements.items()}


def test_overlapping_rules_become_disjoint_elements_of_their_union() -> None:
    """The kernel refuses overlapping elements in a concatenated interval
    set; what the rules allow together is kept, as boxes that do not overlap."""
    rules = [Rule("ingress", protocol="tcp", port_min=20, port_max=30, remote_cidr="10.0.0.0/8"),
             Rule("ingress", protocol="tcp", port_min=25, port_max=40,
                  remote_cidr="10.1.0.0/16"),
             Rule("ingress", protocol="tcp", port_min=22, remote_cidr="10.0.0.0/8"),
             Rule("ingress", protocol="all", remote_cidr="192.0.2.0/24"),
             Rule("ingress", protocol="47")]
    got = port_elements(rules)
    assert got["c4x_in"] == frozenset({
        ((6, 6), (0, 65535), (20, 30), (0x0A000000, 0x0AFFFFFF)),
        ((6, 6), (0, 65535), (31, 40), (0x0A010000, 0x0A01FFFF))})
    assert got["c4y_in"] == frozenset({
        ((0, 46), (0xC0000200, 0xC00002FF)), ((47, 47), ANY4),
        ((48, 255), (0xC0000200, 0xC00002FF))})
    assert port_elements(reversed(rules)) == got


def test_disjoint_boxes_cover_exactly_the_union() -> None:
    import random

    from common.fabric.sg_elements import disjoint
    rnd = random.Random(7)
    for _ in range(200):
        boxes = []
        for _ in range(rnd.randint(1, 6)):
            a, b = sorted(rnd.randint(0, 12) for _ in range(2))
            c, d = sorted(rnd.randint(0, 12) for _ in range(2))
            e, f = sorted(rnd.randint(0, 3) for _ in range(2))
            boxes.append(((a, b), (c, d), (e, f)))
        out = disjoint(boxes)
        for x in range(13):
            for y in range(13):
                for z in range(4):
                    inside = [o for o in out if all(lo <= v <= hi for v, (lo, hi)
                                                    in zip((x, y, z), o, strict=True))]
                    want = any(all(lo <= v <= hi for v, (lo, hi) in zip((x, y, z), b,
                                                                          strict=True))
                               for b in boxes)
                    assert len(inside) == (1 if want else 0), (boxes, out, (x, y, z))


class Recorded(PortFirewall):
    def __init__(self) -> None:
        super().__init__("unused")
        self.batches: list[list[str]] = []

    def list_table(self) -> str:
        return ""  # a new table: nothing an earlier agent left

    def run(self, commands: Sequence[str]) -> None:
        self.batches.append(list(commands))

    def _netlink_batch(self, member_commands: Sequence[str], ports: Sequence[Port]
                       ) -> list[bytes] | None:
        return None  # the nft text of every change (the netlink path: below)


class RecordedNetlink(PortFirewall):
    """Which changes skip libnftables: the chains compiled are named, not built."""

    def __init__(self) -> None:
        super().__init__("unused")
        self.batches: list[list[str]] = []
        self.sent: list[list[bytes]] = []

    def list_table(self) -> str:
        return ""  # a new table: nothing an earlier agent left

    def run(self, commands: Sequence[str]) -> None:
        self.batches.append(list(commands))

    def _chain_messages(self, port: Port) -> list[bytes]:
        old = self._ports.get(port.device)
        if old is not None and l2_chain_rules(old) == l2_chain_rules(port):
            return []
        return [f"chains of {port.device}".encode()]

    def _send(self, msgs: Sequence[bytes]) -> None:
        self.sent.append(list(msgs))


def _kinds(batch: Sequence[bytes]) -> list[int]:
    """The nf_tables message type of each netlink message."""
    return [int.from_bytes(m[4:6], "little") & 0xFF for m in batch]


def test_a_known_ports_rule_change_is_set_elements_only() -> None:
    """A rule change adds and deletes elements (NEWSETELEM 12, DELSETELEM
    14): no rule (NEWRULE 6), so no commit of the kernel validates the
    table's chains, and no libnftables."""
    fw = RecordedNetlink()
    ports = [port(f"p{i}", Rule("ingress", remote_group_id=GID)) for i in range(5)]
    fw.apply(ports, {GID: ["10.0.0.5"]})
    assert len(fw.batches) == 1, "new ports and sets: libnftables"
    assert not fw.sent
    ports[2] = port("p2", Rule("ingress", remote_group_id=GID), Rule("ingress", protocol="tcp"))
    fw.apply(ports, {GID: ["10.0.0.5", "10.0.0.6"]})
    assert len(fw.batches) == 1
    (batch,) = fw.sent
    assert _kinds(batch) == [12, 12], "the member, p2's new rule"
    assert cidr_set(4, "x", "ingress").encode() + b"\0" in batch[1]
    fw.set_port(port("p3", Rule("ingress", remote_group_id=GID), Rule("ingress", protocol="tcp",
                                                                      port_min=80)))
    assert _kinds(fw.sent[-1]) == [12]
    fw.set_port(port("p3", Rule("ingress", protocol="tcp", port_min=81)))
    assert _kinds(fw.sent[-1]) == [14, 14, 12], "two rules go, one comes"
    moved = Port("p3", "02:00:00:00:00:01", ("10.0.0.9",), (), (Rule("ingress", protocol="tcp",
                                                                     port_min=81),))
    fw.set_port(moved)
    assert fw.sent[-1] == [b"chains of p3"], "a new address: its port-security chain"
    fw.set_port(port("p9", Rule("egress")))
    assert len(fw.batches) == 2, "a new port: libnftables (its chain and elements)"
    other = "00000000-0000-4000-8000-0000000000ff"
    fw.set_port(port("p4", Rule("ingress", remote_group_id=other)))
    assert len(fw.batches) == 3, "a group's sets to declare: libnftables"
    assert any("in_groups" in c for c in fw.batches[-1])
    fw.set_port(port("p4", Rule("ingress", protocol="udp", remote_group_id=other)))
    assert len(fw.batches) == 3, "a group already there: elements only"
    fw.apply(ports[:1], {GID: ["10.0.0.5"]})
    assert len(fw.batches) == 4, "ports removed: libnftables"


def port(dev: str, *rules: Rule) -> Port:
    return Port(dev, "02:00:00:00:00:01", ("10.0.0.5",), (), rules)


def test_a_change_is_one_transaction_of_only_what_changed() -> None:
    fw = Recorded()
    ports = [port(f"p{i}", Rule("ingress", remote_group_id=GID)) for i in range(50)]
    assert fw.apply(ports, {GID: ["10.0.0.5"]}) > 0
    assert len(fw.batches) == 1
    assert fw.apply(ports, {GID: ["10.0.0.5"]}) == 0, "the same state twice changes nothing"
    ports[7] = port("p7", Rule("ingress", protocol="tcp", port_min=80))
    fw.apply(ports, {GID: ["10.0.0.5"]})
    changed = fw.batches[-1]
    assert all('"p7"' in c or " 8 . " in c for c in changed)
    assert not any(f'"p{i}"' in c for c in changed for i in range(50) if i != 7)
    assert any(" . 80 . " in c for c in changed)
    fw.apply(ports, {GID: ["10.0.0.5", "10.0.0.9"]})
    assert fw.batches[-1] == [f"add element inet cloudnet_sg {group_set(GID, 'ipv4')} "
                              "{ 10.0.0.9 }"]
    fw.apply(ports, {GID: ["10.0.0.9"]})
    assert fw.batches[-1] == [f"delete element inet cloudnet_sg {group_set(GID, 'ipv4')} "
                              "{ 10.0.0.5 }"]
    fw.apply(ports[:-1], {GID: ["10.0.0.9"]})
    assert all("delete" in c for c in fw.batches[-1])
    assert len(fw.batches[-1]) == 6, "its element, its map and set elements, its chain"


def test_a_group_no_longer_named_goes_after_its_last_rules_elements() -> None:
    """The last rule naming a group removed: its elements first, then the
    group chains without its lookups, then its sets (the kernel refuses to
    delete a set a rule still looks up)."""
    fw = Recorded()
    other = "00000000-0000-4000-8000-0000000000bb"
    ports = [port("p1", Rule("ingress", remote_group_id=GID),
                  Rule("ingress", protocol="udp", remote_group_id=other))]
    fw.apply(ports, {GID: ["10.0.0.5"], other: ["10.0.0.6"]})
    fw.apply([port("p1", Rule("ingress", protocol="udp", remote_group_id=other))],
             {other: ["10.0.0.6"]})
    batch = fw.batches[-1]
    deleted = [c.split()[-1] for c in batch if c.startswith("delete set ")]
    assert deleted == group_objects(GID)
    first_delete = batch.index(f"delete set inet cloudnet_sg {deleted[0]}")
    flushes = [i for i, c in enumerate(batch) if c.startswith("flush chain")]
    assert flushes
    assert max(flushes) < first_delete
    element_changes = [i for i, c in enumerate(batch) if "element" in c]
    assert element_changes
    assert max(element_changes) < min(flushes)
    lookups = " ".join(c for c in batch if c.startswith("add rule"))
    assert group_set(other, "ipv4") in lookups
    assert group_set(GID, "ipv4") not in lookups
    assert fw.apply([port("p1", Rule("ingress", protocol="udp", remote_group_id=other))],
                    {other: ["10.0.0.6"]}) == 0, "gone once"


@pytest.mark.parametrize(("lo", "hi"), [(80, 80), (1000, 2000), (1, 65535), (8000, 8080),
                                        (5, 6), (65534, 65535)])
def test_ovs_port_ranges_cover_exactly_the_range(lo: int, hi: int) -> None:
    """OpenFlow matches ports by value/mask: the pieces cover lo..hi, nothing more."""
    pieces = _port_ranges(Rule("ingress", protocol="tcp", port_min=lo, port_max=hi))
    if lo == hi:
        assert pieces == [""]
        return
    covered: set[int] = set()
    for piece in pieces:
        value, mask = (int(x, 16) for x in piece.removeprefix(",tp_dst=").split("/"))
        block = {p for p in range(value, value + (0x10000 - mask))}
        assert not block & covered
        covered |= block
    assert covered == set(range(lo, hi + 1))


class RecordedOvs(OvsFirewall):
    """The OVS pipeline's bundles, recorded (ports numbered by name)."""

    def __init__(self) -> None:
        super().__init__("unused")
        self.bundles: list[list[str]] = []
        self.lookups: list[list[str]] = []

    def run(self, lines: Sequence[str]) -> None:
        self.bundles.append(list(lines))

    def plugged(self, device: str) -> Plugged:
        return Plugged(int(device.removeprefix("p")) + 1, 100)

    def plugged_many(self, devices: Sequence[str]) -> dict[str, Plugged]:
        self.lookups.append(list(devices))
        return {d: self.plugged(d) for d in devices}


def test_ovs_a_change_is_one_bundle_of_only_that_ports_flows_and_members() -> None:
    fw = RecordedOvs()
    rules = (Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GID),
             Rule("egress"))
    ports = [Port(f"p{i}", f"02:00:00:00:00:{i:02x}", (f"10.0.0.{i + 10}",), (), rules)
             for i in range(20)]
    members = {GID: [p.ips[0] for p in ports]}
    assert fw.apply(ports, members) > 0
    assert fw.apply(ports, members) == 0, "the same state twice sends nothing"
    ports[3] = Port("p3", ports[3].mac, ports[3].ips, (), (*rules, Rule(
        "ingress", protocol="udp", port_min=53)))
    fw.apply(ports, members)
    changed = fw.bundles[-1]
    assert changed, "the new rule was sent"
    assert all(f"cookie={cookie('p3'):#x}" in line for line in changed)
    fw.apply(ports, {GID: [*members[GID], "10.0.9.9"]})
    joined = fw.bundles[-1]
    assert len(joined) == 1
    assert "nw_src=10.0.9.9" in joined[0]
    assert joined[0].count("conjunction(") == 1, "one conjunction per (group, direction, " \
        "ethertype), shared by the 20 ports whose rules name the group"


def test_ovs_a_join_is_one_flow_of_one_conjunction_whatever_the_ports() -> None:
    """Neutron's sharing: the ports' rule flows are the conjunction's second
    clause (each matches its port), the members its first; a member joining
    is one flow naming one conjunction at 10 or 1,000 ports."""
    sizes = {}
    for n in (10, 1000):
        fw = RecordedOvs()
        rules = (Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GID),
                 Rule("ingress", protocol="udp", port_min=53, remote_group_id=GID))
        ports = [Port(f"p{i}", f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
                      (f"10.0.{i // 200}.{i % 200 + 10}",), (), rules) for i in range(n)]
        fw.apply(ports, {GID: ["10.9.0.1"]})
        fw.apply(ports, {GID: ["10.9.0.1", "10.9.9.9"]})
        sizes[n] = (len(fw.bundles[-1]), sum(len(line) for line in fw.bundles[-1]))
        assert fw.bundles[-1][0].count("conjunction(") == 1
    assert sizes[10] == sizes[1000]


def test_ovs_two_groups_on_one_match_keep_both_conjunctions() -> None:
    """Two rules of one port that differ only in their remote group have the
    same match: one flow naming both groups' conjunctions, not the second
    rule's flow replacing the first's."""
    other = "00000000-0000-4000-8000-0000000000cc"
    fw = RecordedOvs()
    p = Port("p1", "02:00:00:00:00:01", ("10.0.0.5",), (),
             (Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GID),
              Rule("ingress", protocol="tcp", port_min=22, remote_group_id=other)))
    fw.apply([p], {GID: ["10.0.0.6"], other: ["10.0.0.7"]})
    rule_flows = [line for line in fw.bundles[-1] if "tp_dst=22" in line]
    assert len(rule_flows) == 1
    assert rule_flows[0].count("conjunction(") == 2


def test_the_eui64_link_local_of_a_mac() -> None:
    assert link_local("02:00:0a:00:00:12") == "fe80::aff:fe00:12"
    assert link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"


def test_a_ports_chains_hold_no_anonymous_set() -> None:
    """libnftables lists every set of the table before it adds an element or
    a rule: an anonymous set per port would make each change O(ports)."""
    p = Port("p1", "02:00:00:00:00:01", ("10.0.0.5", "2001:db8::5"),
             (("10.0.0.200", ""), ("2001:db8:1::/64", "02:00:00:00:00:09")),
             (Rule("ingress", remote_group_id=GID), Rule("egress", "ipv6"),
              Rule("ingress", protocol="tcp", port_min=1000, port_max=2000)))
    texts = l2_chain_rules(p)
    assert [t for t in texts if "{" in t] == []


def test_ipv6_sources_are_the_ports_addresses_pairs_and_eui64_link_locals() -> None:
    p = Port("p1", "02:00:00:00:00:01", ("10.0.0.5", "2001:db8::5"),
             (("2001:db8:1::/64", "02:00:00:00:00:09"),))
    assert sorted(v6_sources(p)) == sorted([
        ("02:00:00:00:00:01", "2001:db8::5/128"),
        ("02:00:00:00:00:09", "2001:db8:1::/64"),
        ("02:00:00:00:00:01", "fe80::ff:fe00:1/128"),
        ("02:00:00:00:00:09", "fe80::ff:fe00:9/128")])
    na = next(t for t in l2_chain_rules(p) if "nd-neighbor-advert" in t)
    assert na.count("@th,64,128") == 4
    assert "& 0xffffffffffffffff0000000000000000 != 0x20010db8000100000000000000000000" in na


def test_only_address_set_members_go_by_netlink() -> None:
    """A group's member change goes to the kernel without libnftables (whose
    cache reads every chain); anything else stays an nft transaction."""
    fw = Recorded()
    ports = [port("p1", Rule("ingress", remote_group_id=GID))]
    fw.apply(ports, {GID: ["10.0.0.5", "2001:db8::5", "10.1.0.0/24"]})
    assert address_element_ops(fw.batches[-1]) is None, "declares sets"
    fw.apply(ports, {GID: ["10.0.0.6", "2001:db8::6", "10.1.0.0/24"]})
    ops = address_element_ops(fw.batches[-1])
    assert ops is not None
    assert sorted((op, name, [bytes(k) for k in keys]) for op, name, keys in ops) == sorted([
        ("delete", group_set(GID, "ipv4"), [bytes([10, 0, 0, 5])]),
        ("add", group_set(GID, "ipv4"), [bytes([10, 0, 0, 6])]),
        ("delete", group_set(GID, "ipv6"), [bytes.fromhex("20010db8" + "0" * 22 + "05")]),
        ("add", group_set(GID, "ipv6"), [bytes.fromhex("20010db8" + "0" * 22 + "06")])])
    fw.apply(ports, {GID: ["10.0.0.6", "2001:db8::6", "10.2.0.0/24"]})
    assert address_element_ops(fw.batches[-1]) is None, "an interval set: nft"


def test_ovs_a_change_looks_up_only_the_changed_port() -> None:
    """A port's change costs that port: OVSDB is asked about new ports alone,
    not about a known port whose rules changed (the same state again asks
    about every port, in one read: a restarted VM's tap has a new OpenFlow
    number)."""
    fw = RecordedOvs()
    rules = (Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GID),)
    ports = [Port(f"p{i}", f"02:00:00:00:00:{i:02x}", (f"10.0.0.{i + 10}",), (), rules)
             for i in range(10)]
    fw.apply(ports, {GID: ["10.0.0.10"]})
    ports[4] = Port("p4", ports[4].mac, ports[4].ips, (), ())
    fw.apply(ports, {GID: ["10.0.0.10"]})
    assert fw.lookups[-1] == [], "p4's number is known: no OVSDB round trip"
    ports.append(Port("p12", "02:00:00:00:00:12", ("10.0.0.40",), (), rules))
    fw.apply(ports, {GID: ["10.0.0.10"]})
    assert fw.lookups[-1] == ["p12"]
    ports.pop()
    fw.apply(ports, {GID: ["10.0.0.10"]})
    assert any("delete_strict" in line for line in fw.bundles[-1]), "p4's rule flows went"
    asked = len(fw.lookups)
    assert fw.apply(ports, {GID: ["10.0.0.10", "10.0.0.11"]}) == 1
    assert fw.lookups[asked:] == [[]]
    assert fw.apply(ports, {GID: ["10.0.0.10", "10.0.0.11"]}) == 0
    assert fw.lookups[-1] == sorted(p.device for p in ports)
    fw.apply(ports[:-1], {GID: ["10.0.0.10", "10.0.0.11"]})
    assert not any(f"cookie={cookie('p9'):#x}" in line for line in fw.bundles[-1])
    assert sum(line.startswith("delete_strict") for line in fw.bundles[-1]) > 10


class NamedCompiler:
    """Stands in for nft_rules.Compiler: records which chains' rules are compiled."""

    def __init__(self) -> None:
        self.compiled: list[list[str]] = []

    def compile(self, chains: Sequence[tuple[str, str, list[str], list[str]]]
                ) -> list[list[bytes]]:
        self.compiled.append([f"{family} {table}" for family, table, _, _ in chains])
        return [[b"expr"] for _ in chains]


def test_a_rule_change_compiles_no_chain() -> None:
    """The kernel's commit costs in proportion to each table whose rules it
    changes: a rule change touches none (elements only), a port-security
    change the bridge table's chain of that port."""
    fw = Recorded()
    fw.apply([port("p1", Rule("egress"))], {})
    compiler = NamedCompiler()
    fw._compiler = compiler  # type: ignore[assignment]
    assert fw._chain_messages(port("p1", Rule("egress"), Rule("ingress", protocol="tcp"))) == []
    assert compiler.compiled == []
    moved = Port("p1", "02:00:00:00:00:01", ("10.0.0.6",), (), (Rule("egress"),))
    fw._chain_messages(moved)
    assert compiler.compiled[-1] == ["bridge cloudnet_l2"], "a new address: port security only"


def test_ovs_member_flows_after_joins_and_leaves_are_those_computed_afresh() -> None:
    """A join or leave recomputes only the addresses that moved; after any
    sequence of them the member flows are the ones a full computation gives
    (addresses in several groups, spelled as an address or a /32)."""
    import random

    rnd = random.Random(7)
    other = "00000000-0000-4000-8000-0000000000cc"
    fw = RecordedOvs()
    ports = [Port("p1", "02:00:00:00:00:01", ("10.0.0.5",), (),
                  (Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GID),
                   Rule("egress", remote_group_id=other))),
             Port("p2", "02:00:00:00:00:02", ("10.0.0.6",), (),
                  (Rule("ingress", protocol="udp", port_min=53, remote_group_id=other),))]
    pool = [f"10.1.0.{i}" for i in range(8)] + ["10.1.0.3/32", "10.2.0.0/24", "2001:db8::1"]
    for _ in range(60):
        members = {GID: rnd.sample(pool, rnd.randint(0, 5)),
                   other: rnd.sample(pool, rnd.randint(0, 5))}
        fw.apply(ports, members)
        used = set().union(*fw._conj_of.values())
        assert fw._member_flow_cache == fw._member_flows(used, fw._members)


def test_a_join_is_its_one_element_and_two_spellings_of_an_address_are_one() -> None:
    fw = Recorded()
    ports = [port("p1", Rule("ingress", remote_group_id=GID))]
    members = [f"10.1.{i // 256}.{i % 256}" for i in range(1000)]
    fw.apply(ports, {GID: members})
    fw.apply(ports, {GID: [*members, "10.0.0.9"]})
    assert fw.batches[-1] == [f"add element inet cloudnet_sg {group_set(GID, 'ipv4')} "
                              "{ 10.0.0.9 }"]
    fw.apply(ports, {GID: [*members, "10.0.0.9", "10.0.0.9/32"]})
    assert len(fw.batches) == 2, "the same element spelled again: nothing to send"
    fw.apply(ports, {GID: [*members, "10.0.0.9/32"]})
    assert len(fw.batches) == 2, "still listed once: kept"
    fw.apply(ports, {GID: members[1:]})
    assert fw.batches[-1] == [f"delete element inet cloudnet_sg {group_set(GID, 'ipv4')} "
                              "{ 10.0.0.9, 10.1.0.0 }"]
