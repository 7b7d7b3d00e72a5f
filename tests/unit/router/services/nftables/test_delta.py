"""The agent's edge delta model (pure; no root): after any sequence of
removes and adds, the index's elements equal what a full render of the
resulting config gives, the nft commands it emits turn the old elements into
the new ones, conflicts are refused, and the journal replays to the same
config."""

from __future__ import annotations

import random

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router.errors import ConfigError, StaleDelta
from router.services.base import Context
from router.services.nftables import counters as edge_counters
from router.services.nftables import edge as nft_edge
from router.services.nftables import journal as edge_journal
from router.services.nftables.delta import EdgeIndex
from tests.lib.routerconfigs import PUB, edge_config, fwd


def index_of(cfg: pb.RouterConfig) -> EdgeIndex:
    elements = nft_edge.elements(cfg)
    sets = set(nft_edge.SETS) | {f"allow_{n}" for n in range(33)}
    return EdgeIndex(cfg, {k: dict(v) for k, v in elements.items()}, sets)


def nonempty(elements: nft_edge.Elements) -> nft_edge.Elements:
    return {k: v for k, v in elements.items() if v}


def random_object(rng: random.Random, i: int) -> nft_edge.EdgeObject:
    kind = rng.choice(["pf", "pfrange", "in", "inrange", "icmp", "all", "eg"])
    cidrs = rng.choice([[], ["192.0.2.0/24"], ["198.51.100.0/24", "192.0.2.128/25"],
                        ["10.0.0.0/8"]])
    if kind in ("pf", "pfrange"):
        port = 1000 + i * 200
        n = 0 if kind == "pf" else 99
        return fwd(i, public_port_start=port, public_port_end=port + n,
                   private_port_start=port, private_port_end=port + n, source_cidrs=cidrs)
    if kind in ("in", "inrange"):
        lo = rng.randrange(1, 60000)
        return pb.IngressRule(id=f"fw{i}", public_ip=PUB, protocol=rng.choice(["tcp", "udp"]),
                              port_start=lo, port_end=lo + (0 if kind == "in" else 500),
                              cidrs=cidrs)
    if kind == "icmp":
        return pb.IngressRule(id=f"fw{i}", public_ip=PUB, protocol="icmp",
                              icmp_type=rng.choice([-1, 8]), icmp_code=-1, cidrs=cidrs)
    if kind == "all":
        return pb.IngressRule(id=f"fw{i}", public_ip=PUB, protocol="all", cidrs=cidrs)
    return pb.EgressRule(id=f"fw{i}", source_cidr="10.10.0.0/24", protocol="tcp",
                         port_start=443, port_end=rng.choice([443, 1000]), cidrs=cidrs)


def field(obj: nft_edge.EdgeObject) -> str:
    return nft_edge.config_field(obj)


@pytest.mark.parametrize("seed", range(6))
def test_random_changes_match_a_full_render(seed: int) -> None:
    rng = random.Random(seed)
    cfg = edge_config()
    for i in range(30):
        obj = random_object(rng, i)
        getattr(cfg, field(obj)).append(obj)
    index = index_of(cfg)
    live = {nft_edge.object_key(o): o for o in nft_edge.config_objects(cfg)
            if not isinstance(o, pb.PublicAddress)}
    nxt = 30
    for step in range(40):
        removed = set(rng.sample(sorted(live), k=min(len(live), rng.randrange(0, 3))))
        added = [random_object(rng, nxt + k) for k in range(rng.randrange(0, 3))]
        nxt += len(added)
        if rng.random() < 0.3 and live:  # an update: same ID, new content
            oid = rng.choice(sorted(live))
            old = live[oid]
            if isinstance(old, pb.PortForwardRule):
                new = pb.PortForwardRule()
                new.CopyFrom(old)
                new.private_port_start = new.private_port_end = 9999
                new.public_port_end = new.public_port_start
                added.append(new)
        before = {k: dict(v) for k, v in index.elements.items()}
        removed |= {nft_edge.object_key(o) for o in added if index.current(nft_edge.object_key(o))}
        index.verify(removed, added)
        commands = index.change(removed, added)
        index.edit_config(removed, added, cfg.generation + 1)
        for oid in removed:
            live.pop(oid, None)
        live.update({nft_edge.object_key(o): o for o in added})
        want = nft_edge.elements(index.cfg)
        assert nonempty(index.elements) == nonempty(want), f"step {step}"
        # The commands name exactly the keys that changed.
        for name in set(before) | set(want):
            gone = {k for k, v in before.get(name, {}).items() if want.get(name, {}).get(k) != v}
            for k in gone:
                assert k in commands
        assert {nft_edge.object_key(o) for o in nft_edge.config_objects(index.cfg)
                if not isinstance(o, pb.PublicAddress)} == set(live)


