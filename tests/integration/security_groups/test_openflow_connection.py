"""The OVS port filters' kept OpenFlow connection (compute.openflow), seen
from the switch: one connection to the bridge's management socket carries
every change, and a bundle the switch refuses changes no flow and leaves
the connection usable. The flows' effect on traffic is test_port_filters'."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from common.fabric.base import FabricError
from common.fabric.ovs_firewall import OvsFirewall, Plugged
from common.fabric.port_firewall import Port, Rule
from compute.openflow import Connection, rundir

pytestmark = pytest.mark.integration

BRIDGE = f"ofc{os.getpid() % 100000}"
GID = "00000000-0000-4000-8000-0000000000aa"


class FlowsOnly(OvsFirewall):
    """Ports numbered by name: the flows are what is under test here."""

    def plugged_many(self, devices: Sequence[str]) -> dict[str, Plugged]:
        return {d: Plugged(int(d.removeprefix("p")) + 1, 100) for d in devices}


@pytest.fixture(scope="module")
def bridge(host_services: None) -> Iterator[str]:
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", BRIDGE, "--", "set", "bridge",
                    BRIDGE, "datapath_type=netdev"], check=True)
    yield BRIDGE
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE], check=True)


def flows(bridge: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow14", "--no-stats", "dump-flows", bridge],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.strip() for line in out.splitlines()[1:])


def switch_side_peers(bridge: str) -> set[int]:
    """The socket inodes of this process that ovs-vswitchd holds an accepted
    connection on the bridge's management socket from."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(int(link[8:-1]))
    out = subprocess.run(["ss", "-xn"], capture_output=True, text=True, check=True).stdout
    mgmt = os.path.join(rundir(), f"{bridge}.mgmt")
    peers = set()
    for line in out.splitlines():
        cols = line.split()
        if mgmt in cols:
            peers.add(int(cols[-1]))
    return peers & mine


def port(i: int, *extra: Rule) -> Port:
    return Port(f"p{i}", f"02:00:00:00:01:{i:02x}", (f"10.7.0.{i + 10}",), (),
                (Rule("egress"), Rule("ingress", protocol="tcp", port_min=22,
                                      remote_group_id=GID), *extra))


def test_one_connection_carries_every_change(bridge: str) -> None:
    conn = Connection(bridge)
    fw = FlowsOnly(bridge, flows=conn)
    try:
        fw.setup()
        ports = [port(i) for i in range(5)]
        fw.apply(ports, {GID: ["10.7.0.10"]})
        first = switch_side_peers(bridge)
        assert len(first) == 1, "one connection to the switch after the first change"
        for k in range(10):
            ports[2] = port(2, Rule("ingress", protocol="udp", port_min=1000 + k))
            fw.apply(ports, {GID: ["10.7.0.10", f"10.7.1.{k}"]})
        assert switch_side_peers(bridge) == first, "the same connection, not a new one"
        installed = flows(bridge)
        assert any("tp_dst=1009" in f and "reg7=0x3" in f for f in installed)
        assert not any("tp_dst=1008" in f for f in installed)
        assert any("nw_src=10.7.1.9" in f for f in installed)
    finally:
        fw.close()
    assert switch_side_peers(bridge) == set()


def test_a_refused_bundle_changes_no_flow_and_says_why(bridge: str) -> None:
    conn = Connection(bridge)
    fw = FlowsOnly(bridge, flows=conn)
    try:
        fw.setup()
        fw.apply([port(7)], {GID: []})
        before = flows(bridge)
        # The first flow is fine; the switch refuses the second (ct() needs
        # an IP match), so neither may be installed.
        with pytest.raises(FabricError, match=r"refused the flow 2: .*MATCH_INCONSISTENT"):
            fw.run(["add table=71,priority=5,in_port=40,actions=drop",
                    "add table=71,priority=5,in_port=41,actions=ct(commit,zone=1)"])
        assert flows(bridge) == before
        # The connection is still the one in use, and still works.
        peers = switch_side_peers(bridge)
        fw.apply([port(7, Rule("ingress", protocol="udp", port_min=53))], {GID: []})
        assert switch_side_peers(bridge) == peers
        assert any("tp_dst=53" in f for f in flows(bridge))
    finally:
        fw.close()


def test_a_connection_the_switch_closed_is_opened_again(bridge: str) -> None:
    conn = Connection(bridge)
    try:
        conn.send_lines(["add table=90,priority=5,in_port=50,actions=drop"])
        (old,) = switch_side_peers(bridge)
        assert conn._sock is not None
        # What a restarted ovs-vswitchd looks like from here: the peer is gone.
        conn._sock.shutdown(2)
        conn.send_lines(["add table=90,priority=5,in_port=51,actions=drop"])
        (new,) = switch_side_peers(bridge)
        assert new != old
        assert sum("in_port=5" in f and "table=90" in f for f in flows(bridge)) == 2
    finally:
        conn.close()
