"""Fork-free network namespace primitives for a process that runs gRPC.

pyroute2 (0.9) creates a socket inside a namespace, and creates namespaces,
by fork()ing a child that runs Python code. In a process with live gRPC
threads that child inherits gRPC's poller mid-flight and dies (seen here:
"ev_epoll1_linux.cc Check failed: next_worker->state == KICKED", SIGABRT /
SIGSEGV in the child, RuntimeError "child process is dead" in the agent).

Instead, a short-lived thread enters the namespace with setns(2) (which only
moves that thread), opens the socket and exits: the socket stays bound to
the namespace. Namespaces are created by `ip netns add` (fork + exec, which
is safe). install() swaps these into pyroute2.netns so every IPRoute(netns=)
of the process uses them: each daemon calls it first thing at its start
(router agent, compute agent, all-in-one), importing a module never does.

The namespace helpers every room uses (ensure_netns, remove_netns,
netns_exists, nic_has_mac) live here too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import queue
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pyroute2.netns

from common import netlink

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
T = TypeVar("T")


def _load_libc() -> ctypes.CDLL:
    # By its soname: find_library forks ldconfig, at the import of the router
    # agent (a router VM's start under TCG pays for every fork).
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_libc = _load_libc()


def netns_path(name: str) -> str:
    """The namespace's file: a name under /run/netns, or a path as it is."""
    return name if os.path.dirname(name) else os.path.join(NETNS_RUN_DIR, name)


_path = netns_path


class _Worker:
    """A thread that runs each call in the namespace it names, then returns
    to the process's own: a worker never keeps a deleted namespace alive."""

    def __init__(self) -> None:
        # (namespace, function, reply queue), or None: stop.
        self.calls: queue.SimpleQueue[
            tuple[str, Callable[[], Any], queue.SimpleQueue[Any]] | None] = queue.SimpleQueue()
        self.home = True  # back in the process's namespace after its last call
        threading.Thread(target=self._serve, name="netns-worker", daemon=True).start()

    def _serve(self) -> None:
        while (call := self.calls.get()) is not None:
            name, func, reply = call
            try:
                fd = os.open(_path(name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd, name)
                finally:
                    os.close(fd)
                try:
                    reply.put((True, func()))
                finally:
                    self.home = _libc.setns(_home_fd(), CLONE_NEWNET) == 0
            except BaseException as e:  # handed to the caller's thread
                reply.put((False, e))


def _setns(fd: int, name: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({name}): {os.strerror(err)}")


_home: list[int] = []
_idle: list[_Worker] = []
_idle_lock = threading.Lock()
# Workers kept waiting for the next call; more run at once when asked.
MAX_IDLE_WORKERS = 8


def _home_fd() -> int:
    """The process's own network namespace (its main thread's), opened once."""
    with _idle_lock:
        if not _home:
            _home.append(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        return _home[0]


def _forget_workers() -> None:
    """In a forked child: the parent's workers are not there (nor its lock's holder)."""
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_workers)


def run_in_netns(name: str, func: Callable[[], T]) -> T:
    """Run `func` on a thread that has entered namespace `name`.

    The threads are kept and reused (starting one per call cost more than
    the call itself: two per router in a health check of 1,000 routers)."""
    _home_fd()
    with _idle_lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        worker = _Worker()
    reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
    worker.calls.put((name, func, reply))
    ok, value = reply.get()
    with _idle_lock:
        if worker.home and len(_idle) < MAX_IDLE_WORKERS:
            _idle.append(worker)
            worker = None
    if worker is not None:  # not kept: its thread ends
        worker.calls.put(None)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def create(name: str, libc: object = None) -> None:
    if os.path.exists(_path(name)):
        raise FileExistsError(errno.EEXIST, "netns exists", name)
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        if os.path.exists(_path(name)):
            raise FileExistsError(errno.EEXIST, "netns exists", name)
        raise OSError(errno.EIO, f"ip netns add {name}: {proc.stderr.strip()}")


def create_socket(
    netns: str | None = None, family: int = socket.AF_INET, socket_type: int = socket.SOCK_STREAM,
    proto: int = 0, fileno: int | None = None, flags: int = os.O_CREAT, libc: object = None,
    timeout: object = None,
) -> socket.socket:
    """Drop-in for pyroute2.netns.create_socket, without fork."""
    if fileno is not None:
        return socket.socket(fileno=fileno)
    if netns is None:
        return socket.socket(family, socket_type, proto)
    if not os.path.exists(_path(netns)):
        if not flags & os.O_CREAT:
            raise FileNotFoundError(errno.ENOENT, "netns not found", netns)
        with contextlib.suppress(FileExistsError):
            create(netns)
    return run_in_netns(netns, lambda: socket.socket(family, socket_type, proto))


_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Make pyroute2 use the fork-free primitives in this process. Idempotent."""
    global _installed
    with _install_lock:
        if not _installed:
            pyroute2.netns.create_socket = create_socket
            pyroute2.netns.create = create
            _installed = True


# ------------------------------------------------------------ helpers


def ensure_netns(name: str) -> None:
    """Namespace `name` exists, with its loopback up. Idempotent."""
    with contextlib.suppress(FileExistsError):
        create(name)
    with netlink.rtnl(name) as sock:
        lo = sock.link(name="lo")
        if lo is not None and not lo.up:
            sock.set_link(lo.index, up=True)


def remove_netns(name: str) -> None:
    """Remove namespace `name`. Idempotent."""
    try:
        pyroute2.netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def netns_exists(name: str) -> bool:
    return name in pyroute2.netns.listnetns()


def nic_has_mac(netns_name: str, ifname: str, mac: str) -> bool:
    """Interface `ifname` exists in namespace `netns_name` with MAC `mac`."""
    try:
        link = netlink.find_link_by_name(netns_name, ifname)
    except netlink.NamespaceNotFound:
        return False
    return link is not None and link.mac == mac.lower()
