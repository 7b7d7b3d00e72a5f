"""A compute host dies (its agent killed with SIGKILL, its router VM gone with
it): past the grace netmgr marks it DOWN and makes the router VM again on
the other live compute host, with the same MACs and DHCP hosts, so the guest
renews the same address. The host comes back: its stale router VM is
removed. One router VM boot per host (~16 s each under TCG)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from aio import vm_backend
from aio.allinone import AllInOne
from tests.lib.allinone import Tenant, free_port, router_image_built
from tests.lib.second_compute_host import SecondHost, host_state, wait_for
from tests.lib.vm_routers import router, serving, wait_router

pytestmark = pytest.mark.integration

GRACE = 6.0


@pytest.fixture(scope="module")
def failover_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllInOne]:
    if not router_image_built():
        pytest.skip(f"router image not built (bash images/router/build.sh): "
                    f"{vm_backend.ROUTER_IMAGE_DIR}")
    aio = AllInOne(insecure=True, prefix=f"v{uuid.uuid4().hex[:6]}",
                   state_dir=str(tmp_path_factory.mktemp("vmfail")),
                   listen=f"127.0.0.1:{free_port()}", health_interval=1.0,
                   router_backend="vm", compute_listen=f"127.0.0.1:{free_port()}",
                   netmgr_args=("--host-grace", str(GRACE)))
    try:
        aio.up()
        yield aio
    finally:
        aio.down()


def test_a_dead_compute_hosts_router_vm_is_made_again_on_a_live_host(
        failover_cloud: AllInOne, tmp_path: pytest.TempPathFactory) -> None:
    from compute import libvirt_driver as lv

    aio = failover_cloud
    first = vm_backend.host_name(aio.prefix)
    t = Tenant(aio, "vmfail")
    second = None
    try:
        net = t.network(name="web", cidr="10.8.0.0/24", lease_seconds=600)
        port = t.port(net.id, hostname="vm1")
        before = wait_router(t, net.router_id, serving)
        assert before.vm_host == first
        guest = t.guest(net, port)
        assert guest.dhcp().ip == port.ip
        # A second host joins; the router stays where it is.
        second = SecondHost(aio, str(tmp_path))
        wait_for("the second host UP", lambda: host_state(aio, second.name) == "HOST_STATE_UP",
                 60)

        # The first host dies: its agent and its VMs.
        os.kill(aio.pids["compute"], signal.SIGKILL)
        first_domains = lv.Driver(f"cn-{first}-")
        for d in first_domains.domains():
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy",
                            f"cn-{first}-{d}"], capture_output=True, check=False)
        wait_for("the first host DOWN", lambda: host_state(aio, first) == "HOST_STATE_DOWN",
                 GRACE + 60)
        after = wait_router(t, net.router_id,
                            lambda r: r.vm_host == second.name and serving(r))
        # Replaced once (the detail naming the dead host is gone once it serves).
        assert after.vm_replacements == before.vm_replacements + 1
        assert after.control_address == before.control_address
        assert second.domains()
        # The same MACs and DHCP hosts: the guest keeps its address.
        assert guest.dhcp().ip == port.ip

        # The first host comes back: its stale router VM is removed.
        vm_backend.start_compute(aio, aio.compute_listen)
        wait_for("the first host UP", lambda: host_state(aio, first) == "HOST_STATE_UP", 60)
        wait_for("the stale router VM removed", lambda: not first_domains.domains(), 90)
        assert router(t, net.router_id).vm_host == second.name
    finally:
        t.close()
        if second is not None:
            with contextlib.suppress(Exception):
                wait_for("the router VM gone", lambda: not second.domains(), 60)
            second.close()
