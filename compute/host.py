"""This compute host: its settings, and its fabric as VMs see it.

Shared by the guest VMs (compute.agent) and the router VMs (compute.router_vm)
of the host.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Protocol


class VmFabric(Protocol):
    """What VMs need of the host fabric (common.fabric.ovs.OvsFabric and
    common.fabric.vxlan.VxlanFabric provide it): a libvirt <interface> that
    puts a tap on a segment, and the tap's upkeep."""

    def setup(self) -> None: ...
    def vm_interface_xml(self, tap: str, segment: int, mac: str) -> str: ...
    def harden_tap(self, tap: str) -> None: ...
    def release_tap(self, tap: str) -> None: ...
    def taps(self, prefix: str = "vt") -> set[str]: ...


@dataclasses.dataclass
class HostConfig:
    name: str
    state_dir: str
    netmgr: str
    admin_token: str
    fabric_kind: str
    fabric: VmFabric
    images: dict[str, str]
    address: str = ""
    accel: str = "auto"
    vcpus: int = 0
    memory_mib: int = 0
    domain_prefix: str = ""
    # Router VMs get the fault channel (compute.libvirt_driver.FAULT_PORT):
    # tests only, never on a production host.
    fault_channel: bool = False

    def __post_init__(self) -> None:
        self.vcpus = self.vcpus or (os.cpu_count() or 1)
        if not self.memory_mib:
            with open("/proc/meminfo") as f:
                kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            self.memory_mib = kib // 1024
        self.domain_prefix = self.domain_prefix or f"cn-{self.name}-"
