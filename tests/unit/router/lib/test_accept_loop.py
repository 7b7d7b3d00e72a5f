"""One thread accepting for many unix servers (router/lib/accept_loop.py)."""

from __future__ import annotations

import socket
import socketserver
from pathlib import Path

from router.lib.accept_loop import AcceptLoop


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Broken(_Server):
    def get_request(self) -> tuple[socket.socket, str]:
        super().get_request()
        raise RuntimeError("a server of ours with a bug")


def echo(path: str, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(line)
        return s.makefile("rb").readline()


def test_a_server_that_fails_to_accept_stops_no_other(tmp_path: Path) -> None:
    loop = AcceptLoop("test")
    good = _Server(str(tmp_path / "good"), _Echo)
    broken = _Broken(str(tmp_path / "broken"), _Echo)
    try:
        loop.add(broken)
        loop.add(good)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp_path / "broken"))  # accepted, then the server raises
        assert echo(str(tmp_path / "good"), b"one\n") == b"one\n"
        assert echo(str(tmp_path / "good"), b"two\n") == b"two\n"
    finally:
        for server in (good, broken):
            loop.remove(server)
            server.server_close()
    assert loop.serving() == 0


def test_a_removed_server_is_never_accepted_on_again(tmp_path: Path) -> None:
    loop = AcceptLoop("test")
    server = _Server(str(tmp_path / "s"), _Echo)
    loop.add(server)
    assert echo(str(tmp_path / "s"), b"x\n") == b"x\n"
    loop.remove(server)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        s.connect(str(tmp_path / "s"))  # still listening: the kernel queues it
        s.sendall(b"y\n")
        try:
            answer = s.recv(16)
        except TimeoutError:
            answer = b"(no answer)"
    server.server_close()
    assert answer == b"(no answer)"
