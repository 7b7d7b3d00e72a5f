"""Site-to-site IPsec VPN: one strongSwan charon per router, driven through vici.

charon runs in the router's network namespace with a private ``/run``
(``ip netns exec`` gives it a mount namespace of its own, in which the
router's ``strongswan/run`` directory is bind-mounted over ``/run``): its pid
file and vici socket are per router, and the agent reaches the socket as
``/proc/<pid>/root/run/charon.vici``. ``strongswan.conf`` (charon's own
settings: plugins, retransmissions, log) is the only file rendered; it is
passed by ``STRONGSWAN_CONF``.

IPsec is kernel ESP (XFRM) where the kernel has it (the router appliance VM)
and ``kernel-libipsec`` (userspace ESP in UDP on a TUN device, ``ipsec0``)
where it does not (namespace routers on this host kind).

Connections and pre-shared keys go through vici only (``load-shared``,
``load-conn``; a key is never written to a file: not here, not in the
agent's config.pb, not hashed in ``loaded.json``). Each connection's vici
definition is one rendered entry (``conn:<id>``, not a file); ``apply``
(re)loads only the connections whose definition changed, and unloads (and
terminates) the ones that went away. A config restored from disk has no
keys: a connection the running charon still holds keeps its key, one it
does not hold waits for netmgr's next push (which brings the keys, and only
loads them again: the SAs stay). A connection that did not change is
not touched, and nothing else in the router touches charon, so an
established tunnel survives every unrelated change (the nftables table
replacement included: it keeps the VPN's rules, see ``nftables/vpn.py``).

IKEv1 carries one pair of traffic selectors per child SA (strongSwan, and
CloudStack #3138), so an IKEv1 connection gets one child per (local,
remote) pair; IKEv2 carries all of them in one child.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import vpn_pb2

from common import ipsec_proposals
from router.errors import ApplyError, ConfigError
from router.lib import files, proc, templating, validate
from router.services.base import Capabilities, Context, HostFeatures, Rendered, RouterPaths

log = logging.getLogger(__name__)

KIND = "vpnconnection"
CONF = "strongswan.conf"
CONN_PREFIX = "conn:"
CHARON = "/usr/lib/ipsec/charon"
# vici names of our connections (and of their shared keys).
VICI_PREFIX = "cn-"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LIFETIME_MIN, LIFETIME_MAX = ipsec_proposals.LIFETIME_MIN, ipsec_proposals.LIFETIME_MAX
DEFAULT_IKE_LIFETIME, DEFAULT_ESP_LIFETIME = 28800, 3600
START_TIMEOUT = 10.0
TERMINATE_MS = 3000
LOG_MAX_BYTES = 4 * 1024 * 1024
# openssl first: the first plugin to offer an algorithm serves it, and
# OpenSSL's AES-GCM (AES-NI) is many times faster than the gcm/aes plugins'
# (which stay as fallbacks).
COMMON_PLUGINS = ("openssl", "random", "nonce", "kdf", "aes", "sha1", "sha2", "hmac", "gcm", "gmp",
                  "pem", "pkcs1", "x509", "pubkey", "socket-default", "vici")


# ------------------------------------------------------------------ verify


def _bad(c: vpn_pb2.VpnConnection, reason: str) -> ConfigError:
    return ConfigError(f"VPN connection {c.id!r}: {reason}", KIND, c.id)


def verify(cfg: pb.RouterConfig) -> None:
    held = {ipaddress.IPv4Interface(a).ip for i in cfg.interfaces
            if i.role == pb.INTERFACE_ROLE_PUBLIC for a in i.addresses}
    held |= {ipaddress.IPv4Address(a.ip) for a in cfg.public_addresses
             if _parses(a.ip)}
    pairs: set[tuple[str, str]] = set()
    ids: set[str] = set()
    for c in cfg.vpn_connections:
        if not _ID.fullmatch(c.id):
            raise ConfigError(f"VPN connection: invalid ID {c.id!r}", KIND, "")
        if c.id in ids:
            raise _bad(c, "duplicate ID")
        ids.add(c.id)
        what = f"VPN connection {c.id!r}"
        local = validate.parse_ipv4(what, c.local_address, KIND, c.id)
        if local not in held:
            raise _bad(c, f"local address {local} is not a public address of the router")
        peer = validate.parse_ipv4(what, c.peer_address, KIND, c.id)
        if (not peer.is_global and not peer.is_private) or peer.is_multicast \
                or peer.is_unspecified or peer.is_loopback or peer == local:
            raise _bad(c, f"peer address {peer} is not a unicast address")
        if (c.local_address, c.peer_address) in pairs:
            raise _bad(c, f"another connection joins {local} and {peer}")
        pairs.add((c.local_address, c.peer_address))
        if not c.local_cidrs or not c.peer_cidrs:
            raise _bad(c, "needs local and peer CIDRs")
        mine = [_selector(c, n) for n in c.local_cidrs]
        theirs = [_selector(c, n) for n in c.peer_cidrs]
        for n in theirs:
            if not any(m.version == n.version for m in mine):
                raise _bad(c, f"peer CIDR {n} has no local IPv{n.version} network to reach")
            clash = next((m for m in mine if m.version == n.version and m.overlaps(n)), None)
            if clash is not None:
                raise _bad(c, f"peer CIDR {n} overlaps local CIDR {clash}")
        # Empty: withheld (a config restored from disk; see the module doc).
        if c.psk and not ipsec_proposals.psk_ok(c.psk):
            raise _bad(c, f"pre-shared key must be {ipsec_proposals.PSK_RULE}")
        if c.ike_version not in (1, 2):
            raise _bad(c, f"IKE version {c.ike_version} is not 1 or 2")
        for proposals, ike in ((c.ike_proposals, True), (c.esp_proposals, False)):
            if len(proposals) > ipsec_proposals.MAX_PROPOSALS:
                raise _bad(c, f"more than {ipsec_proposals.MAX_PROPOSALS} proposals")
            for p in proposals:
                reason = ipsec_proposals.check(p, ike)
                if reason:
                    raise _bad(c, f"{'IKE' if ike else 'ESP'} proposal {reason}")
        for name, value in (("IKE lifetime", c.ike_lifetime_seconds),
                            ("ESP lifetime", c.esp_lifetime_seconds)):
            if value and not LIFETIME_MIN <= value <= LIFETIME_MAX:
                raise _bad(c, f"{name} {value} s is outside {LIFETIME_MIN}-{LIFETIME_MAX}")
        if c.dpd_delay_seconds > 3600 or c.dpd_timeout_seconds > 3600:
            raise _bad(c, "DPD delay and timeout are at most 3600 s")


_LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")
_MULTICAST6 = ipaddress.IPv6Network("ff00::/8")


def _selector(c: vpn_pb2.VpnConnection,
              value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A traffic selector: an IPv4 network, or a unicast IPv6 one (the
    tunnel's outer addresses stay IPv4; strongSwan carries both families in
    one child SA)."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise _bad(c, f"{value[:48]!r} is not an IP network") from None
    if net.version == 6 and (net.overlaps(_LINK_LOCAL6) or net.overlaps(_MULTICAST6)
                             or net.network_address.is_loopback or net.prefixlen == 0):
        raise _bad(c, f"{net} is not a unicast network")
    return net


def _parses(ip: str) -> bool:
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ render


def vici_name(conn_id: str) -> str:
    return VICI_PREFIX + conn_id


def conn_definition(c: vpn_pb2.VpnConnection) -> dict[str, Any]:
    """The vici ``load-conn`` message of one connection (pure; the key is separate)."""
    active = not c.passive
    esp = list(c.esp_proposals) or list(ipsec_proposals.DEFAULT_ESP)
    child_common: dict[str, Any] = {
        "esp_proposals": esp,
        "life_time": f"{c.esp_lifetime_seconds or DEFAULT_ESP_LIFETIME}s",
        # Rekey at 90 % of the lifetime (strongSwan's margin is 10 %).
        "rekey_time": f"{(c.esp_lifetime_seconds or DEFAULT_ESP_LIFETIME) * 9 // 10}s",
        "mode": "tunnel",
        "start_action": "start" if active else "none",
        "dpd_action": "restart" if active else "clear",
        "close_action": "start" if active else "none",
    }
    local_ts = sorted(c.local_cidrs)
    peer_ts = sorted(c.peer_cidrs)
    if c.ike_version == 1:
        # IKEv1 negotiates one selector pair per child SA (#3138).
        # Pairs of one family only: an IPv4 to IPv6 pair would select nothing.
        pairs = [(lt, rt) for lt in local_ts for rt in peer_ts if (":" in lt) == (":" in rt)]
        children = {f"n{i}": {**child_common, "local_ts": [lt], "remote_ts": [rt]}
                    for i, (lt, rt) in enumerate(pairs)}
    else:
        children = {"net": {**child_common, "local_ts": local_ts, "remote_ts": peer_ts}}
    ike_life = c.ike_lifetime_seconds or DEFAULT_IKE_LIFETIME
    conn: dict[str, Any] = {
        "version": int(c.ike_version),
        "local_addrs": [c.local_address],
        "remote_addrs": [c.peer_address],
        "proposals": list(c.ike_proposals) or list(ipsec_proposals.DEFAULT_IKE),
        "encap": "yes" if c.force_encapsulation else "no",
        "mobike": "no",
        "reauth_time": "0s",
        "rekey_time": f"{ike_life * 9 // 10}s",
        # The peer's new IKE SA (after it restarted) replaces the stale one.
        "unique": "replace",
        # An active connection keeps trying until the peer answers.
        "keyingtries": 0 if active else 1,
        "local": {"auth": "psk", "id": c.local_address},
        "remote": {"auth": "psk", "id": c.peer_address},
        "children": children,
    }
    if c.dpd_delay_seconds:
        conn["dpd_delay"] = f"{c.dpd_delay_seconds}s"
        if c.ike_version == 1:
            conn["dpd_timeout"] = f"{c.dpd_timeout_seconds or 4 * c.dpd_delay_seconds}s"
    return conn


def render(cfg: pb.RouterConfig, paths: RouterPaths, backend: str) -> Rendered:
    if not cfg.vpn_connections:
        return {}
    plugins = [*COMMON_PLUGINS, *(["kernel-libipsec"] if backend == "libipsec" else []),
               "kernel-netlink"]
    out = {CONF: templating.render("strongswan/strongswan.conf.j2",
                                   generator=f"{__name__} (router {cfg.router_id})",
                                   plugins=plugins, backend=backend, log=paths.strongswan_log)}
    for c in sorted(cfg.vpn_connections, key=lambda c: c.id):
        # In memory only (compared to decide what to reload), never written.
        out[CONN_PREFIX + c.id] = json.dumps(
            {"conn": conn_definition(c), "psk": c.psk, "reset": c.reset_serial}, sort_keys=True)
    return out


def check(ctx: Context, rendered: Rendered) -> None:
    """charon has no offline config check: verify() applied the proposal
    grammar; here every definition must encode as a vici message."""
    import vici.protocol

    for key, text in rendered.items():
        if key.startswith(CONN_PREFIX):
            vici.protocol.Message.serialize(json.loads(text)["conn"])


# ------------------------------------------------------------------- apply


def _run_dir(ctx: Context) -> str:
    return ctx.paths.strongswan("run")


def _conf_path(ctx: Context) -> str:
    return ctx.paths.strongswan(CONF)


def _log_path(ctx: Context) -> str:
    return ctx.paths.strongswan_log


def _loaded_path(ctx: Context) -> str:
    return ctx.paths.strongswan("loaded.json")


def charon_pid(ctx: Context) -> int | None:
    """charon of this router, if running (its environment names our strongswan.conf)."""
    pid = proc.read_pidfile(os.path.join(_run_dir(ctx), "charon.pid"))
    if not pid or not proc.is_alive(pid):
        return None
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    want = f"STRONGSWAN_CONF={_conf_path(ctx)}".encode()
    return pid if want in env and proc.cmdline(pid)[:1] == [CHARON] else None


def _vici_socket(pid: int) -> str:
    # charon's view of its /run, whatever the length of the state dir's path.
    return f"/proc/{pid}/root/run/charon.vici"


@contextlib.contextmanager
def session(ctx: Context, timeout: float = 10.0) -> Any:
    import vici

    pid = charon_pid(ctx)
    if pid is None:
        raise ApplyError("strongswan: charon is not running")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(_vici_socket(pid))
        yield vici.Session(s)
    finally:
        s.close()


def _start(ctx: Context) -> int:
    if ctx.state_dir.startswith("/run/"):
        raise ApplyError("strongswan: the state dir must not be under /run (charon's /run "
                         "is replaced by the router's run dir)")
    run = _run_dir(ctx)
    os.makedirs(run, mode=0o700, exist_ok=True)
    for stale in ("charon.pid", "charon.vici"):
        files.remove(os.path.join(run, stale))
    files.remove(_loaded_path(ctx))
    # ip netns exec gives charon its own mount namespace; the bind mount of
    # the run dir over /run stays in it. Paths are positional arguments of
    # a fixed script, never spliced into it. setsid -f detaches charon (it
    # does not daemonize) so the agent neither waits for it nor reaps it.
    argv = proc.in_netns(ctx.netns, [
        "env", f"STRONGSWAN_CONF={_conf_path(ctx)}", "setsid", "-f", "sh", "-c",
        'mount --bind "$1" /run && exec "$2"', "charon", run, CHARON])
    code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=30, check=False).returncode
    if code:
        raise ApplyError(f"strongswan: starting charon failed ({' '.join(argv)} -> {code})")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = charon_pid(ctx)
        if pid and os.path.exists(_vici_socket(pid)):
            proc.write_record(ctx.paths.record("charon"), pid)
            return pid
        time.sleep(0.05)
    raise ApplyError(f"strongswan: charon did not answer within {START_TIMEOUT:.0f} s "
                     f"(see {_log_path(ctx)})")


def _loaded(ctx: Context, pid: int) -> dict[str, str]:
    """Digest of every connection loaded into the running charon (by us)."""
    try:
        with open(_loaded_path(ctx)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return dict(data.get("conns", {})) if data.get("pid") == pid else {}


def _digest(spec: dict[str, Any]) -> str:
    """Of a connection's definition, without its key (loaded.json is on disk)."""
    return hashlib.sha256(json.dumps({"conn": spec["conn"], "reset": spec["reset"]},
                                     sort_keys=True).encode()).hexdigest()


