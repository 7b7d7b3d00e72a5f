"""A cloud whose routers are appliance VMs (netmgr's VM backend), one per module."""

from __future__ import annotations

import os
import uuid

import pytest

from aio import vm_backend as aio_vm
from aio.allinone import AllInOne
from tests.integration.e2e.conftest import free_port


def router_image_built() -> bool:
    return all(os.path.exists(os.path.join(aio_vm.ROUTER_IMAGE_DIR, f))
               for f in ("manifest.json", "vmlinuz", "initrd.img", "disk.qcow2"))


def vm_cloud_up(tmp_path_factory, **settings):
    if not router_image_built():
        pytest.skip(f"router image not built (bash images/router/build.sh): "
                    f"{aio_vm.ROUTER_IMAGE_DIR}")
    prefix = f"v{uuid.uuid4().hex[:6]}"
    aio = AllInOne(prefix=prefix, state_dir=str(tmp_path_factory.mktemp("vmcloud")),
                   listen=f"127.0.0.1:{free_port()}", health_interval=1.0,
                   router_backend="vm", compute_listen=f"127.0.0.1:{free_port()}",
                   router_vm_settings=tuple(f"{k}={v}" for k, v in settings.items()))
    return aio


def vm_cloud_down(aio: AllInOne) -> None:
    aio.down()
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(aio.prefix)]
    assert not leftovers, f"namespaces left behind: {leftovers}"
    from compute import libvirt_driver as lv

    left = list(lv.Driver(f"cn-{aio_vm.host_name(aio.prefix)}-").domains())
    assert not left, f"domains left behind: {left}"


@pytest.fixture(scope="module")
def vm_cloud(tmp_path_factory):
    aio = vm_cloud_up(tmp_path_factory, grace_seconds=20)
    try:
        aio.up()
        yield aio
    finally:
        vm_cloud_down(aio)
