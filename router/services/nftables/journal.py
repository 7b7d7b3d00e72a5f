"""The edge delta journal: what a router applied in place since its config.pb.

Appending is O(delta): ``edge-journal.pb`` holds length-prefixed EdgeDelta
messages (appended, not fsynced: a host crash may lose the last ones; the
agent then reports an older generation and netmgr pushes again). Restart
adoption replays the deltas that follow config.pb's generation (``replay``).
Every ``COMPACT_EVERY`` deltas a background thread writes config.pb from the
running config and empties the journal (coalesced, off the change path); a
full apply does the same at once (``router.services.nftables.delta.full_applied``).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from typing import TYPE_CHECKING

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router.lib import files
from router.services.nftables import edge as nft_edge

if TYPE_CHECKING:
    from router.runtime import RouterRuntime

log = logging.getLogger(__name__)

JOURNAL = "edge-journal.pb"
COMPACT_EVERY = 256
Field = str  # name of a RouterConfig repeated field


def _field(obj: nft_edge.EdgeObject) -> Field:
    if isinstance(obj, pb.StaticNatRule):
        return "static_nats"
    if isinstance(obj, pb.PortForwardRule):
        return "port_forwards"
    if isinstance(obj, pb.IngressRule):
        return "ingress_rules"
    if isinstance(obj, pb.EgressRule):
        return "egress_rules"
    raise TypeError(type(obj).__name__)


def delta_objects(delta: epb.EdgeDelta) -> list[nft_edge.EdgeObject]:
    return [*delta.static_nats, *delta.port_forwards, *delta.ingress_rules,
            *delta.egress_rules]


_compacting: set[str] = set()


def append(rt: RouterRuntime, delta: epb.EdgeDelta) -> None:
    data = delta.SerializeToString()
    path = rt.ctx.path(JOURNAL)
    with open(path, "ab") as f:
        f.write(struct.pack(">I", len(data)) + data)
        size = f.tell()
    # Compact roughly every COMPACT_EVERY deltas (by size: deltas are alike).
    if size > COMPACT_EVERY * (len(data) + 4) and rt.ctx.netns not in _compacting:
        _compacting.add(rt.ctx.netns)
        threading.Thread(target=_compact, args=(rt,), name="edge-journal", daemon=True).start()


def _compact(rt: RouterRuntime) -> None:
    """config.pb from the running config, the journal emptied: serialised under
    the router's lock (C speed), written outside it, swapped in under it
    unless a change came meanwhile (then the next compaction does it)."""
    try:
        with rt.lock:
            if rt.config is None:
                return
            data, gen = rt.config.SerializeToString(), rt.config.generation
        tmp = rt.ctx.path("config.pb.compact")
        files.write_atomic(tmp, data, mode=0o600)
        with rt.lock:
            if rt.config is not None and rt.config.generation == gen:
                os.replace(tmp, rt.ctx.path("config.pb"))
                files.remove(rt.ctx.path(JOURNAL))
            else:
                files.remove(tmp)
    except OSError:
        log.exception("router %s: journal compaction failed", rt.ctx.router_id)
    finally:
        _compacting.discard(rt.ctx.netns)


def read_journal(path: str) -> list[epb.EdgeDelta]:
    out = []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 4 + n > len(data):
            break  # a torn last write: the deltas before it stand
        out.append(epb.EdgeDelta.FromString(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def replay(state_dir: str, cfg: pb.RouterConfig) -> pb.RouterConfig:
    """config.pb plus the journal's deltas that follow its generation in order."""
    for delta in read_journal(os.path.join(state_dir, JOURNAL)):
        if delta.base_generation != cfg.generation:
            continue
        removed = {(r.kind, r.id) for r in delta.removed}
        added = delta_objects(delta)
        removed |= {nft_edge.object_key(o) for o in added}
        for field in ("static_nats", "port_forwards", "ingress_rules", "egress_rules"):
            items = getattr(cfg, field)
            keep = [o for o in items if nft_edge.object_key(o) not in removed]
            del items[:]
            items.extend(keep)
        for obj in added:
            getattr(cfg, _field(obj)).add().CopyFrom(obj)
        cfg.generation = delta.generation
    return cfg
