"""A known port's rule change on the Linux-bridge fabric goes to the kernel as
one netlink batch (common.nft_rules: rules compiled by libnftables in a
private scratch namespace, then flush + add in the real one), without
libnftables reading the host's chains. Seen from nft: the chains are what
libnftables itself writes for the same port; a batch the kernel refuses
changes nothing. Traffic through such chains: test_port_filters."""

from __future__ import annotations

import os
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
    return "".join(libnft.run(ns, f"list chain {family} {table} {port_chain(kind, dev)}\n")
                   for family, table, kind in (("bridge", L2_TABLE, "l2"),
                                               ("inet", SG_TABLE, "eg"),
                                               ("inet", SG_TABLE, "in")))


class NoLibnftables:
    def run(self, commands: str) -> str:
        raise AssertionError(f"libnftables used in the host's namespace: {commands[:80]}")


def test_a_rule_change_is_the_chains_libnftables_writes_without_it(netns: str) -> None:
    fw = PortFirewall(netns)
    fw.setup()
    ports = [port(i) for i in range(20)]
    fw.apply(ports, {GID: ["10.9.0.10"]})
    changed = port(3, Rule("ingress", protocol="udp", port_min=1000, port_max=2000,
                           remote_cidr="10.1.0.0/16"),
                   Rule("ingress", "ipv6", protocol="icmp", icmp_type=128, icmp_code=0),
                   Rule("ingress", protocol="47"))
    kept = fw._nft
    fw._nft = NoLibnftables()  # type: ignore[assignment]
    try:
        fw.set_port(changed)
        ports[3] = changed
        ports[4] = port(4, Rule("ingress", protocol="tcp", port_min=8080))
        fw.apply(ports, {GID: ["10.9.0.10", "10.9.0.11"]})
    finally:
        fw._nft = kept
    by_netlink = chains(netns, "x3"), chains(netns, "x4")
    assert "udp dport 1000-2000" in by_netlink[0]
    assert "tcp dport 8080" in by_netlink[1]
    assert "10.9.0.11" in libnft.run(netns, f"list set inet {SG_TABLE} "
                                     f"{group_set(GID, 'ipv4')}\n")
    # The same ports through libnftables' own path: the same chains.
    for p in (changed, ports[4]):
        fw.run(fw._port_commands(p))
    assert (chains(netns, "x3"), chains(netns, "x4")) == by_netlink
    fw.apply([], {})


def test_a_refused_batch_changes_nothing(netns: str) -> None:
    fw = PortFirewall(netns)
    fw.setup()
    ports = [port(i) for i in range(3)]
    fw.apply(ports, {GID: ["10.9.0.10"]})
    before = chains(netns, "x1")
    # x2's ingress chain goes behind the firewall's back: a batch that
    # refills it is refused by the kernel, and with it the rest of the batch.
    mark = fw._marks["x2"]
    libnft.run(netns, f"delete element inet {SG_TABLE} ingress {{ {mark} }}\n"
                      f"delete chain inet {SG_TABLE} {port_chain('in', 'x2')}\n")
    with pytest.raises(FabricError, match="ENOENT"):
        fw.apply([ports[0], port(1, Rule("ingress", protocol="udp", port_min=53)),
                  port(2, Rule("ingress", protocol="udp", port_min=53))],
                 {GID: ["10.9.0.10", "10.9.0.99"]})
    assert chains(netns, "x1") == before
    members = libnft.run(netns, f"list set inet {SG_TABLE} {group_set(GID, 'ipv4')}\n")
    assert "10.9.0.99" not in members
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
