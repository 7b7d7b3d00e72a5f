"""OVS fabric: VLAN access ports isolate tenants, the trunk carries 802.1Q.

Two "hosts" (two OVS bridges, datapath_type=netdev) joined by a veth trunk;
guests are namespaces plugged as access ports. Both tenants use the same CIDR.
"""

from __future__ import annotations

import subprocess

import pytest

from common.fabric.ovs import OvsFabric, connect_trunk, disconnect_trunk
from common.netns import remove_netns
from tests.lib.pkt import capture, send

pytestmark = pytest.mark.integration

VLAN1, VLAN2 = 101, 102


def ping(ns: str, dst: str, count: int = 2) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "busybox", "ping", "-c", str(count),
                           "-W", "1", dst], capture_output=True).returncode == 0


@pytest.fixture
def two_hosts(host_services, uid):
    a, b = OvsFabric(f"t{uid}-a"), OvsFabric(f"t{uid}-b")
    trunk = (f"t{uid}-tra", f"t{uid}-trb")
    guests: dict[str, tuple[str, str]] = {}
    a.setup()
    b.setup()
    connect_trunk(a, b, *trunk)

    def guest(name: str, fabric: OvsFabric, vlan: int, ip: str, mac: str) -> str:
        ns = f"t{uid}-{name}"
        fabric.plug(name, vlan, ns, "eth0", mac)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"], check=True)
        guests[name] = (ns, mac)
        return ns

    try:
        yield a, b, trunk, guest
    finally:
        disconnect_trunk(a, b, *trunk)
        a.teardown()
        b.teardown()
        for ns, _ in guests.values():
            remove_netns(ns)
        out = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
        assert f"t{uid}-" not in out
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert f"t{uid}-" not in links


def test_same_cidr_two_vlans_isolated_and_tagged_on_trunk(two_hosts, tmp_path):
    a, b, trunk, guest = two_hosts
    macs = {"a1": "02:00:0a:00:01:01", "b1": "02:00:0a:00:01:02",
            "a2": "02:00:0a:00:02:01", "b2": "02:00:0a:00:02:02"}
    a1 = guest("a1", a, VLAN1, "10.50.0.11", macs["a1"])
    guest("b1", b, VLAN1, "10.50.0.12", macs["b1"])
    a2 = guest("a2", a, VLAN2, "10.50.0.21", macs["a2"])
    guest("b2", b, VLAN2, "10.50.0.22", macs["b2"])

    with capture(None, trunk[0], str(tmp_path / "trunk.pcap")) as pkts:
        assert ping(a1, "10.50.0.12"), "same VLAN across the trunk"
        assert ping(a2, "10.50.0.22"), "same VLAN across the trunk"
        assert not ping(a1, "10.50.0.22", count=1), "other VLAN, other host"
        assert not ping(a1, "10.50.0.21", count=1), "other VLAN, same host"

    tenant_frames = [p for p in pkts if p.src in macs.values()]
    assert tenant_frames
    vids = {p.src: p["Dot1Q"].vlan for p in tenant_frames if p.haslayer("Dot1Q")}
    untagged = [p.summary() for p in tenant_frames if not p.haslayer("Dot1Q")]
    assert not untagged, f"untagged tenant frames on the trunk: {untagged}"
    assert vids == {macs["a1"]: VLAN1, macs["b1"]: VLAN1, macs["a2"]: VLAN2,
                    macs["b2"]: VLAN2}


TAGGINGS = ([VLAN2], [VLAN1, VLAN2], [VLAN2, VLAN2], [VLAN2, VLAN1])


def test_guest_tagged_frames_never_reach_another_vlan(two_hosts, tmp_path):
    """A guest's own 802.1Q tag (VLAN hopping, double tagging) is dropped at its port."""
    a, b, trunk, guest = two_hosts
    a1 = guest("a1", a, VLAN1, "10.50.0.11", "02:00:0a:00:01:01")
    a2 = guest("a2", a, VLAN2, "10.50.0.21", "02:00:0a:00:02:01")
    b2 = guest("b2", b, VLAN2, "10.50.0.22", "02:00:0a:00:02:02")
    markers = [f"HOP-{'-'.join(map(str, tags))}" for tags in TAGGINGS]
    with capture(a2, "eth0", str(tmp_path / "a2.pcap")) as on_a2, \
            capture(b2, "eth0", str(tmp_path / "b2.pcap")) as on_b2, \
            capture(None, trunk[0], str(tmp_path / "trunk.pcap")) as on_trunk:
        # The same frame untagged does cross the trunk (on VLAN1): the sender works.
        send(a1, "eth0", "02:00:0a:00:01:01",
             [*zip(TAGGINGS, markers, strict=True), ([], "PLAIN")])

    def with_marker(pkts, m):
        return [p for p in pkts if m.encode() in bytes(p)]

    for marker in markers:
        assert not with_marker(on_a2, marker), marker
        assert not with_marker(on_b2, marker), marker
        assert not with_marker(on_trunk, marker), marker
    plain = with_marker(on_trunk, "PLAIN")
    assert plain
    assert all(p["Dot1Q"].vlan == VLAN1 for p in plain)
    assert not with_marker(on_b2, "PLAIN")


def test_an_end_left_behind_by_a_plug_that_died_is_replaced(two_hosts) -> None:
    """A plug that died between making the pair and renaming the namespace's
    end left that end, under its temporary name, in the namespace: the next
    plug removes it and plugs, not refuses forever."""
    a, _, _, guest = two_hosts
    ns = guest("left", a, VLAN1, "10.0.0.7", "02:00:00:00:bb:07")
    a.unplug("left")
    leftover = a.device_name("again")[:13] + "-p"
    subprocess.run(["ip", "-n", ns, "link", "add", leftover, "type", "veth", "peer", "name",
                    "other0"], check=True)
    a.plug("again", VLAN1, ns, "eth1", "02:00:00:00:bb:08")
    here = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True,
                          check=True).stdout
    assert " eth1@" in here
    assert leftover not in here
    assert "02:00:00:00:bb:08" in here
    a.unplug("again")
