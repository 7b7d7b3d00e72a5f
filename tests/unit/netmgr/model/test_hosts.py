"""What a compute agent may register as its host."""

from __future__ import annotations

import pytest

from common.grpc_errors import InvalidArgument
from netmgr.model.hosts import MAX_VCPUS, HostSpec, check_host

GOOD = HostSpec(name="host-a", address="10.0.0.1:7171", fabric="ovs", vcpus=8,
                memory_mib=16384)


def test_a_good_host_passes() -> None:
    assert check_host(GOOD) is GOOD
    assert check_host(HostSpec("h", "unix:///run/compute.sock", "vxlan", 1, 1)).fabric == "vxlan"


def test_every_bad_field_is_named() -> None:
    bad = HostSpec(name="Host_A", address="", fabric="bridge", vcpus=MAX_VCPUS + 1,
                   memory_mib=0)
    with pytest.raises(InvalidArgument) as err:
        check_host(bad, "req.host")
    assert [v.field for v in err.value.violations] == [
        "req.host.name", "req.host.address", "req.host.fabric", "req.host.vcpus",
        "req.host.memory_mib"]
