"""Port security in the router's table: one element per port in the inet
table's ``port_sec`` and the arp table's ``port_arp``; a port added, changed
or deleted is an element update of those two sets, never a table reload."""

from __future__ import annotations

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ConfigError
from router.services.nftables import port_security
from router.services.nftables.service import RULESET, SKELETON, NftablesService
from router.services.nftables.service import verify as nft_verify
from tests.lib.routerconfigs import HOST, PATHS, good_config


def render(cfg: pb.RouterConfig) -> tuple[dict[str, str], dict]:
    svc = NftablesService(HOST)
    rendered = svc.render(cfg, PATHS)
    return rendered, svc._elements(rendered) or {}


def test_every_port_is_one_element_of_each_set() -> None:
    rendered, elements = render(good_config())
    want = {'"g-net1" . 02:aa:00:00:00:11 . 10.10.0.11': ("", "cn:port:p1"),
            '"g-net1" . 02:aa:00:00:00:12 . 10.10.0.12': ("", "cn:port:p2")}
    assert elements["port_sec"] == want
    assert elements["port_arp"] == want
    text = rendered[RULESET]
    assert "add element arp cloudnet port_arp {" in text
    assert "add element inet cloudnet port_sec {" in text
    # The guard: before conntrack, on guest interfaces, guest sources only.
    guard = next(line.strip() for line in text.splitlines() if "cn:port-spoof" in line)
    assert guard.startswith("iifname @guest_ifaces ip saddr @guest_nets iifname . ether saddr"
                            " . ip saddr != @port_sec counter drop")
    assert "hook prerouting priority raw" in text.split("chain port_guard", 1)[1][:200]
    assert "iifname . arp saddr ether . arp saddr ip != @port_arp counter drop" in text


def test_a_port_change_is_an_element_update_of_the_two_sets() -> None:
    before = good_config()
    after = good_config()
    after.guest_networks[0].hosts[1].mac = "02:aa:00:00:00:99"  # p2's MAC changed
    after.guest_networks[0].hosts.add(port_id="p3", mac="02:aa:00:00:00:13", ip="10.10.0.13",
                                      hostname="vm3")
    del after.guest_networks[0].hosts[0]  # p1 deleted
    r1, e1 = render(before)
    r2, e2 = render(after)
    assert r1[SKELETON] == r2[SKELETON]  # so the service takes the element path
    from router.services.nftables import edge as nft_edge

    cmds = nft_edge.commands("inet", "cloudnet", e1, e2, port_security.SET_TABLES)
    lines = cmds.splitlines()
    assert len(lines) == 4, cmds  # one delete and one add per set
    assert sorted(line.split(" {")[0] for line in lines) == [
        "add element arp cloudnet port_arp", "add element inet cloudnet port_sec",
        "delete element arp cloudnet port_arp", "delete element inet cloudnet port_sec"]
    for line in lines:
        if line.startswith("delete"):
            assert "10.10.0.11" in line
            assert "02:aa:00:00:00:12" in line
        else:
            assert "02:aa:00:00:00:99 . 10.10.0.12" in line
            assert "02:aa:00:00:00:13 . 10.10.0.13" in line


def test_a_bad_port_mac_is_refused_naming_the_port() -> None:
    cfg = good_config()
    cfg.guest_networks[0].hosts[0].mac = '02:aa:00:00:00:11" } flush ruleset'
    with pytest.raises(ConfigError) as e:
        nft_verify(cfg)
    assert (e.value.kind, e.value.object_id) == ("port", "p1")
