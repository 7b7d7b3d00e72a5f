"""The router appliance's fault responder (router/agent/fault_responder.py):
its command parsing, and which processes it finds and kills, with stand-in
processes (real ones, killed for real) at the places the agent records them.
In a VM: tests/integration/vm/test_redundant_router_vms.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from router.agent import fault_responder as fr

RID = "1f0e8c1a-0000-4000-8000-000000000001"


@pytest.mark.parametrize(("line", "want"), [
    ("ping", ("ping", "")),
    ("  ping \r", ("ping", "")),
    ("pid keepalived", ("pid", "keepalived")),
    ("pid agent", ("pid", "agent")),
    ("kill conntrackd", ("kill", "conntrackd")),
    ("kill\tagent", ("kill", "agent")),
])
def test_commands_it_understands(line: str, want: tuple[str, str]) -> None:
    assert fr.parse(line) == want


@pytest.mark.parametrize(("line", "error"), [
    ("", "empty command"),
    ("   ", "empty command"),
    ("ping now", "ping takes no argument"),
    ("reboot", "unknown verb 'reboot'"),
    ("PING", "unknown verb 'PING'"),
    ("kill", "kill takes one daemon"),
    ("kill keepalived agent", "kill takes one daemon"),
    ("kill dnsmasq", "unknown daemon 'dnsmasq'"),
    ("pid 1", "unknown daemon '1'"),
    ("kill /usr/sbin/keepalived", "unknown daemon"),
])
def test_commands_it_refuses_say_why(line: str, error: str) -> None:
    with pytest.raises(fr.Refused, match=error):
        fr.parse(line)
    reply = fr.Responder(agent=lambda: None).handle(line)
    assert reply.startswith("error: ")
    assert error in reply


def _stand_in(*argv: str) -> subprocess.Popen[bytes]:
    """A process whose argv holds ``argv`` (as a daemon's names its config)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv])


def _gone(p: subprocess.Popen[bytes]) -> int:
    try:
        return p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()


@pytest.fixture
def router(tmp_path: str) -> tuple[fr.Responder, str]:
    state = os.path.join(str(tmp_path), "agent")
    rdir = os.path.join(state, "routers", RID)
    os.makedirs(os.path.join(rdir, "keepalived"))
    os.makedirs(os.path.join(rdir, "procs"))
    identity = os.path.join(str(tmp_path), "identity.env")
    with open(identity, "w") as f:
        f.write(f"CLOUDNET_ROUTER_ID={RID}\nCLOUDNET_LISTEN=10.250.0.2:50051\n")
    return fr.Responder(state_dir=state, identity=identity, agent=lambda: None), rdir


def test_keepalived_is_found_by_its_pid_file_and_killed_with_its_vrrp_child(
        router: tuple[fr.Responder, str]) -> None:
    responder, rdir = router
    conf = os.path.join(rdir, "keepalived", "keepalived.conf")
    parent, child = _stand_in("-f", conf), _stand_in("--vrrp")
    try:
        assert responder.handle("pid keepalived") == "error: keepalived not running"
        for name, p in (("keepalived.pid", parent), ("vrrp.pid", child)):
            with open(os.path.join(rdir, "keepalived", name), "w") as f:
                f.write(f"{p.pid}\n")
        assert responder.handle("pid keepalived") == str(parent.pid)
        assert responder.handle("kill keepalived") == f"killed {parent.pid}"
        assert _gone(parent) == -signal.SIGKILL
        assert _gone(child) == -signal.SIGKILL
        assert responder.handle("kill keepalived") == "error: keepalived not running"
    finally:
        for p in (parent, child):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_pid_file_naming_another_program_is_not_killed(
        router: tuple[fr.Responder, str]) -> None:
    responder, rdir = router
    other = _stand_in("-f", "/etc/something-else.conf")
    try:
        with open(os.path.join(rdir, "keepalived", "keepalived.pid"), "w") as f:
            f.write(f"{other.pid}\n")
        assert responder.handle("kill keepalived") == "error: keepalived not running"
        time.sleep(0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_conntrackd_is_found_by_the_agents_record_pid_and_start_time(
        router: tuple[fr.Responder, str]) -> None:
    responder, rdir = router
    p = _stand_in("conntrackd")
    try:
        record = os.path.join(rdir, "procs", "conntrackd")
        with open(record, "w") as f:
            f.write(f"{p.pid} 1\n")  # another start time: a recycled pid
        assert responder.handle("kill conntrackd") == "error: conntrackd not running"
        assert p.poll() is None
        with open(f"/proc/{p.pid}/stat") as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
        with open(record, "w") as f:
            f.write(f"{p.pid} {started}\n")
        assert responder.handle("kill conntrackd") == f"killed {p.pid}"
        assert _gone(p) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_the_agent_is_its_units_main_pid() -> None:
    p = _stand_in("agent")
    try:
        responder = fr.Responder(agent=lambda: p.pid)
        assert responder.handle("pid agent") == str(p.pid)
        assert responder.handle("kill agent") == f"killed {p.pid}"
        assert _gone(p) == -signal.SIGKILL
        assert fr.Responder(agent=lambda: None).handle("kill agent") == \
            "error: agent not running"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_without_a_router_identity_it_says_so(tmp_path: str) -> None:
    responder = fr.Responder(state_dir=str(tmp_path), identity=os.path.join(str(tmp_path), "no"),
                             agent=lambda: None)
    assert responder.handle("pid keepalived").startswith("error: no router identity in ")


@pytest.mark.parametrize(("line", "reply"), [
    ("#a1 ping", "#a1 pong"),
    ("#x reboot", "#x error: unknown verb 'reboot' (verbs: ping, pid DAEMON, kill DAEMON)"),
    ("#only", "#only error: empty command (verbs: ping, pid DAEMON, kill DAEMON)"),
])
def test_a_tagged_command_gets_its_tag_back(line: str, reply: str) -> None:
    assert fr.Responder(agent=lambda: None).handle(line) == reply


def _proc_entry(root: str, pid: int, cgroup: str, ppid: int, argv: list[str]) -> None:
    d = os.path.join(root, str(pid))
    os.makedirs(d)
    with open(os.path.join(d, "cgroup"), "w") as f:
        f.write(f"0::{cgroup}\n")
    with open(os.path.join(d, "stat"), "w") as f:
        f.write(f"{pid} (x y) S {ppid} 1 1 0\n")
    with open(os.path.join(d, "cmdline"), "wb") as f:
        f.write(b"\0".join(a.encode() for a in argv) + b"\0")


def test_the_agent_is_the_process_systemd_started_in_its_units_cgroup(tmp_path: str) -> None:
    root = str(tmp_path)
    unit = "/system.slice/cloudnet-router-agent.service"
    agent = ["/opt/cloudnet/bin/python3", "/opt/cloudnet/bin/cloudnet-router-agent", "--x"]
    # What the unit's cgroup holds besides the agent (KillMode=process):
    # daemons it started, one orphaned to PID 1 by a dead agent.
    _proc_entry(root, 160, unit, 1, ["keepalived", "-f", "/x/keepalived.conf"])
    _proc_entry(root, 158, unit, 1, ["/usr/sbin/conntrackd", "-C", "/x"])
    _proc_entry(root, 300, unit, 160, agent)  # not systemd's child
    _proc_entry(root, 400, "/system.slice/other.service", 1, agent)
    assert fr.agent_pid(root) is None
    _proc_entry(root, 128, unit, 1, agent)
    os.makedirs(os.path.join(root, "self"))
    assert fr.agent_pid(root) == 128
