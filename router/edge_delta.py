"""One edge rule changed: applied in place, in time independent of the rule count.

A full RouterConfig push stays the truth (and stays atomic); this is the
shortcut for "these few edge objects were removed or added between
generation B and G". It is taken only when the router runs exactly B, and
only for static NAT, port forwards and firewall rules; anything else (a set
the loaded table lacks, an nft refusal, an index not built) answers `stale`
and the caller pushes the whole config.

Per router the agent keeps an ``EdgeIndex`` beside the loaded table: which
objects own which elements (an allow element may be shared by a port
forward and a firewall rule; interval elements are cut from the boxes of
every object of the same set and key head, so those groups are recomputed
whole, and they are small). A delta then costs its own objects' elements:

    verify   the changed objects (field checks of ``nft_edge.verify`` on a
             small config: interfaces, public IPs, static NATs, the added
             objects), and conflicts with the running ones through the index
             (overlapping forwarded ports, static NAT vs forwards)
    compute  element deletes and adds (one transaction), dry-run, run
    record   the running config is edited in place (positions kept per ID,
             removal swaps with the last element), and the delta appended to
             a journal next to config.pb

The index is built in the background after each full apply (seconds at
60,000 rules); a delta waits for it. Persistence is O(delta):
``edge-journal.pb`` holds length-prefixed deltas (appended, not fsynced: a
host crash may lose the last ones, the agent then reports an older
generation and netmgr pushes again); restart adoption replays the ones
after config.pb's generation (``replay``).
Every ``COMPACT_EVERY`` deltas a background thread writes config.pb from the
running config and truncates the journal (coalesced, off the change path);
a full apply does the same at once.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router import files, libnft
from router.errors import ConfigError
from router.services import nft_edge, nftables

if TYPE_CHECKING:
    from router.runtime import RouterRuntime

log = logging.getLogger(__name__)

JOURNAL = "edge-journal.pb"
COMPACT_EVERY = 256
DELTA_KINDS = (nft_edge.STATIC_NAT, nft_edge.PORT_FORWARD, nft_edge.FIREWALL)
# Which sets count a kind's traffic: the others hold the same connection's
# first packet again (a port forward's allow element).
COUNTED = {nft_edge.PORT_FORWARD: ("pf_dnat",), "loadbalancer": ("lb_in",),
           nft_edge.STATIC_NAT: ("eip_in", "eip_out")}

Oid = tuple[str, str]
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


class Stale(Exception):
    """The delta cannot be applied in place: push the whole config."""


class EdgeIndex:
    """The loaded table's edge elements, by owner; and where each object sits
    in the running config."""

    def __init__(self, cfg: pb.RouterConfig, elements: nft_edge.Elements,
                 table_sets: Iterable[str]) -> None:
        self.cfg = cfg
        self.elements = elements  # the dict nftables keeps as loaded (mutated here)
        self.table_sets = set(table_sets)
        self.parts: dict[Oid, tuple[list[nft_edge.Part], list[nft_edge.GroupBox]]] = {}
        self.owners: dict[tuple[str, str], list[tuple[Oid, str, str]]] = defaultdict(list)
        self.groups: dict[tuple[str, str], dict[Oid, list[tuple[nft_edge.Box, str]]]] = (
            defaultdict(dict))
        self.pf_ips: Counter[str] = Counter()
        self.positions: dict[Oid, tuple[Field, int]] = {}
        for field in ("static_nats", "port_forwards", "ingress_rules", "egress_rules"):
            for i, obj in enumerate(getattr(cfg, field)):
                self.positions[nft_edge.object_key(obj)] = (field, i)
        for obj in nft_edge.config_objects(cfg):
            self._add(obj)

    # ----------------------------------------------------------- ownership

    def _add(self, obj: nft_edge.EdgeObject) -> set[tuple[str, str]]:
        oid = nft_edge.object_key(obj)
        exact, boxes = self.parts[oid] = nft_edge.object_parts(obj)
        for name, key, value, c in exact:
            self.owners[(name, key)].append((oid, value, c))
        for group, box, c in boxes:
            self.groups[group].setdefault(oid, []).append((box, c))
        if isinstance(obj, pb.PortForwardRule):
            self.pf_ips[obj.public_ip] += 1
        return {g for g, _, _ in boxes}

    def _remove(self, oid: Oid, obj: nft_edge.EdgeObject) -> set[tuple[str, str]]:
        exact, boxes = self.parts.pop(oid, ([], []))
        for name, key, _, _ in exact:
            owners = self.owners[(name, key)]
            owners[:] = [o for o in owners if o[0] != oid]
            if not owners:
                del self.owners[(name, key)]
        for group, _, _ in boxes:
            self.groups[group].pop(oid, None)
        if isinstance(obj, pb.PortForwardRule):
            self.pf_ips[obj.public_ip] -= 1
        return {g for g, _, _ in boxes}

    def current(self, oid: Oid) -> nft_edge.EdgeObject | None:
        pos = self.positions.get(oid)
        if pos is None:
            return None
        obj: nft_edge.EdgeObject = getattr(self.cfg, pos[0])[pos[1]]
        return obj

    # -------------------------------------------------------------- verify

    def verify(self, removed: set[Oid], added: list[nft_edge.EdgeObject]) -> None:
        """The added objects' own checks, and their conflicts with the objects
        that stay (raises ConfigError naming the object)."""
        mini = pb.RouterConfig(router_id=self.cfg.router_id)
        mini.interfaces.extend(self.cfg.interfaces)
        mini.public_addresses.extend(self.cfg.public_addresses)
        added_keys = {nft_edge.object_key(o) for o in added}
        mini.static_nats.extend(n for n in self.cfg.static_nats
                                if (nft_edge.STATIC_NAT, n.id) not in removed | added_keys)
        for obj in added:
            getattr(mini, _field(obj)).add().CopyFrom(obj)
        nft_edge.verify(mini)
        gone_pf_ips: Counter[str] = Counter()
        for oid in removed:
            old = self.current(oid)
            if isinstance(old, pb.PortForwardRule):
                gone_pf_ips[old.public_ip] += 1
        for obj in added:
            if isinstance(obj, pb.PortForwardRule):
                for port in range(obj.public_port_start, obj.public_port_end + 1):
                    key = f"{obj.public_ip} . {obj.protocol} . {port}"
                    other = [o for o, _, _ in self.owners.get(("pf_dnat", key), ())
                             if o not in removed]
                    if other:
                        raise ConfigError(
                            f"port forward {obj.id!r}: public ports overlap port forward "
                            f"{other[0][1]!r}", nft_edge.PORT_FORWARD, obj.id)
            elif (isinstance(obj, pb.StaticNatRule)
                  and self.pf_ips[obj.public_ip] - gone_pf_ips[obj.public_ip] > 0):
                raise ConfigError(f"static NAT {obj.id!r}: {obj.public_ip} has port forwards",
                                      nft_edge.STATIC_NAT, obj.id)

    # --------------------------------------------------------------- apply

    def change(self, removed: set[Oid], added: list[nft_edge.EdgeObject]) -> str:
        """Update the ownership for the change; the nft commands that make the
        loaded table follow (empty if nothing changes in it). Raises Stale
        (before changing anything) when an element's set is not in the table."""
        for obj in added:
            exact, boxes = nft_edge.object_parts(obj)
            for name in {p[0] for p in exact} | {g[0][0] for g in boxes}:
                if name not in self.table_sets:
                    raise Stale(f"set {name} is not in the loaded table")
        touched: set[tuple[str, str]] = set()
        groups: set[tuple[str, str]] = set()
        for oid in removed:
            old = self.current(oid)
            if oid in self.parts and old is not None:
                touched |= {(p[0], p[1]) for p in self.parts[oid][0]}
                groups |= self._remove(oid, old)
        for obj in added:
            groups |= self._add(obj)
            touched |= {(p[0], p[1]) for p in self.parts[nft_edge.object_key(obj)][0]}
        dels: dict[str, list[str]] = defaultdict(list)
        adds: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for name, key in touched:
            before = self.elements.setdefault(name, {}).get(key)
            owners = self.owners.get((name, key))
            after = (owners[0][1], owners[0][2]) if owners else None
            if before != after:
                if before is not None:
                    dels[name].append(key)
                if after is not None:
                    adds[name][key] = after
        for name, head in groups:
            prefix = f"{head} . "
            elems = self.elements.setdefault(name, {})
            old = {k: v for k, v in elems.items() if k.startswith(prefix)}
            members = [b for lst in self.groups[(name, head)].values() for b in lst]
            new = nft_edge.group_elements(name, head, members) if members else {}
            dels[name] += [k for k, v in old.items() if new.get(k) != v]
            adds[name].update({k: v for k, v in new.items() if old.get(k) != v})
        for name, keys in dels.items():
            for k in keys:
                self.elements[name].pop(k, None)
        for name, elems in adds.items():
            self.elements[name].update(elems)
        fam, table = nftables.TABLE_FAMILY, nftables.TABLE_NAME
        lines = [f"delete element {fam} {table} {name} {{ {', '.join(keys)} }}"
                 for name, keys in sorted(dels.items()) if keys]
        lines += [f"add element {fam} {table} {name} {{ "
                  + ", ".join(nft_edge.element_text(k, *v) for k, v in elems.items()) + " }"
                  for name, elems in sorted(adds.items()) if elems]
        return "\n".join(lines) + ("\n" if lines else "")

    def edit_config(self, removed: set[Oid], added: list[nft_edge.EdgeObject],
                    generation: int) -> None:
        """The running config becomes the delta's result, in place."""
        for oid in removed:
            pos = self.positions.pop(oid, None)
            if pos is None:
                continue
            field, i = pos
            items = getattr(self.cfg, field)
            last = len(items) - 1
            if i != last:
                items[i].CopyFrom(items[last])
                self.positions[nft_edge.object_key(items[i])] = (field, i)
            del items[last]
        for obj in added:
            field = _field(obj)
            items = getattr(self.cfg, field)
            items.add().CopyFrom(obj)
            self.positions[nft_edge.object_key(obj)] = (field, len(items) - 1)
        self.cfg.generation = generation


