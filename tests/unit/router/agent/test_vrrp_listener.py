"""What keepalived's notifications may tell the agent (``vrrp_listener``):
nothing but a known router and one of three states moves anything; the
client (``vrrp_notify.py``) speaks one JSON line each way; the listener
holds the liveness lock keepalived's ``flock`` checks, for as long as it
listens."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.agent import vrrp_listener, vrrp_notify
from router.agent.vrrp_listener import VrrpListener
from router.errors import RouterNotFound
from router.services import keepalived
from router.services.base import RouterPaths
from tests.lib.routerconfigs import edge_config, redundant
from tests.lib.routerlab import wait_for


class FakeRuntime:
    """Records the transitions asked for (the runtime's own test is the
    integration one: real keepalived, real namespaces)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def vrrp_transition(self, observe: Callable[[pb.RouterConfig], str]) -> str:
        self.asked.append("transition")
        return "BACKUP"


@pytest.fixture
def listener() -> Iterator[tuple[VrrpListener, FakeRuntime]]:
    rt = FakeRuntime()

    def lookup(router_id: str) -> FakeRuntime:
        if router_id != "r1":
            raise RouterNotFound(f"router {router_id} is not on this agent")
        return rt

    state_dir = tempfile.mkdtemp(prefix="vrrp-listener-", dir="/tmp")
    listener = VrrpListener(state_dir, lookup)  # type: ignore[arg-type]
    listener.start()
    try:
        yield listener, rt
    finally:
        listener.stop()
        os.unlink(listener.alive_path)
        os.rmdir(state_dir)


@pytest.mark.parametrize("line", [
    b"", b"not json", b"[]", b'{"state": "MASTER"}', b'{"router": 5, "state": "MASTER"}',
    b'{"router": "r2", "state": "MASTER"}', b'{"router": "r1", "state": "BOSS"}',
    b'{"router": "../../etc", "check": true}',
])
def test_anything_else_moves_nothing(listener: tuple[VrrpListener, FakeRuntime],
                                     line: bytes) -> None:
    lst, rt = listener
    answer = lst.handle(line)
    assert answer["ok"] is False
    assert len(str(answer["error"])) <= 100
    assert rt.asked == []


