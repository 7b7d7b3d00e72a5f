"""A tenant's VPC on the all-in-one cloud (tiers, guests, network ACLs, routes)
and clients in guests: socat, ping, dig, a long-lived echo stream."""

from __future__ import annotations

import select
import subprocess
import time

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc

from tests.lib.allinone import Tenant
from tests.lib.guest_servers import TCP

ACTIONS = {"allow": vpb.ACL_ACTION_ALLOW, "deny": vpb.ACL_ACTION_DENY}
DIRECTIONS = {"ingress": vpb.ACL_DIRECTION_INGRESS, "egress": vpb.ACL_DIRECTION_EGRESS}


class Vpc:
    """A tenant's VPC with helpers for tiers, guests and rules."""

    def __init__(self, t: Tenant, name: str, cidr: str, **fields) -> None:
        self.t = t
        self.stub = vrpc.VpcServiceStub(t.api.channel)
        self.acls = vrpc.NetworkAclServiceStub(t.api.channel)
        self.routes = vrpc.StaticRouteServiceStub(t.api.channel)
        self.gateways = vrpc.PrivateGatewayServiceStub(t.api.channel)
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

    # ---- network ACLs
    def acl(self, name: str) -> vpb.NetworkAcl:
        return self.call(self.acls.CreateNetworkAcl, vpb.CreateNetworkAclRequest(
            network_acl=vpb.NetworkAcl(vpc_id=self.vpc.id, name=name)))

    def rule(self, acl_id: str, number: int, action: str, direction: str, protocol: str,
             **fields) -> vpb.AclRule:
        return self.call(self.acls.CreateAclRule, vpb.CreateAclRuleRequest(rule=vpb.AclRule(
            acl_id=acl_id, number=number, action=ACTIONS[action],
            direction=DIRECTIONS[direction], protocol=protocol, **fields)))

    def replace(self, tier: pb.Network, acl_id: str) -> None:
        self.call(self.acls.ReplaceNetworkAcl, vpb.ReplaceNetworkAclRequest(
            network_id=tier.id, acl_id=acl_id))

    def delete(self) -> None:
        """Routes, tiers, then the VPC: its router (a VM on the VM backend) goes now,
        not when the module's cloud does."""
        for route in self.call(self.routes.ListStaticRoutes, vpb.ListStaticRoutesRequest(
                vpc_id=self.vpc.id)).static_routes:
            self.call(self.routes.DeleteStaticRoute, vpb.DeleteStaticRouteRequest(id=route.id))
        for tier_id in self.call(self.stub.GetVpc, vpb.GetVpcRequest(id=self.vpc.id)).tier_ids:
            self.call(self.t.api.networks.DeleteNetwork,
                      pb.DeleteNetworkRequest(id=tier_id, force=True))
        self.call(self.stub.DeleteVpc, vpb.DeleteVpcRequest(id=self.vpc.id))

    def builtin(self, name: str) -> str:
        acls = self.call(self.acls.ListNetworkAcls,
                         vpb.ListNetworkAclsRequest(vpc_id=self.vpc.id)).network_acls
        return next(a.id for a in acls if a.name == name)


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


class Stream:
    """A long-lived TCP connection from ``client`` to an echo server in
    ``server`` (socat both ends): ``echo()`` sends a line and reads it back."""

    def __init__(self, servers: list, server, client, ip: str, port: int) -> None:
        servers.append(server.popen(["socat", f"TCP-LISTEN:{port},reuseaddr", "SYSTEM:cat"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 5
        while f":{port} " not in server.run(["ss", "-H", "-tln"]).stdout:
            assert time.monotonic() < deadline, "echo server did not start"
            time.sleep(0.05)
        self.proc = client.popen(["socat", "-", f"TCP:{ip}:{port}"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 bufsize=1)
        servers.append(self.proc)

    def echo(self, line: str, timeout: float = 5) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else ""
