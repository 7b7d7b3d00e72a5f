"""The raw rtnetlink client against the kernel, each answer compared with
what iproute2's ``ip`` shows: links (veth pairs made across namespaces in
one request, bridges, bridge ports and their numbers), addresses of both
families, routes, and the kernel's refusals as errno values."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from common import netlink
from common.rtnl import RouteInfo, Rtnl

pytestmark = pytest.mark.integration


@pytest.fixture
def two() -> Iterator[tuple[str, str]]:
    names = (f"rt{uuid.uuid4().hex[:8]}", f"rt{uuid.uuid4().hex[:8]}")
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def test_a_veth_pair_is_made_across_namespaces_in_one_request(two: tuple[str, str]) -> None:
    here, there = two
    with Rtnl(here) as sock:
        sock.add_veth("fab0", "guest-tmp", mtu=1450, peer_mac="02:00:00:aa:bb:01",
                      peer_netns=there)
        fab = sock.link(name="fab0")
        assert fab is not None
        assert fab.kind == "veth"
        assert fab.mtu == 1450
        assert not fab.up
        # The peer went straight to the other namespace: not here.
        assert sock.link(name="guest-tmp") is None
        with pytest.raises(OSError, match="File exists") as made_twice:
            sock.add_veth("fab0", "other-tmp")
        assert made_twice.value.errno == errno.EEXIST
    (peer,) = ip_json(there, "link", "show", "guest-tmp")
    assert (peer["address"], peer["mtu"]) == ("02:00:00:aa:bb:01", 1450)
    with Rtnl(there) as sock:
        guest = sock.link(name="guest-tmp")
        assert guest is not None
        sock.set_link(guest.index, name="eth0", up=True)  # renamed and up in one request
        assert sock.link(index=guest.index) == sock.link(name="eth0")
    (eth0,) = ip_json(there, "link", "show", "eth0")
    assert "UP" in eth0["flags"]


def test_bridge_ports_are_enslaved_and_numbered(two: tuple[str, str]) -> None:
    here, _ = two
    with Rtnl(here) as sock:
        sock.add_bridge("br-t")
        bridge = sock.link(name="br-t")
        assert bridge is not None
        assert bridge.kind == "bridge"
        numbers = []
        for i in range(3):
            sock.add_veth(f"p{i}", f"q{i}")
            port = sock.link(name=f"p{i}")
            assert port is not None
            sock.set_link(port.index, master=bridge.index, up=True)
            port = sock.link(index=port.index)
            assert port is not None
            assert port.master == bridge.index
            assert port.up
            numbers.append(port.port_no)
    (br,) = ip_json(here, "link", "show", "br-t")
    assert br["linkinfo"]["info_data"]["stp_state"] == 0
    assert br["linkinfo"]["info_data"]["forward_delay"] == 0
    kernel = [ip_json(here, "link", "show", f"p{i}")[0]["linkinfo"]["info_slave_data"]["no"]
              for i in range(3)]
    assert numbers == [int(str(n), 16) for n in kernel]
    assert len(set(numbers)) == 3
    with Rtnl(here) as sock:
        names = {link.name for link in sock.links()}
        assert {"lo", "br-t", "p0", "q0", "p2", "q2"} <= names
        sock.delete_link(sock.link(name="p1").index)  # type: ignore[union-attr]
        assert sock.link(name="q1") is None  # the pair goes together
        with pytest.raises(OSError, match="No such device") as gone:
            sock.delete_link(99999)
        assert gone.value.errno == errno.ENODEV


def test_addresses_and_routes_of_both_families(two: tuple[str, str]) -> None:
    here, _ = two
    with Rtnl(here) as sock:
        sock.add_veth("a0", "a1")
        link = sock.link(name="a0")
        assert link is not None
        sock.set_link(link.index, up=True)
        sock.set_link(sock.link(name="a1").index, up=True)  # type: ignore[union-attr]
        v4 = ipaddress.IPv4Interface("10.77.0.1/24")
        v6 = ipaddress.IPv6Interface("fd00:77::1/64")
        sock.add_address(link.index, v4)
        sock.add_address(link.index, v6, nodad=True)
        with pytest.raises(OSError, match="File exists") as twice:
            sock.add_address(link.index, v4)
        assert twice.value.errno == errno.EEXIST
        assert sock.addresses(socket.AF_INET, link.index) == [v4]
        assert v6 in sock.addresses(socket.AF_INET6, link.index)
        via = RouteInfo("10.88.0.0", 16, "10.77.0.9", link.index)
        direct = RouteInfo("10.99.1.0", 24, "", link.index)
        default6 = RouteInfo("::", 0, "fd00:77::9", link.index)
        sock.replace_route(socket.AF_INET, via, 254, 4)
        sock.replace_route(socket.AF_INET, direct, 254, 4)
        sock.replace_route(socket.AF_INET6, default6, 254, 4)
        assert sorted(sock.routes(socket.AF_INET, 254, 4)) == sorted([via, direct])
        assert sock.routes(socket.AF_INET6, 254, 4) == [default6]
    shown = {(r["dst"], r.get("gateway", "")) for r in ip_json(
        here, "route", "show", "proto", "static")}
    assert shown == {("10.88.0.0/16", "10.77.0.9"), ("10.99.1.0/24", "")}
    (a0,) = ip_json(here, "addr", "show", "a0")
    assert {(a["local"], a["prefixlen"]) for a in a0["addr_info"]} >= {
        ("10.77.0.1", 24), ("fd00:77::1", 64)}
    assert next(a for a in a0["addr_info"] if a["family"] == "inet")["broadcast"] == \
        "10.77.0.255"
    with Rtnl(here) as sock:
        sock.delete_route(socket.AF_INET, via, 254, 4)
        assert sock.routes(socket.AF_INET, 254, 4) == [direct]
        sock.delete_address(link.index, v4)
        assert sock.addresses(socket.AF_INET, link.index) == []


def test_errors_name_the_namespace_and_the_kernels_reason(two: tuple[str, str]) -> None:
    here, _ = two
    with pytest.raises(netlink.NamespaceNotFound), netlink.rtnl(f"absent{uuid.uuid4().hex[:6]}"):
        pass
    with pytest.raises(netlink.InterfaceNotFound) as missing, netlink.rtnl(here) as sock:
        sock.set_link(424242, up=True)
    assert here in str(missing.value)
    assert missing.value.code == errno.ENODEV
    # A later request on the same socket reads only its own answers.
    with Rtnl(here) as sock:
        with pytest.raises(OSError, match="No such device"):
            sock.delete_link(424242)
        assert sock.link(name="lo") is not None


def test_a_vxlan_device_its_flood_entries_and_a_move_by_pid(two: tuple[str, str]) -> None:
    here, there = two
    subprocess.run(["ip", "-n", here, "addr", "add", "192.0.2.1/24", "dev", "lo"], check=True)
    with Rtnl(here) as sock:
        sock.add_vxlan("vx0", 4242, "192.0.2.1", 4789)
        made = sock.link(name="vx0")
        assert made is not None
        assert made.kind == "vxlan"
        for remote in ("192.0.2.2", "192.0.2.3"):
            sock.append_fdb(made.index, "00:00:00:00:00:00", remote)
        sock.append_fdb(made.index, "00:00:00:00:00:00", "192.0.2.2")  # had it: no second
    (vx,) = ip_json(here, "link", "show", "vx0")
    data = vx["linkinfo"]["info_data"]
    assert (data["id"], data["local"], data["port"], data["learning"]) == (
        4242, "192.0.2.1", 4789, True)
    fdb = json.loads(subprocess.run(["bridge", "-n", here, "-j", "fdb", "show", "dev", "vx0"],
                                    check=True, capture_output=True, text=True).stdout)
    assert sorted(e["dst"] for e in fdb if e["mac"] == "00:00:00:00:00:00") == [
        "192.0.2.2", "192.0.2.3"]
    # Into the namespace of a process that lives there (as into the host's, pid 1).
    holder = subprocess.Popen(["ip", "netns", "exec", there, "sleep", "30"])
    try:
        inside = os.stat(f"/run/netns/{there}").st_ino
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{holder.pid}/ns/net").st_ino != inside:  # ip execs sleep there
            assert time.monotonic() < deadline, "the holder never entered the namespace"
            time.sleep(0.01)
        with Rtnl(here) as sock:
            vx0 = sock.link(name="vx0")
            assert vx0 is not None
            sock.set_link(vx0.index, netns_pid=holder.pid)
            assert sock.link(name="vx0") is None
        assert ip_json(there, "link", "show", "vx0")
    finally:
        holder.kill()
        holder.wait()
