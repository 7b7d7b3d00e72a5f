"""BGP with FRR's bgpd in the router's namespace: peers with the zone's
upstream speakers and announces exactly the router's routed prefixes (routed
IPv4 networks, IPv6 /64s), IPv4 ones to IPv4 peers and IPv6 ones to IPv6
peers (each next hop then is the router's own address of that family).

bgpd runs without zebra (``-Z``): it installs nothing (the router's default
route is the zone's gateway) and learns nothing (every peer's routes are
denied on the way in), so no peer's routes can be passed on to another.
A change of peers or prefixes is made in the running bgpd through vtysh,
leaving the other sessions as they were; a new ASN or router ID restarts
it. ``bgp.json`` records what the running bgpd was told.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import shutil
import tempfile
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb

from router.errors import ApplyError, CheckError, ConfigError
from router.lib import files, proc, templating
from router.services.base import Capabilities, Context, Rendered, RouterPaths

log = logging.getLogger(__name__)

CONF, STATE = "bgp/bgpd.conf", "bgp/bgp.json"
BGPD = "/usr/lib/frr/bgpd"
ASN_MIN, ASN_MAX = 1, 4294967294
MAX_NEIGHBORS = 8
SOCKET_ROOT = "/run/cloudnet-bgp"
_MAX_SOCKET_DIR = 90  # sun_path holds 108 bytes; bgpd adds "/bgpd.vty"


def verify(cfg: pb.RouterConfig) -> None:
    """The ASN, router ID, peers and prefixes; a prefix must be one of the
    router's own (a routed network's CIDR or a /64 it serves)."""
    if not cfg.HasField("bgp"):
        return
    bgp = cfg.bgp
    if not ASN_MIN <= bgp.asn <= ASN_MAX:
        raise ConfigError(f"bgp: ASN {bgp.asn} is outside {ASN_MIN}-{ASN_MAX}")
    try:
        ipaddress.IPv4Address(bgp.router_id)
    except ValueError:
        raise ConfigError(f"bgp: router ID {bgp.router_id!r} is not an IPv4 address") from None
    if len(bgp.neighbors) > MAX_NEIGHBORS:
        raise ConfigError(f"bgp: more than {MAX_NEIGHBORS} neighbors")
    seen: set[str] = set()
    for n in bgp.neighbors:
        try:
            addr = ipaddress.ip_address(n.address)
        except ValueError:
            raise ConfigError(f"bgp: neighbor {n.address!r} is not an IP address") from None
        if addr.is_link_local or addr.is_multicast or addr.is_unspecified:
            raise ConfigError(f"bgp: neighbor {addr} is not a unicast address")
        if str(addr) in seen:
            raise ConfigError(f"bgp: neighbor {addr} twice")
        seen.add(str(addr))
        if not ASN_MIN <= n.asn <= ASN_MAX:
            raise ConfigError(f"bgp: neighbor {addr}: ASN {n.asn} is outside "
                              f"{ASN_MIN}-{ASN_MAX}")
        if addr.version == 6 and not cfg.ipv6_uplink.address:
            raise ConfigError(f"bgp: neighbor {addr} is IPv6; the router has no IPv6 uplink")
    own = {n.cidr for n in cfg.guest_networks if n.routed}
    own |= {n.ipv6_cidr for n in cfg.guest_networks if n.ipv6_cidr}
    for p in bgp.prefixes:
        try:
            ipaddress.ip_network(p, strict=True)
        except ValueError:
            raise ConfigError(f"bgp: prefix {p!r} is not a network") from None
        if p not in own:
            raise ConfigError(f"bgp: prefix {p} is not a routed network of this router")


def serves(cfg: pb.RouterConfig) -> bool:
    return bool(cfg.bgp.prefixes and cfg.bgp.neighbors)


def _family(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=False).version)


def state_of(cfg: pb.RouterConfig) -> dict[str, Any]:
    """What bgpd is told, as compared between two configs. Each session is
    sourced from the router's own address of its family (without zebra,
    bgpd would take ::1 for IPv6)."""
    bgp = cfg.bgp
    own6 = cfg.ipv6_uplink.address.split("/")[0]
    own6 = str(ipaddress.IPv6Address(own6)) if own6 else ""

    def source(addr: str) -> str:
        return bgp.router_id if ipaddress.ip_address(addr).version == 4 else own6

    return {
        "asn": bgp.asn, "router_id": bgp.router_id,
        "neighbors": sorted([a, n.asn, source(a)] for n in bgp.neighbors
                            for a in [str(ipaddress.ip_address(n.address))]),
        "prefixes": sorted(str(ipaddress.ip_network(p)) for p in bgp.prefixes),
    }


def _group(addr: str, asn: int) -> str:
    """The peer group of a neighbor: one per family and AS."""
    return f"cn-v{_family(addr)}-as{asn}"


def _groups(state: dict[str, Any]) -> list[dict[str, Any]]:
    groups = {_group(a, asn): {"name": _group(a, asn), "asn": asn, "family": _family(a),
                               "source": src}
              for a, asn, src in state["neighbors"]}
    return [groups[g] for g in sorted(groups)]


def _group_commands(g: dict[str, Any]) -> list[str]:
    name = g["name"]
    return [f"neighbor {name} peer-group", f"neighbor {name} remote-as {g['asn']}",
            f"neighbor {name} update-source {g['source']}",
            f"neighbor {name} disable-connected-check",
            f"neighbor {name} advertisement-interval 0",
            f"neighbor {name} timers {KEEPALIVE_S} {HOLD_S}"]


def render(cfg: pb.RouterConfig) -> Rendered:
    if not serves(cfg):
        return {}
    state = state_of(cfg)
    text = templating.render(
        "frr/bgpd.conf.j2", generator=f"{__name__} (router {cfg.router_id})",
        hostname=f"router-{cfg.router_id[:12]}", asn=state["asn"], router_id=state["router_id"],
        groups=_groups(state),
        neighbors=[{"address": a, "group": _group(a, asn)} for a, asn, _ in state["neighbors"]],
        prefixes=[{"cidr": p, "family": _family(p)} for p in state["prefixes"]],
        keepalive=KEEPALIVE_S, hold=HOLD_S, coalesce_ms=COALESCE_MS, connect=CONNECT_S)
    return {CONF: text, STATE: json.dumps(state, indent=2, sort_keys=True) + "\n"}


# ---- process management ----------------------------------------------------

def socket_dir(ctx: Context) -> str:
    """bgpd's vty socket directory: in the state directory when short enough."""
    local = ctx.paths.path("bgp")
    if len(local) <= _MAX_SOCKET_DIR:
        return local
    return os.path.join(SOCKET_ROOT, hashlib.sha1(local.encode()).hexdigest()[:16])


