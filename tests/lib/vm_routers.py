"""Waiting on routers that are appliance VMs (netmgr's VM backend) until they
serve: booted, active and with the desired config applied."""

from __future__ import annotations

import time

from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.lib.allinone import Tenant

BOOT = 240  # generous: TCG on a shared, loaded 2-core machine


def router(t: Tenant, router_id: str) -> pb.Router:
    return t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=router_id))


def wait_router(t: Tenant, router_id: str, cond, timeout: float = BOOT) -> pb.Router:
    deadline = time.monotonic() + timeout
    while True:
        r = router(t, router_id)
        if cond(r):
            return r
        if time.monotonic() > deadline:
            raise TimeoutError(f"router {router_id}: {r}")
        time.sleep(0.5)


def serving(r: pb.Router) -> bool:
    return (r.vm_state == pb.ROUTER_VM_STATE_ACTIVE and r.state == pb.ROUTER_STATE_ACTIVE
            and r.applied_generation >= r.desired_generation)
