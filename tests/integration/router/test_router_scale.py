"""One host, more routers than a stock kernel's limits allow: the agent (as a
host runs it) sizes the host's limits at start, so router 129 and beyond get
their dnsmasq (one inotify instance each, all of user dnsmasq: 128 by default);
and no router's daemon holds a mount namespace of its own (its copy of every
mount would grow with every router added: O(routers²) mounts)."""

from __future__ import annotations

import os
import pwd
import uuid
from collections.abc import Iterator

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

import router.lib.proc
from tests.lib.agentprocess import AgentProcess, apply_all
from tests.lib.routerlab import Topology

pytestmark = pytest.mark.integration

# Past fs.inotify.max_user_instances' default (128), with room for the
# dnsmasqs of other tests running beside this one.
ROUTERS = 140
INOTIFY_INSTANCES = "/proc/sys/fs/inotify/max_user_instances"


def small_config(router_id: str, index: int) -> pb.RouterConfig:
    """A router with one guest network and one port: one dnsmasq, one table."""
    return pb.RouterConfig(
        router_id=router_id, generation=1,
        interfaces=[pb.Interface(
            name="g-net1", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:01",
            addresses=["10.10.0.1/24"], segment_id=3000 + index, network_id="net1")],
        guest_networks=[pb.GuestNetwork(
            network_id="net1", interface="g-net1", cidr="10.10.0.0/24", gateway="10.10.0.1",
            domain="scale.test", hosts=[pb.DhcpHost(port_id="p1", mac="02:aa:00:00:00:11",
                                                    ip="10.10.0.11", hostname="vm1")])],
    )


@pytest.fixture
def agent_process(topo: Topology, tmp_path: object) -> Iterator[AgentProcess]:
    a = AgentProcess(topo, f"{tmp_path}/agent.sock")
    try:
        yield a
    finally:
        a.kill()


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def test_a_host_runs_routers_past_the_kernels_default_limits(
    topo: Topology, agent_process: AgentProcess
) -> None:
    before = read_int(INOTIFY_INSTANCES)
    stub = agent_process.start()
    ids = [uuid.uuid4().hex for _ in range(ROUTERS)]
    statuses = apply_all(stub, [small_config(r, i) for i, r in enumerate(ids)])
    failed = [(s.router_id, s.last_error) for s in statuses if s.applied_generation != 1]
    assert not failed, f"{len(failed)} of {ROUTERS} routers failed, e.g. {failed[:2]}"
    listed = stub.ListRouterStatus(pb.ListRouterStatusRequest()).routers
    assert len(listed) == ROUTERS
    sick = [(r.router_id, s.name, s.detail) for r in listed for s in r.services if not s.healthy]
    assert not sick, sick[:3]
    # Every router's own dnsmasq runs, as the unprivileged user.
    pids = {router.lib.proc.read_pidfile(os.path.join(
        agent_process.state_dir, "routers", r, "dnsmasq", "dnsmasq.pid")) for r in ids}
    assert None not in pids
    assert len(pids) == ROUTERS
    assert all(router.lib.proc.is_alive(p) for p in pids if p)
    assert {os.stat(f"/proc/{p}").st_uid for p in pids if p} == {
        pwd.getpwnam("dnsmasq").pw_uid}
    # ... in the host's mount namespace: one of its own per router would hold
    # a copy of every mount, every router's namespace added later included.
    assert {os.readlink(f"/proc/{p}/ns/mnt") for p in pids if p} == {
        os.readlink("/proc/self/ns/mnt")}
    # Sized at start for the planned routers (1,024 by default), not one by one.
    assert read_int(INOTIFY_INSTANCES) >= 1024
    if before < 1024:
        assert "host limit fs.inotify.max_user_instances raised" in agent_process.log()
