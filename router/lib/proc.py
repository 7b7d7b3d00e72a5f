"""Running commands (argv lists, never shell strings) and inspecting processes."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time


class CommandError(Exception):
    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}: {output.strip()}")
        self.output = output


NETNS_RUN_DIR = "/run/netns"


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` in network namespace ``netns``, with a mount namespace of its
    own (``ip netns exec``: /sys shows the namespace's links)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def enter_netns(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` in network namespace ``netns`` only. For a daemon: with ``ip
    netns exec`` each would keep a mount namespace of its own, a copy of every
    mount, into which every namespace added later is mounted too (1,000
    routers: a million mounts and about a GB of kernel memory)."""
    return ["nsenter", f"--net={os.path.join(NETNS_RUN_DIR, netns)}", "--", *argv] \
        if netns else argv


def run(argv: list[str], netns: str | None = None, timeout: float = 30) -> str:
    """Run (in network namespace ``netns``, nothing else of it) and return
    stdout+stderr; raise CommandError on a non-zero exit."""
    full = enter_netns(netns, argv)
    proc = subprocess.run(
        full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
        check=False, stdin=subprocess.DEVNULL,
    )
    if proc.returncode:
        raise CommandError(full, proc.returncode, proc.stdout)
    return proc.stdout


@functools.cache
def version(argv0: str) -> str:
    """First line of `<argv0> --version` (e.g. "Dnsmasq version 2.90"), cached."""
    try:
        out = run([argv0, "--version"], timeout=10)
    except (OSError, CommandError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0].split("  ")[0].strip() if out else ""


def read_pidfile(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (FileNotFoundError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


def is_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def pid_running(pidfile: str, must_have_arg: str) -> int | None:
    """The pid in `pidfile` if that process is alive and its argv has `must_have_arg`.

    The argv check keeps a recycled pid (another program) from being adopted
    or signalled.
    """
    pid = read_pidfile(pidfile)
    if pid and is_alive(pid) and must_have_arg in cmdline(pid):
        return pid
    return None


def os_kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after `grace` seconds."""
    os_kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if is_alive(pid):
        os_kill(pid, signal.SIGKILL)


# ---- what runs in a router: by its own records, never by command line ----------


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field
    22): with the pid, it names one process (a recycled pid starts later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def write_record(path: str, pid: int) -> None:
    """Record a daemon this agent started: its pid and start time (0600)."""
    started = start_time(pid)
    if started is None:
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid} {started}\n")


def recorded(path: str) -> int | None:
    """The pid of a record if that very process still runs (same start time)."""
    try:
        with open(path) as f:
            pid, started = (int(v) for v in f.read().split()[:2])
    except (FileNotFoundError, ValueError):
        return None
    return pid if is_alive(pid) and start_time(pid) == started else None


def netns_pids(netns_path: str) -> list[int]:
    """Every process whose network namespace is the one bound at ``netns_path``
    (e.g. /run/netns/<name>), by the namespace's device and inode."""
    try:
        st = os.stat(netns_path)
    except FileNotFoundError:
        return []
    want = (st.st_dev, st.st_ino)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if (ns.st_dev, ns.st_ino) == want:
            out.append(int(entry))
    return out


def stop_all(pids: set[int], grace: float = 5.0) -> list[int]:
    """SIGTERM every process of ``pids``, SIGKILL the ones still there after
    ``grace`` seconds; returns the pids that were alive."""
    alive = sorted(p for p in pids if p != os.getpid() and is_alive(p))
    for pid in alive:
        os_kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(is_alive(p) for p in alive) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in alive:
        if is_alive(pid):
            os_kill(pid, signal.SIGKILL)
    return alive
