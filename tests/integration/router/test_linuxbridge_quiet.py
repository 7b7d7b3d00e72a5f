"""The Linux bridge fabric's namespace is a switch: its bridges and the
fabric ends of the veth pairs have no IPv6 of their own (no link-local
address, no route, no multicast listener reports), and IPv6 between the
namespaces it joins is bridged as before.

Why it matters: with IPv6 on, each of a segment's thousands of fabric ends
held a link-local address and an ff00::/8 route, every listener report an
end sent looked its route up among all of them, and the kernel's work for
it was about a tenth of a loaded machine's CPU at 1,000 routers."""

from __future__ import annotations

import json
import subprocess

import pytest

from common.fabric.linuxbridge import LinuxBridgeFabric

pytestmark = pytest.mark.integration


def ip(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True,
                          check=True).stdout


def ipv6_addresses(netns: str) -> list[str]:
    return [f"{a['local']} on {link['ifname']}"
            for link in json.loads(ip(netns, "-j", "-6", "addr", "show") or "[]")
            for a in link.get("addr_info", [])]


def test_the_fabric_has_no_ipv6_of_its_own_and_bridges_it(
        fabric_namespaces: tuple[str, list[str]]) -> None:
    fabric, (a, b, c) = fabric_namespaces
    fab = LinuxBridgeFabric(fabric)
    fab.setup()
    fab.plug("lbq-a", 5, a, "eth0", "02:00:00:00:05:0a")
    fab.plug("lbq-b", 5, b, "eth0", "02:00:00:00:05:0b")
    fab.plug("lbq-c", 6, c, "eth0", "02:00:00:00:06:0c")  # a second segment's bridge
    assert ipv6_addresses(fabric) == []
    assert ip(fabric, "-6", "route", "show", "table", "all").strip() == ""
    # The namespaces it joins keep theirs, and reach each other over it.
    assert any(x.startswith("fe80:") for x in ipv6_addresses(a))
    ip(a, "addr", "add", "fd00:5::a/64", "dev", "eth0", "nodad")
    ip(b, "addr", "add", "fd00:5::b/64", "dev", "eth0", "nodad")
    ping = subprocess.run(["ip", "netns", "exec", a, "busybox", "ping", "-6", "-c", "1", "-W", "5",
                           "fd00:5::b"], capture_output=True, text=True, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_a_fabric_set_up_again_silences_the_links_it_already_has(
        fabric_namespaces: tuple[str, list[str]]) -> None:
    """An agent started on a host whose fabric namespace an older agent made
    (with IPv6 on) quiets what is there too."""
    fabric, (a, _, _) = fabric_namespaces  # made, not set up
    fab = LinuxBridgeFabric(fabric)
    fab.plug("lbq-old", 5, a, "eth0", "02:00:00:00:05:0a")
    assert ipv6_addresses(fabric) != []  # as an older fabric made it
    fab.setup()
    assert ipv6_addresses(fabric) == []
