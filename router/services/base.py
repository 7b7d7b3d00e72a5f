"""The contract of a router service, and what every service is given.

A service turns the part of a RouterConfig it owns into a running daemon or
kernel state, in phases the runtime (``router.runtime``) calls in order:

    verify(cfg)                      raise ConfigError naming the object; no side effects
    render(cfg, paths) -> Rendered   pure: relative path (or key) -> content
    check(ctx, rendered)             the daemon's own validator (nft -c, dnsmasq --test)
    apply(ctx, cfg, rendered, previous)   make it so (idempotent)
    health(ctx, cfg) -> ServiceStatus
    remove(ctx, cfg, keep_leases)    tear the service down for DeleteRouter

The runtime calls apply() only when a service's rendered output differs from
what it last applied, so an unchanged config touches nothing. What a service
offers beyond these phases it declares in ``capabilities`` (a
``Capabilities``); the runtime never looks for a method by name.

Each router has its own service objects (``router.services.registry``), so
a service may keep state of that one router (nftables: the table it loaded).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Protocol

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from common.fabric.base import Fabric

# What render() gives: a file's path relative to the service's directory (or
# a key that is compared but never written) -> its content.
Rendered = dict[str, str]
# An API object of a router config: (kind, id), e.g. ("portforward", "pf1").
ObjectId = tuple[str, str]

# Unix socket paths are short (108 bytes); HAProxy binds "<path>.<pid>.tmp" first.
_MAX_SOCKET_DIR = 80
HAPROXY_SOCKET_ROOT = "/run/cloudnet-lb"
LIBIPSEC_TUN = "ipsec0"


def vrrp_notify_socket(agent_state_dir: str) -> str:
    """The agent's socket for keepalived's notifications and checks
    (``router.agent.vrrp_listener``): in the agent's state dir when that
    path is short enough for a unix socket, else under /run."""
    local = os.path.join(agent_state_dir, "vrrp.sock")
    if len(local) < _MAX_SOCKET_DIR:
        return local
    return os.path.join(HAPROXY_SOCKET_ROOT,
                        hashlib.sha1(agent_state_dir.encode()).hexdigest()[:16] + "-vrrp.sock")


def vrrp_alive_lock(agent_state_dir: str) -> str:
    """The file the agent's VRRP listener holds locked while it listens
    (keepalived's liveness check of the agent: ``flock`` on it)."""
    return os.path.join(agent_state_dir, "vrrp.alive")


@dataclass(frozen=True)
class RouterPaths:
    """Where one router's files live, under ``<agent state dir>/routers/<router id>``:

        config.pb         the last good config without its secrets (``router.runtime``)
        refused.json      the objects it holds refused, and why (``router.runtime``)
        procs/            pid and start time of each daemon started (``proc.write_record``)
        edge-journal.pb   edge deltas applied in place since config.pb (nftables/journal.py)
        cloudnet.nft      the nftables table as last loaded
        dnsmasq/          dnsmasq.conf, dhcp-hosts/, hosts/, leases, pid file, log
        haproxy/          haproxy.cfg, pid file (the stats socket: ``haproxy_socket_dir``)
        strongswan/       strongswan.conf, charon.log, run/ (charon's /run), loaded.json
        keepalived/       keepalived.conf, pid files, demoted (the arbiter's hold)
        conntrackd/       conntrackd.conf, lock, log (the control socket: ``conntrackd_socket``)
    """

    state_dir: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)

    @property
    def config(self) -> str:
        return self.path("config.pb")

    @property
    def refused(self) -> str:
        return self.path("refused.json")

    @property
    def records(self) -> str:
        """The directory of the records (pid, start time) of the daemons started."""
        return self.path("procs")

    def record(self, daemon: str) -> str:
        return os.path.join(self.records, daemon)

    @property
    def edge_journal(self) -> str:
        return self.path("edge-journal.pb")

    @property
    def nft_ruleset(self) -> str:
        return self.path("cloudnet.nft")

    def dnsmasq(self, *parts: str) -> str:
        return self.path("dnsmasq", *parts)

    @property
    def dhcp_leases(self) -> str:
        return self.dnsmasq("leases")

    def haproxy(self, *parts: str) -> str:
        return self.path("haproxy", *parts)

    @property
    def haproxy_socket_dir(self) -> str:
        """The state directory when its path is short enough for a unix socket,
        else a directory of this router's own under /run."""
        local = self.path("lb")
        if len(os.path.join(local, "s.sock")) < _MAX_SOCKET_DIR:
            return local
        return os.path.join(HAPROXY_SOCKET_ROOT,
                            hashlib.sha1(self.state_dir.encode()).hexdigest()[:16])

    @property
    def haproxy_stats_socket(self) -> str:
        return os.path.join(self.haproxy_socket_dir, "s.sock")

    def keepalived(self, *parts: str) -> str:
        return self.path("keepalived", *parts)

    @property
    def vrrp_notify_socket(self) -> str:
        """The agent's (``<agent state dir>/routers/<router id>`` is this dir)."""
        return vrrp_notify_socket(os.path.dirname(os.path.dirname(self.state_dir)))

    @property
    def vrrp_alive_lock(self) -> str:
        """The agent's liveness lock (``vrrp_alive_lock``)."""
        return vrrp_alive_lock(os.path.dirname(os.path.dirname(self.state_dir)))

    def conntrackd(self, *parts: str) -> str:
        return self.path("conntrackd", *parts)

    @property
    def conntrackd_socket(self) -> str:
        """conntrackd's control socket (a short path, like HAProxy's)."""
        return os.path.join(self.haproxy_socket_dir, "ct.sock")

    def strongswan(self, *parts: str) -> str:
        return self.path("strongswan", *parts)

    @property
    def strongswan_log(self) -> str:
        return self.strongswan("charon.log")