def test_a_transition_and_a_check_through_the_client(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    lst, rt = listener
    # As keepalived runs it: SOCKET ROUTER INSTANCE NAME STATE PRIORITY.
    assert vrrp_notify.main([lst.path, "r1", "INSTANCE", "cn", "BACKUP", "100"]) == 0
    assert rt.asked == ["transition"]
    assert vrrp_notify.main(["--check", lst.path, "r1"]) == 0
    assert vrrp_notify.main(["--check", lst.path, "r2"]) == 1
    assert rt.asked == ["transition"]
    assert os.stat(lst.path).st_mode & 0o777 == 0o600


def test_the_check_fails_when_the_agent_is_gone(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    lst, _ = listener
    lst.stop()
    assert vrrp_notify.main(["--check", lst.path, "r1"]) == 1
    assert json.dumps(vrrp_notify.main(["bad"])) == "2"


def test_alive_fails_only_when_no_process_listens(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    """A busy agent (connections queued, nothing answered) is alive; a
    killed one (its socket file left, nobody listening) or a removed socket
    is not: keepalived then holds the orphaned instance in FAULT."""
    import socket

    lst, _ = listener
    assert vrrp_notify.main(["--alive", lst.path]) == 0
    lst.stop()
    assert vrrp_notify.main(["--alive", lst.path]) == 1  # no socket file
    # What SIGKILL leaves: the file, bound by no live socket.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(lst.path)
    dead.close()
    try:
        assert vrrp_notify.main(["--alive", lst.path]) == 1
        os.unlink(lst.path)
        busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        busy.bind(lst.path)
        busy.listen(1)  # never accepts: a stuck agent
        try:
            assert vrrp_notify.main(["--alive", lst.path]) == 0
        finally:
            busy.close()
    finally:
        os.unlink(lst.path)


def alive_command(state_dir: str) -> list[str]:
    """keepalived's agent_alive script, as rendered for a router of the agent
    on ``state_dir`` and split as keepalived splits it (single quotes)."""
    paths = RouterPaths(os.path.join(state_dir, "routers", "r1"))
    text = keepalived.render(redundant(edge_config(), 0), paths)[keepalived.CONF]
    block = text[text.index("vrrp_script agent_alive {"):]
    line = block[block.index('script "') + len('script "'):]
    return shlex.split(line[:line.index('"\n')])


def runs_ok(argv: list[str]) -> bool:
    return subprocess.run(argv, timeout=30).returncode == 0


def test_keepalived_sees_the_agent_alive_exactly_while_it_listens(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    """The rendered flock command, run for real: the lock is held while the
    listener listens (alive, exit 0), free once it stopped (exit 1)."""
    lst, _ = listener
    argv = alive_command(os.path.dirname(lst.path))
    assert argv[0] == keepalived.FLOCK
    assert lst.alive_path in argv
    assert lst.holds_alive_lock
    assert runs_ok(argv)
    lst.stop()
    assert not lst.holds_alive_lock
    assert not runs_ok(argv)
    lst.start()  # an agent back: alive again
    assert runs_ok(argv)


def test_a_daemon_started_by_the_agent_does_not_keep_it_alive(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    """The lock's descriptor is not inherited: a child started while the
    agent listened (as its dnsmasq or keepalived are) outlives it without
    holding the lock."""
    lst, _ = listener
    argv = alive_command(os.path.dirname(lst.path))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             close_fds=False)
    try:
        lst.stop()
        assert not runs_ok(argv)
    finally:
        child.kill()
        child.wait()


def test_a_second_listener_takes_the_lock_over_once_the_first_lets_go(
        listener: tuple[VrrpListener, FakeRuntime], monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent started while a previous one on the same state dir still
    holds the lock starts all the same, and holds the lock once the other
    lets go: keepalived sees an agent alive throughout."""
    lst, _ = listener
    monkeypatch.setattr(vrrp_listener, "LOCK_RETRY", 0.05)
    argv = alive_command(os.path.dirname(lst.path))
    other = VrrpListener(os.path.dirname(lst.path), lambda r: None)  # type: ignore[arg-type,return-value]
    other.start()
    try:
        assert not other.holds_alive_lock
        lst.stop()
        wait_for(lambda: other.holds_alive_lock, 10, "the lock taken over")
        assert runs_ok(argv)
    finally:
        other.stop()
    assert not runs_ok(argv)


def test_the_check_starts_without_the_costly_imports(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    """As keepalived runs it: ``-I -S``, and neither ``socket`` nor ``json``
    (most of a loaded host's start-up seconds) is imported."""
    lst, _ = listener
    done = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", keepalived.CLIENT,
                           "--check", lst.path, "r1"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "_socket" in imported
    assert not imported & {"socket", "json", "selectors", "enum"}, imported


def test_a_listener_stopped_after_a_newer_one_started_leaves_its_socket(
        listener: tuple[VrrpListener, FakeRuntime]) -> None:
    """A new agent on the same state dir binds the socket path anew; the old
    agent's listener, stopped later, must not unlink the new one's socket
    (keepalived's notifications would find no agent until a restart)."""
    lst, _ = listener
    rt = FakeRuntime()
    other = VrrpListener(os.path.dirname(lst.path), lambda r: rt)  # type: ignore[arg-type,return-value]
    other.start()
    try:
        lst.stop()
        assert os.path.exists(other.path)
        assert vrrp_notify.main([other.path, "r1", "INSTANCE", "cn", "MASTER", "100"]) == 0
        assert rt.asked == ["transition"]
    finally:
        other.stop()
    assert not os.path.exists(other.path)
