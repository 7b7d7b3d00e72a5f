"""Router VM NICs: validation, and hot-plug into a running domain
(RouterVmService.UpdateRouterVmNics, compute.router_vm.service).

netmgr sends the whole list of NICs it wants (a VPC tier added or removed
changes it); the difference with the domain is applied with libvirt
attach/detach, each live and in the persistent definition (AFFECT_LIVE |
AFFECT_CONFIG), so a restart of the domain keeps the NICs. What is plugged
is read from the domain's XML (live and inactive), never assumed from the
record: a call cut half-way (a guest slow to release a NIC) is finished by
the next one, and the same list twice touches nothing.

Inside the VM the agent finds NICs by MAC (router.agent.appliance), so the PCI
slot a hot-plugged NIC lands in does not matter. Taps are named by MAC, so a
NIC keeps its tap whatever the order of the list.
"""

from __future__ import annotations

import dataclasses
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

import libvirt
from cloudnet.compute.v1 import router_vm_pb2 as pb

from common.grpc_errors import InvalidArgument, Unavailable, Violation
from common.request_checks import uuid_problem
from compute import libvirt_driver as lv
from compute.host import VmFabric

ROLES = ("control", "public", "guest")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# Control, public, and up to 14 tiers or private gateways: the VM's PCI bus
# (i440fx, 32 slots) has room for them.
MAX_NICS = 16
# Under TCG a guest takes seconds to answer an ACPI eject; a loaded host more.
DETACH_TIMEOUT = 60.0
LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG


def check_nics(nics: Sequence[pb.RouterVmNic], field: str) -> list[Violation]:
    """Violations of a NIC list (``field``: its path in the request)."""
    bad: list[Violation] = []
    if not 1 <= len(nics) <= MAX_NICS:
        bad.append(Violation(field, f"1-{MAX_NICS} NICs"))
    macs: set[str] = set()
    for i, nic in enumerate(nics):
        if not MAC_RE.fullmatch(nic.mac) or nic.mac in macs:
            bad.append(Violation(f"{field}[{i}].mac", "must be a unique lower-case MAC"))
        macs.add(nic.mac)
        if nic.segment > 4094:
            bad.append(Violation(f"{field}[{i}].segment", "must be 0-4094"))
        if nic.role not in ROLES:
            bad.append(Violation(f"{field}[{i}].role", f"must be one of {', '.join(ROLES)}"))
    return bad


def check_update(request: pb.UpdateRouterVmNicsRequest, current: Sequence[pb.RouterVmNic]
                 ) -> None:
    """An UpdateRouterVmNics request against the VM's recorded NICs: the list
    must be valid and keep the control NIC (the VM's boot identity names its MAC)."""
    bad = check_nics(request.nics, "nics")
    control = [n.mac for n in current if n.role == "control"]
    wanted = [i for i, n in enumerate(request.nics) if n.role == "control"]
    if len(wanted) != 1:
        bad.append(Violation("nics", "exactly one NIC must have the role control"))
    elif control and request.nics[wanted[0]].mac != control[0]:
        bad.append(Violation(f"nics[{wanted[0]}].mac", f"the control NIC is {control[0]}: it "
                             "cannot change on a running VM (replace the VM)"))
    elif control and request.nics[wanted[0]].segment != current[
            [n.mac for n in current].index(control[0])].segment:
        bad.append(Violation(f"nics[{wanted[0]}].segment",
                             "the control NIC's segment cannot change on a running VM"))
    if bad:
        raise InvalidArgument(bad)


def check_router_id(router_id: str, field: str = "router_id") -> None:
    if (problem := uuid_problem(router_id)) is not None:
        raise InvalidArgument.one(field, problem)


@dataclasses.dataclass(frozen=True)
class Plan:
    detach: tuple[str, ...]  # MACs
    attach: tuple[pb.RouterVmNic, ...]

    def __bool__(self) -> bool:
        return bool(self.detach or self.attach)


def plan(present: dict[str, int | None], want: Sequence[pb.RouterVmNic]) -> Plan:
    """What to unplug and plug so that the NICs `present` (MAC → segment, None
    when unknown) become `want`. A NIC on another segment goes and comes back."""
    wanted = {n.mac: n for n in want}
    detach = tuple(mac for mac, seg in present.items()
                   if mac not in wanted or seg != wanted[mac].segment)
    attach = tuple(n for n in want if n.mac not in present or n.mac in detach)
    return Plan(detach, attach)