def test_an_element_shared_by_two_rules_stays_until_both_are_gone() -> None:
    rule = pb.IngressRule(id="fw1", public_ip=PUB, protocol="tcp", port_start=80, port_end=80)
    cfg = edge_config(port_forwards=[fwd(1)], ingress_rules=[rule])
    index = index_of(cfg)
    key = f"{PUB} . tcp . 80 . 0.0.0.0"
    assert index.change({("firewall", "fw1")}, []) == ""  # the forward still opens it
    assert key in index.elements["allow_0"]
    index.edit_config({("firewall", "fw1")}, [], 2)
    commands = index.change({("portforward", "pf1")}, [])
    assert f"delete element inet cloudnet allow_0 {{ {key} }}" in commands
    assert f"delete element inet cloudnet pf_dnat {{ {PUB} . tcp . 80 }}" in commands


def test_conflicts_are_refused_and_change_nothing() -> None:
    cfg = edge_config(port_forwards=[fwd(1, public_port_start=80, public_port_end=90,
                                         private_port_start=80, private_port_end=90)])
    index = index_of(cfg)
    before = {k: dict(v) for k, v in index.elements.items()}
    with pytest.raises(ConfigError, match="overlap port forward 'pf1'") as e:
        index.verify(set(), [fwd(2, public_port_start=85, public_port_end=85,
                                 private_port_start=85, private_port_end=85)])
    assert (e.value.kind, e.value.object_id) == ("portforward", "pf2")
    snat = pb.StaticNatRule(id="s1", public_ip=PUB, private_ip="10.10.0.9")
    with pytest.raises(ConfigError, match="has port forwards"):
        index.verify(set(), [snat])
    with pytest.raises(ConfigError, match="not on a guest network"):
        index.verify(set(), [fwd(3, private_ip="192.168.9.9", public_port_start=7,
                                 public_port_end=7)])
    # Replacing the forward itself is no conflict.
    index.verify({("portforward", "pf1")}, [fwd(1)])
    assert index.elements == before


def test_a_set_the_table_lacks_is_stale_not_half_applied() -> None:
    cfg = edge_config()
    index = EdgeIndex(cfg, nft_edge.elements(cfg), nft_edge.SETS)  # no allow_24 loaded
    with pytest.raises(StaleDelta):
        index.change(set(), [fwd(1, source_cidrs=["192.0.2.0/24"])])
    assert not index.parts.get(("portforward", "pf1"))


def test_journal_replays_to_the_same_config(tmp_path) -> None:
    cfg = edge_config(port_forwards=[fwd(1)])
    cfg.generation = 5
    journal = tmp_path / "edge-journal.pb"
    deltas = [
        epb.EdgeDelta(router_id="r", base_generation=5, generation=6,
                      port_forwards=[fwd(2, public_port_start=81, public_port_end=81)]),
        epb.EdgeDelta(router_id="r", base_generation=6, generation=7,
                      removed=[epb.EdgeObjectRef(kind="portforward", id="pf1")]),
        epb.EdgeDelta(router_id="r", base_generation=3, generation=4),  # older: skipped
    ]
    with open(journal, "ab") as f:
        for d in deltas:
            data = d.SerializeToString()
            f.write(len(data).to_bytes(4, "big") + data)
        f.write(b"\x00\x00\x01\x00torn")  # a torn last write
    out = edge_journal.replay(str(journal), cfg)
    assert out.generation == 7
    assert [f.id for f in out.port_forwards] == ["pf2"]


