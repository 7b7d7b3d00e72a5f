"""VM lifecycle on a real compute agent: bad input is refused with the field
named and nothing created; a failure half-way and delete leave nothing behind
(domains, taps, OVS ports, overlays, netmgr ports); VLANs return to the pool."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Any

import grpc
import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import keypair_pb2_grpc as kprpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.lib.vmutil import VmTenant

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant(ovs_cloud, host_a):
    t = VmTenant(ovs_cloud, host_a)
    yield t
    t.close()


def fields(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    out = []
    for d in status.details if status else []:
        br = error_details_pb2.BadRequest()
        if d.Unpack(br):
            out += [v.field for v in br.field_violations]
    return out


def footprint(host, tenant: VmTenant) -> dict:
    """Everything a VM leaves on the host and in netmgr."""
    ports = tenant.api.call(tenant.api.ports.ListPorts, pb.ListPortsRequest()).ports
    return {
        "domains": sorted(host.compute.driver.domains()),
        "taps": sorted(host.fabric.taps()),
        "links": sorted(n for n in os.listdir("/sys/class/net") if n.startswith("vt")),
        "vm_dirs": sorted(os.listdir(host.compute.vm_dir)),
        "ports": sorted(p.id for p in ports),
    }


def assert_no_leak(after: dict, before: dict) -> None:
    """Nothing left behind: the same footprint, but the host's links are the
    whole host's (other tests' VMs come and go beside these): only a new one
    is a leak."""
    assert {k: v for k, v in after.items() if k != "links"} == \
        {k: v for k, v in before.items() if k != "links"}
    assert set(after["links"]) <= set(before["links"]), after["links"]


def create(host, tenant: VmTenant, **kw) -> grpc.RpcError:
    vm: dict[str, Any] = dict(name="bad", image="tiny", vcpus=1, memory_mib=128)
    vm.update(kw)
    with pytest.raises(grpc.RpcError) as info:
        host.stub.CreateVm(cpb.CreateVmRequest(vm=cpb.Vm(**vm)), metadata=tenant.md,
                           timeout=60)
    return info.value


def import_key(t: VmTenant, name: str) -> kpb.KeyPair:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/k"],
                       check=True)
        with open(f"{d}/k.pub") as f:
            line = f.read()
    return t.api.call(kprpc.KeyPairServiceStub(t.api.channel).ImportKeyPair,
                      kpb.ImportKeyPairRequest(key_pair=kpb.KeyPair(name=name,
                                                                     public_key=line)))


def test_a_vms_ports_carry_its_user_data_key_pair_and_labels(ovs_cloud, host_a, tenant):
    net = tenant.network("md", "10.77.0.0/24")
    key = import_key(tenant, "laptop")
    vm = host_a.stub.CreateVm(cpb.CreateVmRequest(vm=cpb.Vm(
        name="withdata", image="tiny", vcpus=1, memory_mib=128,
        nics=[cpb.Nic(network_id=net.id), cpb.Nic(network_id=net.id)],
        user_data=b"#cloud-config\nhostname: withdata\n", ssh_key_pair_id=key.id,
        labels={"role": "web"}, metadata_tokens="required")), metadata=tenant.md, timeout=60)
    try:
        for nic in vm.nics:
            port = tenant.api.call(tenant.api.ports.GetPort, pb.GetPortRequest(id=nic.port_id))
            assert (port.user_data, port.ssh_key_pair_id, dict(port.labels)) == (
                b"#cloud-config\nhostname: withdata\n", key.id, {"role": "web"})
            assert (port.device_id, port.metadata_tokens) == (vm.id, "required")
    finally:
        host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=tenant.md, timeout=60)


def test_bad_input_names_the_field_and_creates_nothing(ovs_cloud, host_a, tenant):
    net = tenant.network("n1", "10.78.0.0/24")
    other = VmTenant(ovs_cloud, host_a)
    try:
        foreign = other.network("theirs", "10.78.0.0/24")
        foreign_key = import_key(other, "theirs")
        nic = [cpb.Nic(network_id=net.id)]
        before = footprint(host_a, tenant)
        cases: list[tuple[dict[str, Any], str]] = [
            (dict(image="windows-xp", nics=nic), "vm.image"),
            (dict(vcpus=0, nics=nic), "vm.vcpus"),
            (dict(vcpus=100000, nics=nic), "vm.vcpus"),
            (dict(memory_mib=0, nics=nic), "vm.memory_mib"),
            (dict(memory_mib=1 << 30, nics=nic), "vm.memory_mib"),
            (dict(name="Not_A_Label", nics=nic), "vm.name"),
            (dict(nics=[]), "vm.nics"),
            (dict(nics=[cpb.Nic(network_id="8b4f0c3e-0000-4000-8000-000000000000")]),
             "vm.nics[0].network_id"),
            (dict(nics=[cpb.Nic(network_id="not-an-id")]), "vm.nics[0].network_id"),
            # A NIC on another tenant's network: netmgr does not show it to us.
            (dict(nics=[cpb.Nic(network_id=net.id), cpb.Nic(network_id=foreign.id)]),
             "vm.nics[1].network_id"),
            (dict(nics=[cpb.Nic(network_id=net.id, fixed_ip="10.99.0.5")]),
             "vm.nics[0].fixed_ip"),
            (dict(nics=[cpb.Nic(network_id=net.id, fixed_ip="nonsense")]),
             "vm.nics[0].fixed_ip"),
            (dict(nics=nic, user_data=b"x" * (32 * 1024 + 1)), "vm.user_data"),
            (dict(nics=nic, ssh_key_pair_id="not-an-id"), "vm.ssh_key_pair_id"),
            (dict(nics=nic, ssh_key_pair_id=foreign_key.id), "vm.ssh_key_pair_id"),
            (dict(nics=nic, labels={"bad key!": "v"}), "vm.labels"),
            (dict(nics=nic, labels={"role": "web\nx"}), "vm.labels"),
            (dict(nics=nic, metadata_tokens="v2"), "vm.metadata_tokens"),
        ]
        for kw, field in cases:
            err = create(host_a, tenant, **kw)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (kw, err.details())
            assert field in fields(err), (kw, fields(err), err.details())
        assert_no_leak(footprint(host_a, tenant), before)

        # Duplicate name: ALREADY_EXISTS, the first VM untouched.
        vm = tenant.vm("dup", net)
        err = create(host_a, tenant, name="dup", nics=nic)
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "vm.name" in err.details()
        host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=tenant.md, timeout=60)
        # The other tenant can neither see nor delete ours.
        vm2 = tenant.vm("mine", net)
        assert not host_a.stub.ListVms(cpb.ListVmsRequest(), metadata=other.md).vms
        with pytest.raises(grpc.RpcError) as info:
            host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm2.id), metadata=other.md)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm2.id), metadata=tenant.md, timeout=60)
        assert_no_leak(footprint(host_a, tenant), before)
        # No token at all.
        with pytest.raises(grpc.RpcError) as info:
            host_a.stub.ListVms(cpb.ListVmsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        other.close()


@pytest.mark.parametrize("step", ["ports", "overlay", "define"])
def test_failure_half_way_leaves_nothing_behind(ovs_cloud, host_a, tenant, step):
    net = tenant.network(f"f{step}", "10.79.0.0/24")
    before = footprint(host_a, tenant)
    host_a.compute.fail_after = step
    try:
        err = create(host_a, tenant, name="half", nics=[cpb.Nic(network_id=net.id)] * 2)
    finally:
        host_a.compute.fail_after = ""
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert step in err.details()
    assert_no_leak(footprint(host_a, tenant), before)


def test_second_nic_failing_releases_the_first_port(ovs_cloud, host_a, tenant):
    net = tenant.network("taken", "10.80.0.0/24")
    holder = tenant.api.call(tenant.api.ports.CreatePort, pb.CreatePortRequest(
        port=pb.Port(network_id=net.id, hostname="holder")))
    before = footprint(host_a, tenant)
    err = create(host_a, tenant, name="second", nics=[
        cpb.Nic(network_id=net.id), cpb.Nic(network_id=net.id, fixed_ip=holder.ip)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "vm.nics[1].fixed_ip" in fields(err)
    assert_no_leak(footprint(host_a, tenant), before)


def test_delete_and_recreate_leaks_nothing_and_vlans_return(ovs_cloud, host_a, tenant):
    before = footprint(host_a, tenant)
    net = tenant.network("cycle", "10.81.0.0/24")
    for _ in range(2):
        vm = tenant.vm("cyc", net)
        tenant.wait_leases(vm)
        assert host_a.stub.StopVm(cpb.StopVmRequest(id=vm.id, force=True), metadata=tenant.md,
                                  timeout=60).state == cpb.VM_STATE_STOPPED
        assert host_a.stub.StartVm(cpb.StartVmRequest(id=vm.id), metadata=tenant.md,
                                   timeout=60).state == cpb.VM_STATE_RUNNING
        host_a.stub.DeleteVm(cpb.DeleteVmRequest(id=vm.id), metadata=tenant.md, timeout=60)
        with pytest.raises(grpc.RpcError) as info:
            host_a.stub.GetVm(cpb.GetVmRequest(id=vm.id), metadata=tenant.md)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert_no_leak(footprint(host_a, tenant), before)
    vlan = net.vlan_id
    tenant.api.call(tenant.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=net.id))
    again = tenant.network("cycle2", "10.81.0.0/24")
    assert again.vlan_id == vlan, "the deleted network's VLAN went back to the pool"
