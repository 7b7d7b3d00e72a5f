"""netmgr's side of a router VM's NICs: which NICs a config wants (control
first), what to plug before a push and unplug once applied, and when a plug
the host cannot do replaces the VM. (The host's side:
tests/unit/compute/router_vm/test_nics.py.)"""

from __future__ import annotations

import grpc
import pytest
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.router.v1 import agent_pb2 as apb

from compute.router_vm import nics
from netmgr.reconcile.vm_backend import nic_plan as nm

RID = "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"
CTL = vpb.RouterVmNic(mac="02:00:00:00:00:01", segment=4001, role="control")
PUB = vpb.RouterVmNic(mac="02:00:00:00:00:02", segment=0, role="public")
T1 = vpb.RouterVmNic(mac="02:00:00:00:00:03", segment=101, role="guest")
T2 = vpb.RouterVmNic(mac="02:00:00:00:00:04", segment=102, role="guest")


def test_netmgr_wants_control_first_then_the_configs_interfaces_by_mac() -> None:
    config = apb.RouterConfig(interfaces=[
        apb.Interface(name="pub0", role=apb.INTERFACE_ROLE_PUBLIC, mac="02:00:00:00:00:02"),
        apb.Interface(name="g-t1", role=apb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:00:03",
                      segment_id=101),
    ])
    want = nm.config_nics(config, CTL.mac, 4001)
    assert nics.key(want) == nics.key([CTL, PUB, T1])
    # before a push: plug what is missing, keep what the VM has until unplugged
    assert nm.missing([CTL, PUB], want)
    assert not nm.missing([CTL, PUB, T1, T2], want)
    assert nics.key(nm.union([CTL, PUB, T2], want)) == nics.key([CTL, PUB, T1, T2])
    # after the VM applied it: unplug the rest
    assert nm.extra([CTL, PUB, T1, T2], want)
    assert not nm.extra([CTL, PUB, T1], want)
    # a NIC on another segment counts as missing (and extra)
    moved = vpb.RouterVmNic(mac=T1.mac, segment=999, role="guest")
    assert nm.missing([CTL, PUB, moved], want)
    assert nm.extra([CTL, PUB, moved], want)


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "refused"


class _Host:
    """A compute host's RouterVmService: records the lists asked, fails on demand."""

    def __init__(self, fail: grpc.StatusCode | None = None) -> None:
        self.asked: list[list[tuple[str, int, str]]] = []
        self.fail = fail

    def UpdateRouterVmNics(self, request, metadata, timeout):
        self.asked.append(nics.key(request.nics))
        if self.fail is not None:
            raise _RpcError(self.fail)
        return vpb.RouterVm(router_id=request.router_id, nics=request.nics)


class _Backend:
    admin_md = ()

    def __init__(self, host: _Host) -> None:
        self.host = host

    def _host_stub(self, name: str) -> _Host:
        return self.host


class _Router:
    id = RID

    def __init__(self, applied: int, desired: int) -> None:
        self.applied_generation, self.desired_generation = applied, desired


def _live():
    from netmgr.reconcile.vm_backend.tender import _Live

    return _Live(host="h1")


@pytest.mark.parametrize(("have", "applied", "asked"), [
    ([CTL, PUB, T1], 3, []),  # nothing to do
    ([CTL, PUB], 3, [[CTL, PUB, T1]]),  # plug the new tier
    # an old tier: unplugged only once the VM applied the config without it
    ([CTL, PUB, T1, T2], 2, []),
    ([CTL, PUB, T1, T2], 3, [[CTL, PUB, T1]]),
    # both: plug first (keeping the old NIC), then unplug
    ([CTL, PUB, T2], 3, [[CTL, PUB, T1, T2], [CTL, PUB, T1]]),
])
def test_the_tend_loop_plugs_then_unplugs_once_applied(have, applied, asked) -> None:
    host = _Host()
    plugger = nm.NicPlugger(_Backend(host))
    why = plugger.tend(_Router(applied, 3), _live(), vpb.RouterVm(nics=have), [CTL, PUB, T1])
    assert why == ""
    assert host.asked == [nics.key(a) for a in asked]


@pytest.mark.parametrize(("code", "have", "replace"), [
    # the host cannot plug (no slot, libvirt refusing): replace the VM
    (grpc.StatusCode.FAILED_PRECONDITION, [CTL, PUB], True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, [CTL, PUB], True),
    # a transient failure: retried, no replacement
    (grpc.StatusCode.UNAVAILABLE, [CTL, PUB], False),
    # an unplug that fails never replaces the VM
    (grpc.StatusCode.FAILED_PRECONDITION, [CTL, PUB, T1, T2], False),
])
def test_only_a_plug_the_host_cannot_do_replaces_the_vm(code, have, replace) -> None:
    live = _live()
    live.nics_generation = 3
    why = nm.NicPlugger(_Backend(_Host(code))).tend(
        _Router(3, 3), live, vpb.RouterVm(nics=have), [CTL, PUB, T1])
    assert bool(why) == replace, why
    if not replace:
        assert live.nics_generation == 0  # the next tick tries again
