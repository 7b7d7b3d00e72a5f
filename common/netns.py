"""Fork-free network namespace primitives for a process that runs gRPC.

A library that opens a socket inside a namespace by fork()ing a child that
runs Python code (pyroute2 0.9 did) kills that child in a process with live
gRPC threads: it inherits gRPC's poller mid-flight ("ev_epoll1_linux.cc
Check failed: next_worker->state == KICKED", SIGABRT / SIGSEGV).

Instead, a kept thread enters the namespace with setns(2) (which only moves
that thread), opens the socket and goes back (``common.nsthread``): the
socket stays bound to the namespace. Namespaces are created by `ip netns
add` (fork + exec, which is safe) and removed as `ip netns del` does.

The namespace helpers every room uses (ensure_netns, remove_netns,
netns_exists, list_netns, nic_has_mac) live here too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import socket
import subprocess

from common import netlink
from common.nsthread import NETNS_RUN_DIR, netns_path, run_in_netns

MNT_DETACH = 2  # umount2(2): detach now, free when no longer busy

__all__ = ["NETNS_RUN_DIR", "create", "create_socket", "ensure_netns", "list_netns",
           "netns_exists", "netns_path", "nic_has_mac", "remove_netns", "run_in_netns",
           "write_sysctls"]


def create(name: str) -> None:
    if os.path.exists(netns_path(name)):
        raise FileExistsError(errno.EEXIST, "netns exists", name)
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        if os.path.exists(netns_path(name)):
            raise FileExistsError(errno.EEXIST, "netns exists", name)
        raise OSError(errno.EIO, f"ip netns add {name}: {proc.stderr.strip()}")


def create_socket(netns: str | None, family: int = socket.AF_INET,
                  socket_type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket opened inside namespace ``netns`` (None: this thread's),
    without fork. FileNotFoundError when the namespace does not exist."""
    if netns is None:
        return socket.socket(family, socket_type, proto)
    if not os.path.exists(netns_path(netns)):
        raise FileNotFoundError(errno.ENOENT, "netns not found", netns)
    return run_in_netns(netns, lambda: socket.socket(family, socket_type, proto))


# ------------------------------------------------------------ helpers


def ensure_netns(name: str) -> None:
    """Namespace `name` exists, with its loopback up. Idempotent."""
    with contextlib.suppress(FileExistsError):
        create(name)
    with netlink.rtnl(name) as sock:
        lo = sock.link(name="lo")
        if lo is not None and not lo.up:
            sock.set_link(lo.index, up=True)


def write_sysctls(name: str, values: dict[str, str], missing_ok: bool = False) -> None:
    """Write ``values`` (``net.ipv4.ip_forward``: "1", ...) in namespace
    ``name``: from a thread inside it, since a net.* file is the namespace
    of the task that opens it (no `ip netns exec sysctl`: two execs).
    ``missing_ok``: a key the kernel does not have is skipped (IPv6 turned
    off at boot has no net.ipv6). Raises OSError."""

    def write() -> None:
        for key, value in values.items():
            try:
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(value)
            except FileNotFoundError:
                if not missing_ok:
                    raise

    run_in_netns(name, write)


def remove_netns(name: str) -> None:
    """Remove namespace `name` (as `ip netns del`: its bind mount detached,
    its file removed; the namespace goes with its last process). Idempotent."""
    if not _valid_name(name):
        raise ValueError(f"network namespace name {name[:40]!r}")
    path = netns_path(name)
    if _libc().umount2(path.encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount (left over)
            raise OSError(code, os.strerror(code), path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def netns_exists(name: str) -> bool:
    return _valid_name(name) and os.path.exists(netns_path(name))


def list_netns() -> list[str]:
    """The named namespaces (as `ip netns list`), sorted."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


@functools.cache
def _libc() -> ctypes.CDLL:
    # The process's own libc, by no name: find_library would fork ldconfig.
    return ctypes.CDLL(None, use_errno=True)


def nic_has_mac(netns_name: str, ifname: str, mac: str) -> bool:
    """Interface `ifname` exists in namespace `netns_name` with MAC `mac`."""
    try:
        link = netlink.find_link_by_name(netns_name, ifname)
    except netlink.NamespaceNotFound:
        return False
    return link is not None and link.mac == mac.lower()
