"""The physical underlay between two VXLAN hosts: a veth "wire" joining their
underlay namespaces, each end with the host's underlay address."""

from __future__ import annotations

from pyroute2 import IPRoute

from common.netns import ensure_netns

UL_A, UL_B = "192.0.2.1", "192.0.2.2"


def wire(ns_a: str, ns_b: str) -> None:
    for ns in (ns_a, ns_b):
        ensure_netns(ns)
    with IPRoute(netns=ns_a, flags=0) as ipr:
        ipr.link("add", ifname="wire", kind="veth", peer={"ifname": "wire", "net_ns_fd": ns_b})
    for ns, ip in ((ns_a, UL_A), (ns_b, UL_B)):
        with IPRoute(netns=ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname="wire")[0]
            ipr.addr("add", index=idx, address=ip, prefixlen=24)
            ipr.link("set", index=idx, state="up")
