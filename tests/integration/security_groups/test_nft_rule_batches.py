"""A known port's change on the Linux-bridge fabric goes to the kernel as one
netlink batch, without libnftables reading the host's chains: its rules as
elements of the rule sets (common.fabric.sg_elements), its port-security
chain (if that changed) compiled by libnftables in a private scratch
namespace (common.nft_rules), then flush + add in the real one. Seen from
nft: the elements and the chain are what libnftables itself writes for the
same port; a batch the kernel refuses changes nothing. Traffic through
them: test_port_filters."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from common import libnft
from common.fabric.base import FabricError
from common.fabric.port_firewall import (
    L2_TABLE,
    SG_TABLE,
    Port,
    PortFirewall,
    Rule,
    group_set,
    port_chain,
)
from common.fabric.sg_elements import group_rule_set
from common.netns import ensure_netns, remove_netns

pytestmark = pytest.mark.integration

NS = f"nrb{os.getpid() % 100000}"
GID = "00000000-0000-4000-8000-0000000000aa"
BASE = (Rule("egress"), Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GID))


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    ensure_netns(NS)
    yield NS
    remove_netns(NS)


def port(i: int, *extra: Rule) -> Port:
    return Port(f"x{i}", f"02:00:09:00:00:{i:02x}", (f"10.9.0.{i + 10}", f"2001:db8::{i + 10}"),
                (("10.6.0.0/24", "02:00:00:00:00:77"),), (*BASE, *extra))


def chains(ns: str, dev: str) -> str:
    return libnft.run(ns, f"list chain bridge {L2_TABLE} {port_chain('l2', dev)}\n")


RULE_SETS = ("c4x_in", "c4y_in", "c6x_in", "c6y_in", "c4x_eg", "c4y_eg",
             group_rule_set(GID, 4, "x", "ingress"), group_rule_set(GID, 4, "y", "ingress"))


def rule_sets(ns: str) -> str:
    """Each rule set's elements as nft lists them, sorted (an interval set of
    concatenations lists them in the order they came)."""
    out = []
    for name in RULE_SETS:
        text = libnft.run(ns, f"list set inet {SG_TABLE} {name}\n")
        listed = re.search(r"elements = \{([^}]*)\}", text)
        elements = sorted(e.strip() for e in listed[1].split(",")) if listed else []
        out.append(f"{name}: {', '.join(elements)}")
    return "\n".join(out) + "\n"


class NoLibnftables:
    def run(self, commands: str) -> str:
        raise AssertionError(f"libnftables used in the host's namespace: {commands[:80]}")


def test_a_change_is_the_elements_and_chain_libnftables_writes_without_it(netns: str
                                                                          ) -> None:
    fw = PortFirewall(netns)
    fw.setup()
    ports = [port(i) for i in range(20)]
    fw.apply(ports, {GID: ["10.9.0.10"]})
    changed = port(3, Rule("ingress", protocol="udp", port_min=1000, port_max=2000,
                           remote_cidr="10.1.0.0/16"),
                   Rule("ingress", protocol="udp", port_min=1500, port_max=3000,
                        remote_cidr="10.1.2.0/24"),
                   Rule("ingress", "ipv6", protocol="icmp", icmp_type=128, icmp_code=0),
                   Rule("ingress", protocol="47"),
                   Rule("ingress", protocol="udp", remote_group_id=GID))
    moved = Port("x4", "02:00:09:00:00:04", ("10.9.0.99",), (),
                 (*BASE, Rule("ingress", protocol="tcp", port_min=8080)))
    kept = fw._nft
    fw._nft = NoLibnftables()  # type: ignore[assignment]
    try:
        fw.set_port(changed)
        ports[3] = changed
        ports[4] = moved
        fw.apply(ports, {GID: ["10.9.0.10", "10.9.0.11"]})
    finally:
        fw._nft = kept
    by_netlink = rule_sets(netns), chains(netns, "x4")
    # Made disjoint: the overlapping ranges' union.
    assert "udp . 0-65535 . 1000-2000 . 10.1.0.0/16" in by_netlink[0]
    assert "udp . 0-65535 . 2001-3000 . 10.1.2.0/24" in by_netlink[0]
    assert "1500" not in by_netlink[0]
    assert "tcp . 0-65535 . 8080 . 0.0.0.0/0" in by_netlink[0]
    assert "10.9.0.99" in by_netlink[1]
    assert "10.9.0.14" not in by_netlink[1]
    assert "10.9.0.11" in libnft.run(netns, f"list set inet {SG_TABLE} "
                                     f"{group_set(GID, 'ipv4')}\n")
    # The same ports through libnftables' own path: the same elements and chain.
    for p in (changed, moved):
        fw.run(fw._element_commands(None, p, p.device))
    assert rule_sets(netns) != by_netlink[0]
    for p in (changed, moved):
        fw.run(fw._element_commands(p, None, p.device))
    fw.run(["flush chain bridge cloudnet_l2 " + port_chain("l2", "x4")])
    fw._ports["x4"] = port(4)
    fw.run(fw._port_commands(moved))
    fw._ports["x4"] = moved
    assert (rule_sets(netns), chains(netns, "x4")) == by_netlink
    fw.apply([], {})


def test_a_refused_batch_changes_nothing(netns: str) -> None:
    fw = PortFirewall(netns)
    fw.setup()
    ports = [port(i) for i in range(3)]
    fw.apply(ports, {GID: ["10.9.0.10"]})
    before = rule_sets(netns)
    # x2's egress rule goes behind the firewall's back: a batch that deletes
    # it is refused by the kernel, and with it the rest of the batch.
    libnft.run(netns, f'delete element inet {SG_TABLE} c4y_eg {{ "x2" . 0-255 . 0.0.0.0/0 }}\n')
    with pytest.raises(FabricError, match="ENOENT"):
        fw.apply([ports[0], port(1, Rule("ingress", protocol="udp", port_min=53)),
                  Port("x2", ports[2].mac, ports[2].ips, ports[2].pairs, BASE[1:])],
                 {GID: ["10.9.0.10", "10.9.0.99"]})
    assert "udp" not in rule_sets(netns)
    assert rule_sets(netns) == before.replace(', "x2" . 0-255 . 0.0.0.0/0', "")
    members = libnft.run(netns, f"list set inet {SG_TABLE} {group_set(GID, 'ipv4')}\n")
    assert "10.9.0.99" not in members
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)


def test_a_restarted_agent_leaves_only_its_own_elements(netns: str) -> None:
    """A new PortFirewall (the agent restarted) on a table an earlier one
    filled: its first change empties the rule sets and the groups' sets in
    the same transaction, so elements cut differently before (or of rules
    and members gone meanwhile) neither stay nor make the kernel refuse the
    new ones as overlapping."""
    before = PortFirewall(netns)
    before.setup()
    before.apply([port(1, Rule("ingress", protocol="tcp", port_min=20, port_max=30)),
                  port(2)], {GID: ["10.9.0.10", "10.9.0.77"]})
    after = PortFirewall(netns)
    after.setup()
    after.apply([port(1, Rule("ingress", protocol="tcp", port_min=25, port_max=40))],
                {GID: ["10.9.0.10"]})
    sets = rule_sets(netns)
    assert "tcp . 0-65535 . 25-40 . 0.0.0.0/0" in sets
    assert "20-30" not in sets
    assert '"x2"' not in sets
    members = libnft.run(netns, f"list set inet {SG_TABLE} {group_set(GID, 'ipv4')}\n")
    assert "10.9.0.77" not in members
    ports = libnft.run(netns, f"list set inet {SG_TABLE} eg_ports\n")
    assert '"x1"' in ports
    assert '"x2"' not in ports
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)


def sets_in_table(ns: str, gid: str) -> list[str]:
    """The names of a remote group's sets that the table holds."""
    names = [group_set(gid, e, n) for e in ("ipv4", "ipv6") for n in (False, True)]
    names += [group_rule_set(gid, v, k, d) for v in (4, 6) for k in ("x", "y")
              for d in ("egress", "ingress")]
    listed = libnft.run(ns, "list sets inet\n")
    return [n for n in names if re.search(rf"\bset {n} \{{", listed)]