def test_counters_sum_a_rules_elements_and_skip_shared_first_packets() -> None:
    totals: dict = {}
    def elem(comment: str, packets: int) -> dict:
        return {"elem": {"val": "x", "comment": comment,
                         "counter": {"packets": packets, "bytes": packets * 100}}}
    edge_counters._count("pf_dnat", [elem("cn:portforward:a", 3), "v"], totals)
    edge_counters._count("pf_dnat", [elem("cn:portforward:a", 2), "v"], totals)
    edge_counters._count("allow_0", elem("cn:portforward:a", 1), totals)  # first packet again
    edge_counters._count("allow_0", elem("cn:firewall:b", 4), totals)
    edge_counters._count("fw_in", {"elem": {"val": "x", "comment": "other"}}, totals)
    assert totals == {("portforward", "a"): [5, 500], ("firewall", "b"): [4, 400]}


def test_journal_compaction_folds_deltas_into_config(tmp_path) -> None:
    import threading
    from types import SimpleNamespace

    cfg = edge_config(port_forwards=[fwd(1)])
    cfg.generation = 9
    ctx = Context(router_id="r", netns="cn-test-compact", state_dir=str(tmp_path),
                  fabric=None)  # type: ignore[arg-type]  # the journal needs no fabric
    running = SimpleNamespace(lock=threading.Lock(), config=cfg)
    journal = tmp_path / "edge-journal.pb"
    assert str(journal) == ctx.paths.edge_journal
    journal.write_bytes(b"\x00\x00\x00\x00")  # one (empty) delta
    edge_journal.compact(ctx, running)
    assert not journal.exists()
    written = pb.RouterConfig.FromString((tmp_path / "config.pb").read_bytes())
    assert written == cfg
    # A change while writing: the older snapshot is not swapped in.
    class Racing(SimpleNamespace):
        calls = 0

        @property
        def config(self):  # type: ignore[override]
            Racing.calls += 1
            c = pb.RouterConfig()
            c.CopyFrom(cfg)
            c.generation = 9 + Racing.calls  # a delta lands between the two reads
            return c

    journal.write_bytes(b"\x00\x00\x00\x00")
    edge_journal.compact(ctx, Racing(lock=threading.Lock()))
    assert journal.exists()
    assert pb.RouterConfig.FromString((tmp_path / "config.pb").read_bytes()).generation == 9


def test_journal_replays_a_ports_guest_metadata_in_place(tmp_path) -> None:
    cfg = edge_config()
    cfg.generation = 5
    cfg.guest_metadata.add(port_id="p1", ip="10.0.0.5", user_data=b"one")
    cfg.guest_metadata.add(port_id="p2", ip="10.0.0.6", user_data=b"two")
    journal = str(tmp_path / "edge-journal.pb")
    new = mpb.GuestMetadata(port_id="p2", ip="10.0.0.6", user_data=b"new", labels={"a": "b"})
    edge_journal.append(journal, epb.EdgeDelta(
        router_id="r", base_generation=5, generation=6, guest_metadata=[new],
        removed=[epb.EdgeObjectRef(kind="guest-metadata", id="p2")]))
    out = edge_journal.replay(journal, cfg)
    assert out.generation == 6
    assert list(out.guest_metadata) == [
        mpb.GuestMetadata(port_id="p1", ip="10.0.0.5", user_data=b"one"), new]
