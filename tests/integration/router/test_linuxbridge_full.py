"""A Linux bridge takes 1,023 ports (the kernel's BR_MAX_PORTS): one more
router interface on that segment is refused with an error that says so, and
leaves no half-made veth pair behind (in the fabric or the router's namespace).
Seen in the control-plane bench: 1,100 routers on one provider segment, each
refused router retried with the kernel's bare "Exchange full"."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from common.fabric.base import FabricError
from common.fabric.linuxbridge import MAX_BRIDGE_PORTS, LinuxBridgeFabric
from common.netns import ensure_netns, remove_netns

SEGMENT = 7


def links(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@pytest.fixture
def fabric() -> Iterator[tuple[LinuxBridgeFabric, str]]:
    tag = f"{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
    fab = LinuxBridgeFabric(f"lbfull{tag}-fab")
    target = f"lbfull{tag}-rt"
    fab.setup()
    ensure_netns(target)
    try:
        yield fab, target
    finally:
        remove_netns(target)
        fab.teardown()


def test_a_full_bridge_refuses_one_more_port_by_name_and_leaves_nothing(
        fabric: tuple[LinuxBridgeFabric, str]) -> None:
    fab, target = fabric
    fab.plug("lbf-first", SEGMENT, target, "eth0", "02:00:00:00:07:01")
    bridge = fab.bridge_name(SEGMENT)
    batch = "".join(f"link add lbf{i} type veth peer name lbf{i}p\n"
                    f"link set lbf{i} master {bridge} up\n"
                    for i in range(MAX_BRIDGE_PORTS - 1))
    subprocess.run(["ip", "-n", fab.netns, "-batch", "-"], input=batch, text=True,
                   check=True, capture_output=True)
    before_fabric, before_target = links(fab.netns), links(target)
    with pytest.raises(FabricError, match=f"bridge {bridge} is full") as refused:
        fab.plug("lbf-last", SEGMENT, target, "eth1", "02:00:00:00:07:02")
    assert f"{MAX_BRIDGE_PORTS} ports" in str(refused.value)
    assert links(fab.netns) == before_fabric
    assert links(target) == before_target
