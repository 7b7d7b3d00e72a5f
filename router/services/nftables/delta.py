"""One edge rule changed: applied in place, in time independent of the rule count.

A full RouterConfig push stays the truth (and stays atomic); this is the
shortcut for "these few edge objects were removed or added between
generation B and G". It is taken only when the router runs exactly B, and
only for static NAT, port forwards and firewall rules (those to routed and
IPv6 guests rewrite their own small chain whole); anything else (a set
the loaded table lacks, an nft refusal, an index not built) answers `stale`
and the caller pushes the whole config.

Per router the nftables service keeps an ``EdgeIndex`` beside the loaded table: which
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
``router.services.nftables.journal``. ``EdgeDeltas`` holds one router's
index and offers all this to the runtime (``base.EdgeRules``).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Set

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router.errors import ConfigError, StaleDelta
from router.lib import libnft
from router.services.base import Context, ObjectId, RouterPaths, RunningConfig
from router.services.nftables import counters as edge_counters
from router.services.nftables import edge as nft_edge
from router.services.nftables import guest_metadata as nft_metadata
from router.services.nftables import journal as edge_journal
from router.services.nftables import routed as nft_routed
from router.services.nftables import table
from router.services.nftables.edge import config_field, delta_objects

log = logging.getLogger(__name__)

DELTA_KINDS = (nft_edge.STATIC_NAT, nft_edge.PORT_FORWARD, nft_edge.FIREWALL,
               nft_routed.GUEST_INGRESS, nft_metadata.GUEST_METADATA)
Oid = ObjectId
Field = str  # name of a RouterConfig repeated field


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
        mini.source_nats.extend(self.cfg.source_nats)
        added_keys = {nft_edge.object_key(o) for o in added}
        mini.static_nats.extend(n for n in self.cfg.static_nats
                                if (nft_edge.STATIC_NAT, n.id) not in removed | added_keys)
        for obj in added:
            getattr(mini, config_field(obj)).add().CopyFrom(obj)
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
        loaded table follow (empty if nothing changes in it). Raises StaleDelta
        (before changing anything) when an element's set is not in the table."""
        for obj in added:
            exact, boxes = nft_edge.object_parts(obj)
            for name in {p[0] for p in exact} | {g[0][0] for g in boxes}:
                if name not in self.table_sets:
                    raise StaleDelta(f"set {name} is not in the loaded table")
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
            was = {k: v for k, v in elems.items() if k.startswith(prefix)}
            members = [b for lst in self.groups[(name, head)].values() for b in lst]
            now = nft_edge.group_elements(name, head, members) if members else {}
            dels[name] += [k for k, v in was.items() if now.get(k) != v]
            adds[name].update({k: v for k, v in now.items() if was.get(k) != v})
        for name, keys in dels.items():
            for k in keys:
                self.elements[name].pop(k, None)
        for name, elems in adds.items():
            self.elements[name].update(elems)
        fam, tab = table.FAMILY, table.NAME
        lines = [f"delete element {fam} {tab} {name} {{ {', '.join(keys)} }}"
                 for name, keys in sorted(dels.items()) if keys]
        lines += [f"add element {fam} {tab} {name} {{ "
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
            field = config_field(obj)
            items = getattr(self.cfg, field)
            items.add().CopyFrom(obj)
            self.positions[nft_edge.object_key(obj)] = (field, len(items) - 1)
        self.cfg.generation = generation


# ------------------------------------------------------------- per router


class EdgeDeltas:
    """One router's edge deltas (``base.EdgeRules``): the index of its loaded
    table, the thread building it, and the journal of what changed in place."""

    def __init__(self, table_state: table.TableState) -> None:
        self.table = table_state
        self._lock = threading.Lock()
        self._index: EdgeIndex | None = None
        self._building: threading.Thread | None = None
        self._compacting = False

    def restore(self, paths: RouterPaths, cfg: pb.RouterConfig) -> pb.RouterConfig:
        return edge_journal.replay(paths.edge_journal, cfg)

    def full_applied(self, ctx: Context, running: RunningConfig) -> None:
        """After a successful full apply: index the loaded table, fold the journal."""
        cfg, loaded = running.config, self.table.loaded
        with self._lock:
            index, self._index = self._index, None
        if (index is not None and cfg is not None and loaded is not None
                and loaded.elements is index.elements and index.cfg == cfg):
            # The same config again (a no-op push): the index stands.
            index.cfg = cfg
            with self._lock:
                self._index = index
            return
        if cfg is not None:
            edge_journal.fold(ctx.paths, cfg)
        if cfg is None or loaded is None:
            return
        # Indexing 60,000 rules takes seconds: not on the full apply's path. A
        # delta that arrives meanwhile waits for it (``wait_ready``).
        builder = threading.Thread(target=self._build, args=(ctx, running, cfg, loaded),
                                   name="edge-index", daemon=True)
        with self._lock:
            self._building = builder
        builder.start()

    def _build(self, ctx: Context, running: RunningConfig, cfg: pb.RouterConfig,
               loaded: table.Loaded) -> None:
        try:
            # A copy: the loaded dict is also the service's memo of a rendering.
            copy = {name: dict(elems) for name, elems in loaded.elements.items()}
            sets = set(nft_edge.SETS) | {f"{nft_edge.ALLOW_PREFIX}{n}"
                                          for n, _ in nft_edge.allow_sets(loaded.elements)}
            index = EdgeIndex(cfg, copy, sets)
            with running.lock:
                # Installed only if nothing was applied since (else that apply indexes).
                if running.config is cfg and self.table.loaded is loaded:
                    self.table.loaded = table.Loaded(loaded.skeleton, copy)
                    with self._lock:
                        self._index = index
            # Millions of long-lived objects: out of the cyclic GC's full passes
            # (a pass over them stalls a delta for a second or two).
            gc.freeze()
        except Exception:  # deltas answer stale without an index: full pushes still work
            log.exception("router %s: indexing the edge table failed", ctx.router_id)
        finally:
            with self._lock:
                if self._building is threading.current_thread():
                    self._building = None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait (without the router's lock) for an index being built."""
        with self._lock:
            builder = self._building
        if builder is not None:
            builder.join(timeout)

    def forget(self) -> None:
        with self._lock:
            self._index = None

    def apply_delta(self, ctx: Context, cfg: pb.RouterConfig | None,
                    delta: epb.EdgeDelta) -> list[ObjectId]:
        with self._lock:
            index = self._index
        if cfg is None or index is None or index.cfg is not cfg:
            raise StaleDelta("no indexed config")
        if cfg.generation != delta.base_generation or delta.generation <= delta.base_generation:
            raise StaleDelta(f"runs generation {cfg.generation}, delta is "
                             f"{delta.base_generation} -> {delta.generation}")
        # A table deleted behind our back makes the dry run fail: stale then.
        if self.table.loaded is None:
            raise StaleDelta("the table is not loaded")
        for ref in delta.removed:
            if ref.kind not in DELTA_KINDS:
                raise StaleDelta(f"kind {ref.kind!r} is not changed in place")
        guests = {r.id for r in delta.removed if r.kind == nft_routed.GUEST_INGRESS}
        removed = {(r.kind, r.id) for r in delta.removed
                   if r.kind not in (nft_routed.GUEST_INGRESS, nft_metadata.GUEST_METADATA)}
        metadata = nft_metadata.replacements(cfg, delta)
        added = delta_objects(delta)
        guest_cmds, guest_cfg = "", None
        if guests or delta.guest_ingress_rules:
            guest_cfg = nft_routed.with_rules(cfg, guests, list(delta.guest_ingress_rules))
            guest_cmds = nft_routed.chain_commands(guest_cfg)
        # An object named again is replaced: its old elements go first.
        removed |= {nft_edge.object_key(o) for o in added
                    if index.current(nft_edge.object_key(o))}
        index.verify(removed, added)
        commands = index.change(removed, added) + guest_cmds
        try:
            if commands:
                libnft.run_checked(ctx.netns, commands)
        except (libnft.NftError, OSError) as e:
            # The index (and the loaded elements it edits) already count the
            # change: forget both, so the full push that follows loads the whole
            # table rather than diffing against elements that are not there.
            self.forget()
            self.table.loaded = None
            raise StaleDelta(f"nft refused the element update: {e}", table_changed=True) from e
        index.edit_config(removed, added, delta.generation)
        nft_metadata.put(cfg, metadata)
        if guest_cfg is not None:
            del cfg.guest_ingress_rules[:]
            cfg.guest_ingress_rules.extend(guest_cfg.guest_ingress_rules)
            loaded = self.table.loaded
            if loaded is not None:
                # The next full apply diffs against the chain as it now is.
                self.table.loaded = table.Loaded(
                    nft_routed.skeleton_with(loaded.skeleton, guest_cfg), loaded.elements)
        return sorted({nft_edge.object_key(o) for o in added}
                      | {(nft_edge.FIREWALL, r.id) for r in delta.guest_ingress_rules}
                      | {(nft_metadata.GUEST_METADATA, g.port_id) for g in metadata})

    def journal(self, ctx: Context, running: RunningConfig, delta: epb.EdgeDelta) -> None:
        if not edge_journal.append(ctx.paths.edge_journal, delta):
            return
        with self._lock:
            if self._compacting:
                return
            self._compacting = True
        threading.Thread(target=self._compact, args=(ctx, running), name="edge-journal",
                         daemon=True).start()

    def _compact(self, ctx: Context, running: RunningConfig) -> None:
        try:
            edge_journal.compact(ctx, running)
        finally:
            with self._lock:
                self._compacting = False

    def counters(self, ctx: Context, running: RunningConfig,
                 wanted: Set[ObjectId]) -> list[epb.EdgeCounter]:
        return edge_counters.counters(ctx.netns, running, wanted)
