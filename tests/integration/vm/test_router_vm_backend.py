"""netmgr's VM router backend end to end: routers are appliance VMs (images/router)
booted by a compute agent under libvirt (TCG), reached over the control network.

One cloud and ONE router VM for the module (a boot costs ~15-30 s under TCG on
two shared cores): the tests build on each other's network in order."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import grpc
import pytest
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.compute.v1 import router_vm_pb2_grpc as vrpc
from cloudnet.netmgr.v1 import router_vm_pb2 as rvpb
from cloudnet.netmgr.v1 import router_vm_pb2_grpc as rvrpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aio import vm_backend
from aio.allinone import INET_HOST_IP, WEB_PORT
from netmgr.reconcile.vm_backend.credentials import derive_token
from tests.lib.allinone import Tenant
from tests.lib.vm_routers import router, serving, wait_router

pytestmark = pytest.mark.integration

def dig(guest, name: str) -> list[str]:
    return guest.run(["dig", "+short", "+time=3", "+tries=3", name]).stdout.split()


def seen_from(guest) -> str:
    return guest.run(["curl", "-s", "--max-time", "10",
                      f"http://{INET_HOST_IP}:{WEB_PORT}/"]).stdout.strip()


class Renewer:
    """A udhcpc that stays running like a guest OS's client (renew with SIGUSR1)."""

    SCRIPT = '#!/bin/sh\necho "$1 ${ip:-}" >> "$CLOUDNET_EVENTS"\nexit 0\n'

    def __init__(self, guest) -> None:
        self.dir = tempfile.mkdtemp(prefix="cloudnet-renew-")
        self.events = os.path.join(self.dir, "events")
        script = os.path.join(self.dir, "event.sh")
        with open(script, "w") as f:
            f.write(self.SCRIPT)
        os.chmod(script, 0o755)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", guest.netns, "busybox", "udhcpc", "-f", "-i", guest.ifname,
             "-s", script, "-t", "20", "-T", "1", "-A", "1"],
            env={**os.environ, "CLOUDNET_EVENTS": self.events},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def lines(self) -> list[str]:
        try:
            with open(self.events) as f:
                return f.read().split("\n")
        except FileNotFoundError:
            return []

    def wait(self, event: str, after: int = 0, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines()[after:]:
                if line.startswith(event + " "):
                    return line.split(" ", 1)[1]
            time.sleep(0.2)
        raise TimeoutError(f"no {event} event: {self.lines()}")

    def renew(self, timeout: float = 60) -> str:
        """Send a renewal (unicast REQUEST for the held address); the address ACKed."""
        n = len(self.lines())
        self.proc.send_signal(signal.SIGUSR1)
        return self.wait("renew", after=max(0, n - 1), timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def served(vm_cloud):
    """A tenant with one network (its router is a VM) and one guest holding its lease."""
    t = Tenant(vm_cloud, "vmt")
    net = t.network(name="web", cidr="10.7.0.0/24", lease_seconds=600)
    port = t.port(net.id, hostname="vm1")
    r = wait_router(t, net.router_id, serving)
    g = t.guest(net, port)
    yield t, net, port, g, r
    t.close()


def test_guest_gets_dhcp_dns_snat_through_a_vm_router(vm_cloud, served):
    t, net, port, g, r = served
    assert r.backend == "vm"
    assert r.vm_host == vm_backend.host_name(vm_cloud.prefix)
    assert r.vm_boot_seconds > 0
    assert r.vm_boot_time.seconds > 0
    assert r.control_address.startswith("10.250.")
    assert r.vm_replacements == 0
    assert {s.name for s in r.services} >= {"dnsmasq", "nftables"}
    assert all(s.healthy for s in r.services), r.services

    lease = g.dhcp()
    assert lease.ip == port.ip
    assert lease.router == net.gateway
    assert dig(g, f"vm1.{net.domain}") == [port.ip]
    assert dig(g, "www.example.test") == [INET_HOST_IP]
    assert seen_from(g) == net.source_nat_ip

    # A port added later reaches the VM's dnsmasq through a normal push.
    p2 = t.port(net.id, hostname="vm2")
    wait_router(t, net.router_id, serving, timeout=60)
    assert dig(g, f"vm2.{net.domain}") == [p2.ip]


def _agent_channel(vm_cloud, router_id: str) -> grpc.Channel:
    # netmgr's relay to the VM's control address (0600, root only).
    path = os.path.join(vm_cloud.state_dir, "run", "ctl", f"{router_id}.sock")
    assert os.stat(path).st_mode & 0o777 == 0o600
    return grpc.insecure_channel(f"unix://{path}")


def _router_vm(vm_cloud, router_id: str) -> vpb.RouterVm:
    with grpc.insecure_channel(vm_cloud.compute_listen) as ch:
        return vrpc.RouterVmServiceStub(ch).GetRouterVm(
            vpb.GetRouterVmRequest(router_id=router_id),
            metadata=[("authorization", f"Bearer {vm_cloud.admin_token}")], timeout=10)


def test_vm_agent_refuses_calls_without_the_routers_token(vm_cloud, served):
    t, net, *_ = served
    with open(os.path.join(vm_cloud.state_dir, "router-vm.key"), "rb") as f:
        key = f.read().strip()
    vm = _router_vm(vm_cloud, net.router_id)
    with _agent_channel(vm_cloud, net.router_id) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        agent = agent_pb2_grpc.RouterAgentStub(ch)
        for md in ([], [("authorization", "Bearer not-the-token")],
                   # the token of another router, and this router's previous generation
                   [("authorization", f"Bearer {derive_token(key, t.tenant.id, 1)}")]):
            for call, req in ((agent.ListRouterStatus, apb.ListRouterStatusRequest()),
                              (agent.ApplyConfig, apb.ApplyConfigRequest(
                                  config=apb.RouterConfig(router_id=net.router_id)))):
                with pytest.raises(grpc.RpcError) as e:
                    call(req, metadata=md, timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # netmgr's token for this router (derived from its key, for the current
        # credential generation) is accepted; other generations are not.
        accepted = {}
        for gen in range(1, 6):
            token = derive_token(key, net.router_id, gen)
            try:
                reply = agent.ListRouterStatus(apb.ListRouterStatusRequest(), metadata=[
                    ("authorization", f"Bearer {token}")], timeout=10)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
                continue
            accepted[gen] = token
            assert [s.router_id for s in reply.routers] == [net.router_id]
        assert len(accepted) == 1, accepted
        token = next(iter(accepted.values()))
    # The token is not on QEMU's command line (world-readable in /proc).
    with open(f"/proc/{vm.pid}/cmdline", "rb") as f:
        argv = f.read()
    assert b"cloudnet.router_id=" + net.router_id.encode() in argv
    assert token.encode() not in argv
    assert b"cloudnet.token" not in argv


def test_console_is_tenant_scoped(vm_cloud, served, make_tenant_api):
    t, net, *_ = served
    stub = rvrpc.RouterVmServiceStub(t.api.channel)
    log = t.api.call(stub.GetRouterConsole, rvpb.GetRouterConsoleRequest(id=net.router_id))
    assert f"CLOUDNET-BOOT router={net.router_id}".encode() in log.data
    assert b"rvm_" not in log.data  # never the token
    assert log.next_offset == len(log.data)
    more = t.api.call(stub.GetRouterConsole, rvpb.GetRouterConsoleRequest(
        id=net.router_id, offset=log.next_offset))
    assert more.next_offset >= log.next_offset
    other = make_tenant_api()
    with pytest.raises(grpc.RpcError) as e:
        rvrpc.RouterVmServiceStub(other.api.channel).GetRouterConsole(
            rvpb.GetRouterConsoleRequest(id=net.router_id),
            metadata=other.api.metadata, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
def make_tenant_api(vm_cloud):
    made: list[Tenant] = []

    def make() -> Tenant:
        made.append(Tenant(vm_cloud, f"o{len(made)}{os.getpid()}"))
        return made[-1]

    yield make
    for t in made:
        t.close()


def test_killed_router_vm_is_replaced_and_guest_keeps_its_lease(vm_cloud, served):
    t, net, port, g, _ = served
    g.dhcp()
    renewer = Renewer(g)
    try:
        assert renewer.wait("bound") == port.ip
        before = router(t, net.router_id)
        vm = _router_vm(vm_cloud, net.router_id)
        assert vm.pid > 0
        os.kill(vm.pid, signal.SIGKILL)  # QEMU dies: the domain is no longer running

        r = wait_router(t, net.router_id, lambda r: r.vm_replacements == 1 and serving(r))
        assert "replacing" in r.vm_detail
        assert r.control_address == before.control_address
        new = _router_vm(vm_cloud, net.router_id)
        assert new.pid != vm.pid
        assert [(n.mac, n.segment) for n in new.nics] == [(n.mac, n.segment) for n in vm.nics]
        # The guest renews (unicast REQUEST for its address): same IP.
        assert renewer.renew() == port.ip
        assert dig(g, f"vm1.{net.domain}") == [port.ip]
        assert seen_from(g) == net.source_nat_ip

        # A domain destroyed through libvirt (virsh destroy) is replaced too.
        subprocess.run(["virsh", "-c", "qemu:///system", "destroy", new.domain],
                       check=True, capture_output=True)
        wait_router(t, net.router_id, lambda r: r.vm_replacements == 2 and serving(r))
        assert renewer.renew() == port.ip
        assert seen_from(g) == net.source_nat_ip
    finally:
        renewer.stop()
