"""Load balancing: HAProxy in master-worker mode, one per router.

A config change is applied by rewriting haproxy.cfg (checked first by
``haproxy -c``) and signalling the master (SIGUSR2): it starts new workers on
the new config, handing them the listening sockets (``expose-fd
listeners``), while the old workers finish their connections; HAProxy is
never restarted for a config change, and no connection is refused while it
reloads. With no load balancer the master is stopped.

Member health comes from the stats socket (``show stat``) and is reported in
the router status (``lb_members``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import tempfile
import time

from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ApplyError, CheckError, ConfigError
from router.lib import files, proc, templating, validate
from router.services.base import Capabilities, Context, Rendered, RouterPaths

KIND = "loadbalancer"
CONF = "haproxy.cfg"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# What HAProxy's config parser takes literally: no quotes (' "), escapes,
# comments (#), environment variables ($) or spaces.
_PATH = re.compile(r"^/[A-Za-z0-9._~!&()*+,;=:@%/-]{0,199}$")
ALGORITHMS = ("roundrobin", "leastconn", "source")
STICKINESS = ("", "source", "cookie")
CHECKS = ("", "tcp", "http")
RELOAD_TIMEOUT = 10.0


# ------------------------------------------------------------------ verify


def verify(cfg: pb.RouterConfig) -> None:
    # A listener on a public IP of the router, or on a source-NAT address.
    held = {a.ip for a in cfg.public_addresses} | {n.public_ip for n in cfg.source_nats}
    guest_nets = [ipaddress.IPv4Interface(a).network for i in cfg.interfaces
                  if i.role == pb.INTERFACE_ROLE_GUEST for a in i.addresses]
    forwards = {(f.public_ip, p) for f in cfg.port_forwards if f.protocol == "tcp"
                for p in (f.public_port_start, f.public_port_end)}
    listeners: set[tuple[str, int]] = set()
    for lb in cfg.load_balancers:
        if not _ID.fullmatch(lb.id):
            raise ConfigError(f"load balancer: invalid ID {lb.id!r}", KIND, "")
        what = f"load balancer {lb.id!r}"

        def bad(reason: str, lb_id: str = lb.id, what: str = what) -> ConfigError:
            return ConfigError(f"{what}: {reason}", KIND, lb_id)

        if lb.public_ip not in held:
            raise bad(f"{lb.public_ip!r} is not a public IP the router holds")
        if not 1 <= lb.public_port <= 65535:
            raise bad(f"port {lb.public_port} outside 1-65535")
        if (lb.public_ip, lb.public_port) in listeners:
            raise bad(f"{lb.public_ip}:{lb.public_port} is used by another load balancer")
        if any(f.public_ip == lb.public_ip and f.protocol == "tcp"
               and f.public_port_start <= lb.public_port <= f.public_port_end
               for f in cfg.port_forwards) or (lb.public_ip, lb.public_port) in forwards:
            raise bad(f"{lb.public_ip}:{lb.public_port} is forwarded by a port forward")
        listeners.add((lb.public_ip, lb.public_port))
        if lb.protocol not in ("tcp", "http"):
            raise bad(f"protocol {lb.protocol!r} is not tcp or http")
        if lb.algorithm not in ALGORITHMS:
            raise bad(f"algorithm {lb.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if lb.stickiness not in STICKINESS or (lb.stickiness == "cookie"
                                               and lb.protocol != "http"):
            raise bad(f"stickiness {lb.stickiness!r} is not valid for {lb.protocol}")
        h = lb.health_check
        if h.type not in CHECKS:
            raise bad(f"health check {h.type!r} is not tcp or http")
        if h.type == "http" and not _PATH.fullmatch(h.path or "/"):
            raise bad(f"health check path {h.path!r} is not a plain HTTP path")
        if h.expect_status and not 100 <= h.expect_status <= 599:
            raise bad(f"expected status {h.expect_status} is not 100-599")
        if not (100 <= (h.interval_ms or 2000) <= 3_600_000 and 1 <= (h.rise or 2) <= 100
                and 1 <= (h.fall or 3) <= 100):
            raise bad("health check interval/rise/fall out of range")
        for m in lb.members:
            if not _ID.fullmatch(m.port_id):
                raise bad(f"member {m.port_id!r}: invalid port ID")
            addr = validate.parse_ipv4(what, m.ip, KIND, lb.id)
            if not any(addr in n for n in guest_nets):
                raise bad(f"member {m.port_id}: {m.ip} is not on a guest network")
            if not 1 <= m.port <= 65535 or not 1 <= (m.weight or 1) <= 256:
                raise bad(f"member {m.port_id}: port or weight out of range")
        for c in lb.source_cidrs:
            validate.parse_ipv4_network(what, c, KIND, lb.id)


# ------------------------------------------------------------------ render


def render(cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
    if not cfg.load_balancers:
        return {}
    lbs = []
    for lb in sorted(cfg.load_balancers, key=lambda lb: lb.id):
        h = lb.health_check
        lbs.append({
            "id": lb.id, "comment": f"cn:loadbalancer:{lb.id}", "mode": lb.protocol,
            "public_ip": str(ipaddress.IPv4Address(lb.public_ip)),
            "public_port": int(lb.public_port), "algorithm": lb.algorithm,
            "stickiness": lb.stickiness, "check": h.type, "path": h.path or "/",
            "expect_status": int(h.expect_status), "interval_ms": int(h.interval_ms or 2000),
            "rise": int(h.rise or 2), "fall": int(h.fall or 3),
            "members": [{"name": m.port_id, "ip": str(ipaddress.IPv4Address(m.ip)),
                         "port": int(m.port), "weight": int(m.weight or 1)}
                        for m in sorted(lb.members, key=lambda m: (m.port_id, m.port))],
        })
    text = templating.render("haproxy/haproxy.cfg.j2", generator=f"{__name__} (router "
                             f"{cfg.router_id})", stats_socket=paths.haproxy_stats_socket,
                             load_balancers=lbs)
    return {CONF: text}


def check(ctx: Context, rendered: Rendered) -> None:
    """``haproxy -c``; a refusal names the load balancer whose section
    HAProxy complains about (CheckError kind/object_id), when it does."""
    if not rendered:
        return
    os.makedirs(ctx.state_dir, exist_ok=True)
    os.makedirs(ctx.paths.haproxy_socket_dir, mode=0o700, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix=".check-",
                                     dir=ctx.state_dir) as f:
        f.write(rendered[CONF])
        f.flush()
        try:
            proc.run(["haproxy", "-c", "-f", f.name])
        except proc.CommandError as e:
            raise refusal(e.output, rendered[CONF], f.name) from e


_ALERT = re.compile(r"^\[ALERT\]\s*(?:\(\d+\)\s*)?:\s*(?:config\s*:\s*)?(?P<msg>.*)$")
_AT_LINE = re.compile(r"\[[^\]\s]*:(?P<line>\d+)\]")
_PROXY = re.compile(r"(?:proxy|frontend|backend)\s+'(?:fe|be)-(?P<id>[A-Za-z0-9_-]+)'",
                    re.IGNORECASE)
_SECTION = re.compile(r"^(?:frontend|backend)\s+(?:fe|be)-(?P<id>\S+)\s*$")
MAX_REASON = 300


def refusal(output: str, conf: str, path: str) -> CheckError:
    """The CheckError of HAProxy's refusal of ``conf`` (checked as ``path``):
    its first alert, naming the load balancer whose section it points at."""
    alerts: list[str] = []
    in_alert = False
    for line in output.splitlines():
        if m := _ALERT.match(line.strip()):
            alerts.append(m.group("msg").replace(path, CONF).strip())
            in_alert = True
        elif line.startswith("["):
            in_alert = False
        elif in_alert and line.strip().strip("^"):
            # The alert's next lines quote the offending config text.
            alerts[-1] += " " + line.strip()
    lines = conf.splitlines()
    for alert in alerts:
        lb_id = _section_at(lines, alert)
        if lb_id:
            reason = alert if len(alert) <= MAX_REASON else alert[:MAX_REASON] + "..."
            return CheckError(f"load balancer {lb_id!r} refused by haproxy -c: {reason}",
                              KIND, lb_id)
    text = "; ".join(alerts) or output.replace(path, CONF).strip()
    return CheckError(f"haproxy: config refused by haproxy -c: {text[:2 * MAX_REASON]}")


def _section_at(lines: list[str], alert: str) -> str:
    """The load balancer an alert is about: the proxy it names, else the
    section holding the line it points at ("" if neither)."""
    m = _PROXY.search(alert)
    if m:
        return m.group("id")
    at = _AT_LINE.search(alert)
    if at is None:
        return ""
    for line in reversed(lines[:int(at.group("line"))]):
        s = _SECTION.match(line.strip())
        if s:
            return s.group("id")
        if line.strip() in ("global", "defaults"):
            return ""
    return ""


# ------------------------------------------------------------------- apply


def _paths(ctx: Context) -> tuple[str, str, str]:
    """haproxy.cfg, the stats socket, the master's pid file."""
    p = ctx.paths
    return p.haproxy(CONF), p.haproxy_stats_socket, p.haproxy("haproxy.pid")


