"""A redundant router's instance: what keepalived and conntrackd are given,
and what the agent refuses before anything is touched."""

from __future__ import annotations

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ConfigError
from router.lib import templating
from router.runtime import verify
from router.services import conntrackd, keepalived
from router.services.base import RedundancyRole
from router.services.registry import router_services
from tests.lib.routerconfigs import HOST, edge_config, good_config, redundant, render


def test_keepalived_moves_every_address_and_route_together() -> None:
    cfg = redundant(edge_config(), 0)
    text = render("keepalived", cfg)["keepalived.conf"]
    assert "vrrp_version 3" in text
    assert "advert_int 0.20" in text
    # One instance: the guest gateway, the source-NAT address and the public IP.
    assert text.count("vrrp_instance ") == 1
    for vip in ("10.10.0.1/24 dev g-net1", "203.0.113.10/24 dev pub0",
                "203.0.113.20/32 dev pub0", "0.0.0.0/0 via 203.0.113.1 dev pub0"):
        assert vip in text
    # Unicast on the sync link; the uplink and the guest link tracked.
    assert "interface sync0" in text
    assert "unicast_src_ip 169.254.0.1" in text
    assert "169.254.0.2" in text
    assert "\t\tpub0\n" in text
    assert "\t\tg-net1\n" in text
    assert "priority 200" in text
    assert "state BACKUP" in text
    backup = render("keepalived", redundant(edge_config(), 1))["keepalived.conf"]
    assert "priority 100" in backup
    assert "state BACKUP" in backup
    assert "unicast_src_ip 169.254.0.2" in backup


def test_conntrackd_syncs_over_the_sync_link() -> None:
    text = render("conntrackd", redundant(good_config(), 1))["conntrackd.conf"]
    assert "Mode FTFW" in text
    assert "IPv4_address 169.254.0.2" in text
    assert "IPv4_Destination_Address 169.254.0.1" in text
    assert "Interface sync0" in text


def test_a_single_router_runs_neither() -> None:
    assert render("keepalived", good_config()) == {}
    assert render("conntrackd", good_config()) == {}


def test_interfaces_leave_a_redundant_routers_addresses_to_keepalived() -> None:
    single = render("interfaces", good_config())["interfaces.json"]
    assert '"virtual": false' in single
    assert '"virtual": true' in render("interfaces", redundant(good_config(), 0))[
        "interfaces.json"]


def test_the_nftables_table_lets_vrrp_and_sync_in_on_the_sync_link_only() -> None:
    table = render("nftables", redundant(good_config(), 0))["cloudnet.nft"]
    assert 'iifname "sync0" ip protocol vrrp' in table
    assert 'iifname "sync0" udp dport 3780' in table
    assert "cn:vrrp" not in render("nftables", good_config())["cloudnet.nft"]


def _broken(change: str) -> pb.RouterConfig:
    cfg = redundant(good_config(), 0)
    r = cfg.redundancy
    if change == "vrid":
        r.virtual_router_id = 0
    elif change == "priority":
        r.priority = 255
    elif change == "hint":
        r.role_hint = "boss"
    elif change == "advert":
        r.advert_interval_ms = 15
    elif change == "sync":
        r.sync_interface = "g-net1"
    elif change == "peer":
        r.peer_address = "169.254.9.9"
    elif change == "peer-self":
        r.peer_address = "169.254.0.1"
    elif change == "two-addresses":
        cfg.interfaces[-1].addresses.append("169.254.1.1/30")
    elif change == "sync-without-redundancy":
        cfg.ClearField("redundancy")
    return cfg


