"""VRRP for a redundant router: one keepalived per router instance.

Both instances of a redundant router hold the same interfaces and config;
keepalived (VRRP v3, sub-second adverts, unicast to the other instance over
the sync link) decides which one is MASTER and holds every address that
moves: the guests' gateways, the source-NAT address, the public IPs, private
gateways, and the routes through them (``redundancy.virtual_addresses``),
as one VRRP instance in one sync group, so they move together. Gratuitous
ARPs for each on every move tell guests and the provider edge at once.

The instance's priority is tracked: a tracked link down (the uplink, a guest
link) puts it in FAULT; an agent that stops answering (``vrrp_script``
running ``router/agent/vrrp_notify.py --check``) lowers it below the other
instance's; an agent gone altogether (no process holds its listener's
``vrrp.alive`` lock: checked with ``flock``, which costs nothing to start,
where Python costs seconds on a loaded host) holds it in FAULT, and so does
a non-zero ``demoted`` file (netmgr's arbiter, through
``RouterRedundancy.SetDemoted``). keepalived's notify runs
``vrrp_notify.py``, which tells the agent (``router.agent.vrrp_listener``);
the agent commits the synced connections (conntrackd) and starts HAProxy and
strongSwan on the master, stops them on the backup.

A config change rewrites keepalived.conf and reloads it (SIGHUP): the
instance keeps its state. Without a redundancy section keepalived is
stopped, and the addresses it held are put back as plain ones.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import sys
import tempfile
import time

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import redundancy_pb2 as rpb

from common import netlink
from router.errors import ApplyError, CheckError
from router.lib import files, proc, templating
from router.services import conntrackd, interfaces, redundancy
from router.services.base import Capabilities, Context, Rendered, RouterPaths

CONF = "keepalived.conf"
NONLOCAL_BIND = "net.ipv4.ip_nonlocal_bind"
_MISSING_LINK = re.compile(r"doesn't exist|Non-existent interface|invalid interface")
INSTANCE = "cn"
# An agent that stops answering costs this much priority: more than the gap
# between the two instances' priorities (netmgr gives 200 and 100).
HEALTH_WEIGHT = 150
CHECK_INTERVAL = 2
# How long a check script may take before keepalived counts it failed. A
# dead agent fails the scripts at once (nothing listens on its socket); a
# slow one must not count (a router VM under TCG on a busy host starts
# Python in seconds): longer than the client's own timeout, which decides.
SCRIPT_TIMEOUT = 6
# An agent gone (no process on its socket) this many checks in a row: the
# instance is held in FAULT (an agent restart listens again well within it).
ALIVE_INTERVAL, ALIVE_FALL = 2, 5
# Seconds an instance back from a failure waits before it takes the master
# role back; one whose conntrackd is new waits for its resync too
# (conntrackd's resync gate: the ``resync`` track file).
PREEMPT_DELAY = 3
# Seconds between a master's gratuitous ARPs for its addresses while it
# stays master: within a new connection's SYN retries (1 s, then 3 s), so a
# neighbour entry gone wrong costs it a retry, not the connection. The cost:
# one ARP per moving address per period (1,000 routers with two public
# addresses each: 1,000 small broadcasts a second on the public network).
GARP_REFRESH = 2
START_TIMEOUT = 10.0
# How long a MASTER notification waits for keepalived's addresses (above).
MASTER_SETTLE = 2.0
# The agent's liveness: flock(1) on the lock its listener holds
# (``router.agent.vrrp_listener``); absolute, as keepalived's script
# security wants them.
FLOCK = shutil.which("flock") or "/usr/bin/flock"
FALSE = shutil.which("false") or "/usr/bin/false"
# What keepalived cannot take inside a quoted script argument.
_UNQUOTABLE = re.compile(r"[\x00-\x1f\x7f'\"\\]")
CLIENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "agent", "vrrp_notify.py")


def script_line(*argv: str) -> str:
    """A keepalived script's command line, to go inside its double quotes:
    keepalived splits it at unquoted spaces and strips single quotes, so each
    argument is single-quoted (a path with a space stays one argument). A
    quote, a backslash or a control character is refused, not escaped."""
    for arg in argv:
        if _UNQUOTABLE.search(arg):
            raise templating.TemplateValueError(
                f"keepalived: script argument {arg[:60]!r} has a quote, a backslash or a "
                "control character")
    return " ".join(f"'{arg}'" for arg in argv)


def quoted(path: str) -> str:
    """A path as a keepalived quoted string (its track files)."""
    script_line(path)  # the same characters refused
    return f'"{path}"'


def render(cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
    if not cfg.HasField("redundancy"):
        return {}
    r = cfg.redundancy
    vips = [{"address": str(a), "dev": dev} for a, dev in redundancy.virtual_addresses(cfg)]
    routes = []
    for route in sorted(cfg.routes, key=lambda r: r.destination):
        dst = ipaddress.IPv4Network(route.destination)
        line = f"{dst}"
        if route.gateway:
            line += f" via {ipaddress.IPv4Address(route.gateway)}"
        if route.interface:
            line += f" dev {templating.safe_token(route.interface)}"
        routes.append(line)
    text = templating.render(
        "keepalived/keepalived.conf.j2", generator=f"{__name__} (router {cfg.router_id})",
        router_id=cfg.router_id,
        check=script_line(sys.executable, "-I", "-S", CLIENT, "--check",
                          paths.vrrp_notify_socket, cfg.router_id),
        alive=script_line(FLOCK, "--nonblock", "--conflict-exit-code", "0",
                          paths.vrrp_alive_lock, FALSE),
        notify=script_line(sys.executable, "-I", "-S", CLIENT, paths.vrrp_notify_socket,
                           cfg.router_id),
        check_interval=CHECK_INTERVAL, alive_interval=ALIVE_INTERVAL, alive_fall=ALIVE_FALL,
        script_timeout=SCRIPT_TIMEOUT,
        health_weight=HEALTH_WEIGHT, demoted_file=quoted(paths.keepalived("demoted")),
        resync_file=quoted(paths.keepalived(conntrackd.RESYNC_FILE)),
        resync_weight=conntrackd.RESYNC_WEIGHT,
        group=INSTANCE + "-group", instance=INSTANCE,
        preempt_delay=PREEMPT_DELAY, garp_refresh=GARP_REFRESH,
        vrid=r.virtual_router_id, priority=r.priority, advert=redundancy.advert_seconds(cfg),
        sync=redundancy.sync_link(cfg), tracked=redundancy.tracked_interfaces(cfg),
        first=vips[0], others=vips[1:], routes=routes)
    return {CONF: text}


def check(ctx: Context, rendered: Rendered) -> None:
    if not rendered:
        return
    os.makedirs(ctx.state_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix=".check-",
                                     dir=ctx.state_dir) as f:
        f.write(rendered[CONF])
        f.flush()
        try:
            proc.run(["keepalived", "--config-test", "-f", f.name])
            output = ""
        except proc.CommandError as e:
            output = e.output
    # Checked before the router's links exist (a new router): keepalived's
    # complaints about missing interfaces are not the config's.
    problems = [line.replace(f.name, CONF) for line in output.splitlines()
                if line.strip() and not _MISSING_LINK.search(line)]
    if problems:
        raise CheckError(f"keepalived: config refused: {'; '.join(problems)[:300]}")


def _files(ctx: Context) -> tuple[str, str, str]:
    """keepalived.conf, the parent's and the VRRP child's pid files."""
    p = ctx.paths
    return p.keepalived(CONF), p.keepalived("keepalived.pid"), p.keepalived("vrrp.pid")


def pids(ctx: Context) -> tuple[int | None, int | None]:
    """The parent's and the VRRP child's pids, when they run on our config."""
    conf, pidfile, vrrp_pidfile = _files(ctx)
    return proc.pid_running(pidfile, conf), proc.pid_running(vrrp_pidfile, conf)


def apply(ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
          previous: pb.RouterConfig | None) -> None:
    conf, pidfile, vrrp_pidfile = _files(ctx)
    parent, _ = pids(ctx)
    if not rendered:
        if parent is not None:
            proc.stop(parent)
        if previous is not None and previous.HasField("redundancy"):
            # keepalived took its addresses with it: a single router holds them.
            interfaces.hold_addresses(ctx, cfg)
            interfaces.set_sysctls(ctx.netns, {NONLOCAL_BIND: "0"})
        ctx.role.set("", time.time())
        return
    # The daemons that listen on the router's addresses (nginx's metadata
    # service, dnsmasq's DNS) run on the backup too, before it holds them.
    interfaces.set_sysctls(ctx.netns, {NONLOCAL_BIND: "1"})
    os.makedirs(ctx.paths.keepalived(), mode=0o700, exist_ok=True)
    files.write_if_changed(conf, rendered[CONF], mode=0o600)
    if parent is not None:
        proc.os_kill(parent, signal.SIGHUP)  # reload: the instance keeps its state
        learn_role(ctx, cfg)
        return
    if previous is not None and previous.HasField("redundancy"):
        # A keepalived killed (SIGKILL) left its addresses: the instance
        # holds none until the new one decides, or the two would both answer.
        _drop_virtual(ctx, previous)
        ctx.role.set("", time.time())
    # A killed keepalived's pid files: keepalived takes a pid still listed
    # (a zombie nobody reaped yet) for a running daemon and refuses to start.
    for stale in (pidfile, vrrp_pidfile):
        files.remove(stale)
    try:
        proc.run(["keepalived", "-f", conf, "-p", pidfile, "-r", vrrp_pidfile, "--vrrp",
                  "--no-syslog"], netns=ctx.netns)
    except proc.CommandError as e:
        raise ApplyError(f"keepalived: start failed: {e.output.strip()[:300]}") from e
    deadline = time.monotonic() + START_TIMEOUT
    while None in (started := pids(ctx)):
        if time.monotonic() > deadline:
            raise ApplyError("keepalived: its VRRP process did not start")
        time.sleep(0.02)
    assert started[0] is not None
    proc.write_record(ctx.paths.record("keepalived"), started[0])


def _drop_virtual(ctx: Context, cfg: pb.RouterConfig) -> None:
    for iface in cfg.interfaces:
        if iface.role not in redundancy.VIRTUAL_ROLES:
            continue
        link = netlink.find_link_by_name(ctx.netns, iface.name)
        if link is not None:
            netlink.reconcile_ipv4_addresses(ctx.netns, link.index, [])


def learn_role(ctx: Context, cfg: pb.RouterConfig) -> None:
    """A keepalived that ran before this agent (an agent restart): its state
    is what the addresses show, until its next notification."""
    if not ctx.role.state and None not in pids(ctx):
        ctx.role.learn(observed_state(ctx, cfg, "BACKUP"), time.time())


def set_demoted(ctx: Context, demoted: bool) -> None:
    """Hold the instance in FAULT (or release it): keepalived watches the file."""
    os.makedirs(ctx.paths.keepalived(), mode=0o700, exist_ok=True)
    files.write_atomic(ctx.paths.keepalived("demoted"), b"1\n" if demoted else b"0\n",
                       mode=0o600)


def demoted(ctx: Context) -> bool:
    text = files.read_text(ctx.paths.keepalived("demoted"))
    return bool(text and text.strip() not in ("", "0"))


def observed_state(ctx: Context, cfg: pb.RouterConfig, reported: str) -> str:
    """The state keepalived reported, checked against the addresses: two
    notifications close together may reach the agent out of order. keepalived
    may run the MASTER notification before its addresses are in (seen in a
    starved router VM: the next notification, the sync group's, came 2.6 s
    later), so a MASTER report waits up to MASTER_SETTLE for them."""
    deadline = time.monotonic() + (MASTER_SETTLE if reported == "MASTER" else 0.0)
    while True:
        try:
            # keepalived adds the addresses before it notifies MASTER and
            # removes them before BACKUP or FAULT.
            held = redundancy.holds_virtual(ctx.netns, cfg)
        except (OSError, netlink.NetlinkOpError):  # the namespace is gone
            return "BACKUP" if reported == "MASTER" else reported
        if held:
            return "MASTER"
        if time.monotonic() >= deadline:
            return reported if reported in ("BACKUP", "FAULT") else "BACKUP"
        time.sleep(0.05)


class Keepalived:
    """``base.Service``: VRRP for a redundant router's instance."""

    name = "keepalived"

    def __init__(self) -> None:
        self.capabilities = Capabilities(conditional=self, status_extras=self, adopts=self)

    def adopt(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        """Taken over at an agent start: what runs on the master only must
        not be stopped by the next apply for want of a notification."""
        if rendered:
            learn_role(ctx, cfg)

    def verify(self, cfg: pb.RouterConfig) -> None:
        redundancy.verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg, paths)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        check(ctx, rendered)

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, cfg, rendered, previous)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return cfg.HasField("redundancy")

    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        if cfg.HasField("redundancy"):
            learn_role(ctx, cfg)  # adopted at an agent start, not rendered yet
            role = ctx.role
            # A keepalived that died notified nothing: this instance is out.
            running = None not in pids(ctx)
            status.redundancy.CopyFrom(rpb.RedundancyStatus(
                state=role.state if running else "FAULT", last_transition=role.since,
                transitions=role.transitions,
                demoted=demoted(ctx), priority=cfg.redundancy.priority,
                resync_pending=conntrackd.gated(ctx)))

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        version = proc.version("keepalived")
        if not cfg.HasField("redundancy"):
            return pb.ServiceStatus(name=self.name, healthy=True, detail="not redundant",
                                    version=version)
        parent, vrrp = pids(ctx)
        ok = parent is not None and vrrp is not None
        return pb.ServiceStatus(
            name=self.name, healthy=ok, version=version,
            detail=f"{ctx.role.state or 'no state yet'}, pid {parent}" if ok else "not running")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        parent, _ = pids(ctx)
        if parent is not None:
            proc.stop(parent)
        for name in ("demoted", conntrackd.RESYNC_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ctx.paths.keepalived(name))
