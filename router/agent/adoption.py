"""Taking over the routers a previous agent left running (an agent start).

A router's daemons, addresses and table outlive its agent (SIGKILL, an
upgrade, a crash); its state dir holds the last good config. At start the
agent must report every router again, and touch none of them: no daemon
signalled, no table reloaded, no lease lost.

A router is adopted as it is, without a fork or a netlink call, when its
state can be trusted to be the persisted config's:

* the rendering code is the one that applied it (``render_version``: a
  digest of the services' code and templates, kept beside the routers), so an
  upgraded agent applies every router again with its new templates;
* its namespace exists (a reboot took namespaces and daemons: apply again);
* no change was cut short (the runtime's ``applying`` mark).

An adopted router reports its persisted generation at once. Every router's
health is checked before the agent serves (``check_all``: well under a
millisecond a router), so the first listing reports it without checking
again; the routers with a sick service are repaired in the background
(whatever died while no agent watched). What each service last applied is
rendered by the first change that needs it (``RouterRuntime.take_over``: a
push, an edge delta, a repair), not at the start: rendering 1,000 routers
in the background held the interpreter long enough to make the first
listing wait 1.7 s. Routers that cannot be adopted are
applied again as before, several at a time (their time is mostly the
daemons' checks and starts, in other processes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from router.runtime import RouterRuntime

log = logging.getLogger(__name__)

ROUTER_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What decides what a service renders and how it applies it.
RENDERING_CODE = ("services", "templates", "lib", "runtime.py")
VERSION_FILE = "render-version"
# Routers applied again at once (each mostly waits for a daemon's check or start).
REAPPLY_WORKERS = 8


def render_version(root: str = ROUTER_PACKAGE) -> str:
    """A digest of every file the rendering depends on (about 40 files)."""
    digest = hashlib.sha256()
    for top in RENDERING_CODE:
        path = os.path.join(root, top)
        found = [path] if os.path.isfile(path) else sorted(
            os.path.join(d, f) for d, dirs, names in os.walk(path)
            for f in names if not f.endswith((".pyc", ".pyo")) and "__pycache__" not in d)
        for name in found:
            digest.update(os.path.relpath(name, root).encode() + b"\0")
            with open(name, "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()[:32]


def read_version(state_dir: str) -> str:
    try:
        with open(os.path.join(state_dir, VERSION_FILE)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def write_version(state_dir: str, version: str) -> None:
    path = os.path.join(state_dir, VERSION_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, path)


@dataclass
class Report:
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcome: str, router_id: str = "") -> None:
        with self.lock:
            if outcome == "failed":
                self.failed.append(router_id)
            else:
                self.outcomes[outcome] += 1

    def __str__(self) -> str:
        parts = [f"{self.outcomes['adopted']} adopted untouched",
                 f"{self.outcomes['applied']} applied again"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed[:5])}"
                         + (", ..." if len(self.failed) > 5 else "") + ")")
        return f"{', '.join(parts)} in {self.seconds:.2f} s"


def adopt_all(runtimes: Iterable[RouterRuntime], trusted: bool,
              workers: int = REAPPLY_WORKERS) -> Report:
    """Adopt every router that can be (in this thread: no fork, no netlink,
    tens of microseconds each), then apply the others again, ``workers`` at a
    time. ``trusted``: the persisted configs were applied by this rendering
    code (else none is adopted)."""
    report = Report()
    started = time.monotonic()
    again: list[RouterRuntime] = []
    for rt in runtimes:
        try:
            if trusted and rt.adopt():
                report.count("adopted")
                continue
        except Exception:
            log.exception("router %s: cannot adopt it", rt.ctx.router_id)
        again.append(rt)
    if again:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(again))),
                                thread_name_prefix="reapply") as pool:
            for rt in again:
                pool.submit(_restore, report, rt)
    report.seconds = time.monotonic() - started
    return report


def _restore(report: Report, rt: RouterRuntime) -> None:
    try:
        status = rt.restore()
    except Exception:
        log.exception("router %s: cannot restore its persisted config", rt.ctx.router_id)
        report.count("failed", rt.ctx.router_id)
        return
    if status is None:
        return
    report.count("applied")
    if status.last_error:
        log.warning("router %s: restored generation %d (%s)", rt.ctx.router_id,
                    status.applied_generation, status.last_error)


def check_all(runtimes: Iterable[RouterRuntime]) -> list[RouterRuntime]:
    """Every router's health, checked now (a router listing reports these
    checks: the first one after a start need not check 1,000 routers); the
    routers with a sick service."""
    sick = []
    for rt in runtimes:
        try:
            if rt.check_health():
                sick.append(rt)
        except Exception:
            log.exception("router %s: health check failed", rt.ctx.router_id)
            sick.append(rt)
    return sick


def repair(sick: Iterable[RouterRuntime]) -> None:
    """After the start, in the background: repair what died while no agent
    watched (now, not one health interval later)."""
    for rt in sick:
        try:
            rt.repair()
        except Exception:
            log.exception("router %s: repair failed", rt.ctx.router_id)