def master_pid(ctx: Context) -> int | None:
    conf, _, pidfile = _paths(ctx)
    return proc.pid_running(pidfile, conf)


def _stats(sock_path: str, command: str, timeout: float = 2.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def _worker_pid(sock_path: str) -> int | None:
    try:
        for line in _stats(sock_path, "show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def apply(ctx: Context, rendered: Rendered) -> None:
    if not rendered:
        _stop(ctx)
        return
    conf, sock, pidfile = _paths(ctx)
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    os.makedirs(os.path.dirname(sock), mode=0o700, exist_ok=True)
    files.write_if_changed(conf, rendered[CONF])
    pid = master_pid(ctx)
    if pid is None:
        try:
            proc.run(["haproxy", "-W", "-D", "-f", conf, "-p", pidfile], netns=ctx.netns)
        except proc.CommandError as e:
            raise ApplyError(f"haproxy: start failed: {e.output.strip()}") from e
        _wait_worker(sock, None)
        started = master_pid(ctx)
        if started is not None:
            proc.write_record(ctx.paths.record("haproxy"), started)
        return
    old = _worker_pid(sock)
    proc.os_kill(pid, signal.SIGUSR2)  # master-worker reload: new workers, same sockets
    _wait_worker(sock, old)


def _wait_worker(sock: str, old: int | None) -> None:
    """Until a worker other than ``old`` answers on the stats socket."""
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        now = _worker_pid(sock)
        if now is not None and now != old:
            return
        if time.monotonic() > deadline:
            raise ApplyError("haproxy: no new worker answered after the reload")
        time.sleep(0.02)


def _stop(ctx: Context) -> None:
    pid = master_pid(ctx)
    if pid is None:
        return
    proc.stop(pid)


def member_status(ctx: Context, cfg: pb.RouterConfig) -> list[pb.LbMemberStatus]:
    """Every member's health from HAProxy's stats (none when it is not running)."""
    if not cfg.load_balancers:
        return []
    _, sock, _ = _paths(ctx)
    try:
        csv = _stats(sock, "show stat")
    except OSError:
        return []
    out = []
    for line in csv.splitlines():
        if line.startswith("#") or not line.startswith("be-"):
            continue
        f = line.split(",")
        if len(f) < 38 or f[1] in ("BACKEND", "FRONTEND"):
            continue
        out.append(pb.LbMemberStatus(load_balancer_id=f[0][3:], port_id=f[1], status=f[17],
                                     check=f[36]))
    return out


def remove(ctx: Context) -> None:
    _stop(ctx)
    with contextlib.suppress(OSError):
        os.unlink(ctx.paths.haproxy_stats_socket)
        os.rmdir(ctx.paths.haproxy_socket_dir)


class Haproxy:
    """``base.Service``: the router's load balancers."""

    name = "haproxy"

    def __init__(self) -> None:
        self.capabilities = Capabilities(conditional=self, status_extras=self,
                                         follows_role=self)

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg, paths)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        check(ctx, rendered)

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        # A redundant router's load balancers listen on the master only.
        apply(ctx, rendered if ctx.role.active(cfg) else {})

    def role_changed(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        apply(ctx, rendered if ctx.role.active(cfg) else {})

    def serves(self, cfg: pb.RouterConfig) -> bool:
        """Reported in the router status only while there are load balancers."""
        return bool(cfg.load_balancers)

    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        status.lb_members.extend(member_status(ctx, cfg))

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        if not cfg.load_balancers:
            return pb.ServiceStatus(name=self.name, healthy=True, detail="no load balancer",
                                    version=proc.version("haproxy"))
        if not ctx.role.active(cfg):
            return pb.ServiceStatus(name=self.name, healthy=True, version=proc.version("haproxy"),
                                    detail=f"standby ({ctx.role.state or 'no VRRP state yet'})")
        pid = master_pid(ctx)
        return pb.ServiceStatus(name=self.name, healthy=pid is not None,
                                version=proc.version("haproxy"),
                                detail=f"master pid {pid}" if pid else "not running")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        remove(ctx)
