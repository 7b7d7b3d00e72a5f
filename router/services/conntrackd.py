"""Connection tracking sync for a redundant router: one conntrackd per instance.

conntrackd in FTFW mode sends every connection the master tracks to the
backup over the sync link (acknowledged, resent when lost); the backup keeps
them in its external cache. keepalived's notify reaches the agent, which
runs the transition here (``role_changed``), as conntrackd's own
primary-backup script does:

    MASTER  commit the external cache into the kernel (-c), flush the caches
            (-f), resync the internal cache with the kernel (-R), send a bulk
            update to the peer (-B)
    BACKUP  ask the peer for a full resync (-n)
    FAULT   after FAULT_FLUSH_DELAY seconds still in FAULT: flush the
            kernel's table of what it tracked (-t: PurgeTimeout later)

A FAULT that ends sooner keeps the kernel's table as it is: a master back
from a moment in FAULT (a tracked link's flap, the arbiter's demotion, a
missed check), with no other instance that took its connections over,
still carries every one of them (``-t`` flushed them PURGE_TIMEOUT later
unless a commit came first, and a FAULT longer than that cut every stream).

A packet of an established flow that reaches the new master before the
commit must not start a connection of its own (it would take the flow's
NAT tuple): the router's namespace tracks TCP strictly
(nf_conntrack_tcp_loose=0), so such a packet is invalid and dropped, and TCP
sends it again after the commit.

The commands run in a worker thread of the router's own (``SyncWorker``),
never under the router's lock: inside a starved router VM each one can take
seconds, and neither keepalived's notification, nor the other services that
follow the role, nor a status call may wait for them.

**The resync gate.** A conntrackd just started (a new instance, a router VM
made again, a repaired namespace) holds none of the master's connections. If
this instance is the preferred one, keepalived would take the master role
back after its preempt delay and every established flow would meet an
empty table (strict tracking drops it: the stream stalls until its
connection is synced again, or for good). So a fresh conntrackd on an
instance that is not master writes 1 to keepalived's ``resync`` track file
(weight -RESYNC_WEIGHT: below the other instance's priority, so it does not
preempt; a master that is gone is still replaced, at any priority); after
the BACKUP transition's resync request (-n) the worker watches conntrackd's
statistics until the peer has answered and the external cache has stopped
growing, then writes 0, and keepalived preempts. Becoming master clears it
at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from cloudnet.router.v1 import agent_pb2 as pb

from common import netlink
from router.errors import ApplyError, CheckError
from router.lib import files, proc, templating
from router.services import interfaces, redundancy
from router.services.base import Capabilities, Context, Rendered, RouterPaths

log = logging.getLogger(__name__)

CONF = "conntrackd.conf"
PORT = 3780
# Seconds between ``-t`` and conntrackd's flush of the kernel's table (a
# commit before then cancels the flush).
PURGE_TIMEOUT = 5
START_TIMEOUT = 10.0
# Strict TCP tracking while the connections are synced (above); liberal
# windows, because a committed entry's window is the one last synced.
SYSCTLS = {"net.netfilter.nf_conntrack_tcp_loose": "0",
           "net.netfilter.nf_conntrack_tcp_be_liberal": "1"}
SYSCTLS_SINGLE = {"net.netfilter.nf_conntrack_tcp_loose": "1",
                  "net.netfilter.nf_conntrack_tcp_be_liberal": "0"}
TRANSITIONS = {
    "MASTER": (("-c",), ("-f",), ("-R",), ("-B",)),
    "BACKUP": (("-n",),),
    "FAULT": (("-t",),),
}
# How long an instance stays in FAULT before its kernel's table is flushed
# (-t). The entries are stale only once the other instance carries the
# connections, and a master back from a short FAULT needs them: longer than
# the FAULTs that end by themselves (a link's flap, keepalived's fall of two
# failed checks CHECK_INTERVAL apart plus the preempt delay, the arbiter's
# hold), far shorter than the kernel's TCP timeouts, which would clear them
# otherwise only after days.
FAULT_FLUSH_DELAY = 30.0
# keepalived's track file (router/templates/keepalived): 1 while a fresh
# conntrackd has not had the master's connections yet.
RESYNC_FILE = "resync"
# What a pending resync costs the instance's priority: more than the gap
# between the two instances' (netmgr gives 200 and 100).
RESYNC_WEIGHT = 150
# The resync is done when the peer has answered and the external cache held
# its size this many polls in a row; it is given up (the gate lifted) after
# RESYNC_LIMIT seconds (a peer that is gone: nothing to wait for).
RESYNC_POLL, RESYNC_STABLE, RESYNC_LIMIT = 0.5, 3, 30.0
# Tries of one control command (RESYNC_POLL apart), and how long one may
# take (a commit in a starved router VM: seconds).
CTL_TRIES, CTL_TIMEOUT = 5, 15.0
_EXTERNAL = re.compile(r"cache external:\s*current active connections:\s*(\d+)")
_RECEIVED = re.compile(r"(\d+) Pckts recv")


def render(cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
    if not cfg.HasField("redundancy"):
        return {}
    text = templating.render(
        "conntrackd/conntrackd.conf.j2", generator=f"{__name__} (router {cfg.router_id})",
        sync=redundancy.sync_link(cfg), port=PORT, purge_timeout=PURGE_TIMEOUT,
        log=paths.conntrackd("conntrackd.log"),
        lock=paths.conntrackd("conntrackd.lock"), socket=paths.conntrackd_socket)
    return {CONF: text}


def _conf(ctx: Context) -> str:
    return ctx.paths.conntrackd(CONF)


def daemon_pid(ctx: Context) -> int | None:
    pid = proc.recorded(ctx.paths.record("conntrackd"))
    return pid if pid is not None and _conf(ctx) in proc.cmdline(pid) else None


def _find_started(ctx: Context) -> int | None:
    """conntrackd writes no pid file: the process in the router's namespace
    that runs our config."""
    conf = _conf(ctx)
    for pid in proc.netns_pids(os.path.join(proc.NETNS_RUN_DIR, ctx.netns)):
        argv = proc.cmdline(pid)
        if argv and os.path.basename(argv[0]) == "conntrackd" and conf in argv:
            return pid
    return None


def ctl(ctx: Context, *args: str) -> str:
    """A command to the running conntrackd (its unix socket)."""
    argv = ["conntrackd", "-C", _conf(ctx), *args]
    try:
        return proc.run(argv, timeout=CTL_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise proc.CommandError(argv, -1, f"no answer in {CTL_TIMEOUT:g} s") from e


@dataclass(frozen=True)
class SyncStats:
    """What ``conntrackd -s`` says of the resync: the external cache's size
    and the datagrams received from the peer."""

    external: int
    received: int


def parse_stats(text: str) -> SyncStats | None:
    external, received = _EXTERNAL.search(text), _RECEIVED.search(text)
    if external is None or received is None:
        return None
    return SyncStats(int(external.group(1)), int(received.group(1)))


def resynced(before: SyncStats, polls: list[SyncStats]) -> bool:
    """Whether the peer answered a resync request made at ``before``: it sent
    datagrams since (its dump, its acknowledgements and alive messages), and
    the external cache held its size for the last RESYNC_STABLE polls (the
    dump is over). conntrackd says no more: FTFW marks no end of a resync."""
    if len(polls) < RESYNC_STABLE + 1 or polls[-1].received < before.received + 2:
        return False
    last = polls[-RESYNC_STABLE - 1:]
    return all(p.external == last[0].external for p in last)


def set_gate(ctx: Context, pending: bool) -> None:
    """keepalived's resync track file (it watches the file: inotify)."""
    os.makedirs(ctx.paths.keepalived(), mode=0o700, exist_ok=True)
    files.write_atomic(ctx.paths.keepalived(RESYNC_FILE), b"1\n" if pending else b"0\n",
                       mode=0o600)


