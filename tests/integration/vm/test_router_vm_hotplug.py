"""NIC hot-plug on a VPC router VM: tiers come and go on the running VM.

One VM cloud and one VPC for the module: its router is an appliance VM
(libvirt + QEMU, TCG). Tier 1 has a guest holding a ping stream to its
gateway and a TCP stream to the internet host (through the router's source
NAT) while tier 2 is added: the VM is the same (QEMU PID, domain UUID, one
boot on its console, the agent's boot ID, the API's replacement count), the
streams never stop, and a tier-2 guest leases and reaches tier 1. Removing
the tier unplugs its NIC (live and from the domain's definition). A VM that
dies afterwards is replaced with the whole current NIC set, same MACs."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import grpc
import pytest
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.compute.v1 import router_vm_pb2_grpc as vrpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import router_vm_pb2 as rvpb
from cloudnet.netmgr.v1 import router_vm_pb2_grpc as rvrpc
from cloudnet.netmgr.v1 import vpc_pb2 as vpcpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vpcrpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import agent_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aio.allinone import INET_HOST_IP
from netmgr.reconcile.vm_backend.credentials import derive_token
from tests.lib.allinone import Tenant, free_port
from tests.lib.vm_routers import BOOT, router, serving, wait_router

pytestmark = pytest.mark.integration


def compute(cloud) -> tuple[grpc.Channel, vrpc.RouterVmServiceStub, list[tuple[str, str]]]:
    ch = grpc.insecure_channel(cloud.compute_listen)
    return ch, vrpc.RouterVmServiceStub(ch), [("authorization", f"Bearer {cloud.admin_token}")]


def router_vm(cloud, router_id: str) -> vpb.RouterVm:
    ch, stub, md = compute(cloud)
    with ch:
        return stub.GetRouterVm(vpb.GetRouterVmRequest(router_id=router_id), metadata=md,
                                timeout=10)


def domain_macs(domain: str, inactive: bool = False) -> set[str | None]:
    argv = ["virsh", "-c", "qemu:///system", "dumpxml", domain]
    xml = subprocess.run(argv + (["--inactive"] if inactive else []), check=True,
                         capture_output=True, text=True).stdout
    return {m.get("address") for m in ET.fromstring(xml).findall("devices/interface/mac")}


def domain_uuid(domain: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "domuuid", domain], check=True,
                          capture_output=True, text=True).stdout.strip()


def boots(t: Tenant, router_id: str) -> int:
    """CLOUDNET-BOOT lines on the VM's console (a reboot would add one)."""
    stub = rvrpc.RouterVmServiceStub(t.api.channel)
    log = t.api.call(stub.GetRouterConsole, rvpb.GetRouterConsoleRequest(id=router_id))
    return log.data.count(b"CLOUDNET-BOOT router=")


def agent_boot_id(cloud, router_id: str) -> str:
    """The VM agent's boot ID (a new one if the agent or the VM restarted)."""
    with open(os.path.join(cloud.state_dir, "router-vm.key"), "rb") as f:
        key = f.read().strip()
    path = os.path.join(cloud.state_dir, "run", "ctl", f"{router_id}.sock")
    with grpc.insecure_channel(f"unix://{path}") as ch:
        agent = agent_pb2_grpc.RouterAgentStub(ch)
        for gen in range(1, 10):
            md = [("authorization", f"Bearer {derive_token(key, router_id, gen)}")]
            try:
                return agent.ListRouterStatus(apb.ListRouterStatusRequest(), metadata=md,
                                              timeout=10).boot_id
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
    raise AssertionError("no credential generation opens the router")


class Pinger:
    """A busybox ping every 0.2 s from a guest; the longest run of lost replies."""

    INTERVAL = 0.2

    def __init__(self, guest, ip: str) -> None:
        self.proc = guest.popen(["busybox", "ping", "-i", str(self.INTERVAL), ip],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.seqs: list[int] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"seq=(\d+)", line)
            if m:
                self.seqs.append(int(m.group(1)))

    def stop(self) -> tuple[int, int, float]:
        """(replies, lost, longest gap in seconds) up to the last reply."""
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(5)
        seqs = sorted(set(self.seqs))
        assert seqs, "no ping reply at all"
        gap = max((b - a for a, b in itertools.pairwise(seqs)), default=1)
        return len(seqs), seqs[-1] + 1 - len(seqs), gap * self.INTERVAL


