"""Router services: one module per service, each with the same contract.

    NAME                       "interfaces", "nftables", "dnsmasq"
    verify(cfg) -> None        raise ConfigError naming the object; no side effects
    render(cfg) -> {rel: text} pure: relative path -> file content
    check(ctx, rendered)       the daemon's own validator (nft -c, dnsmasq --test)
    apply(ctx, cfg, rendered, previous)   make it so (idempotent)
    health(ctx) -> ServiceStatus
    remove(ctx, keep_leases)   tear the service down for DeleteRouter

The runtime calls apply() only when a service's rendered output differs from
what it last applied, so an unchanged config touches nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from common.fabric.base import Fabric


@dataclass(frozen=True)
class Context:
    """Where one router lives: its namespace, its files, its fabric."""

    router_id: str
    netns: str
    state_dir: str  # <agent state dir>/routers/<router_id>
    fabric: Fabric
    dnsmasq_user: str = "dnsmasq"

    def path(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)
