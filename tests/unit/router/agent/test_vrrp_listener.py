"""What keepalived's notifications may tell the agent (``vrrp_listener``):
nothing but a known router and one of three states moves anything; the
client (``vrrp_notify.py``) speaks one JSON line each way."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.agent import vrrp_notify
from router.agent.vrrp_listener import VrrpListener
from router.errors import RouterNotFound


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