# ------------------------------------------------------------------ runtime


_indexes: dict[str, EdgeIndex] = {}  # router netns -> index
_building: dict[str, threading.Thread] = {}  # router netns -> the thread indexing it
_index_lock = threading.Lock()


def full_applied(rt: RouterRuntime) -> None:
    """After a successful full apply: index the loaded table, fold the journal."""
    cfg, netns = rt.config, rt.ctx.netns
    loaded = nftables.loaded(netns)
    with _index_lock:
        index = _indexes.pop(netns, None)
    if (index is not None and cfg is not None and loaded is not None
            and loaded[1] is index.elements and index.cfg == cfg):
        # The same config again (a no-op push): the index stands.
        index.cfg = cfg
        with _index_lock:
            _indexes[netns] = index
        return
    journal = rt.ctx.path(JOURNAL)
    if os.path.exists(journal) and cfg is not None:
        # config.pb may be older than the deltas the journal holds.
        files.write_atomic(rt.ctx.path("config.pb"), cfg.SerializeToString(), mode=0o600)
        files.remove(journal)
    if cfg is None or loaded is None:
        return
    # Indexing 60,000 rules takes seconds: not on the full apply's path. A
    # delta that arrives meanwhile waits for it (``_ready``).
    builder = threading.Thread(target=_build, args=(rt, cfg, loaded), name="edge-index",
                               daemon=True)
    with _index_lock:
        _building[netns] = builder
    builder.start()


