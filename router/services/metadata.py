"""Guest metadata: nginx in every router serving each guest its own tree.

Listens on 169.254.169.254:80 (held on the router's loopback; guests reach it
through their gateway) and on every guest interface's address. The trees
are content-addressed directories under ``metadata/trees/<digest>``; a guest's
entry ``metadata/by-ip/<ip>`` is a symlink swapped atomically (rename) to its
new tree, so a request sees the old tree or the new one, never half of one.
Trees are written in apply, before the generation is reported applied.
nginx is reloaded (SIGHUP) only when its configuration changes; a tree
change needs no signal.

Only a guest's own requests reach nginx: the nftables table accepts port 80
to the router only from the (interface, MAC, IP) of a port
(``router.services.nftables.metadata``).
"""

from __future__ import annotations

import contextlib
import functools
import grp
import json
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import tempfile
import time

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router.errors import ApplyError, CheckError, ObjectNotFound
from router.lib import files, proc, templating
from router.services import metadata_tree, password_server
from router.services.base import Capabilities, CheckedText, Context, Rendered, RouterPaths
from router.services.password_server import GuestPasswords

log = logging.getLogger(__name__)

METADATA_ADDRESS = "169.254.169.254"
CONF = "nginx.conf"
TREES = "trees"  # compared, never written: {ip: digest}
WORKER_USER = "www-data"
START_TIMEOUT = 10.0
RELOAD_TIMEOUT = 10.0


def metadata_dir(paths: RouterPaths, *parts: str) -> str:
    return paths.path("metadata", *parts)


def passwords_socket(cfg: pb.RouterConfig, paths: RouterPaths) -> str:
    """The unix socket of the router's password server (the agent's)."""
    return password_server.socket_path(metadata_dir(paths, "passwords.sock"), cfg.router_id)


def _listen(cfg: pb.RouterConfig) -> list[str]:
    addresses = {a.split("/")[0] for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_GUEST
                 for a in i.addresses[:1]}
    return [METADATA_ADDRESS, *sorted(addresses)]


def _worker_user(paths: RouterPaths) -> str:
    """www-data when it can search every directory above the trees, else root."""
    try:
        pw = pwd.getpwnam(WORKER_USER)
    except KeyError:
        return "root"
    path = os.path.abspath(paths.state_dir)
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            path = os.path.dirname(path)
            continue
        bit = (stat.S_IXUSR if st.st_uid == pw.pw_uid else
               stat.S_IXGRP if st.st_gid == pw.pw_gid else stat.S_IXOTH)
        if not st.st_mode & bit:
            return "root"
        if path == "/":
            return WORKER_USER
        path = os.path.dirname(path)


Digests = dict[bytes, str]  # a GuestMetadata, serialized -> its tree's digest


def _digest(g: mpb.GuestMetadata, memo: Digests | None) -> str:
    """The tree's digest; ``memo`` (one router's) spares rebuilding the trees of
    guests that did not change."""
    if memo is None:
        return metadata_tree.tree_digest(metadata_tree.guest_tree(g))
    key = g.SerializeToString(deterministic=True)
    digest = memo.get(key)
    if digest is None:
        digest = memo[key] = metadata_tree.tree_digest(metadata_tree.guest_tree(g))
    return digest


def render(cfg: pb.RouterConfig, paths: RouterPaths, memo: Digests | None = None) -> Rendered:
    if not cfg.guest_metadata:
        return {}
    conf = templating.render(
        "nginx/metadata.conf.j2", generator=f"{__name__} (router {cfg.router_id})",
        user=_worker_user(paths), pid=metadata_dir(paths, "nginx.pid"),
        error_log=metadata_dir(paths, "error.log"), temp=metadata_dir(paths, "tmp"),
        trees=metadata_dir(paths, "by-ip"), listen=_listen(cfg),
        agent_socket=passwords_socket(cfg, paths),
        token_required=sorted(g.ip for g in cfg.guest_metadata if g.tokens_required))
    digests = {g.ip: _digest(g, memo) for g in cfg.guest_metadata}
    return {CONF: conf, TREES: json.dumps(digests, sort_keys=True)}


