"""Pure parts of the VM router backend: tokens, settings, spec validation, domain
XML with OEM strings, control addresses, API fields, the console's scoping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import grpc
import pytest
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import router_vm_pb2 as rvpb
from cloudnet.netmgr.v1 import router_vm_pb2_grpc as rvrpc

from aio.control_network import ControlNetwork
from aio.netmgr_server import relay
from common.grpc_errors import InvalidArgument
from compute import libvirt_driver as lv
from compute.images import Image
from compute.router_vm.service import check_spec
from netmgr import server
from netmgr.reconcile.vm_backend.control_network import DirectControlNetwork
from netmgr.reconcile.vm_backend.credentials import (
    derive_token,
    load_key,
    router_vm_config,
    token_hash,
)
from netmgr.store import router_vms as store_router_vm
from netmgr.store.facade import Store
from netmgr.store.router_vms import RouterVmStore
from tests.unit.netmgr.conftest import bad_fields, rpc_error

IMAGE = Image(name="router", kernel="/k", initrd="/i", disk="/d", cmdline="console=ttyS0",
              min_memory_mib=256, kernel_release="x")
RID = "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"


def test_tokens_differ_per_router_and_generation_and_need_the_key(tmp_path) -> None:
    key = load_key(str(tmp_path / "k"))
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert load_key(str(tmp_path / "k")) == key  # made once
    t1 = derive_token(key, RID, 1)
    assert t1 == derive_token(key, RID, 1)
    assert len({t1, derive_token(key, RID, 2), derive_token(key, RID[:-1] + "b", 1),
                derive_token(b"another key of enough length......", RID, 1)}) == 4
    assert token_hash(t1) != t1
    assert len(token_hash(t1)) == 64


def test_router_vm_settings_are_typed_and_named() -> None:
    cfg = router_vm_config({"memory_mib": "384", "grace_seconds": "2.5", "control_netns": "x"})
    assert (cfg.memory_mib, cfg.grace_seconds, cfg.control_netns) == (384, 2.5, "x")
    with pytest.raises(ValueError, match="memry_mib"):
        router_vm_config({"memry_mib": "1"})
    with pytest.raises(ValueError, match=r"router_vm\.vcpus"):
        router_vm_config({"vcpus": "two"})


def _spec(**kw) -> vpb.RouterVmSpec:
    spec = vpb.RouterVmSpec(
        router_id=RID, image="router", vcpus=1, memory_mib=512,
        nics=[vpb.RouterVmNic(mac="02:00:00:00:00:01", segment=4001, role="control"),
              vpb.RouterVmNic(mac="02:00:00:00:00:02", segment=0, role="public")],
        oem_strings=[f"cloudnet.router_id={RID}"], secret_oem_strings=["cloudnet.token=abc"])
    for k, v in kw.items():
        if isinstance(v, list):
            del getattr(spec, k)[:]
            getattr(spec, k).extend(v)
        else:
            setattr(spec, k, v)
    return spec


def test_router_vm_spec_violations_name_the_field() -> None:
    assert check_spec(_spec(), {"router": IMAGE}, 2, 4096) is IMAGE
    cases = {
        "spec.router_id": _spec(router_id="nope"),
        "spec.image": _spec(image="other"),
        "spec.memory_mib": _spec(memory_mib=128),
        "spec.nics[1].mac": _spec(nics=[vpb.RouterVmNic(mac="02:00:00:00:00:01", role="guest"),
                                        vpb.RouterVmNic(mac="02:00:00:00:00:01", role="guest")]),
        "spec.nics[0].role": _spec(nics=[vpb.RouterVmNic(mac="02:00:00:00:00:01", role="x")]),
        "spec.nics[0].segment": _spec(nics=[vpb.RouterVmNic(mac="02:00:00:00:00:01",
                                                            segment=5000, role="guest")]),
        # A comma would start a new QEMU option, a newline a new OEM line.
        "spec.oem_strings[0]": _spec(oem_strings=["cloudnet.x=a,path=/etc/shadow"]),
        "spec.secret_oem_strings[0]": _spec(secret_oem_strings=["cloudnet.token=a\nb"]),
        "spec.secret_oem_strings": _spec(secret_oem_strings=["cloudnet.a=1", "cloudnet.b=2"]),
    }
    for field, spec in cases.items():
        with pytest.raises(InvalidArgument) as e:
            check_spec(spec, {"router": IMAGE}, 2, 4096)
        assert field in [v.field for v in e.value.violations], (field, e.value.violations)


def test_domain_xml_carries_oem_strings_and_the_secret_only_as_a_file() -> None:
    xml = lv.domain_xml(
        name="cn-h-r-1", uuid=RID, accel="qemu", vcpus=1, memory_mib=512, image=IMAGE,
        overlay="/o", console="/c", hostname="router-1", interfaces=[],
        oem_strings=("cloudnet.router_id=R", "cloudnet.x=<&>"), oem_file="/s/oem-secret")
    x = ET.fromstring(xml)
    assert x.find("os/smbios").get("mode") == "sysinfo"
    assert [e.text for e in x.findall("sysinfo/oemStrings/entry")] == [
        "cloudnet.router_id=R", "cloudnet.x=<&>"]
    ns = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}
    args = [a.get("value") for a in x.findall("qemu:commandline/qemu:arg", ns)]
    assert args == ["-smbios", "type=11,path=/s/oem-secret"]
    plain = ET.fromstring(lv.domain_xml(
        name="n", uuid=RID, accel="qemu", vcpus=1, memory_mib=64, image=IMAGE, overlay="/o",
        console="/c", hostname="h", interfaces=[]))
    assert plain.find("sysinfo") is None
    assert plain.find("os/smbios") is None


def test_control_addresses_are_allocated_once_and_kept(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    t = store.create_tenant("acme")
    from netmgr.model.validation import NetworkSpec

    nets = [store.create_network(t.id, NetworkSpec(name=f"n{i}", cidr=f"10.{i}.0.0/24"))
            for i in range(3)]
    vms = RouterVmStore(store, "10.250.0.0/29")
    a = vms.ensure(nets[0].router_id)
    b = vms.ensure(nets[1].router_id)
    assert (a.control_ip, b.control_ip) == ("10.250.0.2", "10.250.0.3")
    assert vms.ensure(nets[0].router_id) == a
    assert a.control_mac != b.control_mac
    vms.update(nets[0].router_id, state="active", host="h1", boot_seconds=12.5)
    r = store.get_router(t.id, nets[0].router_id)
    assert r.host == "h1"
    routers = [pb.Router(id=r.id, backend="vm")]
    store_router_vm.fill(store, routers)
    assert routers[0].vm_state == pb.ROUTER_VM_STATE_ACTIVE
    assert (routers[0].vm_host, routers[0].vm_boot_seconds) == ("h1", 12.5)
    assert routers[0].control_address == "10.250.0.2"
    small = RouterVmStore(store, "10.250.0.0/30")  # .1 netmgr, .2 taken: full
    with pytest.raises(Exception, match="control_cidr"):
        small.ensure(nets[2].router_id)
    store.close()


def test_control_network_without_a_namespace_connects_directly() -> None:
    assert ControlNetwork().target("r", "10.250.0.9", 50051) == "10.250.0.9:50051"
    assert DirectControlNetwork().target("r", "10.250.0.9", 50051) == "10.250.0.9:50051"
    cfg = router_vm_config({"control_netns": ""})
    assert relay(cfg).target("r", "10.250.0.9", 50051) == "10.250.0.9:50051"


def test_netmgr_alone_refuses_a_control_namespace_it_cannot_relay_from(
        tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CLOUDNET_ADMIN_TOKEN", "adm")
    rc = server.main(["--db-url", f"sqlite:///{tmp_path}/db.sqlite",
                      "--router-vm", "control_netns=x"])
    assert rc == 2
    assert "aio.netmgr_server" in capsys.readouterr().err
    assert not (tmp_path / "db.sqlite").exists()


def test_console_is_tenant_scoped_and_only_for_vm_routers(cloud, acme) -> None:
    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="n", cidr="10.9.0.0/24")))
    stub = rvrpc.RouterVmServiceStub(cloud.channel)
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id=net.router_id), metadata=api.metadata, timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # a netns router
    _, other = cloud.new_tenant("other")
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id=net.router_id), metadata=other.metadata, timeout=10))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id="x"), metadata=api.metadata, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err)
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id=net.router_id), timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cli_router_console_names_a_netns_router(cloud, acme, capsys) -> None:
    from netmgr.cli import main as cli

    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="n", cidr="10.9.0.0/24")))
    token = dict(api.metadata)["authorization"].removeprefix("Bearer ")
    rc = cli.main(["--server", cloud.target, "--token", token, "router", "console",
                   net.router_id])
    assert rc != 0
    assert "is not a VM" in capsys.readouterr().err