def tap(router_id: str, mac: str) -> str:
    return lv.tap_name(f"r-{router_id}", mac)


def interfaces(dom: libvirt.virDomain, flags: int = 0) -> dict[str, ET.Element]:
    """MAC → <interface> element of the domain's XML (live, or XML_INACTIVE)."""
    root = ET.fromstring(dom.XMLDesc(flags))
    out = {}
    for iface in root.findall("devices/interface"):
        mac = iface.find("mac")
        if mac is not None:
            out[mac.get("address", "").lower()] = iface
    return out


def apply(dom: libvirt.virDomain, router_id: str, fabric: VmFabric,
          state: dict[str, pb.RouterVmNic],
          want: Sequence[pb.RouterVmNic]) -> None:
    """Make the running domain's NICs `want` (see the module's docstring).
    `state`: MAC → NIC of the recorded NICs, kept up to date step by step (the
    caller records it, also when a step fails); `fabric`: the host's."""
    wanted = {n.mac for n in want}
    live = interfaces(dom)
    for mac in set(state) - set(live):
        del state[mac]  # not plugged (a call cut half-way)
    persistent = interfaces(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
    todo = plan({mac: (state[mac].segment if mac in state else None) for mac in live}, want)
    for mac in todo.detach:
        _detach(dom, mac, live[mac], persistent.pop(mac, None))
        state.pop(mac, None)
        fabric.release_tap(tap(router_id, mac))
    # Only in the definition (a call cut after a live detach): not wanted.
    for mac, iface in persistent.items():
        if mac not in live and mac not in wanted:
            dom.detachDeviceFlags(ET.tostring(iface, "unicode"), CONFIG)
    for nic in todo.attach:
        xml = fabric.vm_interface_xml(tap(router_id, nic.mac), nic.segment, nic.mac)
        dom.attachDeviceFlags(xml, LIVE | (0 if nic.mac in persistent else CONFIG))
        state[nic.mac] = nic
        fabric.harden_tap(tap(router_id, nic.mac))
    # Plugged live but missing from the definition (a call cut half-way).
    persistent = interfaces(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
    for nic in want:
        if nic.mac not in persistent:
            dom.attachDeviceFlags(
                fabric.vm_interface_xml(tap(router_id, nic.mac), nic.segment, nic.mac), CONFIG)
    for nic in want:  # a role is only a label: taken as asked
        if nic.mac in state and state[nic.mac].segment == nic.segment:
            state[nic.mac] = nic


def ordered(state: dict[str, pb.RouterVmNic], want: Sequence[pb.RouterVmNic]
            ) -> list[pb.RouterVmNic]:
    """The NICs of `state` in `want`'s order (then any other), for the record."""
    out = [state[n.mac] for n in want if n.mac in state]
    return out + [n for mac, n in state.items() if mac not in {o.mac for o in out}]


def _detach(dom: libvirt.virDomain, mac: str, live: ET.Element,
            persistent: ET.Element | None) -> None:
    """Unplug one NIC live (the guest must release it: wait) and from the definition."""
    refused = ""
    try:
        dom.detachDeviceFlags(ET.tostring(live, "unicode"), LIVE)
    except libvirt.libvirtError as e:
        # Most likely a repeated call while the guest is still releasing the
        # NIC (an unplug already under way): the wait below decides.
        refused = f" (libvirt: {e.get_error_message()})"
    deadline = time.monotonic() + DETACH_TIMEOUT
    while mac in interfaces(dom):
        if time.monotonic() > deadline:
            raise Unavailable(f"the guest did not release NIC {mac} within "
                              f"{DETACH_TIMEOUT:.0f} s{refused}; repeat the call")
        time.sleep(0.2)
    if persistent is not None:
        dom.detachDeviceFlags(ET.tostring(persistent, "unicode"), CONFIG)


def key(nics: Iterable[pb.RouterVmNic]) -> list[tuple[str, int, str]]:
    return [(n.mac, n.segment, n.role) for n in nics]
