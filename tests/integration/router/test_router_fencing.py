"""Fencing: a real agent process refuses pushes from an older netmgr lease
epoch and pushes of an older generation than it runs, remembers the highest
epoch across a kill -9, and under pushers racing on purpose never runs an
older generation than it ran before (sampled all along by a third thread)."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from router.services.base import RouterPaths
from tests.lib.agentprocess import AgentProcess
from tests.lib.routerlab import HOSTS, Topology, make_config

pytestmark = pytest.mark.integration


@pytest.fixture
def agent_process(topo: Topology, tmp_path: object) -> Iterator[AgentProcess]:
    a = AgentProcess(topo, f"{tmp_path}/agent.sock")
    try:
        yield a
    finally:
        a.kill()


def config(router_id: str, generation: int) -> pb.RouterConfig:
    """Generation parity shows in dnsmasq's files: even ones serve p2 too."""
    return make_config(router_id, generation, ["p1", "p2"] if generation % 2 == 0 else ["p1"])


def push(stub: agent_pb2_grpc.RouterAgentStub, router_id: str, generation: int,
         epoch: int) -> pb.RouterStatus:
    reply = stub.ApplyConfig(
        pb.ApplyConfigRequest(config=config(router_id, generation), lease_epoch=epoch),
        timeout=60)
    return reply.status


def refused(stub: agent_pb2_grpc.RouterAgentStub, router_id: str, generation: int,
            epoch: int) -> str:
    with pytest.raises(grpc.RpcError) as e:
        push(stub, router_id, generation, epoch)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    return str(e.value.details())


def test_older_epoch_and_older_generation_refused_across_restart(
        agent_process: AgentProcess) -> None:
    stub = agent_process.start()
    router_id = uuid.uuid4().hex
    assert push(stub, router_id, 5, epoch=2).applied_generation == 5
    # A replica that lost its lease (epoch 1), even with a newer generation.
    msg = refused(stub, router_id, 6, epoch=1)
    assert "epoch 1" in msg, msg
    assert "epoch 2" in msg, msg
    # The lease holder's own slow push of an older snapshot.
    msg = refused(stub, router_id, 4, epoch=2)
    assert "generation 4" in msg, msg
    assert "generation 5" in msg, msg
    # A delete (a restart's first half) from the old epoch too.
    with pytest.raises(grpc.RpcError) as e:
        stub.DeleteRouter(pb.DeleteRouterRequest(router_id=router_id, keep_leases=True,
                                                 lease_epoch=1), timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id)) \
        .applied_generation == 5

    agent_process.kill(signal.SIGKILL)
    stub = agent_process.start()
    msg = refused(stub, router_id, 7, epoch=1)  # the epoch survived the restart
    assert "epoch 2" in msg, msg
    # A newer lease may push the same generation again, or a newer one.
    assert push(stub, router_id, 5, epoch=3).applied_generation == 5
    assert push(stub, router_id, 6, epoch=3).applied_generation == 6
    refused(stub, router_id, 8, epoch=2)


def test_racing_pushers_never_roll_the_router_back(agent_process: AgentProcess) -> None:
    """Round r: the replica that lost the lease (epoch 1) pushes its stale
    snapshot's generation, while the lease holder (epoch 2) pushes two
    generations from two threads (a slow older push racing a newer one),
    all released by one barrier."""
    stub = agent_process.start()
    router_id = uuid.uuid4().hex
    assert push(stub, router_id, 1, epoch=1).applied_generation == 1
    rounds = 12
    barrier = threading.Barrier(3)
    accepted: list[tuple[int, int]] = []  # (epoch, generation) acknowledged
    errors: list[str] = []
    lock = threading.Lock()
    seen: list[int] = []
    done = threading.Event()

    def pusher(epoch: int, generation_of: Callable[[int], int]) -> None:
        for r in range(1, rounds + 1):
            generation = generation_of(r)
            barrier.wait(timeout=120)
            try:
                status = push(stub, router_id, generation, epoch)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    errors.append(f"{e.code().name}: {e.details()}")
                continue
            with lock:
                accepted.append((epoch, generation))
            if status.applied_generation < generation:
                errors.append(f"gen {generation} acknowledged as {status.applied_generation}")

    def sampler() -> None:
        while not done.is_set():
            s = stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id), timeout=30)
            seen.append(s.applied_generation)

    threads = [threading.Thread(target=pusher, args=(1, lambda r: r)),
               threading.Thread(target=pusher, args=(2, lambda r: 2 * r + 1)),
               threading.Thread(target=pusher, args=(2, lambda r: 2 * r))]
    watch = threading.Thread(target=sampler)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    done.set()
    watch.join(timeout=60)

    assert not errors, errors
    assert seen == sorted(seen), f"the router went back: {seen}"
    assert len(seen) > rounds  # sampled all along
    # After round 1 (the lease holder has pushed) the old epoch never got through.
    assert {g for e, g in accepted if e == 1} <= {1}, accepted
    assert any(e == 2 for e, _ in accepted)
    final = 2 * rounds + 1
    status = stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id))
    assert status.applied_generation == final
    # What dnsmasq serves is the final (odd) generation's: p1 only.
    hosts_dir = RouterPaths(os.path.join(agent_process.state_dir, "routers", router_id)) \
        .dnsmasq("dhcp-hosts")
    served = ""
    for name in os.listdir(hosts_dir):
        with open(os.path.join(hosts_dir, name)) as f:
            served += f.read()
    assert HOSTS["p1"][0] in served, served
    assert HOSTS["p2"][0] not in served, served
