"""Running a function inside a network namespace without fork: a kept
thread that enters the namespace with setns(2) (which only moves that
thread), runs it, and returns to the process's own namespace.

Why not fork: see ``common.netns``. Apart from it (which builds the
namespace helpers on netlink) so that the raw netlink client
(``common.rtnl``) can open its sockets in a namespace without an import
cycle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

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
            # The reply goes after the thread is home again: a caller that
            # has its answer may delete the namespace or look at the threads,
            # and must not find this one still inside.
            reply.put(self._run(name, func))

    def _run(self, name: str, func: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            fd = os.open(_path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, name)
            finally:
                os.close(fd)
        except BaseException as e:  # handed to the caller's thread
            return False, e
        try:
            return True, func()
        except BaseException as e:
            return False, e
        finally:
            self.home = _libc.setns(_home_fd(), CLONE_NEWNET) == 0


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
