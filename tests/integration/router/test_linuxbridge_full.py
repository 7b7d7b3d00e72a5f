"""A Linux bridge takes 1,023 ports (the kernel's BR_MAX_PORTS). A segment
with more grows overflow bridges chained to its first: the port past the
limit is plugged and reaches a port of the first bridge. A segment at its
bridges' limit refuses one more port by name and leaves no half-made veth
pair behind (in the fabric or the router's namespace). Seen in the
control-plane bench: 1,100 routers on one provider segment, each refused
router retried with the kernel's bare "Exchange full"."""

from __future__ import annotations

import subprocess

import pytest

from common.fabric.base import FabricError
from common.fabric.linuxbridge import MAX_BRIDGE_PORTS, SPARE_PORTS, LinuxBridgeFabric

pytestmark = pytest.mark.integration

SEGMENT = 7


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def links(netns: str) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0]
            for line in ip("-n", netns, "-o", "link", "show").splitlines()]


def master(netns: str, dev: str) -> str:
    out = ip("-n", netns, "-o", "link", "show", dev)
    return out.split(" master ")[1].split()[0] if " master " in out else ""


def fill(fab: LinuxBridgeFabric, count: int) -> None:
    """``count`` more ports on the segment's first bridge, by hand (fast)."""
    bridge = fab.bridge_name(SEGMENT)
    batch = "".join(f"link add lbf{i} type veth peer name lbf{i}p\n"
                    f"link set lbf{i} master {bridge} up\n" for i in range(count))
    subprocess.run(["ip", "-n", fab.netns, "-batch", "-"], input=batch, text=True,
                   check=True, capture_output=True)


def test_a_segment_past_one_bridge_grows_another_and_a_segment_at_its_limit_refuses(
        fabric_namespaces: tuple[str, list[str]]) -> None:
    """One fill of a bridge (1,000 veth pairs) for both halves: it costs the
    kernel's RTNL lock, which the tests beside this one need too."""
    fabric, (a, b, c) = fabric_namespaces
    fab = LinuxBridgeFabric(fabric)
    root = fab.bridge_name(SEGMENT)
    fab.plug("lbf-first", SEGMENT, a, "eth0", "02:00:00:00:07:01")
    # The first bridge numbered up to just below the spare ports, by hand;
    # then by the fabric, which links the next bridge while there is room.
    fill(fab, MAX_BRIDGE_PORTS - SPARE_PORTS - 2)
    for i in range(SPARE_PORTS + 4):
        fab.plug(f"lbf-x{i}", SEGMENT, c, f"e{i}", f"02:00:00:00:08:{i:02x}")
    assert master(fabric, f"{root}.1u") == f"{root}.1"
    assert master(fabric, f"{root}.1d") == root
    assert {master(fabric, f"lbf-x{i}") for i in range(SPARE_PORTS + 4)} == {root, f"{root}.1"}

    fab.plug("lbf-last", SEGMENT, b, "eth0", "02:00:00:00:07:02")
    assert master(fabric, "lbf-last") == f"{root}.1"
    # Plugged again as it is: left alone (its bridge is the segment's).
    index = ip("-n", fabric, "-o", "link", "show", "lbf-last").split(":")[0]
    fab.plug("lbf-last", SEGMENT, b, "eth0", "02:00:00:00:07:02")
    assert ip("-n", fabric, "-o", "link", "show", "lbf-last").split(":")[0] == index

    ip("-n", a, "addr", "add", "10.77.0.1/24", "dev", "eth0")
    ip("-n", b, "addr", "add", "10.77.0.2/24", "dev", "eth0")
    ip("netns", "exec", a, "busybox", "ping", "-c", "1", "-W", "5", "10.77.0.2")

    ports = fab.ports()
    assert {"lbf-first", "lbf-last", "lbf-x0"} <= ports
    assert not {p for p in ports if p.startswith("br-")}
    fab.unplug("lbf-last")
    assert "lbf-last" not in links(fabric)
    assert "eth0" not in links(b)
    with pytest.raises(FabricError, match="are the fabric's own"):
        fab.plug("br-mine", SEGMENT, b, "eth0", "02:00:00:00:07:03")

    # The same segment where one bridge is all it may have: its first is full
    # (its ports and its link to the next), one more port is refused by name
    # and leaves no half-made veth pair behind.
    one_bridge = LinuxBridgeFabric(fabric, max_bridges=1)
    before_fabric, before_target = links(fabric), links(b)
    with pytest.raises(FabricError, match=r"its 1 bridges .* are full") as refused:
        one_bridge.plug("lbf-over", SEGMENT, b, "eth1", "02:00:00:00:07:04")
    assert f"{MAX_BRIDGE_PORTS} ports each" in str(refused.value)
    assert links(fabric) == before_fabric
    assert links(b) == before_target


def test_an_end_left_behind_by_a_plug_that_died_is_replaced(
        fabric_namespaces: tuple[str, list[str]]) -> None:
    """A plug that died between making the pair and renaming the router's
    end left that end, under its temporary name, in the router's
    namespace: the next plug removes it and plugs, not refuses forever."""
    fabric, (target, _, _) = fabric_namespaces
    fab = LinuxBridgeFabric(fabric)
    fab.setup()
    ip("-n", target, "link", "add", "lbleft0-p", "type", "veth", "peer", "name", "other0")
    fab.plug("lbleft0", SEGMENT, target, "eth1", "02:00:00:00:aa:01")
    here = links(target)
    assert "eth1" in here
    assert "lbleft0-p" not in here
    assert "02:00:00:00:aa:01" in ip("-n", target, "-o", "link", "show", "eth1")
    assert master(fabric, "lbleft0") == fab.bridge_name(SEGMENT)
