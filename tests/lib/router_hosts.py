"""Router host agents beside an all-in-one (its fabric, a prefix of their own),
registered with its netmgr and heartbeating; a host's death (its agent
killed, its routers with it) or its loss of power (killed, links cut,
nothing removed until afterwards). Shared by the router hosts tests and
bench/control_plane.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

import grpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import agent_pb2_grpc

from aio import replicas
from aio.allinone import AllInOne
from common import netlink
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric
from common.netns import remove_netns
from router.agent.registry import stop_routers
from router.lib import proc
from router.runtime import recorded_pids, router_netns_name
from router.services.base import RouterPaths


class RouterHost:
    """A router agent process of the all-in-one's fabric, registered as ``name``."""

    def __init__(self, aio: AllInOne, name: str, health_interval: float = 1.0) -> None:
        """``health_interval``: how often the agent checks its routers'
        daemons (tests: every second, to see a failure at once; the agent's
        own default is 5 s)."""
        self.aio, self.name = aio, name
        self.health_interval = health_interval
        self.prefix = f"{aio.prefix}-{name[-1]}"
        self.state_dir = os.path.join(aio.state_dir, f"agent-{name}")
        self.socket = os.path.join(aio.state_dir, "run", f"agent-{name}.sock")

    def start(self) -> None:
        self.aio.spawn(f"agent-{self.name}", [
            sys.executable, "-m", "router.agent.server",
            "--listen", f"unix://{self.socket}", "--state-dir", self.state_dir,
            "--netns-prefix", self.prefix, *self._fabric_args(),
            "--health-interval", str(self.health_interval), "--agent-id", self.name,
            # Every replica, by gRPC's own name resolution: pick_first moves on
            # to the next address when one stops answering.
            "--netmgr", "ipv4:" + ",".join(replicas.listens(self.aio)),
            "--netmgr-token-file", os.path.join(self.aio.state_dir, "admin.token"),
            "--host-name", self.name, "--heartbeat-interval", "0.5"])

    def _fabric_args(self) -> list[str]:
        """The all-in-one's own fabric: its bridges' namespace, or its OVS bridge."""
        fabric = self.aio.fabric
        if isinstance(fabric, LinuxBridgeFabric):
            return ["--fabric-netns", fabric.netns]
        if isinstance(fabric, OvsFabric):
            return ["--fabric", "ovs", "--ovs-bridge", fabric.bridge]
        raise TypeError("router hosts beside an all-in-one need its linuxbridge or ovs fabric")

    def die(self) -> None:
        """The host is gone: its agent killed, its routers with it."""
        pid = self.aio.pids.pop(f"agent-{self.name}")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.stop_routers()

    def power_off(self) -> None:
        """The host's machine loses its power: its agent and every daemon of
        its routers killed at once (SIGKILL), their links cut (down, as a dead
        machine's NICs are silent). Nothing is torn down: a dead machine's
        kernel removes nothing, and here it would do so on the CPUs the
        surviving hosts use. ``stop_routers`` removes the remains afterwards."""
        pid = self.aio.pids.pop(f"agent-{self.name}")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        routers = os.path.join(self.state_dir, "routers")
        ids = sorted(os.listdir(routers)) if os.path.isdir(routers) else []
        for router_id in ids:
            for daemon in recorded_pids(RouterPaths(os.path.join(routers, router_id))):
                proc.os_kill(daemon, signal.SIGKILL)
        for router_id in ids:
            with contextlib.suppress(netlink.NetlinkOpError), \
                    netlink.rtnl(router_netns_name(self.prefix, router_id)) as sock:
                for link in sock.links():
                    if link.name != "lo" and link.up:
                        sock.set_link(link.index, up=False)

    def stop_routers(self) -> None:
        for router_id in stop_routers(self.state_dir, self.prefix):
            remove_netns(router_netns_name(self.prefix, router_id))
        routers = os.path.join(self.state_dir, "routers")
        for router_id in os.listdir(routers) if os.path.isdir(routers) else ():
            remove_netns(router_netns_name(self.prefix, router_id))

    def macs(self, router_id: str) -> set[str]:
        """The MACs of the router's interfaces in its namespace on this host."""
        out = subprocess.run(["ip", "-n", router_netns_name(self.prefix, router_id), "-o",
                              "link"], capture_output=True, text=True, check=True).stdout
        return set(re.findall(r"link/ether ([0-9a-f:]{17})", out))

    def held(self) -> list[str]:
        with grpc.insecure_channel(f"unix://{self.socket}") as ch:
            reply = agent_pb2_grpc.RouterAgentStub(ch).ListRouterStatus(
                apb.ListRouterStatusRequest(), timeout=10)
        return [s.router_id for s in reply.routers]