def check(ctx: Context, rendered: Rendered) -> None:
    if not rendered:
        return
    base = metadata_dir(ctx.paths)
    os.makedirs(os.path.join(base, "tmp"), mode=0o700, exist_ok=True)
    # nginx -t binds the listening sockets, and the check runs outside the
    # router's namespace: it checks the same config listening on a socket file.
    # A socket path is at most 107 bytes: the probe lives in a short directory
    # of its own, not under the (possibly long) state directory.
    probe_dir = tempfile.mkdtemp(prefix="cn-md-")
    probe = os.path.join(probe_dir, "s")
    probes = iter(range(1_000_000))
    text = re.sub(r"(?m)^(\s*)listen [0-9.]+:[0-9]+;$",
                  lambda m: f"{m.group(1)}listen unix:{probe}{next(probes)};", rendered[CONF])
    with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix=".check-", dir=base) as f:
        f.write(text)
        f.flush()
        try:
            proc.run(["nginx", "-t", "-q", "-e", os.path.join(base, "check.log"),
                      "-c", f.name])
        except proc.CommandError as e:
            raise CheckError(f"nginx: config refused by nginx -t: {e.output.strip()}") from e
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)


def master_pid(ctx: Context) -> int | None:
    """nginx's master, if running. It rewrites its argv into one title
    ("nginx: master process nginx ... -c <conf>"): the conf path is looked
    for in that text, so a recycled pid is never taken for it."""
    pid = proc.read_pidfile(metadata_dir(ctx.paths, "nginx.pid"))
    if pid and proc.is_alive(pid) and \
            metadata_dir(ctx.paths, CONF) in " ".join(proc.cmdline(pid)):
        return pid
    return None


def _wait_master(ctx: Context, timeout: float = START_TIMEOUT) -> int:
    """The daemonised master writes its pid file after the starting command exits."""
    deadline = time.monotonic() + timeout
    while (pid := master_pid(ctx)) is None:
        if time.monotonic() > deadline:
            raise ApplyError("nginx: started but no master wrote its pid file")
        time.sleep(0.01)
    return pid


def _group(user: str) -> int:
    """The worker's group: the trees are root's, readable by that group only."""
    return 0 if user == "root" else grp.getgrnam(user).gr_gid


@functools.cache
def nginx_version() -> str:
    try:
        out = proc.run(["nginx", "-v"], timeout=10)
    except (OSError, proc.CommandError):
        return ""
    return out.strip().removeprefix("nginx version: ")


def write_trees(ctx: Context, cfg: pb.RouterConfig, user: str,
                digests: dict[str, str]) -> None:
    """Every guest's tree, then its by-ip link swapped; unused trees removed."""
    base = metadata_dir(ctx.paths)
    trees, by_ip = os.path.join(base, "trees"), os.path.join(base, "by-ip")
    gid = _group(user)
    for d in (trees, by_ip):
        os.makedirs(d, mode=0o750, exist_ok=True)
        os.chown(d, 0, gid)
        os.chmod(d, 0o750)
    wanted: dict[str, str] = {}
    for g in cfg.guest_metadata:
        digest = digests[g.ip]  # from render: a tree is built only when it is new
        wanted[g.ip] = digest
        target = os.path.join(trees, digest)
        if not os.path.isdir(target):
            _write_tree(target, metadata_tree.guest_tree(g), gid)
        link = os.path.join(by_ip, g.ip)
        if os.path.islink(link) and os.readlink(link) == os.path.join("..", "trees", digest):
            continue
        tmp = os.path.join(by_ip, f".{g.ip}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.join("..", "trees", digest), tmp)
        os.replace(tmp, link)  # atomic: the old tree or the new one
    for name in os.listdir(by_ip):
        if name not in wanted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(by_ip, name))
    used = set(wanted.values())
    for name in os.listdir(trees):
        if name not in used:
            shutil.rmtree(os.path.join(trees, name), ignore_errors=True)


