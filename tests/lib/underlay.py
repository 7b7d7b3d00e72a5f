"""The physical underlay between two VXLAN hosts: a veth "wire" joining their
underlay namespaces, each end with the host's underlay address."""

from __future__ import annotations

import ipaddress

from common import netlink
from common.netns import ensure_netns

UL_A, UL_B = "192.0.2.1", "192.0.2.2"


def wire(ns_a: str, ns_b: str) -> None:
    for ns in (ns_a, ns_b):
        ensure_netns(ns)
    with netlink.rtnl(ns_a) as sock:
        sock.add_veth("wire", "wire", peer_netns=ns_b)
    for ns, ip in ((ns_a, UL_A), (ns_b, UL_B)):
        netlink.configure_link(ns, "wire", [ipaddress.IPv4Interface(f"{ip}/24")])
