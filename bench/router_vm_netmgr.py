"""Boot-to-serving and config push latency through netmgr's VM router backend.

Used by bench/router_image.py (--netmgr). Per boot: a tenant network is
created on an all-in-one whose routers are VMs (netmgr → compute agent →
libvirt, TCG); the client polls the API for the router's VM defined (its
host set, BOOTING), the agent healthy (vm_state ACTIVE), the config applied
(router ACTIVE, applied = desired), then a namespace guest asks for its
lease. Push latency: CreatePort → the router reports that generation
applied, for a VM router and, as the baseline in the same run, a namespace
router of a second all-in-one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.allinone import AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest
from tests.lib import routervm

POLL = 0.05


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cloud(backend: str) -> Iterator[AllInOne]:
    state = tempfile.mkdtemp(prefix=f"cn-bench-{backend}-", dir="/tmp")
    aio = AllInOne(insecure=True, prefix=f"b{uuid.uuid4().hex[:5]}", state_dir=state,
                   listen=f"127.0.0.1:{_free_port()}", router_backend=backend,
                   compute_listen=f"127.0.0.1:{_free_port()}")
    try:
        aio.up()
        yield aio
    finally:
        aio.down()
        import shutil

        shutil.rmtree(state, ignore_errors=True)


def _tenant(aio: AllInOne) -> Api:
    admin = Api(aio.listen, aio.admin_token)
    tenant = admin.call(admin.tenants.CreateTenant,
                        pb.CreateTenantRequest(name=f"b{uuid.uuid4().hex[:8]}"))
    secret = admin.call(admin.tenants.CreateToken,
                        pb.CreateTokenRequest(tenant_id=tenant.id, name="bench")).secret
    admin.close()
    return Api(aio.listen, secret)


def _wait(api: Api, router_id: str, cond: Callable[[pb.Router], bool],
          timeout: float = 300) -> pb.Router:
    deadline = time.monotonic() + timeout
    while True:
        r: pb.Router = api.call(api.routers.GetRouter, pb.GetRouterRequest(id=router_id))
        if cond(r):
            return r
        if time.monotonic() > deadline:
            raise TimeoutError(str(r))
        time.sleep(POLL)


def _applied(r: pb.Router) -> bool:
    return bool(r.state == pb.ROUTER_STATE_ACTIVE
                and r.applied_generation >= r.desired_generation)


def boot_once(aio: AllInOne, api: Api, n: int) -> dict[str, Any]:
    t0 = time.monotonic()
    net = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(network=pb.Network(
        name=f"boot{n}", cidr=f"10.60.{n}.0/24")))
    port = api.call(api.ports.CreatePort, pb.CreatePortRequest(
        port=pb.Port(network_id=net.id, hostname="g1")))
    api_s = time.monotonic() - t0
    _wait(api, net.router_id, lambda r: r.vm_state in (pb.ROUTER_VM_STATE_BOOTING,
                                                       pb.ROUTER_VM_STATE_ACTIVE))
    defined = time.monotonic() - t0
    r = _wait(api, net.router_id, lambda r: r.vm_state == pb.ROUTER_VM_STATE_ACTIVE)
    healthy = time.monotonic() - t0
    _wait(api, net.router_id, _applied)
    applied = time.monotonic() - t0
    guest = NamespaceGuest(f"{aio.prefix}-g{n}", aio.fabric, f"{aio.prefix}g{n}")
    try:
        guest.attach(net.vlan_id, port.mac)
        lease = guest.dhcp(attempts=60, interval=1)
        leased = time.monotonic() - t0
        assert lease.ip == port.ip, (lease, port)
    finally:
        guest.destroy()
    row: dict[str, Any] = {"api_s": round(api_s, 2), "defined_s": round(defined, 2),
                           "healthy_s": round(healthy, 2), "applied_s": round(applied, 2),
                           "leased_s": round(leased, 2),
                           "serving_from_define_s": round(leased - defined, 2),
                           "netmgr_boot_seconds": round(r.vm_boot_seconds, 2),
                           "load_avg_1m": os.getloadavg()[0]}
    # Where the VM's boot went (guest uptime marks on its console).
    console = os.path.join(aio.state_dir, "compute", "routers", net.router_id, "console.log")
    with contextlib.suppress(OSError), open(console, errors="replace") as f:
        row["phases"] = routervm.boot_phases(f.read())
    return {"row": row, "net": net}


def push_series(api: Api, net: pb.Network, pushes: int) -> list[float]:
    """CreatePort → the router reports the generation that added it applied."""
    times = []
    for i in range(pushes):
        t0 = time.perf_counter()
        api.call(api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname=f"push{i}")))
        _wait(api, net.router_id, _applied, timeout=120)
        times.append(time.perf_counter() - t0)
    return times


def bench(boots: int, pushes: int) -> dict[str, Any]:
    rows = []
    with cloud("vm") as aio:
        api = _tenant(aio)
        vm_push: list[float] = []
        for b in range(boots):
            got = boot_once(aio, api, b)
            rows.append(got["row"])
            print(f"netmgr VM boot {b + 1}/{boots}: {got['row']}", flush=True)
            if b == 0:
                vm_push = push_series(api, got["net"], pushes)
            api.call(api.networks.DeleteNetwork,
                     pb.DeleteNetworkRequest(id=got["net"].id, force=True))
        api.close()
    with cloud("netns") as aio:
        api = _tenant(aio)
        net = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name="base", cidr="10.61.0.0/24")))
        _wait(api, net.router_id, _applied)
        ns_push = push_series(api, net, pushes)
        api.close()
    return {"boots": rows, "push_seconds_vm": [round(t, 4) for t in vm_push],
            "push_seconds_namespace": [round(t, 4) for t in ns_push]}
