"""The host's kernel limits that namespace routers consume, checked and raised by the agent.

Every router on a host takes a share of limits that are global to the host
(or to one user), not to its namespace. The defaults of a stock kernel stop
a host long before its memory does; the first to bite is dnsmasq's inotify
instance (one per router, all under the user ``dnsmasq``, 128 by default:
the 129th router's dnsmasq fails with "failed to create inotify: Too many
open files").

At start the agent sizes these limits for ``planned`` routers (and again, in
steps, when it holds more), raising a value that is lower and never lowering
one; what it changed is logged. A limit it cannot raise (a read-only
/proc/sys in a container) is reported in the status of every router once
the routers held need more than it allows (``shortfall``).

    limit                                 per router  why
    fs.inotify.max_user_instances         1           dnsmasq watches its host directories
    fs.inotify.max_user_watches           2 (+6)      its two host directories
    RLIMIT_NOFILE of the agent            8           sockets and namespace fds of parallel
                                                      work; daemons inherit it
    kernel.pid_max                        32          dnsmasq, HAProxy's two processes,
                                                      charon's threads
    net.ipv4.neigh.default.gc_thresh*     16/8/4      one neighbour table for all namespaces
    net.ipv6.neigh.default.gc_thresh*     32/16/8     the same; 8 used by each router idle
    net.netfilter.nf_conntrack_buckets    64          one conntrack hash for all namespaces

nf_conntrack_max is not here: the kernel compares it with each namespace's
own count, so it is a per-router ceiling, not a shared pool; the share of
one router is capped by its table (``router.services.nftables``).
"""

from __future__ import annotations

import logging
import math
import os
import resource
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

NOFILE = "RLIMIT_NOFILE"
# Capacity grows in steps of this many routers (and by a quarter at least)
# so that adding routers one by one does not write sysctls each time.
STEP = 256


@dataclass(frozen=True)
class Limit:
    """One limit: ``floor + per_router * routers`` is what the agent sets up
    for that many routers; ``need_per_router * routers`` is what they
    strictly use (0: no strict need the agent can count)."""

    name: str
    per_router: int
    floor: int
    why: str
    need_per_router: int = 0

    def planned(self, routers: int) -> int:
        return self.floor + self.per_router * routers

    def needed(self, routers: int) -> int:
        return self.need_per_router * routers


LIMITS: tuple[Limit, ...] = (
    Limit("fs.inotify.max_user_instances", 1, 128,
          "one inotify instance per router's dnsmasq, all of one user", need_per_router=1),
    Limit("fs.inotify.max_user_watches", 8, 8192,
          "each dnsmasq watches its two host directories", need_per_router=2),
    Limit(NOFILE, 8, 4096, "the agent's sockets and namespace fds; its daemons inherit it"),
    Limit("kernel.pid_max", 32, 32768, "dnsmasq, HAProxy's two processes, charon's threads"),
    # One neighbour table for all namespaces: thresh3 is the hard cap of
    # ARP entries on the whole host, beyond it "neighbour table overflow".
    Limit("net.ipv4.neigh.default.gc_thresh3", 16, 1024, "ARP entries of every namespace"),
    Limit("net.ipv4.neigh.default.gc_thresh2", 8, 512, "ARP entries of every namespace"),
    Limit("net.ipv4.neigh.default.gc_thresh1", 4, 128, "ARP entries of every namespace"),
    # About 8 a router that routes IPv6, even with no IPv6 traffic at all
    # (the multicast entries of each interface's neighbour discovery and MLD,
    # measured at 1,000 routers when every router had IPv6 on): a stock
    # kernel's 1,024 overflow near 130 such routers.
    Limit("net.ipv6.neigh.default.gc_thresh3", 32, 1024, "IPv6 neighbours of every namespace",
          need_per_router=8),
    Limit("net.ipv6.neigh.default.gc_thresh2", 16, 512, "IPv6 neighbours of every namespace"),
    Limit("net.ipv6.neigh.default.gc_thresh1", 8, 128, "IPv6 neighbours of every namespace"),
    Limit("net.netfilter.nf_conntrack_buckets", 64, 16384,
          "one conntrack hash table for every namespace"),
)


class Knobs(Protocol):
    """Where limits are read and written (the real host: ``HostKnobs``)."""

    def read(self, name: str) -> int | None:
        """The current value; None when this host has no such limit (a module not loaded)."""
        ...

    def write(self, name: str, value: int) -> None:
        """Set the value; raises OSError when refused."""
        ...


