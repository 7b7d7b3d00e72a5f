"""Waiting on routers that are appliance VMs (netmgr's VM backend) until they
serve: booted, active and with the desired config applied."""

from __future__ import annotations

import glob
import os
import re
import time

import grpc
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.compute.v1 import router_vm_pb2_grpc as vrpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import redundancy_pb2 as rpb
from cloudnet.netmgr.v1 import redundancy_pb2_grpc as rrpc

from aio import vm_backend
from aio.allinone import AllInOne
from tests.lib.allinone import Tenant
from tests.lib.second_compute_host import SecondHost

BOOT = 240  # generous: TCG on a shared, loaded 2-core machine


def router(t: Tenant, router_id: str) -> pb.Router:
    return t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=router_id))


def wait_router(t: Tenant, router_id: str, cond, timeout: float = BOOT,
                poll: float = 0.5) -> pb.Router:
    deadline = time.monotonic() + timeout
    while True:
        r = router(t, router_id)
        if cond(r):
            return r
        if time.monotonic() > deadline:
            raise TimeoutError(f"router {router_id}: {r}")
        time.sleep(poll)


def serving(r: pb.Router) -> bool:
    return (r.vm_state == pb.ROUTER_VM_STATE_ACTIVE and r.state == pb.ROUTER_STATE_ACTIVE
            and r.applied_generation >= r.desired_generation)


def master(r: pb.Router) -> int | None:
    """The instance of a redundant router that is MASTER, if exactly one is."""
    roles = [i.instance for i in r.instances if i.role == "MASTER"]
    return roles[0] if len(roles) == 1 else None


def pair_serving(r: pb.Router) -> bool:
    """Both VMs of a redundant router serve the desired generation: one
    MASTER, one BACKUP, both healthy and reachable."""
    return serving(r) and sorted(i.role for i in r.instances) == ["BACKUP", "MASTER"] \
        and all(i.healthy and i.reachable for i in r.instances)


def router_vm(aio: AllInOne, second: SecondHost, host: str, router_id: str) -> vpb.RouterVm:
    """A router's VM as the compute agent of one of the two hosts has it."""
    address = aio.compute_listen if host == vm_backend.host_name(aio.prefix) \
        else second.compute.cfg.address
    with grpc.insecure_channel(address) as ch:
        vm: vpb.RouterVm = vrpc.RouterVmServiceStub(ch).GetRouterVm(
            vpb.GetRouterVmRequest(router_id=router_id),
            metadata=[("authorization", f"Bearer {aio.admin_token}")], timeout=10)
    return vm


def router_vm_pid(aio: AllInOne, second: SecondHost, host: str, router_id: str) -> int:
    """The QEMU PID of a router's VM on one of the two compute hosts (0: none)."""
    return int(router_vm(aio, second, host, router_id).pid)


# The agents' lines on a router VM's console that say where a move's time went.
_MOVES = re.compile(r"VRRP|conntrackd|repairing")


def what_happened(aio: AllInOne, second: SecondHost, t: Tenant, network_id: str) -> str:
    """The arbiter's events and, from both hosts' router VM consoles, the
    agents' VRRP and conntrackd lines (a failed wait's explanation)."""
    out = []
    try:
        got = t.api.call(rrpc.RouterRedundancyServiceStub(t.api.channel).GetRedundancy,
                         rpb.GetRedundancyRequest(network_id=network_id))
        out += [f"event: {e}" for e in got.events]
    except grpc.RpcError as e:
        out.append(f"GetRedundancy: {e}")
    for state_dir in (aio.state_dir, second.compute.cfg.state_dir):
        for path in glob.glob(os.path.join(state_dir, "**", "console.log"), recursive=True):
            with open(path, errors="replace") as f:
                lines = [line.rstrip() for line in f if _MOVES.search(line)]
            out += [f"{os.path.relpath(path, state_dir)}: {line}" for line in lines[-40:]]
    return "\n".join(out)
