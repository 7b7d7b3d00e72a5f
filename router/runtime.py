"""One router's runtime: verify, render, check and apply its config, keep the last good one.

    apply(cfg):  verify every service  -> an object refused: left out (below)
                 render every service  -> diff against what each last applied
                 check the changed ones (nft -c, dnsmasq --test, haproxy -c)
                                       -> an object refused: left out (below)
                                       -> else that service keeps its last good config
                 apply the changed ones, in order (``router.services.registry``)
                 persist what runs as config.pb (the last good config)

One refused object never stalls the rest of the router. When a check (ours
in verify, or a daemon's) names the object it refuses, and that object can be
left out (``router.objects``: ports, load balancers, VPN connections, edge
rules), the router runs the config with that object as it was before (or
without it) and reports it in the status with the reason; every other
object moves on to the new generation. A refusal that names no such object
rejects the whole config when verify refused it (an interface, a network);
when a daemon's check refused it, only that service keeps its last good
config, and the router's last_error says so.

A service whose rendered files equal what it last applied is not touched at
all, so pushing the same config twice rewrites no file, signals no daemon and
reloads no ruleset.

The runtime holds everything of one router: its config and status, what each
service last applied, and the router's service objects (with the state they
keep, such as the nftables table loaded and its edge index). Everything else
reaches that state through the public methods below.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence, Set

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from common import netlink
from common.fabric.base import FabricError
from common.netns import NETNS_RUN_DIR, ensure_netns, remove_netns
from common.private_files import ensure_private_dir
from router import objects
from router.errors import ApplyError, CheckError, ConfigError, ObjectNotFound, StaleDelta
from router.lib import files, proc
from router.published_status import STATE_FIELDS, PublishedStatus
from router.services.base import (
    Context,
    EdgeRules,
    FollowsRole,
    ObjectId,
    Rendered,
    RouterPaths,
    Service,
    awaiting_secrets,
    persisted_config,
)

log = logging.getLogger(__name__)

# A router's state directory: nobody else lists it; searchable, because
# dnsmasq reads its host files below it as its own user.
STATE_DIR_MODE = 0o711

# What can go wrong while applying a valid config; anything else is a bug.
APPLY_ERRORS = (ApplyError, netlink.NetlinkOpError, FabricError, proc.CommandError, OSError)
# Objects one apply may leave out before it gives up and rejects the config.
MAX_REFUSED = 64
# Daemon refusals remembered (per rendering), so a config pushed again is not checked again.
MAX_REFUSALS_KEPT = 16


# In a router's state dir while a change is under way (``RouterRuntime.adopt``).
APPLYING = "applying"

# A bulk listing (``reported_status``: netmgr's resync, watchers polling the
# agent) computes a router's status at most this often while nothing changes
# (the daemons' observations: BGP sessions, LB members, the VRRP role, ...);
# any change (an apply, an edge delta, a repair, a VRRP transition) ends the
# window at once, so a listing never reports an older generation or role.
LIST_STATUS_WINDOW_S = 1.0


def router_netns_name(prefix: str, router_id: str) -> str:
    """Name of the network namespace that holds router `router_id` on a host."""
    return f"{prefix}r-{router_id[:12]}"


def verify(cfg: pb.RouterConfig, services: Iterable[Service]) -> None:
    """Every service's verify(); raises the first ConfigError."""
    for service in services:
        service.verify(cfg)


def stop_processes(paths: RouterPaths, netns: str) -> list[int]:
    """Stop everything that runs in a router, found by the router's own
    records: the daemons it started (pid and start time, ``paths.records``)
    and every process in its network namespace. A daemon's command line need
    not name the router (charon's does not). Returns the pids stopped."""
    pids = recorded_pids(paths)
    pids.update(proc.netns_pids(os.path.join(NETNS_RUN_DIR, netns)))
    return proc.stop_all(pids)