OTHER = "00000000-0000-4000-8000-0000000000bb"


def test_a_group_no_rule_names_any_more_leaves_the_table(netns: str) -> None:
    """A remote group's sets and lookups go with the last rule (and member
    list) naming it, and come back with the next one; the other group's
    stay and still match."""
    fw = PortFirewall(netns)
    fw.setup()
    other = Rule("ingress", protocol="udp", remote_group_id=OTHER)
    fw.apply([port(1, other), port(2)], {GID: ["10.9.0.10"], OTHER: ["10.9.0.50"]})
    assert len(sets_in_table(netns, GID)) == 12
    plain = Port("x2", port(2).mac, port(2).ips, port(2).pairs, (Rule("egress"),))
    fw.apply([Port("x1", port(1).mac, port(1).ips, port(1).pairs, (Rule("egress"), other)),
              plain], {OTHER: ["10.9.0.50"]})
    assert sets_in_table(netns, GID) == []
    assert len(sets_in_table(netns, OTHER)) == 12
    lookups = libnft.run(netns, f"list chain inet {SG_TABLE} in_groups\n")
    assert group_set(OTHER, "ipv4") in lookups
    assert group_set(GID, "ipv4") not in lookups
    # Named again: back, with its members.
    fw.apply([port(1, other), plain], {GID: ["10.9.0.12"], OTHER: ["10.9.0.50"]})
    assert len(sets_in_table(netns, GID)) == 12
    assert "10.9.0.12" in libnft.run(netns, f"list set inet {SG_TABLE} "
                                     f"{group_set(GID, 'ipv4')}\n")
    assert group_set(GID, "ipv4") in libnft.run(netns, f"list chain inet {SG_TABLE} in_groups\n")
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)


def test_a_restarted_agent_removes_the_sets_of_groups_no_longer_named(netns: str) -> None:
    """Groups an earlier agent made that the new agent's first push does not
    name (their rules went while it was down) leave the table."""
    before = PortFirewall(netns)
    before.setup()
    before.apply([port(1)], {GID: ["10.9.0.10"]})
    after = PortFirewall(netns)
    after.setup()
    after.apply([Port("x1", port(1).mac, port(1).ips, port(1).pairs, (Rule("egress"),))], {})
    assert sets_in_table(netns, GID) == []
    assert '"x1"' in libnft.run(netns, f"list set inet {SG_TABLE} eg_ports\n")
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