class RedundancyRole:
    """The VRRP state of one router instance as keepalived last reported it
    (``RouterRuntime.vrrp_transition``). A single router has none; services
    that run on the master only (HAProxy, strongSwan) ask ``active``."""

    STATES = ("MASTER", "BACKUP", "FAULT")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = ""
        self.since = 0.0  # unix time of the last transition
        self.transitions = 0
        # Whether keepalived said so (else the agent read it off the addresses).
        self.confirmed = True

    def set(self, state: str, now: float) -> bool:
        """Record ``state`` as keepalived (or the agent) decided it; whether
        the services that follow the role must act on it (a change, or a
        state only learnt until now)."""
        with self._lock:
            act = state != self.state or not self.confirmed
            self.confirmed = True
            if state != self.state:
                self.state, self.since = state, now
                self.transitions += 1
            return act

    def learn(self, state: str, now: float) -> None:
        """What the addresses show, while nothing was reported (an agent
        restart adopted a running keepalived): the next report still acts."""
        with self._lock:
            if self.state:
                return
            self.state, self.since, self.confirmed = state, now, False

    def active(self, cfg: pb.RouterConfig) -> bool:
        """Whether this instance serves what only one instance may (a single
        router always does; a redundant one while it is MASTER)."""
        return not cfg.HasField("redundancy") or self.state == "MASTER"


