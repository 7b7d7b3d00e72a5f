"""A redundant router: its two instances (``netmgr.store.redundancy``)."""

from __future__ import annotations

import dataclasses

# The preferred master's VRRP priority and the other's; an agent that stops
# answering costs an instance 150 (router/services/keepalived.py), below the other.
PREFERRED_PRIORITY = 200
OTHER_PRIORITY = 100
ROLES = ("MASTER", "BACKUP", "FAULT")


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceReport:
    """What an instance's agent last reported (or that it was not reached)."""

    instance: int
    host: str
    role: str = ""
    healthy: bool = False
    since: float = 0.0  # unix time of its last VRRP transition
    priority: int = 0
    demoted: bool = False
    reachable: bool = True
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Redundancy:
    router_id: str
    hosts: tuple[str, str]  # instance 0's (the router's host), instance 1's
    sync_vlan: int
    virtual_router_id: int
    preferred: int
    instances: tuple[InstanceReport, ...] = ()
    events: tuple[str, ...] = ()

    def priority(self, instance: int) -> int:
        return PREFERRED_PRIORITY if instance == self.preferred else OTHER_PRIORITY

    def report(self, instance: int) -> InstanceReport:
        for r in self.instances:
            if r.instance == instance:
                return r
        return InstanceReport(instance, self.hosts[instance], priority=self.priority(instance))

    def master(self) -> int | None:
        """The instance that reported MASTER (the only one), if any."""
        masters = [r.instance for r in self.instances if r.role == "MASTER" and not r.demoted]
        return masters[0] if len(masters) == 1 else None