def _build(rt: RouterRuntime, cfg: pb.RouterConfig,
           loaded: tuple[str, nft_edge.Elements]) -> None:
    netns = rt.ctx.netns
    try:
        skeleton, elements = loaded
        # A copy: the loaded dict is also nftables' memo of a rendering.
        copy = {name: dict(elems) for name, elems in elements.items()}
        sets = set(nft_edge.SETS) | {f"{nft_edge.ALLOW_PREFIX}{n}"
                                      for n, _ in nft_edge.allow_sets(elements)}
        index = EdgeIndex(cfg, copy, sets)
        with rt.lock:
            # Installed only if nothing was applied since (else that apply indexes).
            if rt.config is cfg and nftables.loaded(netns) is loaded:
                nftables.set_loaded(netns, skeleton, copy)
                with _index_lock:
                    _indexes[netns] = index
        # Millions of long-lived objects: out of the cyclic GC's full passes
        # (a pass over them stalls a delta for a second or two).
        gc.freeze()
    except Exception:  # deltas answer stale without an index: full pushes still work
        log.exception("router %s: indexing the edge table failed", rt.ctx.router_id)
    finally:
        with _index_lock:
            if _building.get(netns) is threading.current_thread():
                del _building[netns]


def _ready(rt: RouterRuntime, timeout: float = 120.0) -> None:
    """Wait (without the router's lock) for an index being built."""
    with _index_lock:
        builder = _building.get(rt.ctx.netns)
    if builder is not None:
        builder.join(timeout)


