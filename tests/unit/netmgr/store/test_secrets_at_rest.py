"""VPN pre-shared keys at rest: sealed in the database (SQLite and
PostgreSQL), no clear copy in any file of the database (a deleted customer
gateway's key included), the database files 0600; the key that seals them
is a 0600 file made at first start, and a database sealed with another key
is refused at start rather than read as garbage."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.netmgr_cloud import Cloud, start_cloud

KEPT = "kept-Secret.0123456789abcdef"
GONE = "gone-Secret.fedcba9876543210"


def customer_gateway(c: Cloud, md: Any, psk: str, peer: str) -> vpb.CustomerGateway:
    return vrpc.VpnServiceStub(c.channel).CreateCustomerGateway(
        vpb.CreateCustomerGatewayRequest(customer_gateway=vpb.CustomerGateway(
            name=f"p{peer.rsplit('.', 1)[1]}", peer_address=peer,
            peer_cidrs=["172.16.1.0/24"], psk=psk, ike_version=vpb.IKE_VERSION_2)),
        metadata=md)


def vpn_world(c: Cloud) -> str:
    """A connection using KEPT, and a customer gateway with GONE created and
    deleted; the router ID."""
    _, api = c.new_tenant("acme")
    vpn = vrpc.VpnServiceStub(c.channel)
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                        cidr="10.1.0.0/24")))
    gw = vpn.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=net.id)), metadata=api.metadata)
    kept = customer_gateway(c, api.metadata, KEPT, "192.0.2.2")
    vpn.CreateVpnConnection(vpb.CreateVpnConnectionRequest(vpn_connection=vpb.VpnConnection(
        vpn_gateway_id=gw.id, customer_gateway_id=kept.id)), metadata=api.metadata)
    gone = customer_gateway(c, api.metadata, GONE, "192.0.2.3")
    vpn.DeleteCustomerGateway(vpb.DeleteCustomerGatewayRequest(id=gone.id),
                              metadata=api.metadata)
    return net.router_id


def test_the_key_column_is_ciphertext_and_the_router_still_gets_the_key(cloud: Cloud) -> None:
    router_id = vpn_world(cloud)
    rows = cloud.sql("SELECT * FROM customer_gateways")
    assert len(rows) == 1
    assert KEPT not in repr(rows)
    [conn] = build_router_config(cloud.store.router_snapshot(router_id)).vpn_connections
    assert conn.psk == KEPT


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_clear_key_in_any_database_file_and_every_file_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cloud = start_cloud(state / "netmgr.db")
    try:
        vpn_world(cloud)
        names = {p.name for p in _files(state)}
        assert {"netmgr.db", "netmgr.db-wal"} <= names, names
        for path in _files(state):
            data = path.read_bytes()
            for key in (KEPT, GONE):
                assert key.encode() not in data, f"{key} in clear in {path}"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    finally:
        cloud.stop()
    for path in _files(state):
        assert KEPT.encode() not in path.read_bytes(), path


def test_the_sealing_key_is_a_0600_file_made_once(tmp_path: Path) -> None:
    from netmgr.store.secrets import SecretBox

    path = tmp_path / "etc" / "secrets.key"
    box = SecretBox.from_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = SecretBox.from_key_file(path)
    sealed = box.seal("a secret", "row-1")
    assert "a secret" not in sealed
    assert again.open(sealed, "row-1") == "a secret"
    # Bound to its row: a sealed value copied onto another row does not open.
    with pytest.raises(ValueError, match="row-2"):
        again.open(sealed, "row-2")
    os.chmod(path, 0o644)  # loosened by hand: tightened again, the key kept
    assert SecretBox.from_key_file(path).open(sealed, "row-1") == "a secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_database_sealed_with_another_key_is_refused_at_start(tmp_path: Path) -> None:
    from netmgr.store.facade import Store
    from netmgr.store.secrets import SecretBox, SecretsKeyMismatch

    db = tmp_path / "netmgr.db"
    cloud = start_cloud(db)
    try:
        vpn_world(cloud)
    finally:
        cloud.stop()
    with pytest.raises(SecretsKeyMismatch, match="secrets key"):
        Store(f"sqlite:///{db}", secrets=SecretBox.from_key_file(tmp_path / "other.key"))
