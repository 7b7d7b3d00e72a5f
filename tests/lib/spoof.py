"""A guest that lies about its addresses, with scapy, run inside its namespace:

    python -m tests.lib.spoof udp IFACE SRC_MAC DST_MAC SRC_IP DST_IP DPORT MARKER COUNT
    python -m tests.lib.spoof arp IFACE SRC_MAC DST_MAC CLAIMED_IP TARGET_IP SECONDS

``udp`` sends COUNT UDP datagrams carrying MARKER from SRC_IP (not
necessarily the guest's); ``arp`` keeps telling TARGET_IP (at DST_MAC) that
CLAIMED_IP is at SRC_MAC, by replies and requests, every 0.1 s for SECONDS.
"""

from __future__ import annotations

import subprocess
import sys
import time

from scapy.all import ARP, IP, UDP, Ether, Raw, sendp  # type: ignore


def main(argv: list[str]) -> int:
    cmd, iface, src_mac, dst_mac = argv[:4]
    if cmd == "udp":
        src_ip, dst_ip, dport, marker, count = argv[4:9]
        frame = Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(
            sport=40000, dport=int(dport)) / Raw(marker.encode())
        sendp(frame, iface=iface, count=int(count), inter=0.05, verbose=False)
        return 0
    if cmd == "arp":
        claimed, target, seconds = argv[4], argv[5], float(argv[6])
        reply = Ether(src=src_mac, dst=dst_mac) / ARP(
            op=2, hwsrc=src_mac, psrc=claimed, hwdst=dst_mac, pdst=target)
        request = Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=src_mac, psrc=claimed, hwdst="00:00:00:00:00:00", pdst=target)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sendp([reply, request], iface=iface, verbose=False)
            time.sleep(0.1)
        return 0
    return 2


def command(netns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.lib.spoof", *args]


def run(netns: str, *args: str) -> None:
    subprocess.run(command(netns, *args), check=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
