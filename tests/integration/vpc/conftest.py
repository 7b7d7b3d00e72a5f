"""The all-in-one cloud of the e2e tests, plus VPC helpers and guest servers."""

from __future__ import annotations

import subprocess
import time

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc

from tests.integration.e2e.conftest import Tenant, cloud, make_tenant  # noqa: F401

__all__ = ["Vpc", "cloud", "make_tenant"]

TCP, UDP = "tcp", "udp"


class Vpc:
    """A tenant's VPC with helpers for tiers, guests and rules."""

    def __init__(self, t: Tenant, name: str, cidr: str, **fields) -> None:
        self.t = t
        self.stub = vrpc.VpcServiceStub(t.api.channel)
        self.vpc = self.call(self.stub.CreateVpc, vpb.CreateVpcRequest(
            vpc=vpb.Vpc(name=name, cidr=cidr, **fields)))

    def call(self, method, request, timeout: float = 30):
        return self.t.api.call(method, request, timeout)

    def tier(self, name: str, cidr: str, **fields) -> pb.Network:
        return self.t.network(name=name, cidr=cidr, vpc_id=self.vpc.id, **fields)

    def guest(self, tier: pb.Network, hostname: str, **fields):
        """A port on the tier and a namespace guest that took its lease."""
        port = self.t.port(tier.id, hostname=hostname, **fields)
        self.wait()
        g = self.t.guest(tier, port)
        g.dhcp()
        return port, g

    def wait(self) -> pb.Router:
        return self.t.api.wait_router_active(self.vpc.router_id)


def serve(servers: list, guest, proto: str, port: int, answer: str) -> None:
    """A socat server in the guest answering ``answer`` on every connection."""
    listen = (f"TCP-LISTEN:{port},fork,reuseaddr" if proto == TCP
              else f"UDP-RECVFROM:{port},fork,reuseaddr")
    servers.append(guest.popen(["socat", listen, f"SYSTEM:read line; echo {answer}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 5
    flag = "-tln" if proto == TCP else "-uln"
    while f":{port} " not in guest.run(["ss", "-H", flag]).stdout:
        assert time.monotonic() < deadline, f"{proto} server on {port} did not start"
        time.sleep(0.05)


def ask(guest, proto: str, ip: str, port: int, timeout: float = 3) -> str:
    """What a socat client in ``guest`` gets from ip:port ("" when nothing answers)."""
    target = f"TCP:{ip}:{port},connect-timeout={timeout}" if proto == TCP else f"UDP:{ip}:{port}"
    r = subprocess.run(["ip", "netns", "exec", guest.netns, "socat", f"-T{timeout}", "-", target],
                       input="x\n", capture_output=True, text=True, timeout=timeout + 10)
    return r.stdout.strip()


def pings(guest, ip: str) -> bool:
    return guest.run(["busybox", "ping", "-c", "1", "-W", "2", ip]).returncode == 0


def dig(guest, name: str) -> list[str]:
    return guest.run(["dig", "+short", "+time=2", "+tries=2", name]).stdout.split()


@pytest.fixture
def servers():
    """Processes started in guests; killed (by their own PIDs) at the end."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait(timeout=5)


@pytest.fixture
def make_vpc(make_tenant):
    def make(name: str = "vpc1", cidr: str = "10.20.0.0/16", **fields) -> Vpc:
        return Vpc(make_tenant(), name, cidr, **fields)

    return make