class TcpStream:
    """One TCP connection from a guest to an echo server on the internet host
    (through the router's source NAT), a line echoed every 0.25 s; records
    every line that came back late (> 5 s) or not at all."""

    def __init__(self, cloud, guest, procs: list) -> None:
        port = free_port()
        server = subprocess.Popen(["ip", "netns", "exec", cloud.inet_ns, "socat",
                                   f"TCP-LISTEN:{port},reuseaddr", "SYSTEM:cat"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        deadline = time.monotonic() + 10
        while f":{port} " not in subprocess.run(
                ["ip", "netns", "exec", cloud.inet_ns, "ss", "-H", "-tln"],
                capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "echo server did not start"
            time.sleep(0.05)
        self.proc = guest.popen(["socat", "-", f"TCP:{INET_HOST_IP}:{port}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1)
        procs.append(self.proc)
        self.sent = self.echoed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        while not self._stop.is_set():
            line = f"line-{self.sent}"
            try:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError) as e:
                self.failures.append(f"{line}: {e}")
                return
            self.sent += 1
            ready, _, _ = select.select([self.proc.stdout], [], [], 5)
            got = self.proc.stdout.readline().strip() if ready else ""
            if got != line:
                self.failures.append(f"{line}: got {got!r}")
                return
            self.echoed += 1
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def nics_of(vm: vpb.RouterVm) -> list[tuple[str, int]]:
    return sorted((n.mac, n.segment) for n in vm.nics)


def nic_on(vm: vpb.RouterVm, vlan: int) -> str:
    """The MAC of the VM's NIC on a tier's VLAN ("" when there is none)."""
    return next((n.mac for n in vm.nics if n.segment == vlan and n.role == "guest"), "")


@pytest.fixture(scope="module")
def vpc(vm_cloud):
    """A tenant's VPC on a router VM, tier "web" with a guest holding its lease."""
    t = Tenant(vm_cloud, "hotplug")
    vpcs = vpcrpc.VpcServiceStub(t.api.channel)
    v = t.api.call(vpcs.CreateVpc, vpcpb.CreateVpcRequest(vpc=vpcpb.Vpc(
        name="shop", cidr="10.62.0.0/16")))
    web = t.network(name="web", cidr="10.62.1.0/24", vpc_id=v.id)
    port = t.port(web.id, hostname="www1")
    r = wait_router(t, v.router_id, serving)
    assert r.backend == "vm"
    g = t.guest(web, port)
    lease = g.dhcp(attempts=30)
    assert lease.ip == port.ip
    yield t, vpcs, v, web, port, g
    # Its tiers, then the VPC: netmgr removes the router VM.
    for n in t.api.call(t.api.networks.ListNetworks, pb.ListNetworksRequest()).networks:
        t.api.call(t.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=n.id, force=True))
    t.api.call(vpcs.DeleteVpc, vpcpb.DeleteVpcRequest(id=v.id))
    t.close()


@pytest.fixture
def procs():
    made: list[subprocess.Popen] = []
    yield made
    for p in made:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def test_a_tier_is_hot_plugged_into_the_running_vm_without_a_break(vm_cloud, vpc, procs):
    t, _, v, web, port, g = vpc
    before = router(t, v.router_id)
    vm = router_vm(vm_cloud, v.router_id)
    uuid_before, boot_id = domain_uuid(vm.domain), agent_boot_id(vm_cloud, v.router_id)
    assert vm.pid > 0
    assert boots(t, v.router_id) == 1

    pinger = Pinger(g, web.gateway)
    stream = TcpStream(vm_cloud, g, procs)
    time.sleep(2)
    started = time.monotonic()
    db = t.network(name="db", cidr="10.62.2.0/24", vpc_id=v.id)
    p2 = t.port(db.id, hostname="db1")
    r = wait_router(t, v.router_id, serving, timeout=BOOT)
    applied = time.monotonic() - started
    g2 = t.guest(db, p2)
    lease = g2.dhcp(attempts=30)
    leased = time.monotonic() - started
    time.sleep(2)
    stream.stop()
    replies, lost, gap = pinger.stop()
    print(f"\nhot-plug: tier created -> router applied {applied:.1f} s, -> tier-2 lease "
          f"{leased:.1f} s; ping {replies} replies, {lost} lost, longest gap {gap:.1f} s; "
          f"tcp {stream.echoed} lines echoed")

    # The tier-2 guest leased from the router's new NIC and reaches tier 1.
    assert lease.ip == p2.ip
    assert lease.router == db.gateway
    assert g2.run(["busybox", "ping", "-c", "3", "-W", "3", port.ip]).returncode == 0
    # Tier 1 never stopped: the TCP stream through the router went on, every
    # line echoed; the ping stream had no gap a replacement would make (a new
    # VM takes 30 s and more to boot under TCG).
    assert not stream.failures, stream.failures
    assert stream.echoed >= 10
    assert gap < 5.0, (replies, lost, gap)

    # The same VM: QEMU process, domain, one boot, the agent never restarted.
    after = router_vm(vm_cloud, v.router_id)
    assert (after.pid, after.domain, after.start_time) == (vm.pid, vm.domain, vm.start_time)
    assert domain_uuid(after.domain) == uuid_before
    assert boots(t, v.router_id) == 1
    assert agent_boot_id(vm_cloud, v.router_id) == boot_id
    assert r.vm_replacements == before.vm_replacements == 0
    assert r.vm_boot_time == before.vm_boot_time
    # One new NIC, on the tier's VLAN, live and in the domain's definition.
    (new,) = set(nics_of(after)) - set(nics_of(vm))
    assert new[1] == db.vlan_id
    assert set(nics_of(vm)) < set(nics_of(after))
    assert new[0] in domain_macs(after.domain)
    assert new[0] in domain_macs(after.domain, inactive=True)


def test_the_same_nic_list_twice_changes_nothing_and_a_bad_one_names_the_field(vm_cloud, vpc):
    _t, _, v, *_ = vpc
    vm = router_vm(vm_cloud, v.router_id)
    xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", vm.domain], check=True,
                         capture_output=True, text=True).stdout
    ch, stub, md = compute(vm_cloud)
    with ch:
        for _ in range(2):
            again = stub.UpdateRouterVmNics(vpb.UpdateRouterVmNicsRequest(
                router_id=v.router_id, nics=vm.nics), metadata=md, timeout=60)
            assert list(again.nics) == list(vm.nics)
            assert again.pid == vm.pid
        assert subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", vm.domain],
                              check=True, capture_output=True, text=True).stdout == xml
        bad = [*vm.nics, vpb.RouterVmNic(mac="02:00:00:00:00:0G", segment=5000, role="x")]
        with pytest.raises(grpc.RpcError) as e:
            stub.UpdateRouterVmNics(vpb.UpdateRouterVmNicsRequest(
                router_id=v.router_id, nics=bad), metadata=md, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        detail = error_details_pb2.BadRequest()
        rpc_status.from_call(e.value).details[0].Unpack(detail)
        n = len(vm.nics)
        assert {f.field for f in detail.field_violations} == {
            f"nics[{n}].mac", f"nics[{n}].segment", f"nics[{n}].role"}
        with pytest.raises(grpc.RpcError) as e:  # netmgr's admin token only
            stub.UpdateRouterVmNics(vpb.UpdateRouterVmNicsRequest(
                router_id=v.router_id, nics=vm.nics), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert router_vm(vm_cloud, v.router_id).nics == vm.nics


def test_a_removed_tier_unplugs_its_nic_and_a_dead_vm_comes_back_with_every_nic(
        vm_cloud, vpc):
    t, _, v, web, port, g = vpc
    nets = t.api.call(t.api.networks.ListNetworks, pb.ListNetworksRequest()).networks
    db = next(n for n in nets if n.name == "db")
    vm = router_vm(vm_cloud, v.router_id)
    mac = nic_on(vm, db.vlan_id)
    assert mac
    for gone in [x for x in t.guests if x is not g]:
        gone.destroy()
        t.guests.remove(gone)
    t.api.call(t.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=db.id, force=True))
    deadline = time.monotonic() + 120
    while nic_on(router_vm(vm_cloud, v.router_id), db.vlan_id):
        assert time.monotonic() < deadline, "the removed tier's NIC is still plugged"
        time.sleep(0.5)
    r = wait_router(t, v.router_id, serving, timeout=60)
    after = router_vm(vm_cloud, v.router_id)
    assert after.pid == vm.pid
    assert r.vm_replacements == 0
    assert mac not in domain_macs(after.domain)
    assert mac not in domain_macs(after.domain, inactive=True)
    assert len(after.nics) == len(vm.nics) - 1
    assert g.run(["busybox", "ping", "-c", "2", "-W", "3", web.gateway]).returncode == 0

    # Another tier, hot-plugged; then QEMU dies: the new VM has every NIC.
    app = t.network(name="app", cidr="10.62.3.0/24", vpc_id=v.id)
    p3 = t.port(app.id, hostname="app1")
    wait_router(t, v.router_id, serving, timeout=BOOT)
    plugged = router_vm(vm_cloud, v.router_id)
    assert plugged.pid == vm.pid
    assert nic_on(plugged, app.vlan_id)
    os.kill(plugged.pid, signal.SIGKILL)
    r = wait_router(t, v.router_id, lambda r: r.vm_replacements == 1 and serving(r))
    new = router_vm(vm_cloud, v.router_id)
    assert new.pid != plugged.pid
    assert nics_of(new) == nics_of(plugged)
    g3 = t.guest(app, p3)
    assert g3.dhcp(attempts=30).ip == p3.ip
    assert g3.run(["busybox", "ping", "-c", "3", "-W", "3", port.ip]).returncode == 0
