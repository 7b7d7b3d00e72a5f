"""Pure parts of compute: names, libvirt XML, validation (no root, no libvirt)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from cloudnet.compute.v1 import compute_pb2 as cpb

from common.fabric.ovs import OvsFabric
from common.fabric.vxlan import VxlanFabric
from common.grpc_errors import InvalidArgument
from compute import libvirt_driver as lv
from compute.agent.service import Compute
from compute.host import HostConfig
from compute.images import Image

IMAGE = Image(name="tiny", kernel="/k", initrd="/i", disk="/d", cmdline="console=ttyS0",
              min_memory_mib=64, kernel_release="x")


def test_device_names_fit_ifnamsiz_and_are_stable() -> None:
    assert len(lv.tap_name("a" * 36, 7)) <= 15
    assert lv.tap_name("vm", 0) == lv.tap_name("vm", 0) != lv.tap_name("vm", 1)
    f = OvsFabric("t12345-br")
    assert len(f.device_name("some-long-port-name")) <= 15
    assert f.device_name("p") != OvsFabric("t12345-b2").device_name("p")
    v = VxlanFabric("v1234a", "ul", "192.0.2.1", [])
    assert len(v.bridge_name(16_000_000)) <= 15
    assert v.vni(0) == 4000


def test_domain_xml_escapes_and_names() -> None:
    x = ET.fromstring(lv.domain_xml(
        name="cn-h-1", uuid="00000000-0000-4000-8000-000000000001", accel="qemu", vcpus=2,
        memory_mib=128, image=IMAGE, overlay="/s/o'd.qcow2", console="/s/c&.log",
        hostname="vm1", interfaces=[]))
    assert x.get("type") == "qemu"
    assert x.find("vcpu").text == "2"
    assert x.find("devices/disk/source").get("file") == "/s/o'd.qcow2"
    assert x.find("devices/serial/source").get("path") == "/s/c&.log"
    assert x.find("os/cmdline").text.endswith("cloudnet.hostname=vm1")


class _Fabric:
    def setup(self) -> None: ...


@pytest.fixture
def compute(tmp_path, monkeypatch) -> Compute:
    monkeypatch.setattr("compute.images.load", lambda name, d: IMAGE)
    cfg = HostConfig(name="h", state_dir=str(tmp_path), netmgr="x", admin_token="t",
                     fabric_kind="ovs", fabric=_Fabric(), images={"tiny": "/x"},  # type: ignore[arg-type]
                     accel="qemu", vcpus=2, memory_mib=1024)
    return Compute(cfg, netmgr=None)  # type: ignore[arg-type]


def test_validation_names_every_bad_field(compute: Compute) -> None:
    with pytest.raises(InvalidArgument) as info:
        compute._check(cpb.Vm(name="Bad!", image="nope", vcpus=3, memory_mib=16, nics=[
            cpb.Nic(network_id="x", fixed_ip="1.2.3")]))
    fields = {v.field for v in info.value.violations}
    assert fields == {"vm.name", "vm.image", "vm.vcpus", "vm.memory_mib",
                      "vm.nics[0].network_id", "vm.nics[0].fixed_ip"}
    ok = cpb.Vm(name="ok", image="tiny", vcpus=2, memory_mib=64,
                nics=[cpb.Nic(network_id="8b4f0c3e-0000-4000-8000-000000000000")])
    assert compute._check(ok) is IMAGE


def test_the_cloud_init_guest_is_a_default_image_once_built(tmp_path, monkeypatch) -> None:
    from compute import images

    cloud = tmp_path / "cloud-guest"
    monkeypatch.setattr(images, "DEFAULT_CLOUD_GUEST_DIR", str(cloud))
    assert images.default_images() == {"tiny": images.DEFAULT_GUEST_DIR}
    cloud.mkdir()
    for f in ("vmlinuz", "initrd.img", "disk.qcow2"):
        (cloud / f).write_bytes(b"x")
    (cloud / "image.json").write_text(
        '{"name": "debian-cloud", "kernel": "vmlinuz", "initrd": "initrd.img", '
        '"disk": "disk.qcow2", "cmdline": "root=/dev/vda net.ifnames=0", "min_memory_mib": 384}')
    assert images.default_images() == {"tiny": images.DEFAULT_GUEST_DIR,
                                       "debian-cloud": str(cloud)}
    img = images.load("debian-cloud", str(cloud))
    assert img.min_memory_mib == 384
    assert img.disk == str(cloud / "disk.qcow2")
