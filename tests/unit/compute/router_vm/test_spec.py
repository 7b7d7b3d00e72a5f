"""A router VM's spec on the compute host: violations name the field, and the
domain XML carries the OEM strings (the secret one only as a file)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from cloudnet.compute.v1 import router_vm_pb2 as vpb

from common.grpc_errors import InvalidArgument
from compute import libvirt_driver as lv
from compute.images import Image
from compute.router_vm.service import check_spec

IMAGE = Image(name="router", kernel="/k", initrd="/i", disk="/d", cmdline="console=ttyS0",
              min_memory_mib=256, kernel_release="x")
RID = "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"


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
    assert plain.find("devices/channel") is None


class _Dom:
    def __init__(self, xml: str) -> None:
        self.xml = xml

    def XMLDesc(self, flags: int) -> str:
        return self.xml


def test_the_fault_channel_is_a_virtio_port_on_a_host_socket_only_when_asked() -> None:
    sock = lv.fault_socket_path("cn-h-r-" + RID)
    assert len(sock) < 108
    xml = lv.domain_xml(
        name="cn-h-r-1", uuid=RID, accel="qemu", vcpus=1, memory_mib=512, image=IMAGE,
        overlay="/o", console="/c", hostname="router-1", interfaces=[], fault_socket=sock)
    (ch,) = ET.fromstring(xml).findall("devices/channel")
    assert ch.get("type") == "unix"
    assert ch.find("source").get("mode") == "bind"
    assert ch.find("target").get("type") == "virtio"
    assert ch.find("target").get("name") == lv.FAULT_PORT == "org.cloudnet.faults.0"
    assert lv.fault_socket(_Dom(xml)) == sock
    without = lv.domain_xml(
        name="n", uuid=RID, accel="qemu", vcpus=1, memory_mib=64, image=IMAGE, overlay="/o",
        console="/c", hostname="h", interfaces=[])
    assert lv.fault_socket(_Dom(without)) == ""
