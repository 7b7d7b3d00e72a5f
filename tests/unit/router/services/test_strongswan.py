"""strongSwan's part of the router: verify names the connection (and never
shows the PSK); render is pure, and IKEv1 splits children per peer CIDR."""

from __future__ import annotations

import pytest
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import vpn_pb2 as rvpb

from router.errors import ConfigError
from router.services import strongswan
from router.services.base import RouterPaths

PSK = "0123456789abcdef-Key"


def test_router_verify_names_the_connection() -> None:
    cfg = apb.RouterConfig(router_id="r", interfaces=[apb.Interface(
        name="pub0", role=apb.INTERFACE_ROLE_PUBLIC, addresses=["203.0.113.10/24"])])
    good = dict(id="c1", local_address="203.0.113.10", peer_address="192.0.2.2",
                local_cidrs=["10.0.0.0/24"], peer_cidrs=["172.16.1.0/24"], psk=PSK,
                ike_version=2)
    cfg.vpn_connections.append(rvpb.VpnConnection(**good))
    strongswan.verify(cfg)
    for change, words in ((dict(psk="x" * 8), "pre-shared key"),
                          (dict(peer_cidrs=["10.0.0.0/16"]), "overlaps"),
                          (dict(local_address="203.0.113.99"), "not a public address"),
                          (dict(esp_proposals=["des-md5"]), "ESP proposal"),
                          (dict(ike_version=3), "IKE version")):
        bad = apb.RouterConfig()
        bad.CopyFrom(cfg)
        del bad.vpn_connections[:]
        bad.vpn_connections.append(rvpb.VpnConnection(**{**good, **change}))
        with pytest.raises(ConfigError) as e:
            strongswan.verify(bad)
        assert words in str(e.value)
        assert e.value.object_id == "c1"
        assert PSK not in str(e.value)


def test_render_is_pure_and_ikev1_splits_children() -> None:
    cfg = apb.RouterConfig(router_id="r")
    cfg.vpn_connections.append(rvpb.VpnConnection(
        id="c1", local_address="203.0.113.10", peer_address="192.0.2.2",
        local_cidrs=["10.0.0.0/24"], peer_cidrs=["172.16.1.0/24", "172.16.2.0/24"], psk=PSK,
        ike_version=1))
    paths = RouterPaths("/var/lib/cloudnet/agent/routers/r")
    a, b = strongswan.render(cfg, paths, "kernel"), strongswan.render(cfg, paths, "kernel")
    assert a == b
    assert PSK not in a["strongswan.conf"]
    conn = strongswan.conn_definition(cfg.vpn_connections[0])
    assert [c["remote_ts"] for c in conn["children"].values()] == [["172.16.1.0/24"],
                                                                   ["172.16.2.0/24"]]
    cfg.vpn_connections[0].ike_version = 2
    conn = strongswan.conn_definition(cfg.vpn_connections[0])
    assert [c["remote_ts"] for c in conn["children"].values()] == [["172.16.1.0/24",
                                                                    "172.16.2.0/24"]]


def test_a_withheld_key_verifies_and_is_never_in_what_is_written() -> None:
    cfg = apb.RouterConfig(router_id="r", interfaces=[apb.Interface(
        name="pub0", role=apb.INTERFACE_ROLE_PUBLIC, addresses=["203.0.113.10/24"])])
    conn = rvpb.VpnConnection(id="c1", local_address="203.0.113.10", peer_address="192.0.2.2",
                              local_cidrs=["10.0.0.0/24"], peer_cidrs=["172.16.1.0/24"],
                              psk=PSK, ike_version=2)
    cfg.vpn_connections.append(conn)
    paths = RouterPaths("/var/lib/cloudnet/agent/routers/r")
    with_key = strongswan.render(cfg, paths, "kernel")
    cfg.vpn_connections[0].psk = ""  # as restored from config.pb
    strongswan.verify(cfg)
    without = strongswan.render(cfg, paths, "kernel")
    # The definition digest kept on disk (loaded.json) is the same with or
    # without the key, and tells nothing of it.
    import json

    specs = [json.loads(r["conn:c1"]) for r in (with_key, without)]
    assert strongswan._digest(specs[0]) == strongswan._digest(specs[1])
    assert PSK not in strongswan._digest(specs[0])
    assert specs[0]["psk"] == PSK
