"""Compute hosts (frozen values, like ``netmgr.model.core``): what a compute
agent registered, and what it may register (``HostSpec``, ``check_host``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from common.grpc_errors import InvalidArgument, Violation

FABRICS = ("ovs", "vxlan", "linuxbridge")
ROLES = ("compute", "router")
STATES = ("unknown", "up", "down")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ADDRESS = re.compile(r"(unix://)?[A-Za-z0-9._:/\[\]-]{1,255}")
MAX_VCPUS = 4096
MAX_MEMORY_MIB = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    id: str
    name: str
    address: str
    fabric: str
    vcpus: int
    memory_mib: int
    created_at: dt.datetime
    updated_at: dt.datetime
    role: str = "compute"
    state: str = "unknown"
    heartbeat_at: dt.datetime | None = None
    router_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class HostSpec:
    """A host as its compute agent (or router agent: role "router") registers it."""

    name: str
    address: str
    fabric: str
    vcpus: int
    memory_mib: int
    role: str = "compute"


def check_host(h: HostSpec, prefix: str = "host") -> HostSpec:
    bad: list[Violation] = []
    if not _LABEL.fullmatch(h.name):
        bad.append(Violation(f"{prefix}.name", "must be an RFC 1123 label (a-z, 0-9, -)"))
    if not _ADDRESS.fullmatch(h.address):
        bad.append(Violation(f"{prefix}.address", "must be host:port or unix:///path"))
    if h.fabric not in FABRICS:
        bad.append(Violation(f"{prefix}.fabric", f"must be one of {', '.join(FABRICS)}"))
    if not 1 <= h.vcpus <= MAX_VCPUS:
        bad.append(Violation(f"{prefix}.vcpus", f"must be 1-{MAX_VCPUS}"))
    if h.role not in ROLES:
        bad.append(Violation(f"{prefix}.role", f"must be one of {', '.join(ROLES)}"))
    if not 1 <= h.memory_mib <= MAX_MEMORY_MIB:
        bad.append(Violation(f"{prefix}.memory_mib", f"must be 1-{MAX_MEMORY_MIB}"))
    if bad:
        raise InvalidArgument(bad)
    return h
