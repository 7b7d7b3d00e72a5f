"""Two router agents holding the two instances of one redundant router, on
one fabric (as two hosts would on a shared provider network and VLANs), with
a guest, an uplink and an internet namespace (``routerlab``); and long-lived
flows through the router (``flowprobe.py``).

    guest p1 ─ seg 100 ─┬─ instance 0 (agent A, prefix ...a) ─┬─ seg 0 ─ uplink ─ internet
                        └─ instance 1 (agent B, prefix ...b) ─┘
                           sync0 169.254.0.1 / .2 on seg 4000 (VRRP, conntrackd)

Used by the integration tests and bench/router_failover.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from cloudnet.router.v1 import agent_pb2 as pb

from common.fabric.linuxbridge import LinuxBridgeFabric
from common.netlink import NetlinkOpError
from router.agent.registry import RouterRegistry
from router.lib import proc as rproc
from router.runtime import router_netns_name
from router.services import keepalived, redundancy
from tests.lib.agentprocess import AgentProcess
from tests.lib.peerlab import router_connection
from tests.lib.routerconfigs import redundant
from tests.lib.routerlab import INET_HOST, Topology, make_config, sh, wait_for

CONNECT = ("import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); "
           "s.settimeout(5); s.sendall(b'42\\n'); assert s.recv(16) == b'42\\n'")
FLOWPROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flowprobe.py")
FORWARD_IP = "203.0.113.20"
FORWARD_PORT = 8080
SNAT_TCP_PORT, UDP_PORT = 9000, 9001
LB_PORT = 8081
# The data-heavy stream's rate (kB/s each way): enough to keep the windows
# full across a move, little enough for a busy two-core host.
BULK_KBPS = 1000
# Where keepalived 2.2 writes its state on SIGUSR1.
DATA_DUMP = "/tmp/keepalived.data"


def pair_config(router_id: str, generation: int, instance: int,
                priority: int = 0, lb: bool = False,
                single: bool = False, vpn: bool = False) -> pb.RouterConfig:
    """The router of ``routerlab.make_config`` with a public IP forwarding
    FORWARD_PORT to guest p1, as one instance of a redundant router (``single``:
    as a single router); ``lb``: with a TCP load balancer on LB_PORT of the
    public IP, its one member guest p1's FORWARD_PORT."""
    cfg = make_config(router_id, generation, ["p1"])
    cfg.interfaces[0].addresses.append(f"{FORWARD_IP}/32")
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip=FORWARD_IP,
                                                 interface="pub0"))
    cfg.port_forwards.append(pb.PortForwardRule(
        id="pf1", public_ip=FORWARD_IP, protocol="tcp", public_port_start=FORWARD_PORT,
        public_port_end=FORWARD_PORT, private_ip="10.10.0.11",
        private_port_start=FORWARD_PORT, private_port_end=FORWARD_PORT, network_id="net1"))
    if lb:
        cfg.load_balancers.append(pb.LoadBalancerRule(
            id="lb1", public_ip=FORWARD_IP, public_port=LB_PORT, protocol="tcp",
            algorithm="roundrobin", network_id="net1",
            members=[pb.LbBackend(port_id="p1", ip="10.10.0.11", port=FORWARD_PORT)]))
    if vpn:  # to tests/lib/peerlab.py's stock strongSwan peer, IKEv2
        cfg.vpn_connections.append(router_connection(2))
    return cfg if single else redundant(cfg, instance, priority)


