"""Helpers of the router agent tests: a fabric, a router made by the agent, guests, an uplink.

    guest ns (eth0) ─ seg 100 ─┐                 ┌─ seg 0 ─ uplink ns ── internet ns
                               └─ router ns ─────┘  203.0.113.1      198.51.100.1 / .10
                                  g-net1 10.10.0.1   pub0 203.0.113.10

Every name starts with a per-test prefix; fixtures remove every namespace and
kill only the processes living in them (by PID).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from common.fabric.linuxbridge import LinuxBridgeFabric
from common.netns import ensure_netns, netns_exists, remove_netns
from router.agent.registry import RouterRegistry

PUBLIC_GW = "203.0.113.1"
PUBLIC_IP = "203.0.113.10"
INET_HOST = "198.51.100.10"
UPSTREAM_NAME, UPSTREAM_ANSWER = "www.upstream.test", "198.51.100.77"
DOMAIN = "tenant.test"
SEGMENT = 100
HOSTS = {  # port id -> (mac, ip, hostname)
    "p1": ("02:aa:00:00:00:11", "10.10.0.11", "vm1"),
    "p2": ("02:aa:00:00:00:12", "10.10.0.12", "vm2"),
    "p3": ("02:aa:00:00:00:13", "10.10.0.13", "vm3"),
}


def sh(*argv: str, check: bool = True, timeout: float = 30) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc.stdout


def make_config(router_id: str, generation: int, ports: list[str],
                **network: object) -> pb.RouterConfig:
    net = pb.GuestNetwork(
        network_id="net1", interface="g-net1", cidr="10.10.0.0/24", gateway="10.10.0.1",
        domain=DOMAIN, domain_search=[DOMAIN, "corp.test"], mtu=1400, lease_seconds=3600,
        hosts=[pb.DhcpHost(port_id=p, mac=HOSTS[p][0], ip=HOSTS[p][1], hostname=HOSTS[p][2])
               for p in ports],
    )
    for key, value in network.items():
        setattr(net, key, value)
    return pb.RouterConfig(
        router_id=router_id, generation=generation,
        interfaces=[
            pb.Interface(name="pub0", role=pb.INTERFACE_ROLE_PUBLIC, mac="02:00:00:00:00:10",
                         addresses=[f"{PUBLIC_IP}/24"], segment_id=0),
            pb.Interface(name="g-net1", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:01",
                         addresses=["10.10.0.1/24"], segment_id=SEGMENT, network_id="net1"),
        ],
        routes=[pb.Route(destination="0.0.0.0/0", gateway=PUBLIC_GW, interface="pub0")],
        guest_networks=[net],
        dns=pb.Dns(upstream_servers=[INET_HOST]),
        source_nats=[pb.SourceNat(network_id="net1", source_cidr="10.10.0.0/24",
                                  public_ip=PUBLIC_IP, public_interface="pub0")],
    )


@dataclass
class Topology:
    prefix: str
    state_dir: str
    fabric: LinuxBridgeFabric
    namespaces: list[str] = field(default_factory=list)
    pidfiles: list[str] = field(default_factory=list)

    def ns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        ensure_netns(full)
        self.namespaces.append(full)
        return full

    def guest(self, port: str) -> str:
        """A guest namespace whose eth0 has `port`'s MAC, on the guest segment."""
        ns = self.ns(port)
        self.fabric.plug(f"{self.prefix}{port}"[:15], SEGMENT, ns, "eth0", HOSTS[port][0])
        return ns

    def dhcp(self, ns: str, tmp: str) -> dict[str, str]:
        """Run busybox udhcpc once in `ns`; return the environment of its `bound` call."""
        out = os.path.join(tmp, f"{ns}.env")
        script = os.path.join(tmp, f"{ns}.sh")
        with open(script, "w") as f:
            f.write(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
        os.chmod(script, 0o755)
        sh("ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
           "-t", "5", "-T", "1", "-s", script, timeout=60)
        with open(out) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        return env

    def configure_guest(self, ns: str, ip: str) -> None:
        sh("ip", "-n", ns, "addr", "replace", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "route", "replace", "default", "via", "10.10.0.1")

    def internet(self) -> str:
        """uplink (public gateway, forwarding) + internet namespace with an upstream DNS."""
        up, inet = self.ns("up"), self.ns("inet")
        self.fabric.plug(f"{self.prefix}up"[:15], 0, up, "eth0", "02:00:00:00:ff:01")
        sh("ip", "-n", up, "addr", "add", f"{PUBLIC_GW}/24", "dev", "eth0")
        sh("ip", "-n", up, "link", "add", "inet0", "type", "veth", "peer", "name", "eth0",
           "netns", inet)
        sh("ip", "-n", up, "addr", "add", "198.51.100.1/24", "dev", "inet0")
        sh("ip", "-n", up, "link", "set", "inet0", "up")
        sh("ip", "-n", inet, "addr", "add", f"{INET_HOST}/24", "dev", "eth0")
        sh("ip", "-n", inet, "link", "set", "eth0", "up")
        sh("ip", "-n", inet, "route", "add", "default", "via", "198.51.100.1")
        sh("ip", "netns", "exec", up, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        pidfile = os.path.join(self.state_dir, "upstream-dns.pid")
        self.pidfiles.append(pidfile)
        sh("ip", "netns", "exec", inet, "dnsmasq", "--conf-file=/dev/null", "--no-resolv",
           "--no-hosts", "--bind-interfaces", f"--listen-address={INET_HOST}",
           f"--address=/{UPSTREAM_NAME}/{UPSTREAM_ANSWER}", f"--pid-file={pidfile}",
           "--user=root")
        return inet

    def cleanup(self) -> None:
        for pidfile in self.pidfiles:
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError), \
                    open(pidfile) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        router_ns = [n for n in os.listdir("/run/netns") if n.startswith(self.prefix)]
        for ns in set(self.namespaces) | set(router_ns):
            if not netns_exists(ns):
                continue
            # Only processes inside our own, uniquely named namespaces: ours.
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            remove_netns(ns)
        shutil.rmtree(self.state_dir, ignore_errors=True)




def neighbour(ns: str, ip: str) -> str:
    """The MAC ``ns`` holds for ``ip`` ("" when none)."""
    out = sh("ip", "-n", ns, "neigh", "show", ip).split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def wait_for(predicate: object, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class InProcessAgent:
    agent: RouterRegistry
    stub: agent_pb2_grpc.RouterAgentStub
    server: grpc.Server
    channel: grpc.Channel