def gated(ctx: Context) -> bool:
    text = files.read_text(ctx.paths.keepalived(RESYNC_FILE))
    return bool(text and text.strip() not in ("", "0"))


class SyncWorker:
    """conntrackd's transitions for one router, in a thread of their own:
    ``submit`` returns at once; the latest state wins (a state superseded
    before its turn is skipped), and a resync watch ends when a new state
    comes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: tuple[Context, str] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, ctx: Context, state: str) -> None:
        with self._cond:
            self._stopped = False
            self._pending = (ctx, state)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"conntrackd-{ctx.router_id[:8]}")
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped, self._pending = True, None
            self._cond.notify_all()

    def _superseded(self) -> bool:
        with self._cond:
            return self._pending is not None or self._stopped

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._pending is None:  # stopped
                    self._thread = None
                    return
                (ctx, state), self._pending = self._pending, None
            try:
                self._transition(ctx, state)
            except Exception:  # never lose the worker: the next state tries again
                log.exception("router %s: conntrackd on VRRP %s", ctx.router_id, state)

    def _hold(self, seconds: float) -> bool:
        """Wait ``seconds``; False when a new state (or a stop) came first."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._pending is None and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)
        return False

    def _transition(self, ctx: Context, state: str) -> None:
        if state == "FAULT" and not self._hold(FAULT_FLUSH_DELAY):
            log.info("router %s: out of FAULT within %.0f s: its connections kept",
                     ctx.router_id, FAULT_FLUSH_DELAY)
            return
        if state == "MASTER" and gated(ctx):
            set_gate(ctx, False)  # a master's priority must not drop below the other's
        before = _stats(ctx) if state == "BACKUP" and gated(ctx) else None
        for args in TRANSITIONS.get(state, ()):
            for attempt in range(CTL_TRIES):
                if self._superseded():
                    return
                started = time.monotonic()
                try:
                    ctl(ctx, *args)
                    log.info("router %s: conntrackd %s on VRRP %s: done in %.2f s",
                             ctx.router_id, " ".join(args), state, time.monotonic() - started)
                    break
                except proc.CommandError as e:
                    # A conntrackd just started may not listen on its
                    # socket yet: a resync request or a commit lost so
                    # would go unnoticed; try again.
                    why = (e.output.strip().splitlines() or [""])[-1][:200]
                    if attempt + 1 == CTL_TRIES:
                        log.error("router %s: conntrackd %s on VRRP %s: %s", ctx.router_id,
                                  " ".join(args), state, why)
                    with self._cond:
                        self._cond.wait(RESYNC_POLL)
        if state == "MASTER":
            _log_commit(ctx)
        if before is not None:
            self._watch_resync(ctx, before)

    def _watch_resync(self, ctx: Context, before: SyncStats) -> None:
        start, polls = time.monotonic(), []
        while not self._superseded():
            if time.monotonic() - start > RESYNC_LIMIT:
                log.warning("router %s: conntrackd: no resync from the peer in %.0f s; "
                            "the instance may take the master role without it",
                            ctx.router_id, RESYNC_LIMIT)
                break
            with self._cond:
                self._cond.wait(RESYNC_POLL)
            now = _stats(ctx)
            if now is None:
                continue
            polls.append(now)
            if resynced(before, polls):
                log.info("router %s: conntrackd resynced (%d connections) in %.1f s",
                         ctx.router_id, now.external, time.monotonic() - start)
                break
        else:
            return  # a new state decides
        set_gate(ctx, False)


