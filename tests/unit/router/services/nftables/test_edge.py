"""The edge part of the router's nftables table as data: verify, elements,
disjoint boxes, element deltas (pure; no root)."""

from __future__ import annotations

import itertools
import random

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ConfigError
from router.services.nftables import edge as nft_edge
from router.services.nftables import service as nftables
from tests.lib.routerconfigs import PUB, edge_config, fwd, render


def covered(boxes, point) -> bool:
    return any(all(lo <= x <= hi for (lo, hi), x in zip(b, point, strict=True)) for b in boxes)


def test_disjoint_covers_exactly_the_union_without_overlaps() -> None:
    rnd = random.Random(5)
    for _ in range(200):
        boxes = []
        for i in range(rnd.randint(1, 6)):
            box = []
            for _dim in range(rnd.randint(2, 2)):
                lo = rnd.randint(0, 9)
                box.append((lo, rnd.randint(lo, 9)))
            boxes.append((tuple(box), f"r{i}"))
        pieces = nft_edge.disjoint(boxes)
        out = [b for b, _ in pieces]
        for a, b in itertools.combinations(out, 2):
            assert not all(p[0] <= q[1] and q[0] <= p[1] for p, q in zip(a, b, strict=True))
        for point in itertools.product(range(10), repeat=2):
            assert covered(out, point) == covered([b for b, _ in boxes], point)
        # Each piece is named after the smallest ID among the boxes holding all
        # of it: its counter, the trace and explain all name that rule.
        for piece, owner in pieces:
            holders = [oid for box, oid in boxes if all(
                o[0] <= p[0] and p[1] <= o[1] for p, o in zip(piece, box, strict=True))]
            assert owner == min(holders), (boxes, piece, owner)


def test_a_narrow_rule_inside_a_wide_one_owns_only_its_own_ports() -> None:
    everywhere = (0, 2**32 - 1)
    pieces = nft_edge.disjoint([(((3045, 3049), everywhere), "a-udp-3045-3049"),
                                (((1, 65535), everywhere), "b-udp-all-ports")])
    assert sorted(pieces) == [(((1, 3044), everywhere), "b-udp-all-ports"),
                              (((3045, 3049), everywhere), "a-udp-3045-3049"),
                              (((3050, 65535), everywhere), "b-udp-all-ports")]


def test_port_forward_range_is_one_map_element_per_port_with_its_comment() -> None:
    cfg = edge_config(port_forwards=[fwd(public_port_start=7000, public_port_end=7002,
                                         private_port_start=9000, private_port_end=9002)])
    nft_edge.verify(cfg)
    el = nft_edge.elements(cfg)
    assert el["pf_dnat"] == {
        f"{PUB} . tcp . {7000 + i}": (f"10.10.0.5 . {9000 + i}", "cn:portforward:pf1")
        for i in range(3)}
    # Small ranges are allowed by exact elements (hash set per source prefix).
    assert el["allow_0"] == {
        f"{PUB} . tcp . {7000 + i} . 0.0.0.0": ("", "cn:portforward:pf1") for i in range(3)}
    assert el["pf_allow"] == {}
    assert el["edge_ips"] == {PUB: ("", "cn:publicip:ip1")}
    assert nft_edge.allow_sets(el) == [(0, "0.0.0.0")]


def test_sources_go_to_the_set_of_their_prefix_length_and_big_ranges_to_intervals() -> None:
    cfg = edge_config(port_forwards=[fwd(source_cidrs=["192.0.2.0/24", "198.51.100.7/32"]),
                                     fwd(2, public_port_start=1000, public_port_end=1999,
                                         private_port_start=1000, private_port_end=1999)])
    el = nft_edge.elements(cfg)
    assert set(el["allow_24"]) == {f"{PUB} . tcp . 80 . 192.0.2.0"}
    assert set(el["allow_32"]) == {f"{PUB} . tcp . 80 . 198.51.100.7"}
    assert set(el["pf_allow"]) == {f"{PUB} . tcp . 1000-1999 . 0.0.0.0-255.255.255.255"}
    assert nft_edge.allow_sets(el) == [(0, "0.0.0.0"), (24, "255.255.255.0"),
                                       (32, "255.255.255.255")]
    text = render("nftables", cfg)["cloudnet.nft"]
    assert "ip saddr & 255.255.255.0 @allow_24 counter accept" in text