def write_guest_tree(ctx: Context, g: mpb.GuestMetadata, user: str, digest: str) -> None:
    """One guest's new tree, its by-ip link swapped atomically, its old tree
    removed (a tree is one guest's: its port ID is in it)."""
    base = metadata_dir(ctx.paths)
    trees, by_ip = os.path.join(base, "trees"), os.path.join(base, "by-ip")
    target = os.path.join(trees, digest)
    if not os.path.isdir(target):
        _write_tree(target, metadata_tree.guest_tree(g), _group(user))
    link = os.path.join(by_ip, g.ip)
    new = os.path.join("..", "trees", digest)
    try:
        old = os.readlink(link)
    except OSError:
        old = ""
    if old == new:
        return
    tmp = os.path.join(by_ip, f".{g.ip}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(new, tmp)
    os.replace(tmp, link)  # atomic: the old tree or the new one
    if old.startswith(os.path.join("..", "trees", "")):
        shutil.rmtree(os.path.join(trees, os.path.basename(old)), ignore_errors=True)


def _write_tree(target: str, tree: metadata_tree.Tree, gid: int) -> None:
    """A tree in a temporary directory renamed into place whole."""
    tmp = tempfile.mkdtemp(prefix=".new-", dir=os.path.dirname(target))
    try:
        for rel, data in tree.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chown(path, 0, gid)
        for root, dirs, _ in os.walk(tmp):
            for d in dirs:
                os.chown(os.path.join(root, d), 0, gid)
                os.chmod(os.path.join(root, d), 0o750)
        os.chown(tmp, 0, gid)
        os.chmod(tmp, 0o750)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _workers(master: int) -> set[int]:
    """The master's worker processes (its children)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                    out.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return out


def reload(master: int, timeout: float = RELOAD_TIMEOUT) -> None:
    """New workers on the new config, same sockets (SIGHUP), and wait until
    the old workers are gone: until then they still accept connections and
    answer from the old config (a port that now requires tokens would be
    served without), and the generation is not applied before that."""
    old = _workers(master)
    proc.os_kill(master, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while (left := old & _workers(master)) or not _workers(master):
        if time.monotonic() > deadline:
            raise ApplyError(f"nginx: workers {sorted(left)} still run the old config "
                             f"{timeout:.0f} s after the reload")
        time.sleep(0.005)


def _hold_address(ctx: Context) -> None:
    try:
        proc.run(["ip", "addr", "replace", f"{METADATA_ADDRESS}/32", "dev", "lo"],
                 netns=ctx.netns)
    except proc.CommandError as e:
        raise ApplyError(f"metadata: cannot hold {METADATA_ADDRESS}: {e.output.strip()}") from e


def serve_passwords(ctx: Context, cfg: pb.RouterConfig, passwords: GuestPasswords) -> None:
    """The password server nginx proxies port 8080 to, and who its guests are."""
    passwords.guests({g.ip: g.port_id for g in cfg.guest_metadata})
    passwords.serve(passwords_socket(cfg, ctx.paths), _group(_worker_user(ctx.paths)))


def apply(ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
          passwords: GuestPasswords) -> None:
    if not rendered:
        remove(ctx, passwords)
        return
    base = metadata_dir(ctx.paths)
    os.makedirs(os.path.join(base, "tmp"), mode=0o700, exist_ok=True)
    user = _worker_user(ctx.paths)
    write_trees(ctx, cfg, user, json.loads(rendered[TREES]))
    serve_passwords(ctx, cfg, passwords)
    conf = metadata_dir(ctx.paths, CONF)
    changed = files.write_if_changed(conf, rendered[CONF], mode=0o600)
    _hold_address(ctx)
    pid = master_pid(ctx)
    if pid is None:
        try:
            proc.run(["nginx", "-e", os.path.join(base, "error.log"), "-c", conf],
                     netns=ctx.netns)
        except proc.CommandError as e:
            raise ApplyError(f"nginx: start failed: {e.output.strip()}") from e
        # Recorded like every daemon of the router, so a router whose agent is
        # gone (or whose namespace went first) still has its nginx stopped.
        proc.write_record(ctx.paths.record("nginx"), _wait_master(ctx))
    elif changed:
        reload(pid)


def remove(ctx: Context, passwords: GuestPasswords) -> None:
    passwords.stop()
    passwords.clear()
    pid = master_pid(ctx)
    if pid is not None:
        proc.stop(pid)
    shutil.rmtree(metadata_dir(ctx.paths), ignore_errors=True)
    with contextlib.suppress(proc.CommandError):
        proc.run(["ip", "addr", "del", f"{METADATA_ADDRESS}/32", "dev", "lo"], netns=ctx.netns)


class Metadata:
    """``base.Service``: the guests' metadata (nginx)."""

    name = "metadata"

    def __init__(self) -> None:
        self.capabilities = Capabilities(conditional=self, adopts=self, guest_passwords=self,
                                         follows_edge=self)
        # This router's tree digests by guest (render stays a function of its input).
        self._memo: Digests = {}
        # Its guests' passwords, in memory only, and the server nginx asks.
        self._passwords = GuestPasswords()
        self._checked = CheckedText()

    def serves(self, cfg: pb.RouterConfig) -> bool:
        """Reported in the router status only while the router has guests."""
        return bool(cfg.guest_metadata)

    def verify(self, cfg: pb.RouterConfig) -> None:
        metadata_tree.verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        if len(self._memo) > 4 * len(cfg.guest_metadata) + 64:
            self._memo.clear()  # bounded: guests gone or changed long ago
        return render(cfg, paths, self._memo)

    def check(self, ctx: Context, rendered: Rendered) -> None:
        if rendered:  # the trees need no nginx -t, only its config
            self._checked.check(rendered[CONF], lambda: check(ctx, rendered))

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        apply(ctx, cfg, rendered, self._passwords)

    def edge_applied(self, ctx: Context, cfg: pb.RouterConfig,
                     delta: epb.EdgeDelta | None = None) -> None:
        """A static NAT created or deleted by an edge delta: public-ipv4 (and
        public-hostname) follow in the same generation. A port's metadata
        replaced by the delta (already in ``cfg``): that guest's tree only."""
        public = {n.private_ip: n.public_ip for n in cfg.static_nats}
        changed = False
        for g in cfg.guest_metadata:
            if g.public_ip != public.get(g.ip, ""):
                g.public_ip = public.get(g.ip, "")
                changed = True
        if master_pid(ctx) is None:
            return
        if not changed and delta is not None and delta.guest_metadata:
            ports = {g.port_id for g in delta.guest_metadata}
            user = _worker_user(ctx.paths)
            for g in cfg.guest_metadata:
                if g.port_id in ports:
                    # No memo: deltas alone would grow it without bound.
                    write_guest_tree(ctx, g, user, _digest(g, None))
            return
        if changed:
            rendered = render(cfg, ctx.paths, self._memo)
            write_trees(ctx, cfg, _worker_user(ctx.paths), json.loads(rendered[TREES]))

    def adopt(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        """nginx runs on from the previous agent; the password server was that
        agent's (and its passwords with it): serve again, with none."""
        if rendered:
            serve_passwords(ctx, cfg, self._passwords)

    def set_password(self, ctx: Context, cfg: pb.RouterConfig, port_id: str,
                     password: str) -> None:
        if not any(g.port_id == port_id for g in cfg.guest_metadata):
            raise ObjectNotFound(f"port {port_id} is not a guest of this router")
        serve_passwords(ctx, cfg, self._passwords)
        self._passwords.set(port_id, password)

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        version = nginx_version()
        if not cfg.guest_metadata:
            return pb.ServiceStatus(name=self.name, healthy=True, detail="no guest",
                                    version=version)
        pid = master_pid(ctx)
        return pb.ServiceStatus(name=self.name, healthy=pid is not None, version=version,
                                detail=f"master pid {pid}" if pid else "not running")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        remove(ctx, self._passwords)