def forget(rt: RouterRuntime) -> None:
    with _index_lock:
        _indexes.pop(rt.ctx.netns, None)


def apply_delta(rt: RouterRuntime, delta: epb.EdgeDelta) -> epb.ApplyEdgeDeltaResponse:
    _ready(rt)
    with rt.lock:
        started = time.monotonic()
        try:
            return _apply(rt, delta, started)
        except Stale as e:
            log.info("router %s: delta to %d not applied in place: %s", rt.ctx.router_id,
                     delta.generation, e)
            return _reply(rt, stale=True)


def _reply(rt: RouterRuntime, stale: bool = False,
           objects: Iterable[pb.ObjectStatus] = ()) -> epb.ApplyEdgeDeltaResponse:
    return epb.ApplyEdgeDeltaResponse(
        stale=stale, applied_generation=rt.config.generation if rt.config else 0,
        rejected_generation=rt.rejected_generation, last_error=rt.last_error,
        objects=list(objects), apply_seconds=rt.apply_seconds)


def _apply(rt: RouterRuntime, delta: epb.EdgeDelta, started: float) -> epb.ApplyEdgeDeltaResponse:
    cfg = rt.config
    with _index_lock:
        index = _indexes.get(rt.ctx.netns)
    if cfg is None or index is None or index.cfg is not cfg:
        raise Stale("no indexed config")
    if cfg.generation != delta.base_generation or delta.generation <= delta.base_generation:
        raise Stale(f"runs generation {cfg.generation}, delta is {delta.base_generation} -> "
                    f"{delta.generation}")
    # A table deleted behind our back makes the dry run fail: Stale then.
    if nftables.loaded(rt.ctx.netns) is None:
        raise Stale("the table is not loaded")
    for ref in delta.removed:
        if ref.kind not in DELTA_KINDS:
            raise Stale(f"kind {ref.kind!r} is not changed in place")
    removed = {(r.kind, r.id) for r in delta.removed}
    added = delta_objects(delta)
    # An object named again is replaced: its old elements go first.
    removed |= {nft_edge.object_key(o) for o in added if index.current(nft_edge.object_key(o))}
    try:
        index.verify(removed, added)
    except ConfigError as e:
        rt._reject(_as_config(cfg, delta.generation), e)
        bad = [pb.ObjectStatus(kind=e.kind, id=e.object_id, ok=False, error=str(e))] \
            if e.kind and e.object_id else []
        return _reply(rt, objects=bad)
    commands = index.change(removed, added)
    try:
        if commands:
            libnft.run_checked(rt.ctx.netns, commands)
    except libnft.NftError as e:
        # The index already counts the change: drop it; a full push rebuilds.
        forget(rt)
        raise Stale(f"nft refused the element update: {e}") from e
    index.edit_config(removed, added, delta.generation)
    # The table no longer matches what the nftables service last rendered:
    # the next full apply diffs elements against what is loaded.
    rt._applied.pop(nftables.NAME, None)
    rt.rejected_generation, rt.last_error, rt._error_object = 0, "", None
    rt.apply_seconds = time.monotonic() - started
    _journal(rt, delta)
    return _reply(rt, objects=[pb.ObjectStatus(kind=k, id=i, ok=True)
                               for k, i in sorted({nft_edge.object_key(o) for o in added})])


def _as_config(cfg: pb.RouterConfig, generation: int) -> pb.RouterConfig:
    """What _reject needs of a config: its ID and generation (no copy of the rules)."""
    return pb.RouterConfig(router_id=cfg.router_id, generation=generation)


# ------------------------------------------------------------------ journal


_compacting: set[str] = set()


def _journal(rt: RouterRuntime, delta: epb.EdgeDelta) -> None:
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


# ----------------------------------------------------------------- counters


def counters(rt: RouterRuntime, wanted: set[Oid]) -> list[epb.EdgeCounter]:
    """Packets and bytes per edge object, summed over its elements' counters."""
    with rt.lock:
        if rt.config is None or not nftables.table_present(rt.ctx.netns):
            return []
    out = libnft.run(rt.ctx.netns, f"list table {nftables.TABLE_FAMILY} {nftables.TABLE_NAME}",
                     json_output=True)
    totals: dict[Oid, list[int]] = {}
    for item in json.loads(out).get("nftables", []):
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
