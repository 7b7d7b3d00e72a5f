"""Fixtures of the router agent integration tests (helpers live in routerlab.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2_grpc

from common.fabric.base import LinuxBridgeFabric
from router.agent.registry import RouterRegistry
from router.agent.server import create_server
from tests.integration.router.routerlab import InProcessAgent, Topology


@pytest.fixture
def topo() -> Iterator[Topology]:
    prefix = f"t{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    # Under /tmp (not pytest's 0700 tmp_path) so dnsmasq's unprivileged user
    # can read its host directories, as it does in a real state dir.
    state_dir = tempfile.mkdtemp(prefix="cn-router-test-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    t = Topology(prefix, state_dir, fabric, namespaces=[fabric.netns])
    try:
        yield t
    finally:
        t.cleanup()


@pytest.fixture
def agent(topo: Topology, tmp_path: object) -> Iterator[InProcessAgent]:
    a = RouterRegistry(os.path.join(topo.state_dir, "agent"), netns_prefix=topo.prefix,
                       fabric_netns=topo.fabric.netns, agent_id="test")
    a.start()
    sock = f"unix://{tmp_path}/agent.sock"
    server, _ = create_server(sock, a)
    channel = grpc.insecure_channel(sock)
    try:
        yield InProcessAgent(a, agent_pb2_grpc.RouterAgentStub(channel), server, channel)
    finally:
        channel.close()
        server.stop(grace=None)
        for rt in a.runtimes():
            with contextlib.suppress(Exception):
                a.delete(rt.ctx.router_id, keep_leases=False)
