"""Packet capture on a router interface, streamed as pcap.

tcpdump runs in the router's namespace (exec'd, never a shell) writing pcap
to its stdout; the agent reads it record by record and enforces the limits
itself: the packet count, the time limit and the byte limit end the capture
at a record boundary, so the stream is always a valid pcap file. The filter
is compiled first (``tcpdump -d``) and comes from a file (``-F``), so it can
never be taken for an option.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from router.diag.common import DiagError, check_limit
from router.lib.proc import in_netns

DEFAULT_PACKETS, MAX_PACKETS = 100, 100_000
DEFAULT_SECONDS, MAX_SECONDS = 10.0, 600.0
DEFAULT_BYTES, MAX_BYTES = 10 << 20, 100 << 20
DEFAULT_SNAPLEN, MAX_SNAPLEN = 262_144, 262_144
MAX_FILTER = 1024
PCAP_HEADER = 24
RECORD_HEADER = 16
START_TIMEOUT = 10.0


@dataclass
class Limits:
    packets: int
    seconds: float
    bytes: int
    snaplen: int


def check_limits(max_packets: int, max_seconds: float, max_bytes: int, snaplen: int) -> Limits:
    packets = int(check_limit("max_packets", max_packets, DEFAULT_PACKETS, MAX_PACKETS))
    seconds = check_limit("max_seconds", max_seconds, DEFAULT_SECONDS, MAX_SECONDS)
    nbytes = int(check_limit("max_bytes", max_bytes, DEFAULT_BYTES, MAX_BYTES))
    if nbytes and nbytes < PCAP_HEADER + RECORD_HEADER:
        raise DiagError("max_bytes", f"at least {PCAP_HEADER + RECORD_HEADER} (got {nbytes})")
    snap = int(check_limit("snaplen", snaplen, DEFAULT_SNAPLEN, MAX_SNAPLEN))
    return Limits(packets, seconds, nbytes, snap)


def check_filter_text(text: str) -> str:
    if len(text) > MAX_FILTER:
        raise DiagError("filter", f"longer than {MAX_FILTER} characters")
    if any(not c.isprintable() for c in text):
        raise DiagError("filter", "contains control characters")
    return text.strip()


def _filter_file(text: str) -> str:
    fd, path = tempfile.mkstemp(prefix="cloudnet-bpf-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def compile_filter(netns: str, ifname: str, text: str) -> None:
    """Raise DiagError('filter') unless libpcap compiles `text` for the interface."""
    text = check_filter_text(text)
    if not text:
        return
    path = _filter_file(text)
    try:
        proc = subprocess.run(
            in_netns(netns, ["tcpdump", "-d", "-i", ifname, "-F", path]),
            capture_output=True, text=True, timeout=15, check=False, stdin=subprocess.DEVNULL)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "does not compile"
        raise DiagError("filter", msg.removeprefix("tcpdump: "))


@dataclass
class Result:
    packets: int = 0
    bytes: int = 0
    stopped_by: str = ""


def capture(
    netns: str, ifname: str, bpf: str, limits: Limits, cancelled: threading.Event,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    result: Result | None = None,
) -> Iterator[bytes]:
    """Yield pcap bytes: first b"" once tcpdump listens, then the header and
    whole records until a limit, `cancelled`, or tcpdump's end. `result`
    receives the counts and what stopped the capture."""
    res = result if result is not None else Result()
    bpf = check_filter_text(bpf)
    path = _filter_file(bpf) if bpf else ""
    argv = ["tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode", "-w", "-",
            "-s", str(limits.snaplen), "-c", str(limits.packets + 1)]
    if path:
        argv += ["-F", path]
    proc = subprocess.Popen(in_netns(netns, argv), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if on_start:
        on_start(proc)
    listening = threading.Event()
    errors: list[str] = []

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            if "listening on" in line:
                listening.set()
            else:
                errors.append(line)
        listening.set()

    threading.Thread(target=drain_stderr, name="tcpdump-stderr", daemon=True).start()
    try:
        started = time.monotonic()
        if not listening.wait(START_TIMEOUT) or proc.poll() not in (None, 0):
            time.sleep(0.05)
            raise RuntimeError(f"tcpdump did not start: {'; '.join(errors)[-300:]}")
        deadline = started + limits.seconds
        yield b""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        header_sent = False
        eof = False
        while not res.stopped_by:
            if cancelled.is_set():
                res.stopped_by = "cancelled"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                res.stopped_by = "seconds"
                break
            if not eof:
                ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
                if ready:
                    data = os.read(fd, 65536)
                    if data:
                        buf += data
                    else:
                        eof = True
            out = []
            if not header_sent and len(buf) >= PCAP_HEADER:
                out.append(buf[:PCAP_HEADER])
                buf = buf[PCAP_HEADER:]
                res.bytes += PCAP_HEADER
                header_sent = True
            while header_sent and len(buf) >= RECORD_HEADER:
                incl = struct.unpack_from("=I", buf, 8)[0]  # tcpdump writes host order
                size = RECORD_HEADER + incl
                if len(buf) < size:
                    break
                if res.packets >= limits.packets:
                    res.stopped_by = "packets"
                    break
                if res.bytes + size > limits.bytes:
                    res.stopped_by = "bytes"
                    break
                out.append(buf[:size])
                buf = buf[size:]
                res.bytes += size
                res.packets += 1
                if res.packets >= limits.packets:
                    res.stopped_by = "packets"
                    break
            if out:
                yield b"".join(out)
            if eof and not res.stopped_by:
                res.stopped_by = "ended"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if path:
            os.unlink(path)

