"""What the reconciler needs from the store, and nothing more.

``netmgr.store.facade.Store`` (and ``netmgr.store.vpn.VpnStore``) provide
these; the reconciler's unit tests provide in-memory fakes annotated with the
same Protocols, so mypy run over those tests finds a fake that drifted from
what the reconciler calls (the lint run, ``mypy common aio netmgr router
compute bench``, does not cover tests/).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from netmgr.model.core import PlacedRouter, Router, RouterReport, RouterSnapshot, ServiceHealth
from netmgr.model.hosts import Host
from netmgr.model.security_groups import HostFilterSnapshot

# (kind, id) of an object a router reports on, e.g. ("portforward", "<id>").
ObjectRef = tuple[str, str]
# Load balancer ID -> port ID -> [status, last check].
LbHealth = Mapping[str, Mapping[str, list[str]]]


class DeltaStore(Protocol):
    """The edge-delta path: one small read and one small write per change."""

    def router_head(self, router_id: str) -> tuple[str, int, str]:
        """(host, desired generation, backend); NotFound if the router is gone."""
        ...

    def network_cidr(self, network_id: str) -> str: ...

    def guest_metadata_parts(self, port_id: str) -> tuple[str, str, tuple[str, str] | None]:
        """(zone name, public IP, key pair (name, public key)) of a port."""
        ...

    def record_edge_delta_applied(self, router_id: str, applied_generation: int) -> None: ...


class RouterStore(Protocol):
    """Routers and their desired state (the VM backend needs no more)."""

    def list_routers_all(self) -> Sequence[Router]: ...

    def placed_routers(self) -> Sequence[PlacedRouter]:
        """Every router's host, backend and desired generation (a resync's read)."""
        ...

    def routers_behind(self) -> Sequence[str]:
        """The routers whose last recorded applied generation is older than
        their desired one."""
        ...

    def router_snapshot(self, router_id: str) -> RouterSnapshot:
        """Everything the router serves, read consistently; NotFound if gone."""
        ...

    def mark_router_unreachable(self, router_id: str, error: str) -> None: ...

    def mark_routers_unreachable(self, router_ids: Sequence[str], error: str) -> None: ...


class ReconcilerStore(RouterStore, DeltaStore, Protocol):
    """Also where the agents' reports go."""

    def record_router_status(
        self,
        router_id: str,
        *,
        applied_generation: int,
        services: Sequence[ServiceHealth],
        last_error: str,
        port_errors: Mapping[str, str],
        reachable: bool,
    ) -> None: ...

    def record_router_statuses(self, reports: Sequence[RouterReport]) -> None: ...

    def record_edge_status(self, router_id: str, errors: Mapping[ObjectRef, str],
                           lb_health: LbHealth | None = None) -> None:
        """Errors of the router's edge objects; objects not named are cleared."""
        ...

    def record_edge_statuses(
            self, reports: Sequence[tuple[str, Mapping[ObjectRef, str], LbHealth | None]]
    ) -> None:
        """``record_edge_status`` of several routers, in one transaction."""
        ...


class VpnStatusStore(Protocol):
    """Where the VPN part of a router's report goes (``netmgr.store.vpn.VpnStore``)."""

    def has_connections(self, router_id: str) -> bool: ...

    def routers_with_connections(self, router_ids: Collection[str]) -> set[str]:
        """Those of these routers whose network or VPC has a VPN connection."""
        ...

    def record_status(self, router_id: str, errors: Mapping[str, str],
                      sa_status: Mapping[str, dict[str, Any]]) -> None:
        """Connection ID -> error, and connection ID -> its SA status (as a dict)."""
        ...


class RouterHostsView(Protocol):
    """Registered router hosts (``netmgr.store.hosts.HostStore``)."""

    def router_hosts(self) -> dict[str, str]:
        """Name -> agent address of each router host not DOWN."""
        ...

    def expire(self, grace: dt.timedelta) -> list[str]:
        """Hosts silent past ``grace`` DOWN, their routers moved: those router IDs."""
        ...


class ComputeHostsView(Protocol):
    """Registered hosts and their agents' addresses (``netmgr.store.hosts.HostStore``)."""

    def list(self) -> Sequence[Host]: ...


class PortFilterView(Protocol):
    """Ports' filters per compute host (``netmgr.store.security_groups.SecurityGroupStore``)."""

    def bound_hosts(self) -> Sequence[str]:
        """Every host some port is bound to."""
        ...

    def host_filters(self, host: str) -> HostFilterSnapshot: ...


class PortFilterStore(Protocol):
    """What the port filter pusher reads (``netmgr.store.facade.Store``)."""

    @property
    def hosts(self) -> ComputeHostsView: ...

    @property
    def security_groups(self) -> PortFilterView: ...


class ShardLeases(Protocol):
    """Which routers this replica pushes, and with which lease epoch
    (``netmgr.store.leases``: ``LocalLeases``, ``AdvisoryLeases``)."""

    def start(self, on_gained: Callable[[set[int]], None]) -> None:
        """Take the first leases; ``on_gained(shards)`` hears of each later gain."""
        ...

    def stop(self) -> None: ...

    def epoch(self, router_id: str) -> int | None:
        """The epoch of the lease on the router's shard; None if another replica's."""
        ...

    def confirm(self) -> bool:
        """The leases are still held (the lock session answers): safe to push now."""
        ...

    def held(self) -> dict[int, int]: ...


class Unfenced:
    """Every router, epoch 0: a reconciler on its own (tests, fakes)."""

    def start(self, on_gained: Callable[[set[int]], None]) -> None:
        pass

    def stop(self) -> None:
        pass

    def epoch(self, router_id: str) -> int | None:
        return 0

    def confirm(self) -> bool:
        return True

    def held(self) -> dict[int, int]:
        return {}
