"""NIC hot-plug for router VMs (the VM backend, ``vm_backend.tender``).

A router's NICs are its config's interfaces (public, each guest network or
VPC tier, private gateways) plus the control NIC. When the set changes, the
running VM gets the difference hot-plugged by its compute host
(RouterVmService.UpdateRouterVmNics, ``compute.router_vm``) instead of
being replaced, in this order:

* before the reconciler pushes a config, every NIC it names is plugged (the
  NICs the VM has plus the new ones): the agent inside finds NICs by MAC
  when it applies the config (``router.agent.appliance``), so the NIC must be there
  first. A guest kernel that has not yet noticed a NIC just plugged fails
  that apply; it is not a rejection, and the reconciler retries.
* once the VM applied a config without a NIC (the agent moved it out of the
  router's namespace), that NIC is unplugged.

The tend loop (one pass a second) checks the same for every VM router whose
desired generation moved, or whose last sync was cut: it plugs what is
missing (a VM still booting included) and, when the host cannot hot-plug
(no free slot, libvirt refusing the device), replaces the VM with one that
has the whole set, as before hot-plug existed. A replacement always gets the
full current set with the same MACs (RouterVmBackend._spec).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

import grpc
from cloudnet.compute.v1 import router_vm_pb2 as vpb
from cloudnet.compute.v1 import router_vm_pb2_grpc as vrpc
from cloudnet.router.v1 import agent_pb2 as apb

from netmgr.model.core import Router
from netmgr.reconcile.vm_backend.credentials import RouterVmConfig
from netmgr.store.router_vms import RouterVm

log = logging.getLogger(__name__)

ROLES = {1: "guest", 2: "public"}  # router.v1 InterfaceRole → compute NIC role
UPDATE_TIMEOUT = 120.0  # unplugs wait for the guest's ACPI eject (TCG: seconds)
# The host cannot hot-plug (a retry would not help): replace the VM instead.
PERMANENT = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED)


def config_nics(config: apb.RouterConfig, control_mac: str, control_vlan: int
                ) -> list[vpb.RouterVmNic]:
    """The VM's NICs for a config: control first, then its interfaces, by MAC."""
    return [vpb.RouterVmNic(mac=control_mac, segment=control_vlan, role="control"),
            *(vpb.RouterVmNic(mac=i.mac.lower(), segment=i.segment_id,
                              role=ROLES.get(i.role, "guest")) for i in config.interfaces)]


def _keys(nics: Iterable[vpb.RouterVmNic]) -> set[tuple[str, int]]:
    return {(n.mac, n.segment) for n in nics}


def missing(have: Sequence[vpb.RouterVmNic], want: Sequence[vpb.RouterVmNic]) -> bool:
    return not _keys(want) <= _keys(have)


def extra(have: Sequence[vpb.RouterVmNic], want: Sequence[vpb.RouterVmNic]) -> bool:
    return not _keys(have) <= _keys(want)


def union(have: Sequence[vpb.RouterVmNic], want: Sequence[vpb.RouterVmNic]
          ) -> list[vpb.RouterVmNic]:
    """`want`, plus the NICs of `have` it does not name (kept until unplugged)."""
    macs = {n.mac for n in want}
    return [*want, *(n for n in have if n.mac not in macs)]


class LiveNics(Protocol):
    """What the backend knows of a router's running VM, as hot-plug uses it."""

    host: str
    # The VM's NICs as its host last reported them (None: ask it).
    nics: list[vpb.RouterVmNic] | None
    # The desired generation whose NIC set was last compared with the VM's (0: compare again).
    nics_generation: int
    nic_lock: threading.Lock


class RouterVms(Protocol):
    def get(self, router_id: str, instance: int = 0) -> RouterVm | None: ...


