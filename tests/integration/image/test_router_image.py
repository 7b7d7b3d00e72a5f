"""The router appliance image (images/router) boots under QEMU (TCG) and serves.

One VM for the module: boot with the identity in SMBIOS OEM strings, the
agent healthy on the control address, calls without the per-router token
refused, an authenticated ApplyConfig of a one-network router applied on the
VM's NICs found by MAC, and a namespace guest on the VM's guest NIC leasing
from the VM router. Skipped when the image is not built: build it with
`images/router/build.sh` (or CLOUDNET_BUILD_IMAGES=1 scripts/test.sh).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aio.nsguest import NamespaceGuest
from router.agent import auth
from tests.lib import routervm
from tests.lib.routervm import ImageLab, RouterVM

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(routervm.image_manifest() is None,
                       reason="router image not built (images/router/build.sh, or "
                              "CLOUDNET_BUILD_IMAGES=1 scripts/test.sh)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU"),
    pytest.mark.timeout(600),
]
BOOT_TIMEOUT = 300  # TCG on a shared 2-core machine: generous, never asserted as a metric


class Booted:
    def __init__(self, lab: ImageLab, vm: RouterVM, channel: grpc.Channel, boot_s: float):
        self.lab, self.vm, self.channel, self.boot_seconds = lab, vm, channel, boot_s
        self.stub = routervm.agent_stub(channel)
        self.md = auth.metadata(vm.token)


@pytest.fixture(scope="module")
def booted() -> Iterator[Booted]:
    lab = ImageLab(f"ci{uuid.uuid4().hex[:4]}")
    try:
        lab.setup()
        vm = lab.vm(f"rimg-{uuid.uuid4().hex[:8]}", [routervm.GUEST_SEGMENT])
        vm.start()
        channel = lab.channel()
        boot_s = routervm.wait_healthy(channel, vm, BOOT_TIMEOUT)
        print(f"\nrouter VM: agent healthy {boot_s:.1f} s after QEMU started")
        yield Booted(lab, vm, channel, boot_s)
        channel.close()
    finally:
        lab.teardown()


def test_boot_identity_reaches_the_vm(booted: Booted) -> None:
    console = booted.vm.console()
    assert f"CLOUDNET-BOOT router={booted.vm.router_id} control=ctl0 " \
           f"mac={booted.vm.control.mac}" in console
    assert booted.vm.token not in console  # the secret never reaches the console


def test_unauthenticated_calls_are_refused_health_is_open(booted: Booted) -> None:
    health = health_pb2_grpc.HealthStub(booted.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
        health_pb2.HealthCheckResponse.SERVING
    cfg = routervm.one_network_config(booted.vm)
    for md in [None, auth.metadata("wrong-" + booted.vm.token), (("authorization", "Basic x"),)]:
        for call, req in [(booted.stub.ApplyConfig, pb.ApplyConfigRequest(config=cfg)),
                          (booted.stub.ListRouterStatus, pb.ListRouterStatusRequest())]:
            with pytest.raises(grpc.RpcError) as e:
                call(req, metadata=md, timeout=60)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    resp = booted.stub.ListRouterStatus(pb.ListRouterStatusRequest(), metadata=booted.md,
                                        timeout=60)
    assert resp.agent_id == booted.vm.router_id
    assert not any(r.applied_generation for r in resp.routers)  # nothing was applied


def test_apply_config_on_nics_by_mac_and_guest_leases(booted: Booted) -> None:
    vm = booted.vm
    other = routervm.one_network_config(vm)
    other.router_id = "someone-else"
    with pytest.raises(grpc.RpcError) as e:
        booted.stub.ApplyConfig(pb.ApplyConfigRequest(config=other), metadata=booted.md,
                                timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    status = booted.stub.ApplyConfig(
        pb.ApplyConfigRequest(config=routervm.one_network_config(vm)), metadata=booted.md,
        timeout=300).status
    assert status.last_error == ""
    assert status.applied_generation == 1
    assert {s.name: s.healthy for s in status.services}.get("interfaces") is True, status
    assert all(s.healthy for s in status.services if s.name in ("dnsmasq", "nftables")), status

    guest = NamespaceGuest(f"{booted.lab.prefix}-g1", booted.lab.fabric,
                           f"{booted.lab.prefix}gp1")
    try:
        guest.attach(routervm.GUEST_SEGMENT, routervm.GUEST_MAC)
        lease = guest.dhcp(attempts=60, interval=2)
        assert lease.ip == routervm.GUEST_IP
        assert lease.router == "10.10.0.1"
        assert "10.10.0.1" in lease.dns
        ping = guest.run(["busybox", "ping", "-c", "1", "-W", "10", "10.10.0.1"], timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        dig = guest.run(["dig", "+short", "+time=10", "+tries=3", "@10.10.0.1",
                         "vm1.web.acme.cloud.internal"], timeout=60)
        assert dig.stdout.split() == [routervm.GUEST_IP], dig.stdout + dig.stderr
    finally:
        guest.destroy()


def test_reapply_same_config_is_a_noop(booted: Booted) -> None:
    cfg = routervm.one_network_config(booted.vm)
    status = booted.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg), metadata=booted.md,
                                     timeout=300).status
    assert status.applied_generation == 1
    assert status.last_error == ""




def test_network_dropped_and_readded_moves_the_nic_out_and_back(booted: Booted) -> None:
    """ApplianceFabric: unplug hands the NIC back to the VM, a later plug finds it by MAC."""
    full = routervm.one_network_config(booted.vm, generation=2)
    public_only = pb.RouterConfig()
    public_only.CopyFrom(full)
    del public_only.interfaces[1:]
    del public_only.guest_networks[:]
    del public_only.source_nats[:]
    status = booted.stub.ApplyConfig(pb.ApplyConfigRequest(config=public_only),
                                     metadata=booted.md, timeout=300).status
    assert status.last_error == "", status
    assert status.applied_generation == 2, status
    full.generation = 3
    status = booted.stub.ApplyConfig(pb.ApplyConfigRequest(config=full), metadata=booted.md,
                                     timeout=300).status
    assert status.last_error == "", status
    assert status.applied_generation == 3, status
    assert all(s.healthy for s in status.services), status
    guest = NamespaceGuest(f"{booted.lab.prefix}-g2", booted.lab.fabric,
                           f"{booted.lab.prefix}gp2")
    try:
        guest.attach(routervm.GUEST_SEGMENT, routervm.GUEST_MAC)
        assert guest.dhcp(attempts=60, interval=2).ip == routervm.GUEST_IP
    finally:
        guest.destroy()
