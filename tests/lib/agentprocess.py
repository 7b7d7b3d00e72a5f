"""The router agent as its own process (``python -m router.agent.server``, as a
host runs it), on a test's fabric and prefix: started, killed, started again;
and routers made by the hundred."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from tests.lib.routerlab import Topology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class AgentProcess:
    def __init__(self, topo: Topology, socket_path: str, *extra: str, state_dir: str = "",
                 netns_prefix: str = "", agent_id: str = "process-test") -> None:
        self.topo, self.socket_path, self.extra = topo, socket_path, extra
        self.state_dir = state_dir or os.path.join(topo.state_dir, "agent")
        self.netns_prefix, self.agent_id = netns_prefix or topo.prefix, agent_id
        self.log_path = os.path.join(topo.state_dir, "agent.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> agent_pb2_grpc.RouterAgentStub:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router.agent.server", "--listen",
                 f"unix://{self.socket_path}", "--state-dir", self.state_dir,
                 "--netns-prefix", self.netns_prefix, "--fabric-netns", self.topo.fabric.netns,
                 "--agent-id", self.agent_id, *self.extra],
                cwd=REPO, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket_path):  # the killed agent's was removed
            assert self.proc.poll() is None, self.log()[-2000:]
            assert time.monotonic() < deadline, "the agent never listened"
            time.sleep(0.01)
        # A channel of its own: one that tried the killed agent's socket may
        # wait out a reconnect backoff.
        self.channel = grpc.insecure_channel(f"unix://{self.socket_path}",
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        grpc.channel_ready_future(self.channel).result(timeout=60)
        return agent_pb2_grpc.RouterAgentStub(self.channel)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if sig == signal.SIGKILL:  # its socket stays; the next agent replaces it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def apply_all(stub: agent_pb2_grpc.RouterAgentStub, configs: list[pb.RouterConfig],
              workers: int = 8) -> list[pb.RouterStatus]:
    """ApplyConfig for every config, ``workers`` at a time; the statuses, in order."""

    def one(cfg: pb.RouterConfig) -> pb.RouterStatus:
        reply = stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg), timeout=120)
        return reply.status

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, configs))


def wait_listed(stub: agent_pb2_grpc.RouterAgentStub,
                done: Callable[[list[pb.RouterStatus]], bool],
                timeout: float = 60) -> list[pb.RouterStatus]:
    """ListRouterStatus until ``done`` holds for its routers."""
    deadline = time.monotonic() + timeout
    while True:
        routers = list(stub.ListRouterStatus(pb.ListRouterStatusRequest(), timeout=60).routers)
        if done(routers):
            return routers
        if time.monotonic() > deadline:
            sick = [(r.router_id[:8], r.applied_generation, r.last_error,
                     [(s.name, s.detail) for s in r.services if not s.healthy])
                    for r in routers if r.last_error or not all(s.healthy for s in r.services)]
            raise AssertionError(f"timed out: {len(routers)} routers listed; {sick[:5]}")
        time.sleep(0.2)