class VmHostAccess(Protocol):
    """What hot-plug uses of RouterVmBackend (``vm_backend.tender``)."""

    @property
    def admin_md(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def cfg(self) -> RouterVmConfig: ...

    @property
    def vms(self) -> RouterVms: ...

    def live(self, router_id: str, instance: int = 0) -> LiveNics | None: ...

    def _host_stub(self, host: str) -> vrpc.RouterVmServiceStub: ...


class NicPlugger:
    """The hot-plug half of RouterVmBackend (which it is given)."""

    def __init__(self, backend: VmHostAccess) -> None:
        self.b = backend

    def _vm(self, router_id: str, instance: int = 0) -> RouterVm:
        vm = self.b.vms.get(router_id, instance)
        if vm is None or not vm.host:
            raise LookupError(f"router {router_id} has no VM (any more)")
        return vm

    def _update(self, router_id: str, live: LiveNics, nics: list[vpb.RouterVmNic],
                instance: int = 0) -> None:
        """Ask the VM's host for exactly `nics`; remember what it then has."""
        with live.nic_lock:
            host = live.host or self._vm(router_id, instance).host
            reply = self.b._host_stub(host).UpdateRouterVmNics(
                vpb.UpdateRouterVmNicsRequest(router_id=router_id, nics=nics),
                metadata=self.b.admin_md, timeout=UPDATE_TIMEOUT)
            live.nics = list(reply.nics)

    def _have(self, router_id: str, live: LiveNics, instance: int = 0
              ) -> list[vpb.RouterVmNic]:
        if live.nics is None:
            vm = self._vm(router_id, instance)
            live.nics = list(self.b._host_stub(vm.host).GetRouterVm(
                vpb.GetRouterVmRequest(router_id=router_id), metadata=self.b.admin_md,
                timeout=10).nics)
        return list(live.nics)

    def _wanted(self, router_id: str, config: apb.RouterConfig, instance: int = 0
                ) -> list[vpb.RouterVmNic]:
        vm = self._vm(router_id, instance)
        return config_nics(config, vm.control_mac, self.b.cfg.control_vlan)

    # ---------------------------------------------------- for the reconciler

    def before_push(self, router_id: str, config: apb.RouterConfig, instance: int = 0) -> bool:
        """Plug every NIC `config` names that the VM (of that instance of a
        redundant router) lacks; False when that failed (the push waits: the
        reconciler retries, the tend loop decides whether to replace the VM)."""
        live = self.b.live(router_id, instance)
        if live is None:
            return False
        try:
            want = self._wanted(router_id, config, instance)
            have = self._have(router_id, live, instance)
            if not missing(have, want):
                return True
            log.info("router %s: hot-plugging NICs %s", router_id,
                     ", ".join(f"{n.mac}/{n.segment}" for n in want
                               if (n.mac, n.segment) not in _keys(have)))
            self._update(router_id, live, union(have, want), instance)
        except (grpc.RpcError, LookupError) as e:
            log.warning("router %s: cannot hot-plug its NICs: %s", router_id, _why(e))
            live.nics = None  # ask the host again next time
            live.nics_generation = 0  # and let the tend loop decide (replace?)
            return False
        return True

    def after_push(self, router_id: str, config: apb.RouterConfig,
                   status: apb.RouterStatus, instance: int = 0) -> None:
        """The VM applied `config`: unplug the NICs it no longer names."""
        if status.applied_generation < config.generation:
            return
        live = self.b.live(router_id, instance)
        if live is None or live.nics is None:
            return
        try:
            want = self._wanted(router_id, config, instance)
            if extra(live.nics, want):
                log.info("router %s: unplugging NICs %s", router_id, ", ".join(
                    f"{n.mac}/{n.segment}" for n in live.nics
                    if (n.mac, n.segment) not in _keys(want)))
                self._update(router_id, live, want, instance)
        except (grpc.RpcError, LookupError) as e:
            # The tend loop tries again; an extra NIC outside the router's
            # namespace carries nothing meanwhile.
            log.warning("router %s: cannot unplug its old NICs: %s", router_id, _why(e))
            live.nics = None
            live.nics_generation = 0

    # ------------------------------------------------------ for the tend loop

    def tend(self, router: Router, live: LiveNics, dom: vpb.RouterVm,
             want: list[vpb.RouterVmNic]) -> str:
        """Bring the running VM's NICs towards `want` (from the current model).
        Returns why the VM must be replaced instead ("" when it need not)."""
        live.nics = list(dom.nics)
        try:
            if missing(live.nics, want):
                self._update(router.id, live, union(live.nics, want))
        except (grpc.RpcError, LookupError) as e:
            if isinstance(e, grpc.RpcError) and e.code() in PERMANENT:
                return f"its NICs could not be hot-plugged: {_why(e)}"
            log.warning("router %s: NIC hot-plug failed, will retry: %s", router.id, _why(e))
            live.nics_generation = 0
            return ""
        try:
            if extra(live.nics, want) and router.applied_generation >= router.desired_generation:
                self._update(router.id, live, want)
        except (grpc.RpcError, LookupError) as e:
            # An unplugged NIC nobody uses is no reason to replace the VM.
            log.warning("router %s: NIC unplug failed, will retry: %s", router.id, _why(e))
            live.nics_generation = 0
        return ""


def _why(e: Exception) -> str:
    if isinstance(e, grpc.RpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e)
