"""The routers' password servers in one agent: their unix sockets, asked the
way nginx asks them (HTTP/1.0, the guest's checked address in a header)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.services.password_server import GUEST_HEADER, REQUEST_HEADER, GuestPasswords

GUEST = "10.0.0.5"


def ask(path: str, request: str = "send_my_password", guest: str = GUEST) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(f"GET /password/ HTTP/1.0\r\n{GUEST_HEADER}: {guest}\r\n"
                  f"{REQUEST_HEADER}: {request}\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.0 200"), head
    return body


class Routers:
    """Routers' password servers, each with one guest and its password."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.servers: dict[str, GuestPasswords] = {}

    def serve(self, name: str) -> str:
        passwords = GuestPasswords()
        passwords.guests({GUEST: f"port-{name}"})
        passwords.set(f"port-{name}", f"password-{name}")
        path = str(self.where / f"{name}.sock")
        passwords.serve(path, os.getgid())
        self.servers[name] = passwords
        return path

    def stop(self, name: str) -> None:
        self.servers.pop(name).stop()


@pytest.fixture
def routers(tmp_path: Path) -> Iterator[Routers]:
    r = Routers(tmp_path)
    try:
        yield r
    finally:
        for name in list(r.servers):
            r.stop(name)


def test_many_routers_servers_share_one_thread_and_each_answers_its_own_guest(
        routers: Routers) -> None:
    threads = threading.active_count()
    paths = {str(i): routers.serve(str(i)) for i in range(20)}
    # A thread for all of them (the first server's), not one a router.
    assert threading.active_count() <= threads + 1
    for name, path in paths.items():
        assert ask(path) == f"password-{name}"
    for name in [str(i) for i in range(0, 20, 2)]:
        routers.stop(name)
        assert not os.path.exists(paths[name])
    # A server made after others went (it may get a closed one's descriptor).
    paths["new"] = routers.serve("new")
    for name in routers.servers:
        assert ask(paths[name]) == f"password-{name}"
    assert ask(paths["new"], "saved_password") == "saved_password"
    assert ask(paths["new"]) == "saved_password"  # acknowledged: gone
    assert ask(paths["1"]) == "password-1"


def test_a_stalled_connection_holds_up_no_other_guest(routers: Routers) -> None:
    a, b = routers.serve("a"), routers.serve("b")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(a)  # and says nothing
        stalled.sendall(b"GET /password/ HTTP/1.0\r\n")
        assert ask(b) == "password-b"
        assert ask(a) == "password-a"
