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


def test_ipv6_selectors_verify_per_family_and_fill_the_v6_sets() -> None:
    from router.services.nftables import vpn as nft_vpn
    from tests.lib.routerconfigs import render

    cfg = apb.RouterConfig(router_id="r", interfaces=[apb.Interface(
        name="pub0", role=apb.INTERFACE_ROLE_PUBLIC, addresses=["203.0.113.10/24"])])
    good = dict(id="c1", local_address="203.0.113.10", peer_address="192.0.2.2",
                local_cidrs=["10.0.0.0/24", "2001:db8:10::/64"],
                peer_cidrs=["172.16.1.0/24", "2001:db8:1601::/64"], psk=PSK, ike_version=2)
    cfg.vpn_connections.append(rvpb.VpnConnection(**good))
    strongswan.verify(cfg)
    # Mixed families in one IKEv2 child; the outer addresses stay IPv4.
    conn = strongswan.conn_definition(cfg.vpn_connections[0])
    [child] = conn["children"].values()
    assert child["local_ts"] == ["10.0.0.0/24", "2001:db8:10::/64"]
    assert child["remote_ts"] == ["172.16.1.0/24", "2001:db8:1601::/64"]
    # IKEv1: one child per pair of one family (a v4 to v6 pair selects nothing).
    cfg.vpn_connections[0].ike_version = 1
    conn = strongswan.conn_definition(cfg.vpn_connections[0])
    assert sorted((c["local_ts"][0], c["remote_ts"][0]) for c in conn["children"].values()) == [
        ("10.0.0.0/24", "172.16.1.0/24"), ("2001:db8:10::/64", "2001:db8:1601::/64")]
    ctx = nft_vpn.context(cfg, "")
    assert (ctx["vpn_local_nets"], ctx["vpn_peer_nets"]) == (["10.0.0.0/24"], ["172.16.1.0/24"])
    assert (ctx["vpn_local_nets6"], ctx["vpn_peer_nets6"]) == (["2001:db8:10::/64"],
                                                               ["2001:db8:1601::/64"])
    for change, words in ((dict(peer_cidrs=["2001:db8:10::/56"]), "overlaps"),
                          (dict(peer_cidrs=["fe80::/64"]), "not a unicast network"),
                          (dict(peer_cidrs=["ff05::/16"]), "not a unicast network"),
                          (dict(peer_cidrs=["2001:db8:1601::1/64"]), "not an IP network"),
                          (dict(local_cidrs=["10.0.0.0/24"]), "no local IPv6 network"),
                          (dict(peer_address="2001:db8::2"), "not an IPv4 address")):
        bad = apb.RouterConfig()
        bad.CopyFrom(cfg)
        del bad.vpn_connections[:]
        bad.vpn_connections.append(rvpb.VpnConnection(**{**good, **change}))
        with pytest.raises(ConfigError) as e:
            strongswan.verify(bad)
        assert words in str(e.value), (change, str(e.value))
        assert e.value.object_id == "c1"
    from tests.lib.routerconfigs import good_config

    full = good_config()
    full.interfaces[0].addresses[:] = ["203.0.113.10/24"]
    full.vpn_connections.append(rvpb.VpnConnection(**good))
    text = render("nftables", full)["cloudnet.nft"]
    assert "elements = { 2001:db8:1601::/64 }" in text
    assert "ip6 saddr @vpn_local_nets6 ip6 daddr @vpn_peer_nets6" in text
    assert "ip6 daddr @vpn_peer_nets6 oifname @public_ifaces rt ipsec missing" in text