class LoadedKeys:
    """The key this agent process gave the running charon, per connection:
    in memory only, and only while that charon runs."""

    def __init__(self) -> None:
        self.pid = 0
        self.keys: dict[str, str] = {}

    def of(self, pid: int) -> dict[str, str]:
        if pid != self.pid:
            self.pid, self.keys = pid, {}
        return self.keys


def _load_key(s: Any, name: str, spec: dict[str, Any]) -> None:
    c = spec["conn"]
    s.load_shared({"id": name, "type": "IKE", "data": spec["psk"],
                   "owners": [c["local"]["id"], c["remote"]["id"]]})


def apply(ctx: Context, rendered: Rendered, memo: LoadedKeys | None = None) -> None:
    import vici.exception

    if not rendered:
        _stop(ctx)
        return
    memo = memo if memo is not None else LoadedKeys()
    os.makedirs(ctx.paths.strongswan(), mode=0o700, exist_ok=True)
    changed = files.write_if_changed(_conf_path(ctx), rendered[CONF])
    pid = charon_pid(ctx)
    if pid is not None and changed:
        # Only a new backend or plugin list changes it: restart to load it.
        log.warning("router %s: strongswan.conf changed, restarting charon", ctx.router_id)
        _stop(ctx)
        pid = None
    if pid is None:
        pid = _start(ctx)
    loaded = _loaded(ctx, pid)
    keys = memo.of(pid)
    wanted = {vici_name(k[len(CONN_PREFIX):]): v for k, v in rendered.items()
              if k.startswith(CONN_PREFIX)}
    try:
        with session(ctx) as s:
            present = {n.decode() if isinstance(n, bytes) else n
                       for n in s.get_conns().get("conns", [])}
            for name in sorted((present | set(loaded)) - set(wanted)):
                if name.startswith(VICI_PREFIX):
                    _unload(s, name)
                    loaded.pop(name, None)
                    keys.pop(name, None)
            for name, text in sorted(wanted.items()):
                spec = json.loads(text)
                digest = _digest(spec)
                if loaded.get(name) == digest and name in present:
                    # Unchanged: its SAs are left alone. A key charon got
                    # from another agent process (before a restart) is
                    # given again: replacing a shared key touches no SA.
                    if spec["psk"] and keys.get(name) != spec["psk"]:
                        _load_key(s, name, spec)
                        keys[name] = spec["psk"]
                    continue
                if not spec["psk"]:
                    # Withheld (restored from disk) and not in charon: it
                    # waits for the key from netmgr's next push.
                    log.info("router %s: VPN connection %s waits for its key", ctx.router_id,
                             name[len(VICI_PREFIX):])
                    continue
                if name in present:
                    # Changed (or reset): the old SAs carry the old selectors
                    # and proposals. Unloaded first, the connection is loaded
                    # anew below, so its start action runs again.
                    _unload(s, name, keep_key=True)
                _load_key(s, name, spec)
                keys[name] = spec["psk"]
                s.load_conn({name: spec["conn"]})
                loaded[name] = digest
                _write_loaded(ctx, pid, loaded)
    except (vici.exception.CommandException, OSError) as e:
        raise ApplyError(f"strongswan: vici: {e}") from e
    finally:
        _write_loaded(ctx, pid, loaded)