@pytest.mark.parametrize(("change", "message"), [
    ("vrid", "virtual router ID 0"),
    ("priority", "priority 255"),
    ("hint", "role hint 'boss'"),
    ("advert", "advert interval 15 ms"),
    ("sync", "sync interface 'g-net1'"),
    ("peer", "peer address 169.254.9.9"),
    ("peer-self", "peer address 169.254.0.1"),
    ("two-addresses", "exactly one address"),
    ("sync-without-redundancy", "needs a redundancy section"),
])
def test_bad_redundancy_is_refused_naming_what(change: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        verify(_broken(change), router_services(HOST))


def test_the_valid_redundant_config_passes() -> None:
    verify(redundant(edge_config(), 1), router_services(HOST))


def test_only_a_master_serves_what_one_instance_may() -> None:
    role = RedundancyRole()
    single, pair = good_config(), redundant(good_config(), 0)
    assert role.active(single)
    assert not role.active(pair)
    assert role.set("BACKUP", 1.0)
    assert not role.set("BACKUP", 2.0)
    assert not role.active(pair)
    assert role.set("MASTER", 3.0)
    assert role.active(pair)
    assert (role.since, role.transitions) == (3.0, 2)


def test_a_role_learnt_from_the_addresses_still_acts_on_its_first_report() -> None:
    role, pair = RedundancyRole(), redundant(good_config(), 0)
    role.learn("MASTER", 1.0)
    assert role.active(pair)
    assert role.set("MASTER", 2.0)  # keepalived's first word: the services act
    assert not role.set("MASTER", 3.0)
    role.learn("BACKUP", 4.0)  # known already: nothing learnt over it
    assert role.state == "MASTER"


STATS = """cache internal:
current active connections:	           3
connections created:		           3	failed:	           0

cache external:
current active connections:	          {ext}
connections created:		           0	failed:	           0

UDP traffic (active device=sync0):
                 160 Bytes sent                  160 Bytes recv
                  10 Pckts sent                   {recv} Pckts recv
                   0 Error send                    0 Error recv
"""


def _stats(ext: int, recv: int) -> conntrackd.SyncStats:
    parsed = conntrackd.parse_stats(STATS.format(ext=ext, recv=recv))
    assert parsed is not None
    return parsed


def test_conntrackd_statistics_give_the_external_cache_and_what_the_peer_sent() -> None:
    assert _stats(7, 12) == conntrackd.SyncStats(external=7, received=12)
    assert conntrackd.parse_stats("can't connect: No such file or directory") is None


def test_a_resync_is_done_once_the_peer_answered_and_the_cache_stopped_growing() -> None:
    before = _stats(0, 10)
    steady = [_stats(5, 14)] * (conntrackd.RESYNC_STABLE + 1)
    assert conntrackd.resynced(before, steady)
    # Still growing: not yet.
    assert not conntrackd.resynced(before, [*steady[:-1], _stats(6, 15)])
    # Too few polls to tell.
    assert not conntrackd.resynced(before, steady[:conntrackd.RESYNC_STABLE])
    # The peer sent nothing since the request (silent, or gone): not done,
    # however still the cache (the watch gives up after RESYNC_LIMIT instead).
    silent = [_stats(0, 11)] * (conntrackd.RESYNC_STABLE + 1)
    assert not conntrackd.resynced(before, silent)


def test_keepalived_holds_a_new_instance_below_the_other_until_it_resynced() -> None:
    text = render("keepalived", redundant(edge_config(), 0))["keepalived.conf"]
    block = text[text.index("track_file resync {"):]
    assert f"weight -{conntrackd.RESYNC_WEIGHT}\n" in block[:block.index("}")]
    # More than the gap between the two instances' priorities.
    assert 200 - conntrackd.RESYNC_WEIGHT < 100
    instance = text[text.index("vrrp_instance "):]
    assert "\t\tresync\n" in instance[instance.index("track_file {"):]


def test_keepalived_checks_the_agent_alive_with_flock_and_quotes_every_path() -> None:
    text = render("keepalived", redundant(edge_config(), 0))["keepalived.conf"]
    block = text[text.index("vrrp_script agent_alive {"):]
    block = block[:block.index("}")]
    assert (f"script \"'{keepalived.FLOCK}' '--nonblock' '--conflict-exit-code' '0' "
            f"'/var/lib/cloudnet/agent/vrrp.alive' '{keepalived.FALSE}'\"") in block
    assert "vrrp_notify.py' '--check' '/var/lib/cloudnet/agent/vrrp.sock'" in text
    assert 'file "/var/lib/cloudnet/agent/routers/' in text


def test_a_path_keepalived_cannot_quote_is_refused() -> None:
    assert keepalived.script_line("/a b/c", "x") == "'/a b/c' 'x'"
    for bad in ("/a'b", '/a"b', "/a\\b", "/a\nb"):
        with pytest.raises(templating.TemplateValueError, match="script argument"):
            keepalived.script_line("/bin/true", bad)