def connects(ns: str, host: str, port: int) -> None:
    """A new TCP connection from ``ns`` to an echo server (flowprobe's tcp-server)."""
    sh("ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, host, str(port))


@dataclass
class Flow:
    """A flowprobe.py process in a namespace."""

    popen: subprocess.Popen[str]

    @classmethod
    def start(cls, ns: str, *args: str) -> Flow:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, FLOWPROBE, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        first = p.stdout.readline()
        assert first, f"flowprobe {args} did not start: {p.stderr.read() if p.stderr else ''}"
        return cls(p)

    def result(self) -> dict[str, object]:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        out, _ = self.popen.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def alive(self) -> bool:
        return self.popen.poll() is None

    def echoed(self) -> int:
        """How many echoes a running tcp-client has had so far (SIGUSR1)."""
        assert self.popen.stdout is not None
        assert self.alive(), self.ended()
        self.popen.send_signal(signal.SIGUSR1)
        while True:
            line = self.popen.stdout.readline()
            assert line, self.ended()
            seen = json.loads(line)
            if "echoed" in seen and "sent" not in seen:
                return int(seen["echoed"])
            if "error" in seen:  # its last line: why it stopped
                raise AssertionError(f"the stream ended: {line.strip()}")

    def ended(self) -> str:
        """Why the stream is over: its exit status and what it wrote to stderr."""
        code = self.popen.wait(10)
        err = self.popen.stderr.read() if self.popen.stderr else ""
        return f"the stream ended (exit {code}): {err[-500:]}"


@dataclass
class Pair:
    topo: Topology
    router_id: str
    agents: list[RouterRegistry]
    inet: str
    guest: str
    generation: int = 1
    flows: list[Flow] = field(default_factory=list)
    lb: bool = False
    vpn: bool = False

    # ------------------------------------------------------------ set-up

    @classmethod
    def build(cls, topo: Topology, router_id: str, lb: bool = False) -> Pair:
        agents = []
        for name in ("a", "b"):
            reg = RouterRegistry(os.path.join(topo.state_dir, f"agent-{name}"),
                                 netns_prefix=f"{topo.prefix}{name}",
                                 fabric_netns=topo.fabric.netns, agent_id=f"host-{name}")
            reg.start()
            agents.append(reg)
        inet = topo.internet()
        guest = topo.guest("p1")
        pair = cls(topo, router_id, agents, inet, guest, lb=lb)
        pair.apply()
        return pair

    def apply(self, priorities: tuple[int, int] = (0, 0)) -> None:
        for i, reg in enumerate(self.agents):
            status = reg.apply(pair_config(self.router_id, self.generation, i, priorities[i],
                                           lb=self.lb, vpn=self.vpn))
            assert status.applied_generation == self.generation, status.last_error

    def netns(self, i: int) -> str:
        return router_netns_name(f"{self.topo.prefix}{'ab'[i]}", self.router_id)

    def state(self, i: int) -> str:
        try:
            return self.agents[i].status(self.router_id).redundancy.state
        except Exception:
            return ""

    def states(self) -> tuple[str, str]:
        return self.state(0), self.state(1)

    def wait_master(self, i: int, timeout: float = 30) -> None:
        """Until instance ``i`` is MASTER and the other is not."""
        wait_for(lambda: self.state(i) == "MASTER" and self.state(1 - i) != "MASTER",
                 timeout, f"instance {i} master (states {self.states()})")

    def master(self) -> int:
        states = self.states()
        assert states.count("MASTER") == 1, states
        return states.index("MASTER")

    # ------------------------------------------------------------- flows

    def start_flows(self) -> None:
        """Servers, then: a TCP stream guest -> internet (source NAT), one
        internet -> guest (port forward), UDP guest -> internet at 100/s, and
        a data-heavy TCP stream guest -> internet (source NAT, BULK_KBPS each
        way, every byte checked)."""
        self.topo.configure_guest(self.guest, "10.10.0.11")
        self.flows = [
            Flow.start(self.inet, "tcp-server", str(SNAT_TCP_PORT)),
            Flow.start(self.inet, "udp-sink", str(UDP_PORT)),
            Flow.start(self.guest, "tcp-server", str(FORWARD_PORT)),
        ]
        self.flows += [
            Flow.start(self.guest, "tcp-client", INET_HOST, str(SNAT_TCP_PORT)),
            Flow.start(self.inet, "tcp-client", FORWARD_IP, str(FORWARD_PORT)),
            Flow.start(self.guest, "udp-source", INET_HOST, str(UDP_PORT), "100"),
            Flow.start(self.guest, "tcp-bulk", INET_HOST, str(SNAT_TCP_PORT), str(BULK_KBPS)),
        ]

    def stop_flows(self) -> dict[str, dict[str, object]]:
        names = ("snat_server", "udp_sink", "forward_server", "snat_client", "forward_client",
                 "udp_source", "bulk_client")
        # Clients first, so the servers count what they saw.
        order = [3, 4, 5, 6, 0, 1, 2]
        results = {names[i]: self.flows[i].result() for i in order}
        self.flows = []
        return results

    # ---------------------------------------------------------- triggers

    def kill_keepalived(self, i: int) -> None:
        ctx = self.agents[i].runtime(self.router_id, create=False).ctx
        parent, child = keepalived.pids(ctx)
        for pid in (child, parent):
            if pid is not None:
                rproc.os_kill(pid, signal.SIGKILL)

    def delete_namespace(self, i: int) -> None:
        """Every process in the router's namespace killed, the namespace gone."""
        ns = self.netns(i)
        for pid in sh("ip", "netns", "pids", ns, check=False).split():
            rproc.os_kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while sh("ip", "netns", "pids", ns, check=False).split():
            assert time.monotonic() < deadline, "processes of the namespace outlived SIGKILL"
            time.sleep(0.02)
        sh("ip", "netns", "del", ns)

    def holds(self, i: int) -> bool:
        """Whether instance ``i`` holds the router's addresses (read from the
        kernel: an agent killed reports nothing)."""
        rt = self.agents[i].runtime(self.router_id, create=False)
        try:
            return rt.config is not None and redundancy.holds_virtual(rt.ctx.netns, rt.config)
        except (OSError, NetlinkOpError):  # its namespace is gone
            return False

    def keepalived_state(self, i: int) -> str:
        """What instance ``i``'s keepalived itself says it is (its data dump,
        SIGUSR1: the agent may be gone and have heard nothing)."""
        found = re.search(r"^\s*State = (\w+)", self.keepalived_dump(i), re.M)
        return found.group(1) if found else ""

    def keepalived_priority(self, i: int) -> int:
        """Instance ``i``'s priority as its keepalived reckons it now (tracked
        scripts and files counted), 0 if unknown."""
        found = re.search(r"^\s*Effective priority = (\d+)", self.keepalived_dump(i), re.M)
        return int(found.group(1)) if found else 0

    def keepalived_dump(self, i: int) -> str:
        parent, _ = keepalived.pids(self.agents[i].runtime(self.router_id, create=False).ctx)
        if parent is None:
            return ""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(DATA_DUMP)
        rproc.os_kill(parent, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                with open(DATA_DUMP) as f:
                    text = f.read()
                if f"VRRP Instance = {keepalived.INSTANCE}" in text:
                    return text
            time.sleep(0.05)
        return ""

    def agent_process(self, i: int) -> AgentProcess:
        """Instance ``i``'s agent handed over to a process of its own (as a
        host runs it: ``python -m router.agent.server`` on the same state dir,
        adopting the router untouched), so that it can be killed for real."""
        reg = self.agents[i]
        reg.vrrp_listener.stop()
        agent = AgentProcess(self.topo, os.path.join(self.topo.state_dir, f"agent-{i}.sock"),
                             state_dir=reg.state_dir, netns_prefix=reg.netns_prefix,
                             agent_id=reg.agent_id)
        agent.start()
        return agent

    def kill_agent(self, agent: AgentProcess) -> None:
        """SIGKILL: its namespaces and daemons (keepalived among them) go on,
        its sockets' files stay behind with nobody listening."""
        assert agent.proc is not None
        rproc.os_kill(agent.proc.pid, signal.SIGKILL)
        agent.proc.wait(timeout=30)

    def agent_back(self, i: int) -> None:
        """A new agent (in this process) for instance ``i``, adopting it."""
        old = self.agents[i]
        new = RouterRegistry(old.state_dir, netns_prefix=old.netns_prefix, fabric=old.fabric,
                             agent_id=old.agent_id)
        new.start()
        self.agents[i] = new

    def uplink(self, i: int, up: bool) -> None:
        sh("ip", "-n", self.netns(i), "link", "set", "pub0", "up" if up else "down")

    def repair(self, i: int) -> list[str]:
        """The agent's health pass (what its monitor runs every few seconds)."""
        return self.agents[i].repair_all().get(self.router_id, [])

    def kill_flows(self) -> None:
        """End the flows still running (a test that failed half-way): the next
        test's servers must find their ports free."""
        for f in self.flows:
            if f.alive():
                f.popen.kill()
                f.popen.wait()
        self.flows = []

    def close(self) -> None:
        self.kill_flows()
        for reg in self.agents:
            for rt in reg.runtimes():
                with contextlib.suppress(Exception):
                    reg.delete(rt.ctx.router_id, keep_leases=False)
            reg.vrrp_listener.stop()


def new_topology(prefix: str, state_dir: str) -> Topology:
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    return Topology(prefix, state_dir, fabric, namespaces=[fabric.netns])


class Arbiter:
    """netmgr's split-brain arbiter (``netmgr.reconcile.redundancy_arbiter``)
    over the two agents of a Pair, every ``period`` seconds in a thread:
    what netmgr's resync does, at agent level. Keeps the events and the
    moments both instances were MASTER."""

    def __init__(self, pair: Pair, period: float = 1.0, hold: float = 3.0) -> None:
        from router.agent.redundancy_service import RouterRedundancyServicer

        self.pair, self.period, self.hold = pair, period, hold
        self.servicers = [RouterRedundancyServicer(reg) for reg in pair.agents]
        self.events: list[str] = []
        self.demoted_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arbiter", daemon=True)

    def __enter__(self) -> Arbiter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def round(self) -> None:
        from cloudnet.router.v1 import redundancy_pb2 as rpb

        from netmgr.reconcile.redundancy_arbiter import InstanceView, arbitrate

        views = []
        for i, reg in enumerate(self.pair.agents):
            r = reg.status(self.pair.router_id).redundancy
            views.append(InstanceView(i, True, r.state, r.priority, r.demoted,
                                      self.demoted_at.get(i, 0.0)))
        now = time.monotonic()
        d = arbitrate(views, now, self.hold)
        for i in d.demote:
            self.servicers[i].SetDemoted(
                rpb.SetDemotedRequest(router_id=self.pair.router_id, demoted=True), None)
            self.demoted_at[i] = now
        for i in d.release:
            self.servicers[i].SetDemoted(
                rpb.SetDemotedRequest(router_id=self.pair.router_id, demoted=False), None)
            self.demoted_at.pop(i, None)
        self.events.extend(d.events)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.round()


def cut_vrrp(ns: str, cut: bool) -> None:
    """Drop (or let through again) every VRRP packet reaching namespace
    ``ns``: only the VRRP path breaks (conntrackd's sync goes on)."""
    if cut:
        sh("ip", "netns", "exec", ns, "nft", "add table ip vrrpcut")
        sh("ip", "netns", "exec", ns, "nft",
           "add chain ip vrrpcut in { type filter hook prerouting priority -400 ; }")
        sh("ip", "netns", "exec", ns, "nft", "add rule ip vrrpcut in ip protocol vrrp drop")
    else:
        sh("ip", "netns", "exec", ns, "nft", "delete table ip vrrpcut")
