"""compute.ovs_datapath's conversation with ovs-vswitchd's control socket,
against a stand-in server that behaves as ovs-vswitchd's unixctl does:
it reads no request of a connection while it owes that connection an
answer, answers ``version`` at once, and answers ``revalidator/wait`` at
the end of a revalidation round (here: once the kick came)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from compute.ovs_datapath import Revalidation


class Vswitchd:
    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen()
        self.asked = threading.Event()  # a revalidator/wait has been read
        self.round = threading.Event()  # a revalidation round ended
        self.requests: list[list[str]] = []  # per connection, in order
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            seen: list[str] = []
            self.requests.append(seen)
            threading.Thread(target=self._serve, args=(conn, seen), daemon=True).start()

    def _serve(self, conn: socket.socket, seen: list[str]) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        while True:
            text = buf.lstrip()
            try:
                msg, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data.decode()
                continue
            buf = text[end:]
            seen.append(msg["method"])
            if msg["method"] == "revalidator/wait":
                self.asked.set()
                # Nothing more is read from this connection until it is answered.
                self.round.wait(10)
            try:
                conn.sendall(json.dumps({"id": msg["id"], "result": "",
                                         "error": None}).encode())
            except OSError:
                return


@pytest.fixture
def vswitchd(tmp_path) -> Iterator[tuple[Vswitchd, str]]:
    path = str(tmp_path / "ovs-vswitchd.1.ctl")
    server = Vswitchd(path)
    yield server, path
    server.listener.close()


def test_the_kick_follows_the_question_and_nothing_queues_behind_it(vswitchd) -> None:
    server, path = vswitchd
    kicks: list[bool] = []

    def kick() -> None:
        # The question must already be on its way: the round this starts
        # has to be one the question waits for.
        kicks.append(server.asked.wait(5))
        threading.Timer(0.05, server.round.set).start()

    rv = Revalidation(timeout=5, path=path)
    try:
        rv.wait(kick=kick)
    finally:
        rv.close()
    assert kicks == [True]
    waits = [r for r in server.requests if "revalidator/wait" in r]
    assert waits == [["revalidator/wait"]], \
        "nothing else written on the question's connection while it waited"
    assert any("version" in r for r in server.requests if r is not waits[0]), \
        "the main loop was woken on a connection of its own"