class HostKnobs:
    """``Knobs`` of this host: sysctls under ``/proc/sys``, and the agent's RLIMIT_NOFILE
    (soft and hard together: what its daemons inherit is the soft one)."""

    def __init__(self, proc_sys: str = "/proc/sys") -> None:
        self.proc_sys = proc_sys

    def _path(self, name: str) -> str:
        return os.path.join(self.proc_sys, *name.split("."))

    def read(self, name: str) -> int | None:
        if name == NOFILE:
            return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            with open(self._path(name)) as f:
                return int(f.read().split()[0])
        except FileNotFoundError:
            return None

    def write(self, name: str, value: int) -> None:
        if name == NOFILE:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (value, max(hard, value)))
            except ValueError as e:  # above fs.nr_open, or no CAP_SYS_RESOURCE
                if soft < hard:  # as far as the hard limit, then
                    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                raise OSError(str(e)) from e
            return
        with open(self._path(name), "w") as f:
            f.write(str(value))


@dataclass(frozen=True)
class Change:
    name: str
    old: int
    new: int


@dataclass(frozen=True)
class Short:
    """A limit below what the routers held need, and why it was not raised."""

    name: str
    value: int
    needed: int
    routers: int
    error: str

    def __str__(self) -> str:
        return (f"host limit {self.name} is {self.value}, {self.routers} routers need "
                f"{self.needed}" + (f" (cannot raise it: {self.error})" if self.error else ""))


def capacity_for(routers: int, planned: int) -> int:
    """How many routers to size the limits for when ``routers`` are held."""
    if routers <= planned:
        return planned
    return math.ceil(routers * 1.25 / STEP) * STEP


class HostLimits:
    """Keeps the host's limits sized for the routers held (thread-safe by the
    caller: the registry calls it under its lock)."""

    def __init__(self, knobs: Knobs | None = None, planned: int = 1024, *,
                 raise_limits: bool = True, limits: tuple[Limit, ...] = LIMITS) -> None:
        """``planned``: routers to size for at start; ``raise_limits``: False
        only checks (the limits are the host's administrator's)."""
        self.knobs: Knobs = knobs if knobs is not None else HostKnobs()
        self.planned = planned
        self.raise_limits = raise_limits
        self.limits = limits
        self.capacity = 0  # the routers the limits were last sized for
        self.errors: dict[str, str] = {}  # limit -> why raising it failed
        self.changes: list[Change] = []  # every change made, in order

    def ensure(self, routers: int) -> list[Change]:
        """Size the limits for ``routers`` (at least ``planned``); returns what changed.

        Cheap when nothing is to be done: only a new capacity step reads and
        writes the limits (and a limit absent until now, such as conntrack's
        before its module is loaded, is looked at again then)."""
        capacity = capacity_for(routers, self.planned)
        if capacity <= self.capacity:
            return []
        self.capacity = capacity
        changed = []
        for limit in self.limits:
            current = self.knobs.read(limit.name)
            want = limit.planned(capacity)
            if current is None or current >= want:
                continue
            if not self.raise_limits:
                self.errors[limit.name] = "the agent runs with --no-raise-host-limits"
                continue
            try:
                self.knobs.write(limit.name, want)
                now = self.knobs.read(limit.name)
            except OSError as e:
                self.errors[limit.name] = e.strerror or str(e)
                log.warning("host limit %s is %d, %d routers want %d: cannot raise it: %s",
                            limit.name, current, capacity, want, self.errors[limit.name])
                continue
            if now is None or now < want:
                self.errors[limit.name] = f"the kernel kept {now}"
                log.warning("host limit %s: wrote %d, the kernel kept %s", limit.name, want, now)
                continue
            self.errors.pop(limit.name, None)
            change = Change(limit.name, current, now)
            changed.append(change)
            log.info("host limit %s raised %d -> %d for %d routers (%s)", limit.name, current,
                     now, capacity, limit.why)
        self.changes += changed
        return changed

    def shortfall(self, routers: int) -> list[Short]:
        """The limits below what ``routers`` strictly need (read now)."""
        out = []
        for limit in self.limits:
            needed = limit.needed(routers)
            if not needed:
                continue
            current = self.knobs.read(limit.name)
            if current is not None and current < needed:
                out.append(Short(limit.name, current, needed, routers,
                                 self.errors.get(limit.name, "")))
        return out
