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
             a journal next to config.pb (``router.services.nftables.journal``)

The index is built in the background after each full apply (seconds at
60,000 rules); a delta waits for it. Persistence is O(delta): see
``router.services.nftables.journal``.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router.errors import ConfigError
from router.lib import files, libnft
from router.services.nftables import edge as nft_edge
from router.services.nftables import journal as edge_journal
from router.services.nftables import service as nftables
from router.services.nftables.journal import Field, _field, delta_objects

if TYPE_CHECKING:
    from router.runtime import RouterRuntime

log = logging.getLogger(__name__)

DELTA_KINDS = (nft_edge.STATIC_NAT, nft_edge.PORT_FORWARD, nft_edge.FIREWALL)
Oid = tuple[str, str]


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
        # In the order nft_edge.elements() meets them: the first owner of a
        # shared element is the one its comment names.
        for kind, field in (("", "public_addresses"), (nft_edge.STATIC_NAT, "static_nats"),
                            (nft_edge.PORT_FORWARD, "port_forwards"), ("", "load_balancers"),
                            (nft_edge.FIREWALL, "ingress_rules"),
                            (nft_edge.FIREWALL, "egress_rules")):
            for i, obj in enumerate(getattr(cfg, field)):
                if not kind:
                    self._add(obj)
                    continue
                oid = (kind, obj.id)
                self.positions[oid] = (field, i)
                self._add(obj, oid)

    # ----------------------------------------------------------- ownership

    def _add(self, obj: nft_edge.EdgeObject, oid: Oid | None = None) -> set[tuple[str, str]]:
        oid = oid or nft_edge.object_key(obj)
        exact, boxes = self.parts[oid] = nft_edge.object_parts(obj, oid)
        owners = self.owners
        for name, key, value, c in exact:
            owners[(name, key)].append((oid, value, c))
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
    journal = rt.ctx.path(edge_journal.JOURNAL)
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
    except (libnft.NftError, OSError) as e:
        # The index (and the loaded elements it edits) already count the
        # change: forget both, so the full push that follows loads the whole
        # table rather than diffing against elements that are not there.
        forget(rt)
        nftables.set_loaded(rt.ctx.netns, None)
        rt._applied.pop(nftables.NAME, None)
        raise Stale(f"nft refused the element update: {e}") from e
    index.edit_config(removed, added, delta.generation)
    # The table no longer matches what the nftables service last rendered:
    # the next full apply diffs elements against what is loaded.
    rt._applied.pop(nftables.NAME, None)
    rt.rejected_generation, rt.last_error, rt._error_object = 0, "", None
    rt.apply_seconds = time.monotonic() - started
    try:
        edge_journal.append(rt, delta)
    except OSError:
        # Applied but not persisted: a restarted agent reports the older
        # generation of config.pb, and netmgr pushes again.
        log.exception("router %s: journaling delta %d failed", rt.ctx.router_id,
                      delta.generation)
    return _reply(rt, objects=[pb.ObjectStatus(kind=k, id=i, ok=True)
                               for k, i in sorted({nft_edge.object_key(o) for o in added})])


def _as_config(cfg: pb.RouterConfig, generation: int) -> pb.RouterConfig:
    """What _reject needs of a config: its ID and generation (no copy of the rules)."""
    return pb.RouterConfig(router_id=cfg.router_id, generation=generation)


