"""The agent as a separate process: killed with SIGKILL and restarted, its routers keep
serving, the leases survive, and the restarted agent adopts the running dnsmasq."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

import router.lib.proc
from tests.lib.routerlab import HOSTS, Topology, make_config

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


class AgentProcess:
    def __init__(self, topo: Topology, socket_path: str) -> None:
        self.topo, self.socket_path = topo, socket_path
        self.state_dir = os.path.join(topo.state_dir, "agent")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> agent_pb2_grpc.RouterAgentStub:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.agent.server", "--listen", f"unix://{self.socket_path}",
             "--state-dir", self.state_dir, "--netns-prefix", self.topo.prefix,
             "--fabric-netns", self.topo.fabric.netns, "--agent-id", "restart-test"],
            cwd=REPO, start_new_session=True,
        )
        channel = grpc.insecure_channel(f"unix://{self.socket_path}")
        grpc.channel_ready_future(channel).result(timeout=30)
        return agent_pb2_grpc.RouterAgentStub(channel)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


@pytest.fixture
def agent_process(topo: Topology, tmp_path: object) -> Iterator[AgentProcess]:
    a = AgentProcess(topo, f"{tmp_path}/agent.sock")
    try:
        yield a
    finally:
        a.kill()


def test_kill_9_and_restart_keeps_routers_serving(
    topo: Topology, agent_process: AgentProcess, tmp_path: object
) -> None:
    stub = agent_process.start()
    assert os.stat(agent_process.socket_path).st_mode & 0o777 == 0o600
    first = stub.ListRouterStatus(pb.ListRouterStatusRequest())
    assert first.agent_id == "restart-test"
    assert first.boot_id
    router_id = uuid.uuid4().hex
    status = stub.ApplyConfig(pb.ApplyConfigRequest(config=make_config(router_id, 7, ["p1"])))
    assert status.status.applied_generation == 7, status.status.last_error
    g1 = topo.guest("p1")
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]
    dnsmasq_dir = os.path.join(agent_process.state_dir, "routers", router_id, "dnsmasq")
    pid = router.lib.proc.read_pidfile(os.path.join(dnsmasq_dir, "dnsmasq.pid"))
    assert pid is not None
    with open(os.path.join(dnsmasq_dir, "leases")) as f:
        leases = f.read()
    assert HOSTS["p1"][0] in leases

    agent_process.kill(signal.SIGKILL)

    # With no agent at all the router still answers DHCP.
    assert router.lib.proc.is_alive(pid)
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]

    stub = agent_process.start()
    listed = stub.ListRouterStatus(pb.ListRouterStatusRequest())
    assert listed.boot_id != first.boot_id
    [restored] = listed.routers
    assert restored.router_id == router_id
    assert restored.applied_generation == 7
    assert not restored.last_error
    assert {s.name: s.healthy for s in restored.services} == {
        "interfaces": True, "nftables": True, "dnsmasq": True}
    assert router.lib.proc.read_pidfile(os.path.join(dnsmasq_dir, "dnsmasq.pid")) == pid
    with open(os.path.join(dnsmasq_dir, "leases")) as f:
        assert HOSTS["p1"][0] in f.read()
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]

    # SIGTERM: a graceful stop, routers keep running.
    agent_process.kill(signal.SIGTERM)
    assert agent_process.proc is not None
    assert agent_process.proc.returncode == 0
    assert router.lib.proc.is_alive(pid)