def _log_commit(ctx: Context) -> None:
    """What conntrackd said of the commit (its own log: entries committed,
    refused and why), and the kernel's TCP entries after it: where an
    established flow lost across a failover went."""
    text = files.read_text(ctx.paths.conntrackd("conntrackd.log")) or ""
    lines = [line for line in text.splitlines()[-40:] if "commit" in line.lower()
             or "ERROR" in line or "WARNING" in line]
    for line in lines[-12:]:
        log.info("router %s: conntrackd: %s", ctx.router_id, line[:300])
    try:
        table = proc.run(["conntrack", "-L", "-p", "tcp"], netns=ctx.netns, timeout=CTL_TIMEOUT)
    except (proc.CommandError, subprocess.TimeoutExpired):
        return
    for line in table.splitlines()[:12]:
        log.info("router %s: conntrackd committed, the kernel holds: %s", ctx.router_id, line[:300])


def _holds(ctx: Context, cfg: pb.RouterConfig) -> bool:
    try:
        return redundancy.holds_virtual(ctx.netns, cfg)
    except (OSError, netlink.NetlinkOpError):
        return False


def _stats(ctx: Context) -> SyncStats | None:
    try:
        return parse_stats(ctl(ctx, "-s"))
    except proc.CommandError:
        return None


def apply(ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
          worker: SyncWorker) -> None:
    pid = daemon_pid(ctx)
    if not rendered:
        worker.stop()
        if pid is not None:
            proc.stop(pid)
            interfaces.set_sysctls(ctx.netns, SYSCTLS_SINGLE)
        return
    interfaces.set_sysctls(ctx.netns, SYSCTLS)
    os.makedirs(ctx.paths.conntrackd(), mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(ctx.paths.conntrackd_socket), mode=0o700, exist_ok=True)
    changed = files.write_if_changed(_conf(ctx), rendered[CONF], mode=0o600)
    if pid is not None and not changed:
        return
    if pid is not None:
        # No reload in conntrackd: a new one, which asks the peer for a resync.
        proc.stop(pid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ctx.paths.conntrackd("conntrackd.lock"))  # a killed one's
    # Empty: not the master again before it has the master's connections
    # (written before keepalived starts, which reads the file). The role the
    # agent last heard of may be stale (a namespace deleted notifies
    # nothing): a master holds the addresses.
    master = _holds(ctx, cfg)
    set_gate(ctx, not master)
    try:
        proc.run(["conntrackd", "-C", _conf(ctx), "-d"], netns=ctx.netns)
    except proc.CommandError as e:
        raise ApplyError(f"conntrackd: start failed: {e.output.strip()[:300]}") from e
    deadline = time.monotonic() + START_TIMEOUT
    while (started := _find_started(ctx)) is None:
        if time.monotonic() > deadline:
            raise ApplyError("conntrackd: did not start")
        time.sleep(0.02)
    proc.write_record(ctx.paths.record("conntrackd"), started)
    state = ctx.role.state
    if state in TRANSITIONS and (state == "MASTER") == master:
        worker.submit(ctx, state)  # else keepalived's next notification says