@dataclass(frozen=True)
class Context:
    """Where one router lives: its namespace, its files, its fabric, and
    (a redundant router) its VRRP role."""

    router_id: str
    netns: str
    state_dir: str  # <agent state dir>/routers/<router_id>
    fabric: Fabric
    dnsmasq_user: str = "dnsmasq"
    paths: RouterPaths = field(init=False, repr=False, compare=False)
    role: RedundancyRole = field(default_factory=RedundancyRole, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", RouterPaths(self.state_dir))


class HostFeatures(Protocol):
    """What this host's kernel offers; a service asks when it renders."""

    def vpn_backend(self) -> str:
        """"kernel" when the kernel has ESP (XFRM), else "libipsec" (userspace ESP)."""
        ...

    def nft_map_as_set_lookup(self) -> bool:
        """Whether nf_tables accepts a map looked up as a set (not Linux 6.1)."""
        ...

    def router_conntrack_limit(self) -> int:
        """Connections one router may track at once (0: no limit of its own)."""
        ...


@dataclass(frozen=True)
class KnownHost:
    """Host features given rather than probed (tests and tools)."""

    backend: str = "kernel"
    map_as_set: bool = True
    conntrack_limit: int = 0

    def vpn_backend(self) -> str:
        return self.backend

    def nft_map_as_set_lookup(self) -> bool:
        return self.map_as_set

    def router_conntrack_limit(self) -> int:
        return self.conntrack_limit


def persisted_config(cfg: pb.RouterConfig) -> bytes:
    """What config.pb holds of ``cfg``: everything but its secrets. VPN
    pre-shared keys live in memory only (the agent's, charon's); a config
    restored from disk lacks them until netmgr pushes them again."""
    if not any(c.psk for c in cfg.vpn_connections):
        return cfg.SerializeToString()
    copy = pb.RouterConfig()
    copy.CopyFrom(cfg)
    for c in copy.vpn_connections:
        c.psk = ""
    return copy.SerializeToString()


def awaiting_secrets(cfg: pb.RouterConfig) -> bool:
    """Whether ``cfg`` lacks secrets it needs (restored from config.pb)."""
    return any(not c.psk for c in cfg.vpn_connections)


def vpn_tun(host: HostFeatures) -> str:
    """The TUN device kernel-libipsec routes tunnelled traffic through ("" for kernel ESP)."""
    return LIBIPSEC_TUN if host.vpn_backend() == "libipsec" else ""


class RunningConfig(Protocol):
    """What background work of a service (indexing, compaction) may read of
    its router: the config it runs, under the lock that serialises changes."""

    @property
    def lock(self) -> threading.Lock: ...

    @property
    def config(self) -> pb.RouterConfig | None: ...


# ------------------------------------------------------------ capabilities


class Conditional(Protocol):
    def serves(self, cfg: pb.RouterConfig) -> bool:
        """Whether the service is reported in the router status for ``cfg``."""
        ...


class Tends(Protocol):
    def tend(self, ctx: Context, cfg: pb.RouterConfig) -> list[str]:
        """Nudge what runs when every service is healthy (the agent's health
        pass); returns what it acted on."""
        ...


class StatusExtras(Protocol):
    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        """Fill the service's own fields of the router status (LB members, VPN SAs)."""
        ...


class EdgeRules(Protocol):
    """Edge rules changed in place, without a full apply (the RouterEdge API)."""

    def restore(self, paths: RouterPaths, cfg: pb.RouterConfig) -> pb.RouterConfig:
        """The persisted config with the changes made in place after it (agent start)."""
        ...

    def full_applied(self, ctx: Context, running: RunningConfig) -> None:
        """After every successful full apply (under the router's lock)."""
        ...

    def wait_ready(self) -> None:
        """Wait, without the router's lock, for what a delta needs (an index being built)."""
        ...

    def apply_delta(self, ctx: Context, cfg: pb.RouterConfig | None,
                    delta: epb.EdgeDelta) -> list[ObjectId]:
        """Apply ``delta`` to the running ``cfg`` (edited in place), under the
        router's lock; returns the objects added. Raises StaleDelta or ConfigError."""
        ...

    def journal(self, ctx: Context, running: RunningConfig, delta: epb.EdgeDelta) -> None:
        """Persist an applied delta (raises OSError)."""
        ...

    def counters(self, ctx: Context, running: RunningConfig,
                 wanted: Set[ObjectId]) -> list[epb.EdgeCounter]:
        """Packets and bytes per edge object (all of them if ``wanted`` is empty)."""
        ...


class FollowsEdge(Protocol):
    def edge_applied(self, ctx: Context, cfg: pb.RouterConfig,
                     delta: epb.EdgeDelta | None = None) -> None:
        """After an edge delta (``delta``) was applied in place to ``cfg`` (under
        the router's lock): bring what the service derives from edge rules up
        to date in the same generation (raises an apply error)."""
        ...


class HoldsPasswords(Protocol):
    def set_password(self, ctx: Context, cfg: pb.RouterConfig, port_id: str,
                     password: str) -> None:
        """Hold a guest's new password in memory for it to fetch (ObjectNotFound
        when the port is not in ``cfg``)."""


class FollowsRole(Protocol):
    def role_changed(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        """A redundant router's instance changed VRRP state (``ctx.role``):
        start or stop what runs on the master only, commit synced state."""
        ...


class Adopts(Protocol):
    def adopt(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        """At an agent start, ``rendered`` is what runs (the previous agent
        applied it): take over the state the service keeps about it."""
        ...


class CheckedText:
    """The config text a daemon's check passed last, for one router: the
    same text again is not checked again. A port added changes a router's
    DHCP hosts files and metadata trees, not dnsmasq's or nginx's config,
    and each check is a fork and an exec of the daemon (under load, half a
    second of a port's push)."""

    def __init__(self) -> None:
        self._passed: str | None = None

    def check(self, text: str, run: Callable[[], None]) -> None:
        """``run()`` unless ``text`` passed last; a refusal is not remembered."""
        if text == self._passed:
            return
        run()
        self._passed = text


@dataclass(frozen=True)
class Capabilities:
    """What a service offers beyond the mandatory phases (None: not offered)."""

    # Reported in the router status only while it serves (default: always).
    conditional: Conditional | None = None
    # Runs with the agent's health pass when nothing needs repair.
    tends: Tends | None = None
    # Adds its part to the router status.
    status_extras: StatusExtras | None = None
    # Applies edge deltas in place.
    edge_rules: EdgeRules | None = None
    # Keeps state about what it applied, taken over from a previous agent.
    adopts: Adopts | None = None
    # Derives part of what it serves from edge rules (follows edge deltas).
    follows_edge: FollowsEdge | None = None
    # Serves guests passwords held in memory (never in config.pb).
    guest_passwords: HoldsPasswords | None = None
    # Acts on a redundant router's VRRP transitions (in apply order).
    follows_role: FollowsRole | None = None
    # The same, at once: called without the router's lock (a running apply
    # may hold it for seconds), so it must only hand the work over.
    follows_role_at_once: FollowsRole | None = None


NO_CAPABILITIES = Capabilities()


class Service(Protocol):
    """One router service: its mandatory phases and declared capabilities."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def verify(self, cfg: pb.RouterConfig) -> None: ...

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered: ...

    def check(self, ctx: Context, rendered: Rendered) -> None: ...

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None: ...

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus: ...

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        """Stop and delete what the service made (``keep_leases``: dnsmasq keeps its leases)."""
        ...
