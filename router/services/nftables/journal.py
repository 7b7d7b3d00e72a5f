"""The edge delta journal: what a router applied in place since its config.pb.

Appending is O(delta): the journal (``RouterPaths.edge_journal``) holds
length-prefixed EdgeDelta messages (appended, not fsynced: a host crash may
lose the last ones; the agent then reports an older generation and netmgr
pushes again). Restart adoption replays the deltas that follow config.pb's
generation (``replay``). Every ``COMPACT_EVERY`` deltas config.pb is written
from the running config and the journal emptied (``compact``, in the
background: ``delta.EdgeDeltas``); a full apply does the same at once
(``fold``).
"""

from __future__ import annotations

import logging
import os
import struct

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router.lib import files
from router.services.base import Context, RouterPaths, RunningConfig, persisted_config
from router.services.nftables import edge as nft_edge
from router.services.nftables import guest_metadata as nft_metadata
from router.services.nftables import routed as nft_routed

log = logging.getLogger(__name__)

COMPACT_EVERY = 256
# The RouterConfig fields deltas change.
FIELDS = ("static_nats", "port_forwards", "ingress_rules", "egress_rules")


def append(path: str, delta: epb.EdgeDelta) -> bool:
    """Append ``delta``; True when the journal is due for compaction (roughly
    every COMPACT_EVERY deltas, by size: deltas are alike)."""
    data = delta.SerializeToString()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as f:
        f.write(struct.pack(">I", len(data)) + data)
        size = f.tell()
    return size > COMPACT_EVERY * (len(data) + 4)


def compact(ctx: Context, running: RunningConfig) -> None:
    """config.pb from the running config, the journal emptied: serialised under
    the router's lock (C speed), written outside it, swapped in under it
    unless a change came meanwhile (then the next compaction does it)."""
    paths = ctx.paths
    try:
        with running.lock:
            cfg = running.config
            if cfg is None:
                return
            data, gen = persisted_config(cfg), cfg.generation
        tmp = paths.path("config.pb.compact")
        files.write_atomic(tmp, data, mode=0o600)
        with running.lock:
            cfg = running.config
            if cfg is not None and cfg.generation == gen:
                os.replace(tmp, paths.config)
                files.remove(paths.edge_journal)
            else:
                files.remove(tmp)
    except OSError:
        log.exception("router %s: journal compaction failed", ctx.router_id)


def fold(paths: RouterPaths, cfg: pb.RouterConfig) -> None:
    """After a full apply of ``cfg``: config.pb is the truth again (it may be
    older than the deltas the journal holds)."""
    if os.path.exists(paths.edge_journal):
        files.write_atomic(paths.config, persisted_config(cfg), mode=0o600)
        files.remove(paths.edge_journal)


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


def replay(path: str, cfg: pb.RouterConfig) -> pb.RouterConfig:
    """``cfg`` (config.pb) plus the deltas of the journal at ``path`` that follow
    its generation, in order."""
    for delta in read_journal(path):
        if delta.base_generation != cfg.generation:
            continue
        guests = {r.id for r in delta.removed if r.kind == nft_routed.GUEST_INGRESS}
        guests |= {r.id for r in delta.guest_ingress_rules}
        keep_guests = [r for r in cfg.guest_ingress_rules if r.id not in guests]
        del cfg.guest_ingress_rules[:]
        cfg.guest_ingress_rules.extend([*keep_guests, *delta.guest_ingress_rules])
        removed = {(r.kind, r.id) for r in delta.removed}
        added = nft_edge.delta_objects(delta)
        removed |= {nft_edge.object_key(o) for o in added}
        for field in FIELDS:
            items = getattr(cfg, field)
            keep = [o for o in items if nft_edge.object_key(o) not in removed]
            del items[:]
            items.extend(keep)
        for obj in added:
            getattr(cfg, nft_edge.config_field(obj)).add().CopyFrom(obj)
        nft_metadata.put(cfg, delta.guest_metadata)
        cfg.generation = delta.generation
    return cfg
