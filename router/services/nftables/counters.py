"""Per-rule packet and byte counters, read from the edge elements' counters.

Every edge element carries a counter (the sets and maps have the ``counter``
flag) and a comment naming its rule, ``cn:<kind>:<id>``; a rule's counters
are the sums over its elements. Only the sets that count a kind's traffic
are summed: a port forward's allow element holds the connection's first
packet again (its DNAT lookup counts it).
"""

from __future__ import annotations

import json
from collections.abc import Set
from typing import Any

from cloudnet.router.v1 import edge_pb2 as epb

from router.lib import libnft
from router.services.base import ObjectId, RunningConfig
from router.services.nftables import acl as nft_acl
from router.services.nftables import edge as nft_edge
from router.services.nftables import table

Oid = ObjectId
COUNTED = {nft_edge.PORT_FORWARD: ("pf_dnat",), "loadbalancer": ("lb_in",),
           nft_edge.STATIC_NAT: ("eip_in", "eip_out")}


def counters(netns: str, running: RunningConfig, wanted: Set[Oid]) -> list[epb.EdgeCounter]:
    """Packets and bytes per edge object, summed over its elements' counters
    (every object's if ``wanted`` is empty)."""
    with running.lock:
        if running.config is None or not table.listed(netns):
            return []
    out = libnft.run(netns, f"list table {table.FAMILY} {table.NAME}", json_output=True)
    totals: dict[Oid, list[int]] = {}
    items = json.loads(out).get("nftables", [])
    nft_acl.rule_counters(items, totals)  # VPC network ACL rules (kind "aclrule")
    for item in items:
        obj = item.get("set") or item.get("map")
        if not obj:
            continue
        for elem in obj.get("elem", []):
            _count(obj["name"], elem, totals)
    keys = wanted or set(totals)
    return [epb.EdgeCounter(kind=k, id=i, packets=totals.get((k, i), [0, 0])[0],
                            bytes=totals.get((k, i), [0, 0])[1]) for k, i in sorted(keys)]


def _count(set_name: str, elem: Any, totals: dict[Oid, list[int]]) -> None:
    if isinstance(elem, list):  # a map element: [key, value]
        elem = elem[0]
    e = elem.get("elem") if isinstance(elem, dict) else None
    if not isinstance(e, dict) or "counter" not in e:
        return
    parts = str(e.get("comment", "")).split(":")
    if len(parts) != 3 or parts[0] != "cn":
        return
    kind, oid = parts[1], parts[2]
    if set_name not in COUNTED.get(kind, (set_name,)):
        return
    t = totals.setdefault((kind, oid), [0, 0])
    t[0] += int(e["counter"].get("packets", 0))
    t[1] += int(e["counter"].get("bytes", 0))
