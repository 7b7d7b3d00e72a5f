"""UpdateRouterVmNics on the compute host: validation (the field named), the
hot-plug plan, tap names. netmgr's side: tests/unit/netmgr/reconcile/test_vm_nic_plan.py."""

from __future__ import annotations

import pytest
from cloudnet.compute.v1 import router_vm_pb2 as vpb

from common.grpc_errors import InvalidArgument
from compute.router_vm import nics

RID = "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"
CTL = vpb.RouterVmNic(mac="02:00:00:00:00:01", segment=4001, role="control")
PUB = vpb.RouterVmNic(mac="02:00:00:00:00:02", segment=0, role="public")
T1 = vpb.RouterVmNic(mac="02:00:00:00:00:03", segment=101, role="guest")
T2 = vpb.RouterVmNic(mac="02:00:00:00:00:04", segment=102, role="guest")


def nic(mac: str = "02:00:00:00:00:09", segment: int = 100, role: str = "guest"):
    return vpb.RouterVmNic(mac=mac, segment=segment, role=role)


def req(*list_):
    return vpb.UpdateRouterVmNicsRequest(router_id=RID, nics=list_)


def test_a_valid_list_passes() -> None:
    nics.check_update(req(CTL, PUB, T1, T2), [CTL, PUB])
    nics.check_update(req(CTL), [CTL, PUB])  # everything but control may go


@pytest.mark.parametrize(("request_", "field"), [
    (req(), "nics"),
    (req(CTL, *(nic(f"02:00:00:00:01:{i:02x}", 100 + i) for i in range(16))), "nics"),
    (req(CTL, nic("02:00:00:00:00:0G")), "nics[1].mac"),
    (req(CTL, nic("02:00:00:00:00:0A")), "nics[1].mac"),  # upper case
    (req(CTL, nic("02:00:00:00:00:0a; x")), "nics[1].mac"),
    (req(CTL, PUB, nic(PUB.mac, 7)), "nics[2].mac"),  # the same MAC twice
    (req(CTL, nic(segment=4095)), "nics[1].segment"),
    (req(CTL, nic(role="tier")), "nics[1].role"),
    (req(CTL, nic(role="")), "nics[1].role"),
    (req(PUB, T1), "nics"),  # no control NIC
    (req(CTL, nic("02:00:00:00:00:08", 4001, "control")), "nics"),  # two
    (req(nic("02:00:00:00:00:08", 4001, "control"), PUB), "nics[0].mac"),  # another one
    (req(nic(CTL.mac, 4002, "control"), PUB), "nics[0].segment"),
])
def test_bad_lists_are_refused_naming_the_field(request_, field) -> None:
    with pytest.raises(InvalidArgument) as e:
        nics.check_update(request_, [CTL, PUB])
    assert field in [v.field for v in e.value.violations], e.value.violations


@pytest.mark.parametrize("router_id", ["", "nope", RID + "x", "../../etc"])
def test_a_bad_router_id_is_refused(router_id) -> None:
    with pytest.raises(InvalidArgument) as e:
        nics.check_router_id(router_id)
    assert [v.field for v in e.value.violations] == ["router_id"]


@pytest.mark.parametrize(("present", "want", "detach", "attach"), [
    # the same list: nothing to do (idempotent)
    ({CTL.mac: 4001, PUB.mac: 0}, [CTL, PUB], (), ()),
    # order does not matter
    ({CTL.mac: 4001, PUB.mac: 0, T1.mac: 101}, [CTL, T1, PUB], (), ()),
    # a tier added
    ({CTL.mac: 4001, PUB.mac: 0}, [CTL, PUB, T1], (), (T1,)),
    # a tier removed, another added
    ({CTL.mac: 4001, PUB.mac: 0, T1.mac: 101}, [CTL, PUB, T2], (T1.mac,), (T2,)),
    # a NIC moved to another segment goes and comes back
    ({CTL.mac: 4001, PUB.mac: 0, T1.mac: 100}, [CTL, PUB, T1], (T1.mac,), (T1,)),
    # a NIC the record does not know (a cut call) is replugged if wanted
    ({CTL.mac: 4001, T1.mac: None}, [CTL, T1], (T1.mac,), (T1,)),
])
def test_the_plan_is_the_difference(present, want, detach, attach) -> None:
    p = nics.plan(present, want)
    assert p.detach == detach
    assert p.attach == attach
    assert bool(p) == bool(detach or attach)


def test_taps_are_named_by_mac_and_fit_a_linux_name() -> None:
    a, b = nics.tap(RID, T1.mac), nics.tap(RID, T2.mac)
    assert a != b
    assert len(a) <= 15
    assert a == nics.tap(RID, T1.mac)
