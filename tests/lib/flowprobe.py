"""Long-lived flows through a router, run in a test's namespaces as a script
(``python3 flowprobe.py MODE ...``): they stop on SIGTERM and print one JSON
line of what they saw.

    tcp-server PORT              echo every line back, on every connection
    tcp-client HOST PORT [HZ [PATIENCE]]
                                 one connection; a numbered line HZ times a
                                 second (default 50), each echo checked; it
                                 gives up after PATIENCE seconds (default
                                 30) without an echo
    tcp-bulk HOST PORT [KBPS]    one connection carrying data both ways at
                                 KBPS kB/s (default 1000) through an echo
                                 server, every byte echoed checked
    udp-sink PORT                count datagrams, note the longest silence
    udp-source HOST PORT [PPS]   numbered datagrams, PPS a second (default 100)

tcp-client reports ``sent``, ``echoed``, ``error`` (the reset or timeout that
ended it, "" if none) and ``max_gap`` (seconds without an echo); on SIGUSR1
it prints ``{"echoed": N}`` and goes on (a test's look at a running stream); udp-sink
tcp-bulk reports ``sent`` and ``echoed`` in bytes, ``error`` and ``max_gap``
(and answers SIGUSR1 the same way; on SIGTERM it sends no more and reads
back what is under way before it reports); udp-sink
reports ``received``, ``max_gap`` and ``gaps`` (every silence over 50 ms,
as [start, seconds] on CLOCK_MONOTONIC, shared by the namespaces of a host).
Standard library only.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time

stop = threading.Event()
# How far a running stream is, for SIGUSR1's look at it. Its handler is in
# place before the stream connects: the tests send SIGUSR1 as soon as a stream
# says it is connected, and SIGUSR1's default action ends the process.
progress: dict[str, object] = {"echoed": 0}


def _on_term(signum: int, frame: object) -> None:
    stop.set()


def _on_usr1(signum: int, frame: object) -> None:
    print(json.dumps({"echoed": progress["echoed"]}), flush=True)


def tcp_server(port: int) -> dict[str, object]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    srv.settimeout(0.2)
    print(json.dumps({"listening": port}), flush=True)
    served = [0]

    def echo(c: socket.socket) -> None:
        with c:
            c.settimeout(0.5)
            while not stop.is_set():
                try:
                    data = c.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                c.sendall(data)

    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except TimeoutError:
            continue
        served[0] += 1
        threading.Thread(target=echo, args=(c,), daemon=True).start()
    return {"connections": served[0]}


def tcp_client(host: str, port: int, hz: float = 50, patience: float = 30) -> dict[str, object]:
    out = progress
    out.update(sent=0, echoed=0, error="", max_gap=0.0)
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(patience)  # a failover may hold an echo for seconds: TCP resends it
    print(json.dumps({"connected": True}), flush=True)
    buf, n, last = b"", 0, time.monotonic()
    try:
        while not stop.is_set():
            n += 1
            s.sendall(f"{n}\n".encode())
            out["sent"] = n
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("closed by the peer")
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            if int(line) != n:
                raise ValueError(f"echo {line!r} for {n}")
            now = time.monotonic()
            out["max_gap"] = max(float(out["max_gap"]), now - last)  # type: ignore[arg-type]
            last = now
            out["echoed"] = n
            stop.wait(1 / hz)
    except (OSError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


# tcp-bulk's bytes: a pattern of a prime length, so that a byte lost, doubled
# or out of place shows as a mismatch wherever it happens.
_PATTERN = bytes((i * 131 + 7) % 251 for i in range(65521)) * 2
BULK_BLOCK, BULK_WINDOW = 16384, 131072


def _expected(offset: int, n: int) -> bytes:
    start = offset % 65521
    return _PATTERN[start:start + n]


def tcp_bulk(host: str, port: int, kbps: float = 1000) -> dict[str, object]:
    out = progress
    out.update(sent=0, echoed=0, error="", max_gap=0.0)
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(30)  # a failover may hold the data for seconds: TCP resends it
    print(json.dumps({"connected": True}), flush=True)
    sent = echoed = 0
    start = last = time.monotonic()
    rate = kbps * 1000
    try:
        # On SIGTERM no more is sent, but what is under way is still read
        # back: a stop in the middle of a block is not a byte lost.
        while sent > echoed or not stop.is_set():
            # At most BULK_WINDOW bytes unechoed (neither side's buffers fill
            # up while the other waits), and no faster than the rate.
            if (not stop.is_set() and sent - echoed < BULK_WINDOW
                    and sent < rate * (time.monotonic() - start)):
                s.sendall(_expected(sent, BULK_BLOCK))
                sent += BULK_BLOCK
                out["sent"] = sent
                continue
            if sent == echoed:
                stop.wait(0.01)
                continue
            chunk = s.recv(min(65536, sent - echoed))
            if not chunk:
                raise ConnectionError("closed by the peer")
            if chunk != _expected(echoed, len(chunk)):
                raise ValueError(f"echoed bytes at offset {echoed} differ from those sent")
            echoed += len(chunk)
            now = time.monotonic()
            out["max_gap"] = max(float(out["max_gap"]), now - last)  # type: ignore[arg-type]
            last = now
            out["echoed"] = echoed
    except (OSError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def udp_sink(port: int) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    print(json.dumps({"listening": port}), flush=True)
    received, last, gaps = 0, 0.0, []
    while not stop.is_set():
        try:
            s.recv(2048)
        except TimeoutError:
            continue
        now = time.monotonic()
        if last and now - last > 0.05:
            gaps.append([last, now - last])
        last = now
        received += 1
    return {"received": received, "gaps": gaps,
            "max_gap": max((g[1] for g in gaps), default=0.0)}


def udp_source(host: str, port: int, pps: float = 100) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print(json.dumps({"sending": pps}), flush=True)
    n, start, errors = 0, time.monotonic(), 0
    while not stop.is_set():
        n += 1
        try:
            s.sendto(f"{n}".encode(), (host, port))
        except OSError:
            errors += 1  # no route for a moment: counted, the stream goes on
        stop.wait(max(0.0, start + n / pps - time.monotonic()))
    return {"sent": n, "errors": errors}


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    signal.signal(signal.SIGUSR1, _on_usr1)
    mode, args = argv[0], argv[1:]
    if mode == "tcp-server":
        result = tcp_server(int(args[0]))
    elif mode == "tcp-client":
        result = tcp_client(args[0], int(args[1]), *map(float, args[2:4]))
    elif mode == "tcp-bulk":
        result = tcp_bulk(args[0], int(args[1]), *map(float, args[2:3]))
    elif mode == "udp-sink":
        result = udp_sink(int(args[0]))
    elif mode == "udp-source":
        result = udp_source(args[0], int(args[1]), *map(float, args[2:3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