def _write_loaded(ctx: Context, pid: int, loaded: dict[str, str]) -> None:
    files.write_if_changed(_loaded_path(ctx), json.dumps({"pid": pid, "conns": loaded},
                                                         sort_keys=True), mode=0o600)


def _terminate(s: Any, name: str) -> None:
    """Delete the connection's IKE SAs (and their children), waiting for it:
    forced (no wait for the peer's answer), bounded by TERMINATE_MS."""
    import vici.exception

    with contextlib.suppress(vici.exception.CommandException):
        for _ in s.terminate({"ike": name, "force": "yes", "timeout": str(TERMINATE_MS)}):
            pass


def _unload(s: Any, name: str, keep_key: bool = False) -> None:
    import vici.exception

    with contextlib.suppress(vici.exception.CommandException):
        s.unload_conn({"name": name})
    _terminate(s, name)
    if not keep_key:
        with contextlib.suppress(vici.exception.CommandException):
            s.unload_shared({"id": name})


def tend(ctx: Context, cfg: pb.RouterConfig) -> list[str]:
    """Initiate every active connection that has no IKE SA at all (not even
    one being set up): a peer that answered NO_PROPOSAL_CHOSEN before its own
    config was loaded, or one that refused and was fixed, is not retried by
    charon (keyingtries only covers unanswered requests). Runs with the
    agent's health pass; returns the connections initiated."""
    import vici.exception

    active = [vici_name(c.id) for c in cfg.vpn_connections if not c.passive]
    if not active or charon_pid(ctx) is None:
        return []
    started = []
    try:
        with session(ctx, timeout=3.0) as s:
            have = {_text(name) for entry in s.list_sas() for name in entry}
            for name in active:
                if name in have:
                    continue
                children = [_text(c) for c in _conn_children(s, name)]
                if not children:
                    continue  # not loaded (waits for its key)
                for child in children:
                    with contextlib.suppress(vici.exception.CommandException):
                        for _ in s.initiate({"ike": name, "child": child, "timeout": "-1"}):
                            pass
                started.append(name)
    except (OSError, ApplyError) as e:
        log.warning("router %s: VPN tend: %s", ctx.router_id, e)
    if started:
        log.info("router %s: initiating VPN %s again", ctx.router_id, ", ".join(started))
    return started


