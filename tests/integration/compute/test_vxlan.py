"""VXLAN fabric: two hosts, each with an underlay address in a namespace of
its own (joined by a veth "wire"), a Linux bridge per VNI. Two tenants with
the same CIDR on two VNIs are isolated; the underlay carries VXLAN with the
right VNIs and nothing else of the tenants."""

from __future__ import annotations

import subprocess

import pytest

from common.fabric.vxlan import VxlanFabric
from common.netns import remove_netns
from tests.lib.pkt import capture, send
from tests.lib.underlay import UL_A, UL_B, wire

pytestmark = pytest.mark.integration

VNI1, VNI2 = 301, 302


def ping(ns: str, dst: str, count: int = 2) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "busybox", "ping", "-c", str(count),
                           "-W", "1", dst], capture_output=True).returncode == 0


@pytest.fixture
def vxlan_hosts(uid):
    ul_a, ul_b = f"v{uid}-ula", f"v{uid}-ulb"
    a = VxlanFabric(f"v{uid[:4]}a", ul_a, UL_A, [UL_B])
    b = VxlanFabric(f"v{uid[:4]}b", ul_b, UL_B, [UL_A])
    guests: list[str] = []

    def guest(name: str, fabric: VxlanFabric, vni: int, ip: str, mac: str) -> str:
        ns = f"v{uid}-{name}"
        fabric.plug(name, vni, ns, "eth0", mac)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"], check=True)
        guests.append(ns)
        return ns

    try:
        wire(ul_a, ul_b)
        a.setup()
        b.setup()
        yield a, b, ul_a, guest
    finally:
        a.teardown()
        b.teardown()
        for ns in (*guests, ul_a, ul_b):
            remove_netns(ns)
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert f"v{uid[:4]}a" not in links
        assert f"v{uid[:4]}b" not in links


def test_vxlan_same_cidr_two_vnis_isolated_and_encapsulated(vxlan_hosts, tmp_path):
    from scapy.layers.vxlan import VXLAN

    a, b, ul_a, guest = vxlan_hosts
    macs = {"a1": "02:00:0b:00:01:01", "b1": "02:00:0b:00:01:02",
            "a2": "02:00:0b:00:02:01", "b2": "02:00:0b:00:02:02"}
    a1 = guest("a1", a, VNI1, "10.60.0.11", macs["a1"])
    guest("b1", b, VNI1, "10.60.0.12", macs["b1"])
    a2 = guest("a2", a, VNI2, "10.60.0.21", macs["a2"])
    guest("b2", b, VNI2, "10.60.0.22", macs["b2"])

    with capture(ul_a, "wire", str(tmp_path / "underlay.pcap")) as pkts:
        assert ping(a1, "10.60.0.12"), "same VNI across the underlay"
        assert ping(a2, "10.60.0.22"), "same VNI across the underlay"
        assert not ping(a1, "10.60.0.22", count=1), "other VNI, other host"
        assert not ping(a1, "10.60.0.21", count=1), "other VNI, same host"
        # A guest's own 802.1Q tag does not move it to another VNI.
        send(a1, "eth0", macs["a1"], [([VNI2], "TAGGED"), ([], "PLAIN")])

    inner = [p for p in pkts if p.haslayer(VXLAN)]
    assert inner, "VXLAN on the underlay"
    vnis = {p[VXLAN].payload.src: p[VXLAN].vni for p in inner
            if p[VXLAN].payload.src in macs.values()}
    assert vnis == {macs["a1"]: VNI1, macs["b1"]: VNI1, macs["a2"]: VNI2, macs["b2"]: VNI2}
    assert all(p["UDP"].dport == 4789 for p in inner)
    bare = [p.summary() for p in pkts if not p.haslayer(VXLAN) and p.src in macs.values()]
    assert not bare, f"tenant frames on the underlay without VXLAN: {bare}"
    # The tagged frame travels inside VNI1 only (it is VNI1's traffic), never VNI2.
    tagged = [p for p in inner if b"TAGGED" in bytes(p)]
    assert all(p[VXLAN].vni == VNI1 for p in tagged)
    plain = [p for p in inner if b"PLAIN" in bytes(p)]
    assert plain
    assert all(p[VXLAN].vni == VNI1 for p in plain)
