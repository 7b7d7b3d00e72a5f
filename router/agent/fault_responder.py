"""The router appliance's fault channel (tests only): kill a daemon inside the VM.

A test of a redundant router on the VM backend must make keepalived or the
router agent die inside the master VM, as the namespace backend's tests do
on the host. The VM's only way in is its agent's API, which has no call to
kill a daemon (nor should it: the control network reaches it). This
responder listens on a virtio-serial port instead, which the compute agent
adds only with ``cloudnet-compute --fault-channel`` and which libvirt
exposes as a unix socket on the host alone: nothing on any network of the
VM can reach it, and a VM booted without the port never runs this (the
unit's ``ConditionPathExists``).

One command a line, one reply a line:

    ping                                -> pong
    pid keepalived|agent|conntrackd     -> <pid>, or "error: ... not running"
    kill keepalived|agent|conntrackd    -> killed <pid> (SIGKILL)
    anything else                       -> error: ...

A command may start with a tag, ``#<word>``, which its reply starts with
too: the port keeps a reply whose reader left (a host-side timeout) for the
next connection, and the tag tells the host which reply is its own.

The processes are found by their own records, never by matching names
against every process: keepalived by the pid file the agent gives it,
conntrackd by the agent's record (pid and start time), the agent as the
one process of its unit's cgroup that systemd started (parent PID 1) and
that runs the agent's program (``systemctl show`` was the first choice: it
hung for 30 s and more in a starved VM).

Standard library only, run as ``python3 -I -S``: under TCG every import of
site-packages costs seconds of the VM's one vCPU.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable

PORT = "/dev/virtio-ports/org.cloudnet.faults.0"
AGENT_UNIT = "cloudnet-router-agent.service"
IDENTITY = "/run/cloudnet/identity.env"
STATE_DIR = "/var/lib/cloudnet/agent"
DAEMONS = ("keepalived", "agent", "conntrackd")
MAX_LINE = 256


class Refused(ValueError):
    """A command the responder does not carry out (its reply says why)."""


def parse(line: str) -> tuple[str, str]:
    """(verb, daemon) of one command line; daemon is "" for ping."""
    words = line.split()
    if not words:
        raise Refused("empty command (verbs: ping, pid DAEMON, kill DAEMON)")
    verb, args = words[0], words[1:]
    if verb == "ping":
        if args:
            raise Refused("ping takes no argument")
        return "ping", ""
    if verb not in ("pid", "kill"):
        raise Refused(f"unknown verb {verb!r} (verbs: ping, pid DAEMON, kill DAEMON)")
    if len(args) != 1:
        raise Refused(f"{verb} takes one daemon ({', '.join(DAEMONS)})")
    if args[0] not in DAEMONS:
        raise Refused(f"unknown daemon {args[0]!r} ({', '.join(DAEMONS)})")
    return verb, args[0]


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _router_dir(state_dir: str, identity: str) -> str:
    router_id = ""
    try:
        with open(identity) as f:
            for line in f:
                if line.startswith("CLOUDNET_ROUTER_ID="):
                    router_id = line.split("=", 1)[1].strip()
    except OSError:
        pass
    if not router_id:
        raise Refused(f"no router identity in {identity}")
    return os.path.join(state_dir, "routers", router_id)


def keepalived_pid(router_dir: str) -> int | None:
    """keepalived's parent, by the pid file the agent gives it (its argv must
    name the router's config: a recycled pid is another program)."""
    pidfile = os.path.join(router_dir, "keepalived", "keepalived.pid")
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    conf = os.path.join(router_dir, "keepalived", "keepalived.conf").encode()
    return pid if _alive(pid) and conf in argv else None


def vrrp_child_pid(router_dir: str) -> int | None:
    pidfile = os.path.join(router_dir, "keepalived", "vrrp.pid")
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def conntrackd_pid(router_dir: str) -> int | None:
    """The agent's record of the conntrackd it started: pid and start time."""
    try:
        with open(os.path.join(router_dir, "procs", "conntrackd")) as f:
            pid, started = (int(v) for v in f.read().split()[:2])
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _start_time(pid) == started else None


def agent_pid(proc: str = "/proc") -> int | None:
    """The agent: in its unit's cgroup (which, with ``KillMode=process``, also
    holds the daemons it started), started by systemd (parent 1; a daemon
    orphaned by a dead agent is reparented to 1 too, but runs another
    program) and running ``cloudnet-router-agent``."""
    want = f"/system.slice/{AGENT_UNIT}"
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        base = os.path.join(proc, entry)
        try:
            with open(os.path.join(base, "cgroup")) as f:
                if not any(line.rstrip("\n").split(":", 2)[-1] == want for line in f):
                    continue
            with open(os.path.join(base, "stat")) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(os.path.join(base, "cmdline"), "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and fields[1] == "1" and \
                any(a.endswith(b"/cloudnet-router-agent") for a in argv[:2]):
            found.append(int(entry))
    return found[0] if len(found) == 1 else None


class Responder:
    """The commands, with where to look (tests give their own)."""

    def __init__(self, state_dir: str = STATE_DIR, identity: str = IDENTITY,
                 agent: Callable[[], int | None] = agent_pid,
                 kill: Callable[[int, int], None] = os.kill) -> None:
        self.state_dir = state_dir
        self.identity = identity
        self.agent = agent
        self.kill = kill

    def pids(self, daemon: str) -> list[int]:
        """The process(es) to kill for ``daemon``, the one to name first."""
        if daemon == "agent":
            pid = self.agent()
            return [pid] if pid else []
        rdir = _router_dir(self.state_dir, self.identity)
        if daemon == "conntrackd":
            pid = conntrackd_pid(rdir)
            return [pid] if pid else []
        parent = keepalived_pid(rdir)
        if parent is None:
            return []
        # The VRRP child too, as a crash takes both: the child alone would
        # outlive its parent long enough to send its priority-0 goodbye.
        child = vrrp_child_pid(rdir)
        return [parent] + ([child] if child and child != parent else [])

    def handle(self, line: str) -> str:
        words = line.split(None, 1)
        if words and words[0].startswith("#"):
            return f"{words[0]} {self._handle(words[1] if len(words) > 1 else '')}"
        return self._handle(line)

    def _handle(self, line: str) -> str:
        try:
            verb, daemon = parse(line)
            if verb == "ping":
                return "pong"
            pids = self.pids(daemon)
            if not pids:
                return f"error: {daemon} not running"
            if verb == "pid":
                return str(pids[0])
            for pid in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    self.kill(pid, signal.SIGKILL)
            return f"killed {pids[0]}"
        except Refused as e:
            return f"error: {e}"
        except Exception as e:
            return f"error: {type(e).__name__}: {e}"


def serve(port: str = PORT) -> None:
    responder = Responder()
    while True:
        # The host's side may connect and go any number of times; a read of
        # 0 bytes means nobody is connected (then wait, do not spin).
        fd = os.open(port, os.O_RDWR)
        buf = b""
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    time.sleep(0.2)
                    continue
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    reply = responder.handle(raw[:MAX_LINE].decode("ascii", "replace"))
                    os.write(fd, reply.encode() + b"\n")
                if len(buf) > MAX_LINE:
                    os.write(fd, b"error: line too long\n")
                    buf = b""
        except OSError as e:
            print(f"cloudnet-faults: {port}: {e}", file=sys.stderr)
            time.sleep(1)
        finally:
            os.close(fd)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else PORT)
