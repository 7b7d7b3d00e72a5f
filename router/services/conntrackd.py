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
    FAULT   shorten the kernel's timers of what it tracked (-t)

A packet of an established flow that reaches the new master before the
commit must not start a connection of its own (it would take the flow's
NAT tuple): the router's namespace tracks TCP strictly
(nf_conntrack_tcp_loose=0), so such a packet is invalid and dropped, and TCP
sends it again after the commit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ApplyError, CheckError
from router.lib import files, proc, templating
from router.services import interfaces, redundancy
from router.services.base import Capabilities, Context, Rendered, RouterPaths

CONF = "conntrackd.conf"
PORT = 3780
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


def render(cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
    if not cfg.HasField("redundancy"):
        return {}
    text = templating.render(
        "conntrackd/conntrackd.conf.j2", generator=f"{__name__} (router {cfg.router_id})",
        sync=redundancy.sync_link(cfg), port=PORT, log=paths.conntrackd("conntrackd.log"),
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
    return proc.run(["conntrackd", "-C", _conf(ctx), *args], timeout=10)


def apply(ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
    pid = daemon_pid(ctx)
    if not rendered:
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
    if ctx.role.state in TRANSITIONS:
        transition(ctx, ctx.role.state)


def transition(ctx: Context, state: str) -> None:
    for args in TRANSITIONS.get(state, ()):
        try:
            ctl(ctx, *args)
        except proc.CommandError as e:
            raise ApplyError(f"conntrackd {' '.join(args)}: {e.output.strip()[:200]}") from e


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
        self.capabilities = Capabilities(conditional=self, follows_role=self)

    def verify(self, cfg: pb.RouterConfig) -> None:
        redundancy.verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg, paths)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        check(ctx, rendered)

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, cfg, rendered)

    def role_changed(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        if rendered and daemon_pid(ctx) is not None:
            transition(ctx, ctx.role.state)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return cfg.HasField("redundancy")

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        if not cfg.HasField("redundancy"):
            return pb.ServiceStatus(name=self.name, healthy=True, detail="not redundant")
        pid = daemon_pid(ctx)
        return pb.ServiceStatus(name=self.name, healthy=pid is not None,
                                detail=f"pid {pid}" if pid else "not running")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        pid = daemon_pid(ctx)
        if pid is not None:
            proc.stop(pid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ctx.paths.conntrackd_socket)
