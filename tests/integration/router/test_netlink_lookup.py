"""A link looked up by name is asked of the kernel by that name: the
agent's namespace (and the fabric's, with a veth end per router) holds
thousands of links at scale, and a dump of them all per lookup made each
router's plug cost grow with the number of routers on the host."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from common import netlink

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"nl{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        batch = "".join(f"link add d{i} type veth peer name p{i}\n" for i in range(20))
        subprocess.run(["ip", "-n", name, "-batch", "-"], input=batch, text=True, check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "d7", "up", "mtu", "1400"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def kernel_view(ns: str, name: str) -> dict[str, object]:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "link", "show", name], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[0]


def test_a_link_is_found_by_its_name_without_a_dump(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dump(*args: object, **kwargs: object) -> None:
        raise AssertionError("a lookup by name dumped every link")

    monkeypatch.setattr(netlink, "links", no_dump)
    link = netlink.find_link_by_name(namespace, "d7")
    want = kernel_view(namespace, "d7")
    assert link is not None
    assert (link.index, link.name, link.mac, link.mtu, link.up, link.kind) == (
        want["ifindex"], "d7", want["address"], 1400, True, "veth")
    down = netlink.find_link_by_name(namespace, "d8")
    assert down is not None
    assert (down.name, down.up) == ("d8", False)
    assert netlink.find_link_by_name(namespace, "absent0") is None
    # Longer than a Linux interface name can be (15 bytes): no such link.
    assert netlink.find_link_by_name(namespace, "x" * 16) is None
    assert netlink.find_link_by_name(namespace, "") is None
