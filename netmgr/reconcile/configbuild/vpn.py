"""The VPN part of a router's desired state (pure, like ``netmgr.reconcile.configbuild.router``)."""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import vpn_pb2

from netmgr.model.vpn import VpnTunnel


def add_vpn(config: pb.RouterConfig, tunnels: tuple[VpnTunnel, ...]) -> None:
    """One VpnConnection per tunnel, by connection ID (a stable order)."""
    config.vpn_connections.extend(
        vpn_pb2.VpnConnection(
            id=t.connection_id, local_address=t.local_address, peer_address=t.peer_address,
            local_cidrs=list(t.local_cidrs), peer_cidrs=list(t.peer_cidrs), psk=t.psk,
            ike_version=t.ike_version, ike_proposals=list(t.ike_proposals),
            esp_proposals=list(t.esp_proposals), ike_lifetime_seconds=t.ike_lifetime,
            esp_lifetime_seconds=t.esp_lifetime, dpd_delay_seconds=t.dpd_delay,
            dpd_timeout_seconds=t.dpd_timeout, force_encapsulation=t.force_encap,
            passive=t.passive, reset_serial=t.reset_serial)
        for t in sorted(tunnels, key=lambda t: t.connection_id))