def _pidfile(ctx: Context) -> str:
    return ctx.paths.path("bgp", "bgpd.pid")


def _argv(ctx: Context, conf: str, vty_dir: str) -> list[str]:
    # -Z: no zebra; -S: stays root (the namespace is its whole world); -P 0:
    # no TCP vty, only the unix socket vtysh uses.
    return [BGPD, "-d", "-Z", "-S", "-P", "0", "-f", conf, "--vty_socket", vty_dir,
            "-i", _pidfile(ctx), "--log", f"file:{ctx.paths.path('bgp', 'bgpd.log')}"]


def running_pid(ctx: Context) -> int | None:
    return proc.pid_running(_pidfile(ctx), ctx.paths.path(CONF))


def _stop(ctx: Context) -> None:
    pid = running_pid(ctx)
    if pid is not None:
        proc.stop(pid)
    files.remove(_pidfile(ctx))


def _start(ctx: Context) -> None:
    vty_dir = socket_dir(ctx)
    os.makedirs(vty_dir, mode=0o700, exist_ok=True)
    files.remove(_pidfile(ctx))
    try:
        proc.run(_argv(ctx, ctx.paths.path(CONF), vty_dir), netns=ctx.netns)
    except proc.CommandError as e:
        raise ApplyError(f"bgpd: cannot start: {e.output.strip()[-300:]}") from e
    pid = proc.read_pidfile(_pidfile(ctx))
    if pid is None:
        raise ApplyError("bgpd: started but wrote no pid file")
    proc.write_record(ctx.paths.record("bgpd"), pid)


def vtysh(ctx: Context, *commands: str) -> str:
    argv = ["vtysh", "--vty_socket", socket_dir(ctx)]
    for c in commands:
        argv += ["-c", c]
    out = proc.run(argv, timeout=15)
    errors = [line for line in out.splitlines() if line.startswith("%")]
    if errors:
        raise ApplyError(f"bgpd refused a change: {errors[0][:200]}")
    return out


# A router that dies without closing its sessions (a router VM destroyed, a
# host lost) is withdrawn when the edge's hold timer runs out: 9 s, as FRR's
# datacenter profile, not the traditional 180 s (the lower of both ends'
# hold times is the session's).
KEEPALIVE_S, HOLD_S = 3, 9
# How long a new session's first UPDATE waits for other peers to join its
# update subgroup (FRR: 1 s + 50 ms per peer unless set).
COALESCE_MS = 100
# Retry of a session that could not connect.
CONNECT_S = 5


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """vtysh commands turning the running bgpd (told ``old``) into ``new``
    (same ASN and router ID)."""
    cmds = ["configure terminal", f"router bgp {new['asn']}"]
    old_n = {a: (asn, src) for a, asn, src in old["neighbors"]}
    new_n = {a: (asn, src) for a, asn, src in new["neighbors"]}
    for addr, was in sorted(old_n.items()):
        if new_n.get(addr) != was:
            cmds.append(f"no neighbor {addr}")
    added = sorted(a for a, now in new_n.items() if old_n.get(a) != now)
    groups = {g["name"]: g for g in _groups(new)}
    joined = sorted({_group(a, new_n[a][0]) for a in added})
    for name in joined:
        cmds += _group_commands(groups[name])
    for addr in added:
        cmds += [f"neighbor {addr} peer-group {_group(addr, new_n[addr][0])}",
                 f"neighbor {addr} timers connect {CONNECT_S}"]
    for family, af in (("4", "ipv4"), ("6", "ipv6")):
        cmds.append(f"address-family {af} unicast")
        for name in joined:
            if groups[name]["family"] == family:
                cmds += [f"neighbor {name} activate",
                         f"neighbor {name} route-map cn-learn-nothing in"]
        cmds += [f"no network {p}" for p in old["prefixes"]
                 if _family(p) == family and p not in new["prefixes"]]
        cmds += [f"network {p}" for p in new["prefixes"]
                 if _family(p) == family and p not in old["prefixes"]]
        cmds.append("exit-address-family")
    return cmds