def check(ctx: Context, rendered: Rendered) -> None:
    """conntrackd has no check mode: parse it with a throwaway stats query
    that fails on a syntax error before it reaches the (absent) socket."""
    if not rendered:
        return
    os.makedirs(ctx.state_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix=".check-",
                                     dir=ctx.state_dir) as f:
        f.write(rendered[CONF])
        f.flush()
        try:
            proc.run(["conntrackd", "-C", f.name, "-s"], timeout=10)
        except proc.CommandError as e:
            if "parsing config file" in e.output.lower() or "syntax" in e.output.lower():
                raise CheckError(f"conntrackd: config refused: {e.output.strip()[:300]}") \
                    from e


class Conntrackd:
    """``base.Service``: connection tracking sync of a redundant router's instance."""

    name = "conntrackd"

    def __init__(self) -> None:
        # Its commands run in a worker of their own: role_changed only hands
        # them over, so it is called at once, not behind a running apply.
        self.capabilities = Capabilities(conditional=self, follows_role_at_once=self)
        self.worker = SyncWorker()

    def verify(self, cfg: pb.RouterConfig) -> None:
        redundancy.verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg, paths)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        check(ctx, rendered)

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, cfg, rendered, self.worker)

    def role_changed(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        if rendered and daemon_pid(ctx) is not None:
            self.worker.submit(ctx, ctx.role.state)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return cfg.HasField("redundancy")

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        if not cfg.HasField("redundancy"):
            return pb.ServiceStatus(name=self.name, healthy=True, detail="not redundant")
        pid = daemon_pid(ctx)
        return pb.ServiceStatus(name=self.name, healthy=pid is not None,
                                detail=f"pid {pid}" if pid else "not running")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        self.worker.stop()
        pid = daemon_pid(ctx)
        if pid is not None:
            proc.stop(pid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ctx.paths.conntrackd_socket)
