"""A guest that is a network namespace, plugged into the fabric like a VM NIC.

Used by the all-in-one demo, the end-to-end tests and the benchmarks where a
full VM would only cost time: the guest gets its address from the router with
a real DHCP client (busybox udhcpc), resolves names with the resolver the
lease names (written to /etc/netns/<name>/resolv.conf, which `ip netns exec`
mounts over /etc/resolv.conf), and reaches the world through its gateway.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from common import netlink
from common.fabric.base import Fabric
from common.netns import ensure_netns, remove_netns
from common.rtnl import RouteInfo

# udhcpc runs this at each DHCP event; it records the lease it was given
# (udhcpc exports the options as environment variables) and leaves the
# configuring of the interface to Python.
_UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew) env > "$CLOUDNET_LEASE_OUT" ;;
esac
exit 0
"""


class DhcpFailed(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Lease:
    ip: str
    prefixlen: int
    router: str
    dns: tuple[str, ...]
    domain: str
    search: tuple[str, ...]
    mtu: int
    lease_seconds: int
    server: str


def _parse_lease(env_text: str) -> Lease:
    env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
    subnet = env.get("subnet", "255.255.255.255")
    return Lease(
        ip=env["ip"],
        prefixlen=ipaddress.ip_network(f"0.0.0.0/{subnet}").prefixlen,
        router=env.get("router", "").split()[0] if env.get("router") else "",
        dns=tuple(env.get("dns", "").split()),
        domain=env.get("domain", ""),
        search=tuple(env.get("search", "").split()),
        mtu=int(env.get("mtu", "0") or 0),
        lease_seconds=int(env.get("lease", "0") or 0),
        server=env.get("serverid", ""),
    )


class NamespaceGuest:
    def __init__(self, netns: str, fabric: Fabric, fabric_port: str, ifname: str = "eth0") -> None:
        self.netns = netns
        self.fabric = fabric
        self.fabric_port = fabric_port
        self.ifname = ifname
        self.lease: Lease | None = None

    def attach(self, segment: int, mac: str, mtu: int = 0) -> None:
        ensure_netns(self.netns)
        self.fabric.plug(self.fabric_port, segment, self.netns, self.ifname, mac, mtu)

    def destroy(self) -> None:
        self.fabric.unplug(self.fabric_port)
        remove_netns(self.netns)
        shutil.rmtree(f"/etc/netns/{self.netns}", ignore_errors=True)

    def run(
        self, argv: Sequence[str], *, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            capture_output=True, text=True, timeout=timeout, check=check,
        )

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kw)

    def dhcp(self, *, attempts: int = 10, interval: int = 1, configure: bool = True) -> Lease:
        """Ask for a lease with busybox udhcpc, then configure it like a guest OS would."""
        with tempfile.TemporaryDirectory(prefix="cloudnet-dhcp-") as tmp:
            script = os.path.join(tmp, "event.sh")
            out = os.path.join(tmp, "lease.env")
            with open(script, "w") as f:
                f.write(_UDHCPC_SCRIPT)
            os.chmod(script, 0o755)
            proc = subprocess.run(
                ["ip", "netns", "exec", self.netns, "busybox", "udhcpc", "-f", "-q", "-n",
                 "-i", self.ifname, "-t", str(attempts), "-T", str(interval), "-A", "1",
                 "-s", script],
                env={**os.environ, "CLOUDNET_LEASE_OUT": out},
                capture_output=True, text=True, timeout=attempts * interval + 30,
            )
            if proc.returncode != 0 or not os.path.exists(out):
                raise DhcpFailed(
                    f"{self.netns}: no lease (udhcpc exit {proc.returncode}): "
                    f"{proc.stderr.strip()[-300:]}"
                )
            with open(out) as f:
                lease = _parse_lease(f.read())
        if configure:
            self._configure(lease)
        self.lease = lease
        return lease

    def _configure(self, lease: Lease) -> None:
        netlink.configure_link(
            self.netns, self.ifname, [ipaddress.IPv4Interface(f"{lease.ip}/{lease.prefixlen}")],
            flush=True, mtu=lease.mtu,
            routes=[RouteInfo("0.0.0.0", 0, lease.router, 0)] if lease.router else [])
        os.makedirs(f"/etc/netns/{self.netns}", exist_ok=True)
        lines = [f"nameserver {d}" for d in lease.dns]
        search = " ".join(lease.search) or lease.domain
        if search:
            lines.append(f"search {search}")
        with open(f"/etc/netns/{self.netns}/resolv.conf", "w") as f:
            f.write("\n".join(lines) + "\n")