def recorded_pids(paths: RouterPaths) -> set[int]:
    """The daemons of a router still running, by its records (pid and start time)."""
    if not os.path.isdir(paths.records):
        return set()
    found = (proc.recorded(os.path.join(paths.records, name))
             for name in os.listdir(paths.records))
    return {pid for pid in found if pid is not None}


def load_config(path: str) -> pb.RouterConfig:
    with open(path, "rb") as f:
        return pb.RouterConfig.FromString(f.read())


def _load_refused(path: str) -> dict[ObjectId, str]:
    """The objects a persisted config holds refused ((kind, id) -> why)."""
    try:
        with open(path) as f:
            return {(str(o["kind"]), str(o["id"])): str(o["error"]) for o in json.load(f)}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s unreadable, ignored: %s", path, e)
        return {}


class RouterRuntime:
    """The running state of one router. Its methods serialise on ``lock``
    (also held by services' background work, through ``base.RunningConfig``)."""

    def __init__(self, ctx: Context, services: Sequence[Service]) -> None:
        """``services``: this router's own service objects, in apply order
        (``router.services.registry.router_services``); removed in reverse."""
        self.ctx = ctx
        self.lock = threading.Lock()
        # The status as of the last completed change, for readers that must
        # not wait for the lock (``reported_status``); published under it.
        self.published = PublishedStatus()
        # When a listing last computed the published status (None: a change
        # since); ``clock`` is replaceable for tests.
        self.clock: Callable[[], float] = time.monotonic
        self._listed_at: float | None = None
        self._vrrp_lock = threading.Lock()  # VRRP notifications, one at a time
        # A notification that came while the router had no redundant config
        # yet (keepalived started by the apply under way notifies before it
        # ends): carried out once that apply is done (``_replay_vrrp``).
        self._missed_vrrp: Callable[[pb.RouterConfig], str] | None = None
        self.services = tuple(services)
        # The last good config: what runs (refused objects as they were, or left out).
        self.config: pb.RouterConfig | None = None
        self.rejected_generation = 0
        self.last_error = ""
        self.apply_seconds = 0.0
        # How often each service's apply() ran: the proof that a no-op is one.
        self.service_applies: dict[str, int] = {s.name: 0 for s in self.services}
        self._applied: dict[str, Rendered] = {}  # service -> rendered files it runs
        # Adopted at an agent start, not yet rendered (``take_over``).
        self._adopted = False
        # Every service's health as last checked, and when: a bulk status
        # (``reported_status``) reports it while it is young enough.
        self._health: tuple[float, dict[str, pb.ServiceStatus]] | None = None
        self._error_object: pb.ObjectStatus | None = None
        # Objects the last full apply left out or kept as they were: (kind, id) -> why.
        self._refused: dict[ObjectId, str] = {}
        # Services whose daemon refused their part, naming no object: name -> why.
        self._held: dict[str, str] = {}
        # A daemon's last refusal per service (the rendering and the error), so
        # that pushing the same config again does not run the daemon's check again.
        self._refusals: dict[tuple[str, int], tuple[Rendered, CheckError]] = {}
        # The service that changes edge rules in place (nftables), by name.
        self._edge: tuple[str, EdgeRules] | None = None
        for s in self.services:
            if s.capabilities.edge_rules is not None:
                self._edge = (s.name, s.capabilities.edge_rules)

    # ---------------------------------------------------------------- apply

    def apply(self, cfg: pb.RouterConfig) -> pb.RouterStatus:
        with self.lock:
            self._apply(cfg)
            status = self._published_status()
        if self._replay_vrrp():
            with self.lock:
                status = self._published_status()
        return status

    def restore(self) -> pb.RouterStatus | None:
        """Apply the persisted config again, with the edge changes made in
        place after it (an agent start); None when nothing is persisted."""
        cfg = self._persisted()
        if cfg is None:
            return None
        with self.lock:
            self._apply(cfg, _load_refused(self.ctx.paths.refused))
            status = self._published_status()
        if self._replay_vrrp():
            with self.lock:
                status = self._published_status()
        return status

    def _persisted(self) -> pb.RouterConfig | None:
        path = self.ctx.paths.config
        if not os.path.exists(path):
            return None
        cfg = load_config(path)
        if self._edge is not None:
            cfg = self._edge[1].restore(self.ctx.paths, cfg)
        return cfg

    # ------------------------------------------------------------- adoption

    def adopt(self) -> bool:
        """At an agent start: take the router over as the previous agent left
        it, touching nothing (no daemon signalled, no table reloaded, no
        fork), when its namespace is still there (not a host reboot) and no
        change was cut short (the ``applying`` mark). False: it cannot be,
        apply the persisted config again (``restore``). The caller knows the
        rendering code is the one that applied it (``router.agent.adoption``).

        What each service last applied is rendered later (``take_over``),
        off the start's critical path.
        """
        if not os.path.exists(os.path.join(NETNS_RUN_DIR, self.ctx.netns)) or \
                os.path.exists(self.ctx.paths.path(APPLYING)):
            return False
        cfg = self._persisted()
        if cfg is None:
            return False
        refused = _load_refused(self.ctx.paths.refused)
        with self.lock:
            self.config = cfg
            # Reported from the start, as the previous agent reported them.
            self._refused = refused
            self._adopted = True
            self._publish_state()
        return True

    def take_over(self) -> None:
        """Render an adopted config as what each service runs (and let the
        services take over the state they keep, such as the table loaded):
        until then a push would find every service changed."""
        with self.lock:
            self._take_over()

    def _take_over(self) -> None:
        if not self._adopted or self.config is None:
            return
        self._adopted = False
        cfg = self.config
        for s in self.services:
            rendered = s.render(cfg, self.ctx.paths)
            if s.capabilities.adopts is not None:
                s.capabilities.adopts.adopt(self.ctx, cfg, rendered)
            self._applied[s.name] = rendered
        if self._edge is not None:
            self._edge[1].full_applied(self.ctx, self)

    def _applying(self, started: bool) -> None:
        """Mark (or clear) a change in progress: an agent killed meanwhile
        leaves the mark, and its successor applies again rather than adopt."""
        path = self.ctx.paths.path(APPLYING)
        try:
            if started:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            else:
                files.remove(path)
        except FileNotFoundError:
            pass  # no state dir: nothing applied yet, nothing to adopt
        except OSError as e:  # the change itself must not fail for its mark
            log.warning("router %s: %s: %s", self.ctx.router_id, path, e)

    def _apply(self, cfg: pb.RouterConfig, refused: dict[ObjectId, str] | None = None) -> None:
        """Apply ``cfg``. ``refused``: objects already reported as refused
        (a repair or restore of the config that runs, which holds them as they were)."""
        started = time.monotonic()
        refused = dict(refused or {})
        generation = cfg.generation
        self._take_over()
        self._health = None
        try:
            cfg = self._verified(cfg, refused)
        except ConfigError as e:
            self._reject(generation, e)
            return
        ensure_private_dir(self.ctx.state_dir, STATE_DIR_MODE)
        ensure_netns(self.ctx.netns)
        # Seconds per changed service (check + apply): in the log, because
        # under TCG (router VMs) one slow daemon check dominates an apply.
        took: dict[str, float] = {}
        try:
            cfg, rendered, held = self._checked(cfg, refused, took)
        except ConfigError as e:
            self._reject(generation, e)
            return
        rendered_at = time.monotonic()
        changed = [s for s in self.services
                   if s.name not in held and self._applied.get(s.name) != rendered[s.name]]
        if changed:
            self._applying(True)
        for service in changed:
            t0 = time.monotonic()
            try:
                service.apply(self.ctx, cfg, rendered[service.name], self.config)
            except APPLY_ERRORS as e:
                # Not a rejection: the config is valid and a retry may work.
                # The service's state is unknown now, so the next apply redoes it.
                self._applied.pop(service.name, None)
                self.last_error = f"generation {cfg.generation}: {service.name}: {e}"
                log.error("router %s: %s", cfg.router_id, self.last_error)
                return
            finally:
                self.service_applies[service.name] += 1
                took[service.name] = took.get(service.name, 0.0) + time.monotonic() - t0
            self._applied[service.name] = rendered[service.name]
        if self.config != cfg:
            # Without its secrets: they stay in memory (self.config).
            files.write_if_changed_bytes(self.ctx.paths.config, persisted_config(cfg),
                                         mode=0o600)
        if changed:
            self._applying(False)
        self.config = cfg
        self._clear_errors()
        self._set_refused(refused, held)
        if self._edge is not None:
            self._edge[1].full_applied(self.ctx, self)
        self.apply_seconds = time.monotonic() - started
        if changed:
            log.info("router %s: generation %d applied (%s) in %.3f s (checks %.3f s)",
                     cfg.router_id, cfg.generation,
                     ", ".join(f"{n} {t:.3f} s" for n, t in took.items()),
                     self.apply_seconds, rendered_at - started)

    def _verified(self, cfg: pb.RouterConfig, refused: dict[ObjectId, str]) -> pb.RouterConfig:
        """``cfg`` as every service's verify() accepts it: each object it
        refuses left out (or as it was). Raises the ConfigError of anything else."""
        for _ in range(MAX_REFUSED + 1):
            try:
                verify(cfg, self.services)
                return cfg
            except ConfigError as e:
                cfg = self._without(cfg, e, refused)
        raise ConfigError(f"more than {MAX_REFUSED} objects refused")

    def _without(self, cfg: pb.RouterConfig, e: ConfigError,
                 refused: dict[ObjectId, str]) -> pb.RouterConfig:
        """``cfg`` without the object ``e`` names (as it ran before, the first
        time it is refused); raises ``e`` when that object cannot be left out."""
        oid = (e.kind, e.object_id)
        previous = None if oid in refused else self.config
        out = objects.leave_out(cfg, previous, oid)
        if out is None:
            raise e
        refused.setdefault(oid, str(e))
        log.warning("router %s: generation %d: %s %s left out: %s", self.ctx.router_id,
                    cfg.generation, *oid, e)
        return out

    def _checked(self, cfg: pb.RouterConfig, refused: dict[ObjectId, str],
                 took: dict[str, float]) -> tuple[pb.RouterConfig, dict[str, Rendered],
                                                  dict[str, str]]:
        """Render every service and run the daemons' checks of the changed
        ones. Returns the config that runs, its renderings, and the services
        held at their last good config (name -> why)."""
        held: dict[str, str] = {}
        for _ in range(MAX_REFUSED + 1):
            rendered = {s.name: s.render(cfg, self.ctx.paths) for s in self.services}
            for service in self.services:
                name = service.name
                if name in held or self._applied.get(name) == rendered[name]:
                    continue
                t0 = time.monotonic()
                try:
                    self._check(service, rendered[service.name])
                except CheckError as e:
                    try:
                        without = self._without(cfg, e, refused)
                    except ConfigError:
                        held[service.name] = str(e)
                        log.warning("router %s: generation %d: %s keeps its last good config: "
                                    "%s", self.ctx.router_id, cfg.generation, service.name, e)
                        continue
                    cfg = self._verified(without, refused)
                    break  # render again without it
                finally:
                    took[service.name] = took.get(service.name, 0.0) + time.monotonic() - t0
            else:
                return cfg, rendered, held
        raise ConfigError(f"more than {MAX_REFUSED} objects refused")

    def _check(self, service: Service, rendered: Rendered) -> None:
        """The service's check, or the refusal it gave for this same rendering."""
        key = (service.name, hash(tuple(sorted(rendered.items()))))
        last = self._refusals.get(key)
        if last is not None and last[0] == rendered:
            raise last[1]
        try:
            service.check(self.ctx, rendered)
        except CheckError as e:
            if len(self._refusals) >= MAX_REFUSALS_KEPT:
                self._refusals.clear()
            self._refusals[key] = (rendered, e)
            raise

    def repair(self) -> list[str]:
        """Re-apply, from the last good config, every service whose health
        check fails (a dnsmasq that died, a table someone deleted).

        Pushing the same config again would not do it: an unchanged config
        is a no-op by design. Returns the names of the services repaired.
        """
        with self.lock:
            if self.config is None:
                return []
            cfg = self.config
            sick = [name for name, h in self._check_health(cfg).items() if not h.healthy]
            if not sick:
                # e.g. active VPN connections without an IKE SA (the peer
                # refused or was away): initiate again.
                for s in self.services:
                    if s.capabilities.tends is not None:
                        s.capabilities.tends.tend(self.ctx, cfg)
                return []
            log.warning("router %s: repairing %s", self.ctx.router_id, ", ".join(sick))
            self._take_over()
            for name in sick:
                self._applied.pop(name, None)
            self._apply(cfg, self._refused)
            self._publish_state()
            return sick

    def vrrp_transition(self, observe: Callable[[pb.RouterConfig], str]) -> str:
        """keepalived says this instance changed state: ``observe(config)``
        is the state it is in now. The services that follow the role act on
        it: first, without the router's lock, those that act at once
        (conntrackd's commit of the synced connections: a running apply
        must not delay it); then, under the lock and in apply order, the
        others (HAProxy and strongSwan start or stop); one that fails is
        applied again by the next repair. Returns the state ("" for a router
        that is not redundant)."""
        with self._vrrp_lock:  # observed and recorded in the order they happen
            cfg = self.config
            if cfg is None or not cfg.HasField("redundancy"):
                # keepalived, just started by an apply under way, notifies
                # before that apply ends; it will not notify that state
                # again, and the services that follow the role (conntrackd's
                # resync, which lifts the failback gate) must hear of it.
                self._missed_vrrp = observe
                return ""
            self._missed_vrrp = None
            state = observe(cfg)
            if not self.ctx.role.set(state, time.time()):
                return state
            self._listed_at = None  # the role is reported at once
            log.info("router %s: VRRP %s", self.ctx.router_id, state)
            early = set()
            for s in self.services:
                at_once, rendered = s.capabilities.follows_role_at_once, self._applied.get(s.name)
                if at_once is not None and rendered is not None:
                    self._follow(s, at_once, cfg, rendered, state)
                    early.add(s.name)
        with self.lock:
            cfg = self.config
            if cfg is None or not cfg.HasField("redundancy"):
                return state
            self._take_over()
            self._health = None
            self._listed_at = None
            for s in self.services:
                follows = s.capabilities.follows_role or s.capabilities.follows_role_at_once
                if follows is None or s.name in early or s.name not in self._applied:
                    continue
                self._follow(s, follows, cfg, self._applied[s.name], state)
            return state

    def _replay_vrrp(self) -> bool:
        """The notification an apply's own keepalived sent before the apply
        ended, now that the router has the config (outside the router's
        lock: ``vrrp_transition`` takes it). Whether there was one."""
        with self._vrrp_lock:
            missed, self._missed_vrrp = self._missed_vrrp, None
            cfg = self.config
        if missed is None or cfg is None or not cfg.HasField("redundancy"):
            return False
        self.vrrp_transition(missed)
        return True

    def _follow(self, s: Service, follows: FollowsRole, cfg: pb.RouterConfig,
                rendered: Rendered, state: str) -> None:
        try:
            follows.role_changed(self.ctx, cfg, rendered)
        except APPLY_ERRORS as e:
            self._applied.pop(s.name, None)
            log.error("router %s: %s on VRRP %s: %s", self.ctx.router_id, s.name, state, e)

    def _reject(self, generation: int, e: ConfigError) -> None:
        self.rejected_generation = generation
        self.last_error = f"generation {generation} rejected: {e}"
        self._error_object = (
            pb.ObjectStatus(kind=e.kind, id=e.object_id, ok=False, error=str(e))
            if e.kind and e.object_id else None
        )
        log.warning("router %s: %s", self.ctx.router_id, self.last_error)

    def _clear_errors(self) -> None:
        self.rejected_generation, self.last_error, self._error_object = 0, "", None

    def _set_refused(self, refused: dict[ObjectId, str], held: dict[str, str]) -> None:
        """Record what the full apply refused; persisted beside config.pb, so
        that a restarted agent reports it too."""
        self._refused, self._held = refused, held
        path = self.ctx.paths.refused
        if not refused:
            files.remove(path)
            return
        text = json.dumps([{"kind": k, "id": i, "error": why}
                           for (k, i), why in sorted(refused.items())], indent=1)
        files.write_if_changed(path, text, mode=0o600)

    # --------------------------------------------------------------- status

    def status(self) -> pb.RouterStatus:
        with self.lock:
            return self._published_status()

    def reported_status(self, max_age: float = 0.0) -> pb.RouterStatus | None:
        """The status of a router that holds a config or an error (None: an
        empty runtime, e.g. left by a failed request), without waiting for
        a change under way: then, the status published at the end of the
        last completed one (never an older generation than the router has
        applied; its daemons as last observed). Otherwise the status now,
        ``max_age``: the services' health checked at most that many seconds
        ago (by the agent's health pass) rather than checked now (0: now).
        Within ``LIST_STATUS_WINDOW_S`` of the last listing, with no change
        since, the status that listing published."""
        if not self.lock.acquire(blocking=False):
            return self.published.read()
        try:
            if not self._reports():
                return None
            now = self.clock()
            listed = self._listed_at
            if listed is not None and 0 <= now - listed < LIST_STATUS_WINDOW_S:
                cached = self.published.read()
                if cached is not None:
                    return cached
            status = self._published_status(max_age)
            self._listed_at = now
            return status
        finally:
            self.lock.release()

    def status_and_config(self) -> tuple[pb.RouterStatus, pb.RouterConfig | None]:
        """The status and the config it reports on, taken together."""
        with self.lock:
            return self._published_status(), self.config

    def check_health(self) -> list[str]:
        """Check every service now (kept for ``reported_status``); the sick ones."""
        with self.lock:
            if self.config is None:
                return []
            health = self._check_health(self.config)
            self._publish_state(self._serving(self.config, health))
            return [n for n, h in health.items() if not h.healthy]

    def _check_health(self, cfg: pb.RouterConfig) -> dict[str, pb.ServiceStatus]:
        health = {s.name: s.health(self.ctx, cfg) for s in self.services}
        self._health = (time.monotonic(), health)
        return health

    def _published_status(self, max_age: float = 0.0) -> pb.RouterStatus:
        """The status now (``_status``), published for lock-free readers."""
        self._listed_at = None
        status = self._status(max_age)
        self.published.publish(status if self._reports() else None)
        return status

    def _reports(self) -> bool:
        """Whether there is anything to report (a config or an error)."""
        return self.config is not None or bool(self.last_error)

    def _publish_state(self, services: list[pb.ServiceStatus] | None = None) -> None:
        """Publish the runtime's own fields (and ``services``' health, just
        checked); the daemons as last observed."""
        self._listed_at = None
        if not self._reports():
            self.published.publish(None)
            return
        status = self._state_status()
        if services is None:
            self.published.publish_state(status)
            return
        status.services.extend(services)
        self.published.publish_state(status, (*STATE_FIELDS, "services"))

    def _serving(self, cfg: pb.RouterConfig,
                 health: dict[str, pb.ServiceStatus]) -> list[pb.ServiceStatus]:
        """The health of the services reported for ``cfg``, in order."""
        return [health[s.name] for s in self.services
                if s.capabilities.conditional is None or s.capabilities.conditional.serves(cfg)]

    def _state_status(self) -> pb.RouterStatus:
        """The runtime's own fields of the status (``STATE_FIELDS``): no daemon asked."""
        cfg = self.config or pb.RouterConfig(router_id=self.ctx.router_id)
        objects = [
            pb.ObjectStatus(kind="network", id=n.network_id, ok=True) for n in cfg.guest_networks
        ] + [
            pb.ObjectStatus(kind="port", id=h.port_id, ok=True)
            for n in cfg.guest_networks for h in n.hosts
        ]
        bad = [pb.ObjectStatus(kind=k, id=i, ok=False, error=why)
               for (k, i), why in sorted(self._refused.items())]
        if self._error_object is not None:
            bad.append(self._error_object)
        if bad:
            named = {(o.kind, o.id) for o in bad}
            objects = [o for o in objects if (o.kind, o.id) not in named] + bad
        held = "; ".join(f"{name} keeps its last good config: {why}"
                         for name, why in sorted(self._held.items()))
        return pb.RouterStatus(
            router_id=self.ctx.router_id,
            applied_generation=cfg.generation,
            rejected_generation=self.rejected_generation,
            last_error=self.last_error or held,
            objects=objects,
            apply_seconds=self.apply_seconds,
            awaiting_secrets=awaiting_secrets(cfg),
        )

    def _status(self, max_age: float = 0.0) -> pb.RouterStatus:
        status = self._state_status()
        cfg = self.config
        if cfg is None:
            return status
        checked = self._health
        if max_age and (checked is None or time.monotonic() - checked[0] > max_age):
            checked = (0.0, self._check_health(cfg))
        for s in self.services:
            conditional = s.capabilities.conditional
            if conditional is None or conditional.serves(cfg):
                status.services.append(checked[1][s.name] if max_age and checked
                                       else s.health(self.ctx, cfg))
        for s in self.services:
            extras = s.capabilities.status_extras
            if extras is not None:
                extras.add_status(self.ctx, cfg, status)
        return status

    # ----------------------------------------------------------- edge rules

    def apply_edge_delta(self, delta: epb.EdgeDelta) -> epb.ApplyEdgeDeltaResponse:
        """Apply an edge delta in place, or answer ``stale`` (push the whole config)."""
        if self._edge is None:
            return self._delta_reply(stale=True)
        name, edge = self._edge
        self.take_over()  # an adopted router's index is built from its rendering
        edge.wait_ready()
        with self.lock:
            try:
                return self._apply_edge_delta(name, edge, delta)
            finally:
                self._publish_state()

    def _apply_edge_delta(self, name: str, edge: EdgeRules,
                          delta: epb.EdgeDelta) -> epb.ApplyEdgeDeltaResponse:
        started = time.monotonic()
        self._applying(True)
        try:
            added = edge.apply_delta(self.ctx, self.config, delta)
        except StaleDelta as e:
            if e.table_changed:
                # Unknown until the next full apply, which clears the mark.
                self._applied.pop(name, None)
            else:
                self._applying(False)
            log.info("router %s: delta to %d not applied in place: %s", self.ctx.router_id,
                     delta.generation, e)
            return self._delta_reply(stale=True)
        except ConfigError as e:
            self._applying(False)
            self._reject(delta.generation, e)
            bad = [pb.ObjectStatus(kind=e.kind, id=e.object_id, ok=False, error=str(e))] \
                if e.kind and e.object_id else []
            return self._delta_reply(objects=bad)
        # The table no longer matches what the service last rendered: the
        # next full apply diffs elements against what is loaded.
        self._applied.pop(name, None)
        self._clear_errors()
        self._follow_edge(delta)
        # Objects the delta removed or replaced are no longer the refused ones.
        changed = {(r.kind, r.id) for r in delta.removed} | set(added)
        if self._refused.keys() & changed:
            self._set_refused({k: v for k, v in self._refused.items() if k not in changed},
                              self._held)
        self.apply_seconds = time.monotonic() - started
        try:
            edge.journal(self.ctx, self, delta)
            self._applying(False)
        except OSError:
            # Applied but not persisted: a restarted agent reports the older
            # generation of config.pb, and netmgr pushes again (the mark
            # makes it apply that again rather than adopt the table).
            log.exception("router %s: journaling delta %d failed", self.ctx.router_id,
                          delta.generation)
        return self._delta_reply(objects=[pb.ObjectStatus(kind=k, id=i, ok=True)
                                          for k, i in added])

    def _follow_edge(self, delta: epb.EdgeDelta) -> None:
        """Services deriving from edge rules, after a delta (same generation).
        Their rendering is stale either way: the next full apply redoes them."""
        for s in self.services:
            follower = s.capabilities.follows_edge
            if follower is None or self.config is None:
                continue
            self._applied.pop(s.name, None)
            try:
                follower.edge_applied(self.ctx, self.config, delta)
            except APPLY_ERRORS as e:
                self.last_error = f"generation {self.config.generation}: {s.name}: {e}"
                log.error("router %s: %s", self.ctx.router_id, self.last_error)

    def _delta_reply(self, stale: bool = False,
                     objects: Iterable[pb.ObjectStatus] = ()) -> epb.ApplyEdgeDeltaResponse:
        return epb.ApplyEdgeDeltaResponse(
            stale=stale, applied_generation=self.config.generation if self.config else 0,
            rejected_generation=self.rejected_generation, last_error=self.last_error,
            objects=list(objects), apply_seconds=self.apply_seconds)

    def edge_counters(self, wanted: Set[ObjectId]) -> list[epb.EdgeCounter]:
        """Packets and bytes per edge object (every object's if ``wanted`` is empty)."""
        if self._edge is None:
            return []
        return self._edge[1].counters(self.ctx, self, wanted)

    def set_guest_password(self, port_id: str, password: str) -> None:
        """Hand a port's guest a password, held in memory by the service that
        serves it (never in config.pb)."""
        with self.lock:
            for s in self.services:
                holder = s.capabilities.guest_passwords
                if holder is not None and self.config is not None:
                    holder.set_password(self.ctx, self.config, port_id, password)
                    return
        raise ObjectNotFound(f"router {self.ctx.router_id} serves no guest metadata yet")

    # --------------------------------------------------------------- delete

    def delete(self, keep_leases: bool) -> None:
        """Stop the daemons, unplug the interfaces, remove the namespace and files."""
        with self.lock:
            for service in reversed(self.services):
                service.remove(self.ctx, self.config, keep_leases)
            # What the services did not stop (an old HAProxy worker finishing
            # its connections, a capture): nothing outlives its namespace.
            stopped = stop_processes(self.ctx.paths, self.ctx.netns)
            if stopped:
                log.info("router %s: stopped %s", self.ctx.router_id,
                         ", ".join(map(str, stopped)))
            remove_netns(self.ctx.netns)
            self._remove_files(keep_leases)
            self.config, self._applied, self._health = None, {}, None
            self._clear_errors()
            self._refused, self._held, self._refusals = {}, {}, {}
            self._listed_at = None
            self.published.publish(None)

    def _remove_files(self, keep_leases: bool) -> None:
        top = self.ctx.state_dir
        if not os.path.isdir(top):
            return
        if keep_leases and os.path.exists(self.ctx.paths.dhcp_leases):
            keep = os.path.relpath(self.ctx.paths.dnsmasq(), top)
            for name in os.listdir(top):
                if name != keep:
                    path = os.path.join(top, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        files.remove(path)
            return
        shutil.rmtree(top)
