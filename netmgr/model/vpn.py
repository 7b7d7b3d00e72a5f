"""Domain objects of the site-to-site VPN (frozen values, like ``netmgr.model.core``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from netmgr.model.core import Status, WithStatus


@dataclasses.dataclass(frozen=True, slots=True)
class VpnGateway(WithStatus):
    status: Status
    vpc_id: str
    network_id: str
    public_ip: str
    local_cidrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class CustomerGateway:
    id: str
    tenant_id: str
    name: str
    peer_address: str
    peer_cidrs: tuple[str, ...]
    ike_version: int
    ike_proposals: tuple[str, ...]
    esp_proposals: tuple[str, ...]
    ike_lifetime: int
    esp_lifetime: int
    dpd_delay: int
    dpd_timeout: int
    force_encap: bool
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class VpnConnection(WithStatus):
    status: Status
    vpn_gateway_id: str
    customer_gateway_id: str
    vpc_id: str
    network_id: str
    passive: bool
    # The router's last report (router.v1.VpnConnectionStatus as a dict).
    sa_status: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class VpnTunnel:
    """What the router needs of one connection (``netmgr.reconcile.configbuild.vpn``)."""

    connection_id: str
    local_address: str
    peer_address: str
    local_cidrs: tuple[str, ...]
    peer_cidrs: tuple[str, ...]
    psk: str
    ike_version: int
    ike_proposals: tuple[str, ...]
    esp_proposals: tuple[str, ...]
    ike_lifetime: int
    esp_lifetime: int
    dpd_delay: int
    dpd_timeout: int
    force_encap: bool
    passive: bool
    reset_serial: int
