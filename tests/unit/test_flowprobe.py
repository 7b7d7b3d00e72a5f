"""The failover tests' stream probe (tests/lib/flowprobe.py), run as the tests
run it: a process on loopback, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "lib" / "flowprobe.py"


class HeldEcho:
    """An echo server that reads at once but echoes only once let go, and then
    in small pieces, as a stream coming back from a failover does."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.received = 0
        self.got_data = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        held = b""
        with conn:
            while not self.release.is_set():
                conn.settimeout(0.05)
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                held += data
                self.received += len(data)
                self.got_data.set()
            conn.settimeout(5)
            for at in range(0, len(held), 1000):
                conn.sendall(held[at:at + 1000])
                time.sleep(0.01)
            while data := conn.recv(65536):
                conn.sendall(data)


def test_a_bulk_stream_stopped_with_bytes_under_way_reads_them_back_first() -> None:
    echo = HeldEcho()
    probe = subprocess.Popen([sys.executable, str(PROBE), "tcp-bulk", "127.0.0.1", str(echo.port),
                              "1000"], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None
        assert json.loads(probe.stdout.readline()) == {"connected": True}
        assert echo.got_data.wait(10), "the probe sent nothing"
        probe.send_signal(signal.SIGTERM)
        # The probe has had SIGTERM with every byte it sent still unechoed.
        threading.Timer(0.5, echo.release.set).start()
        out, _ = probe.communicate(timeout=30)
    finally:
        if probe.poll() is None:
            probe.kill()
    result = json.loads(out.splitlines()[-1])
    assert result["error"] == ""
    assert result["sent"] > 0
    assert result["echoed"] == result["sent"] == echo.received


@pytest.mark.parametrize("mode", ["tcp-client", "tcp-bulk"])
def test_a_stream_whose_peer_closes_reports_the_error(mode: str) -> None:
    srv = socket.create_server(("127.0.0.1", 0))

    def close_after_first_read() -> None:
        conn, _ = srv.accept()
        conn.recv(10)
        conn.close()

    threading.Thread(target=close_after_first_read, daemon=True).start()
    probe = subprocess.run([sys.executable, str(PROBE), mode, "127.0.0.1",
                            str(srv.getsockname()[1])], capture_output=True, text=True, timeout=30)
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result["error"] != ""
    assert result["echoed"] == 0


def test_a_client_gives_up_after_its_patience_without_an_echo() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True).start()
    probe = subprocess.run([sys.executable, str(PROBE), "tcp-client", "127.0.0.1",
                            str(srv.getsockname()[1]), "50", "1"],
                           capture_output=True, text=True, timeout=20)
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result["error"].startswith("TimeoutError"), result
    assert result["sent"] == 1
    assert result["echoed"] == 0


def _caught_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no SigCgt for {pid}")


@pytest.mark.parametrize("mode", ["tcp-client", "tcp-bulk"])
def test_a_stream_catches_sigusr1_before_it_says_it_is_connected(mode: str) -> None:
    """The tests ask a stream how far it is (SIGUSR1) as soon as it says it
    is connected; a SIGUSR1 before its handler is in place ends the process
    (the default action). Held at that line (its stdout a full pipe), the
    probe must already catch SIGUSR1."""
    srv = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(srv.accept()[0]), daemon=True).start()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    probe = subprocess.Popen([sys.executable, str(PROBE), mode, "127.0.0.1",
                              str(srv.getsockname()[1])], stdout=write_end)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 20
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert accepted, "the probe did not connect"
        usr1 = 1 << (signal.SIGUSR1 - 1)
        while not _caught_signals(probe.pid) & usr1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _caught_signals(probe.pid) & usr1, "SIGUSR1 would end the probe"
    finally:
        probe.kill()
        probe.wait(10)
        os.close(read_end)