def test_overlapping_firewall_rules_become_disjoint_elements() -> None:
    rules = [pb.IngressRule(id="a", public_ip=PUB, protocol="tcp", port_start=1000,
                            port_end=2000, cidrs=["10.0.0.0/8", "10.1.0.0/16"]),
             pb.IngressRule(id="b", public_ip=PUB, protocol="tcp", port_start=1500,
                            port_end=2500, cidrs=["10.0.0.0/8"])]
    el = nft_edge.elements(edge_config(ingress_rules=rules))
    # Each piece names a rule that allows all of it (its counter counts for that rule).
    assert {k: c for k, (_, c) in el["fw_in"].items()} == {
        f"{PUB} . tcp . 1000-2000 . 10.0.0.0-10.255.255.255": "cn:firewall:a",
        f"{PUB} . tcp . 2001-2500 . 10.0.0.0-10.255.255.255": "cn:firewall:b"}
    # The same ports in exact sets: duplicates kept once, the first rule's comment.
    small = [pb.IngressRule(id=i, public_ip=PUB, protocol="tcp", port_start=80, port_end=90)
             for i in ("a", "b")]
    el = nft_edge.elements(edge_config(ingress_rules=small))
    assert len(el["allow_0"]) == 11
    assert {c for _, c in el["allow_0"].values()} == \
        {"cn:firewall:a"}


def test_one_rule_more_is_one_element_more() -> None:
    many = [fwd(i, public_port_start=1000 + i, public_port_end=1000 + i) for i in range(100)]
    old = nft_edge.elements(edge_config(port_forwards=many))
    new = nft_edge.elements(edge_config(port_forwards=[*many, fwd(999)]))
    cmds = nft_edge.commands("inet", "cloudnet", old, new)
    assert cmds.count("add element") == 2
    assert "delete" not in cmds
    assert 'comment "cn:portforward:pf999"' in cmds
    assert nft_edge.commands("inet", "cloudnet", new, new) == ""


def test_rendered_elements_follow_the_skeleton_in_one_file() -> None:
    cfg = edge_config(port_forwards=[fwd()])
    rendered = render("nftables", cfg)
    assert rendered[nftables.SKELETON] in rendered[nftables.RULESET] or \
        rendered[nftables.RULESET].startswith(rendered[nftables.SKELETON].rstrip("\n"))
    assert f"add element inet cloudnet pf_dnat {{ {PUB} . tcp . 80" in rendered["cloudnet.nft"]
    assert "cn:fw-default-drop" in rendered[nftables.SKELETON]


@pytest.mark.parametrize(("change", "kind", "text"), [
    (dict(port_forwards=[fwd(public_ip="203.0.113.99")]), "portforward", "not a public IP"),
    (dict(port_forwards=[fwd(protocol="sctp")]), "portforward", "protocol"),
    (dict(port_forwards=[fwd(public_port_start=0)]), "portforward", "outside"),
    (dict(port_forwards=[fwd(public_port_end=79)]), "portforward", "reversed"),
    (dict(port_forwards=[fwd(public_port_end=81)]), "portforward", "differ in length"),
    (dict(port_forwards=[fwd(private_ip="192.0.2.1")]), "portforward", "guest network"),
    (dict(port_forwards=[fwd(1), fwd(2)]), "portforward", "overlap"),
    (dict(port_forwards=[fwd(source_cidrs=["10.0.0.1/8"])]), "portforward", "10.0.0.1/8"),
    (dict(port_forwards=[fwd(id='x" ; flush ruleset')]), "portforward", "invalid ID"),
    (dict(ingress_rules=[pb.IngressRule(id="r", public_ip=PUB, protocol="gre")]),
     "firewall", "unknown protocol"),
    (dict(static_nats=[pb.StaticNatRule(id="n", public_ip=PUB, private_ip="10.10.0.5")],
          port_forwards=[fwd()]), "portforward", "static NAT"),
])
def test_verify_names_the_bad_object(change, kind, text) -> None:
    with pytest.raises(ConfigError) as err:
        nft_edge.verify(edge_config(**change))
    assert err.value.kind == kind or kind in str(err.value)
    assert text in str(err.value)