def check(ctx: Context, rendered: Rendered) -> None:
    if CONF not in rendered:
        return
    with tempfile.TemporaryDirectory(prefix=".bgp-check-", dir=ctx.state_dir) as d:
        conf = os.path.join(d, "bgpd.conf")
        with open(conf, "w") as f:
            f.write(rendered[CONF])
        try:
            out = proc.run([BGPD, "-C", "-Z", "-S", "-P", "0", "-f", conf, "--vty_socket", d,
                            "-i", os.path.join(d, "pid")])
        except proc.CommandError as e:
            raise CheckError(f"bgpd: config refused by bgpd -C: {e.output[-300:]}") from e
        # bgpd -C exits 0 on a line it does not know and skips it: a setting
        # silently lost.
        refused = [line for line in out.splitlines() if "[EC " in line]
        if refused:
            raise CheckError(f"bgpd: config refused by bgpd -C: {refused[0][-300:]}")


def apply(ctx: Context, rendered: Rendered) -> None:
    if CONF not in rendered:
        remove(ctx)
        return
    new = json.loads(rendered[STATE])
    os.makedirs(ctx.paths.path("bgp"), mode=0o700, exist_ok=True)
    told = files.read_text(ctx.paths.path(STATE))
    old = json.loads(told) if told else None
    if running_pid(ctx) is not None and old is not None and (
            old["asn"], old["router_id"]) == (new["asn"], new["router_id"]):
        if old != new:
            vtysh(ctx, *changes(old, new))
        files.write_if_changed(ctx.paths.path(CONF), rendered[CONF])
        files.write_if_changed(ctx.paths.path(STATE), rendered[STATE])
        return
    log.info("router %s: (re)starting bgpd", ctx.router_id)
    _stop(ctx)
    files.write_if_changed(ctx.paths.path(CONF), rendered[CONF])
    _start(ctx)
    files.write_if_changed(ctx.paths.path(STATE), rendered[STATE])


def sessions(ctx: Context) -> list[rpb.BgpSessionStatus]:
    """Each peer's state and prefix counts, as bgpd reports them."""
    if running_pid(ctx) is None:
        return []
    try:
        summary = json.loads(vtysh(ctx, "show bgp summary json") or "{}")
    except (ApplyError, proc.CommandError, ValueError, OSError):
        return []
    peers: dict[str, rpb.BgpSessionStatus] = {}
    for af in summary.values():
        for addr, p in (af.get("peers") or {}).items() if isinstance(af, dict) else ():
            s = peers.setdefault(addr, rpb.BgpSessionStatus(
                peer=addr, peer_asn=int(p.get("remoteAs", 0)), state=str(p.get("state", ""))))
            s.prefixes_sent += int(p.get("pfxSnt", 0) or 0)
            s.prefixes_received += int(p.get("pfxRcd", 0) or 0)
    return [peers[a] for a in sorted(peers)]


def remove(ctx: Context) -> None:
    _stop(ctx)
    files.remove(ctx.paths.path(STATE))
    if socket_dir(ctx).startswith(SOCKET_ROOT):
        shutil.rmtree(socket_dir(ctx), ignore_errors=True)


class Bgp:
    """``base.Service``: FRR's bgpd announcing the router's routed prefixes."""

    name = "bgp"

    def __init__(self) -> None:
        self.capabilities = Capabilities(conditional=self, status_extras=self)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return serves(cfg)

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return render(cfg)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        check(ctx, rendered)

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, rendered)

    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        status.bgp_sessions.extend(sessions(ctx))

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        version = proc.version(BGPD)
        if not serves(cfg):
            return pb.ServiceStatus(name=self.name, healthy=True, detail="no routed prefixes",
                                    version=version)
        pid = running_pid(ctx)
        if pid is None:
            return pb.ServiceStatus(name=self.name, healthy=False, detail="bgpd not running",
                                    version=version)
        detail = "; ".join(f"{s.peer} AS{s.peer_asn} {s.state} sent {s.prefixes_sent} "
                           f"received {s.prefixes_received}" for s in sessions(ctx))
        return pb.ServiceStatus(name=self.name, healthy=True, detail=detail or "no sessions",
                                version=version)

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        remove(ctx)
