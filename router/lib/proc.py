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
