"""scapy helpers run as a subprocess inside a namespace (`ip netns exec`).

    python -m tests.lib.pkt sniff IFACE SECONDS OUT.pcap
    python -m tests.lib.pkt send IFACE SRC_MAC VLANS MARKER

`send` emits a broadcast IPv4/UDP frame carrying MARKER, tagged with each of
the comma-separated VLANS (outermost first; empty for untagged).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from scapy.all import IP, UDP, Dot1Q, Ether, Raw, rdpcap, sendp, sniff, wrpcap  # type: ignore


def main(argv: list[str]) -> int:
    cmd, iface = argv[0], argv[1]
    if cmd == "sniff":
        pkts = sniff(iface=iface, timeout=float(argv[2]),
                     started_callback=lambda: print("ready", flush=True))
        wrpcap(argv[3], pkts)
        return 0
    if cmd == "send":
        src = argv[2]
        for vlans, marker in zip(argv[3::2], argv[4::2], strict=True):
            _send(iface, src, vlans, marker)
        return 0
    return 2


def _send(iface: str, src: str, vlans: str, marker: str) -> None:
    frame = Ether(src=src, dst="ff:ff:ff:ff:ff:ff")
    for vid in [int(v) for v in vlans.split(",") if v]:
        frame = frame / Dot1Q(vlan=vid)
    frame = frame / IP(src="10.50.0.99", dst="255.255.255.255") / UDP(
        sport=9999, dport=9999) / Raw(marker.encode())
    sendp(frame, iface=iface, count=3, inter=0.05, verbose=False)


@contextlib.contextmanager
def capture(netns: str | None, iface: str, out: str, seconds: float = 60) -> Iterator[list]:
    """Sniff on `iface` (in `netns`, or the root namespace) while the block runs.

    Yields a list that holds the captured packets after the block."""
    argv = [sys.executable, "-m", "tests.lib.pkt", "sniff", iface,
            str(seconds), out]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"sniffer on {iface} did not start: {proc.communicate()[1]}")
    got: list = []
    try:
        yield got
    finally:
        time.sleep(0.5)  # frames still in flight
        proc.send_signal(signal.SIGINT)  # scapy's sniff stops and returns what it has
        proc.wait(timeout=30)
        got.extend(rdpcap(out))


def send(netns: str, iface: str, src_mac: str, frames: list[tuple[list[int], str]]) -> None:
    """Send one broadcast frame per (VLAN tags, marker) from `iface` in `netns`."""
    args = [x for vlans, marker in frames for x in (",".join(map(str, vlans)), marker)]
    subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m",
                    "tests.lib.pkt", "send", iface, src_mac, *args],
                   check=True, timeout=60)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