def _conn_children(s: Any, name: str) -> list[Any]:
    for entry in s.list_conns({"ike": name}):
        for conn in entry.values():
            return list((conn.get("children") or {}).keys())
    return []


def _stop(ctx: Context) -> None:
    pid = charon_pid(ctx)
    if pid is not None:
        proc.stop(pid, grace=5.0)
    files.remove(_loaded_path(ctx))


# ------------------------------------------------------------------ status


_FAILURE = re.compile(
    r"(establishing IKE_SA failed|giving up after|AUTHENTICATION_FAILED|"
    r"NO_PROPOSAL_CHOSEN|no acceptable proposal|no matching|TS_UNACCEPTABLE|"
    r"failed to establish CHILD_SA|MAC mismatched|tried \d+ shared key|"
    r"received .*INVALID|peer not responding|no shared key found)", re.IGNORECASE)
_SUCCESS = re.compile(r"IKE_SA \S+ established|CHILD_SA \S+ established")
_LINE = re.compile(r"^(?P<ts>\S+) \d+\[\w+\] <(?P<name>[^|>]+)\|\d+> (?P<msg>.*)$")


def _log_errors(ctx: Context) -> dict[str, str]:
    """The latest failure logged per connection since its latest success."""
    path = _log_path(ctx)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(max(0, size - 256 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
        if size > LOG_MAX_BYTES:
            os.truncate(path, 0)  # charon appends (O_APPEND): it goes on at 0
    except OSError:
        return {}
    errors: dict[str, str] = {}
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        name, msg = m.group("name"), m.group("msg")
        if _SUCCESS.search(msg):
            errors.pop(name, None)
        elif _FAILURE.search(msg):
            errors[name] = f"{m.group('ts')} {msg}"
    return errors


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v or "")


def _int(v: Any) -> int:
    try:
        return int(_text(v) or 0)
    except ValueError:
        return 0


def connection_status(ctx: Context, cfg: pb.RouterConfig,
                      backend: str) -> list[vpn_pb2.VpnConnectionStatus]:
    """Every connection's IKE and child SAs, as charon reports them (list-sas)."""
    if not cfg.vpn_connections:
        return []
    sas: dict[str, list[dict[str, Any]]] = {}
    try:
        with session(ctx, timeout=3.0) as s:
            for entry in s.list_sas():
                for name, sa in entry.items():
                    sas.setdefault(_text(name), []).append(sa)
    except Exception as e:
        down = f"charon not answering: {e}"
        return [vpn_pb2.VpnConnectionStatus(connection_id=c.id, ike_state="DOWN",
                                            last_error=down, backend=backend)
                for c in cfg.vpn_connections]
    errors = _log_errors(ctx)
    out = []
    for c in sorted(cfg.vpn_connections, key=lambda c: c.id):
        name = vici_name(c.id)
        waiting = "" if c.psk or name in sas else "waiting for its pre-shared key from netmgr"
        st = vpn_pb2.VpnConnectionStatus(connection_id=c.id, ike_state="DOWN",
                                         backend=backend,
                                         last_error=errors.get(name, waiting))
        candidates = sorted(sas.get(name, []), key=lambda sa: (
            _text(sa.get("state")) == "ESTABLISHED", _int(sa.get("uniqueid"))))
        if candidates:
            sa = candidates[-1]
            st.ike_state = _text(sa.get("state"))
            st.ike_unique_id = _int(sa.get("uniqueid"))
            st.established_seconds = _int(sa.get("established"))
            for child in (sa.get("child-sas") or {}).values():
                ch = vpn_pb2.VpnChildSaStatus(
                    name=_text(child.get("name")), state=_text(child.get("state")),
                    unique_id=_int(child.get("uniqueid")),
                    bytes_in=_int(child.get("bytes-in")), bytes_out=_int(child.get("bytes-out")),
                    packets_in=_int(child.get("packets-in")),
                    packets_out=_int(child.get("packets-out")),
                    local_ts=[_text(t) for t in child.get("local-ts", [])],
                    remote_ts=[_text(t) for t in child.get("remote-ts", [])],
                    installed_seconds=_int(child.get("install-time")),
                    encapsulated=_text(child.get("encap")) == "yes")
                st.children.append(ch)
                st.bytes_in += ch.bytes_in
                st.bytes_out += ch.bytes_out
            st.children.sort(key=lambda ch: (ch.name, ch.unique_id))
        out.append(st)
    return out


def remove(ctx: Context) -> None:
    _stop(ctx)
    shutil.rmtree(ctx.paths.strongswan(), ignore_errors=True)


class Strongswan:
    """``base.Service``: the router's site-to-site VPN connections."""

    name = "strongswan"

    def __init__(self, host: HostFeatures) -> None:
        self.host = host
        self.capabilities = Capabilities(conditional=self, tends=self, status_extras=self,
                                         follows_role=self)
        self.keys = LoadedKeys()

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        if not cfg.vpn_connections:
            return {}  # no backend probe for a router without VPN
        return render(cfg, paths, self.host.vpn_backend())

    def check(self, ctx: Context, rendered: Rendered) -> None:
        check(ctx, rendered)

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        self.role_changed(ctx, cfg, rendered)

    def role_changed(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        """A redundant router's tunnels run on the master only: its charon
        initiates them again from the moved addresses after a failover."""
        if ctx.role.active(cfg):
            apply(ctx, rendered, self.keys)
        else:
            apply(ctx, {}, self.keys)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return bool(cfg.vpn_connections)

    def tend(self, ctx: Context, cfg: pb.RouterConfig) -> list[str]:
        return tend(ctx, cfg) if ctx.role.active(cfg) else []

    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        if cfg.vpn_connections:
            status.vpn_connections.extend(
                connection_status(ctx, cfg, self.host.vpn_backend()))

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        version = proc.version(CHARON) if os.path.exists(CHARON) else ""
        if not cfg.vpn_connections:
            return pb.ServiceStatus(name=self.name, healthy=True, detail="no VPN connection",
                                    version=version)
        if not ctx.role.active(cfg):
            return pb.ServiceStatus(name=self.name, healthy=True, version=version,
                                    detail=f"standby ({ctx.role.state or 'no VRRP state yet'})")
        pid = charon_pid(ctx)
        return pb.ServiceStatus(
            name=self.name, healthy=pid is not None, version=version,
            detail=f"charon pid {pid} ({self.host.vpn_backend()})" if pid else "not running")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        remove(ctx)
        self.keys = LoadedKeys()
