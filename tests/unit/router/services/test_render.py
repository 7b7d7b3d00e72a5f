"""render(): pure, and its output has the properties the daemons and guests depend on."""

from __future__ import annotations

import jinja2
import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import vpn_pb2

from router.errors import ConfigError
from router.lib import templating
from router.services import dnsmasq, interfaces
from router.services.registry import router_services
from tests.lib.routerconfigs import HOST, PATHS, good_config, render


def directives(conf: str) -> list[str]:
    return [ln for ln in conf.splitlines() if ln and not ln.startswith("#")]


def test_render_is_pure_and_deterministic() -> None:
    for service in router_services(HOST):
        assert service.render(good_config(), PATHS) == service.render(good_config(), PATHS)


def test_daemon_files_name_the_routers_paths() -> None:
    cfg = good_config()
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip="203.0.113.10",
                                                 interface="pub0"))
    cfg.load_balancers.append(pb.LoadBalancerRule(
        id="lb1", public_ip="203.0.113.10", public_port=80, protocol="tcp",
        algorithm="roundrobin", members=[pb.LbBackend(port_id="p1", ip="10.10.0.11",
                                                               port=8080)]))
    cfg.vpn_connections.append(vpn_pb2.VpnConnection(
        id="c1", local_address="203.0.113.10", peer_address="192.0.2.2",
        local_cidrs=["10.10.0.0/24"], peer_cidrs=["172.16.1.0/24"], psk="k" * 20,
        ike_version=2))
    haproxy = render("haproxy", cfg)["haproxy.cfg"]
    assert f"stats socket {PATHS.haproxy_stats_socket} mode 600" in haproxy
    strongswan = render("strongswan", cfg)["strongswan.conf"]
    assert f"path = {PATHS.strongswan_log}\n" in strongswan
    assert "@" not in haproxy + strongswan


def test_dnsmasq_serves_only_guest_interfaces_and_static_hosts() -> None:
    conf = directives(render("dnsmasq", good_config())["dnsmasq.conf"])
    assert "interface=g-net1" in conf
    assert not [d for d in conf if "pub0" in d]
    for needed in ("bind-dynamic", "except-interface=lo", "no-resolv", "no-hosts",
                   "dhcp-authoritative", "no-ping", "local=/tenant.test/",
                   "domain=tenant.test,10.10.0.0/24"):
        assert needed in conf
    assert "dhcp-range=set:net-g-net1,10.10.0.0,static,255.255.255.0,3600" in conf
    assert "server=198.51.100.10" in conf
    assert "server=198.51.100.11" in conf


def test_dnsmasq_answers_its_local_domains_and_names_relative_to_them() -> None:
    cfg = good_config()
    net = cfg.guest_networks[0]
    net.domain = "db.shop.test"
    cfg.dns.local_domains.extend(["shop.test", "db.shop.test", "other.test"])
    out = render("dnsmasq", cfg)
    conf = directives(out["dnsmasq.conf"])
    # Each own domain once: the network's own, and the VPC's (and the others given).
    assert sorted(d for d in conf if d.startswith("local=")) == [
        "local=/db.shop.test/", "local=/other.test/", "local=/shop.test/"]
    # A host also answers by its name relative to the VPC domain (db1.db).
    assert out["hosts/p1"] == "10.10.0.11 vm1.db.shop.test vm1 vm1.db\n"
    cfg.dns.local_domains[:] = ["bad domain"]
    with pytest.raises(ConfigError, match="local domain"):
        dnsmasq.verify(cfg)


def test_dnsmasq_options_per_network() -> None:
    conf = directives(render("dnsmasq", good_config())["dnsmasq.conf"])
    tag = "dhcp-option=tag:net-g-net1"
    assert f"{tag},option:router,10.10.0.1" in conf
    assert f"{tag},option:dns-server,10.10.0.1" in conf  # default: the gateway itself
    # sent even to clients that do not ask for them
    force = "dhcp-option-force=tag:net-g-net1"
    assert f"{force},option:domain-search,tenant.test,corp.test" in conf
    assert f"{force},option:mtu,1450" in conf


def test_dnsmasq_mtu_option_only_when_set_and_explicit_dns_servers() -> None:
    cfg = good_config()
    cfg.guest_networks[0].mtu = 0
    cfg.guest_networks[0].dns_servers.extend(["192.0.2.53", "192.0.2.54"])
    conf = render("dnsmasq", cfg)["dnsmasq.conf"]
    assert "option:mtu" not in conf
    assert "option:dns-server,192.0.2.53,192.0.2.54" in conf


def test_dnsmasq_one_file_per_port() -> None:
    out = render("dnsmasq", good_config())
    assert out["dhcp-hosts/p1"] == "02:aa:00:00:00:11,10.10.0.11,vm1\n"  # MAC lower-cased
    assert out["hosts/p2"] == "10.10.0.12 web-2.tenant.test web-2\n"
    assert sorted(k for k in out if k != "dnsmasq.conf") == [
        "dhcp-hosts/p1", "dhcp-hosts/p2", "hosts/p1", "hosts/p2"]


def test_dnsmasq_not_rendered_without_guest_networks() -> None:
    cfg = good_config()
    del cfg.guest_networks[:]
    assert render("dnsmasq", cfg) == {}


def test_nftables_replaces_the_table_atomically() -> None:
    text = render("nftables", good_config())["cloudnet.nft"]
    lines = directives(text)
    assert lines[:3] == ["table inet cloudnet {}", "delete table inet cloudnet",
                         "table inet cloudnet {"]
    assert text.startswith("# Generated by router.services.nftables.service")


def test_nftables_policies_and_snat() -> None:
    text = render("nftables", good_config())["cloudnet.nft"]
    chains = {c.split("{", 1)[0].strip(): c for c in text.split("chain ")[1:]}
    assert "policy drop" in chains["input"]
    assert "policy drop" in chains["forward"]
    for chain in ("input", "forward"):
        # After "name {" and "type ...": the first rule with a verdict accepts
        # established traffic (a rule before it may only count, per LB element).
        rules = [r.strip() for r in directives(chains[chain])[2:]]
        first_verdict = next(r for r in rules if " accept" in r or " drop" in r)
        assert first_verdict.startswith("ct state established,related counter accept")
        assert all("accept" not in r and "drop" not in r and "dnat" not in r
                   for r in rules[:rules.index(first_verdict)])
    assert 'oifname "pub0" ip saddr 10.10.0.0/24 counter snat ip to 203.0.113.10' in text
    assert "masquerade" not in text
    assert 'elements = { "g-net1" }' in text
    assert 'elements = { "pub0" }' in text
    # every rule that decides something counts its packets
    for line in directives(text):
        if line.strip().endswith(("accept", "drop")) or " accept comment" in line or \
                " drop comment" in line or "snat" in line:
            assert "counter" in line, line


def test_interfaces_render_lists_links_and_routes() -> None:
    text = render("interfaces", good_config())["interfaces.json"]
    assert '"g-net1"' in text
    assert '"0.0.0.0/0"' in text
    assert '"net.ipv4.ip_forward": "1"' in text


def test_fabric_port_names_are_short_and_stable() -> None:
    a = interfaces.fabric_port_name("router-a", "g-net1")
    assert a == interfaces.fabric_port_name("router-a", "g-net1")
    assert a != interfaces.fabric_port_name("router-b", "g-net1")
    assert len(a) == 11
    assert a.startswith("r")


def test_templates_refuse_undefined_variables() -> None:
    with pytest.raises(jinja2.UndefinedError):
        templating.render("nftables/cloudnet.nft.j2", generator="test")


@pytest.mark.parametrize("value", ["a b", "a\nb", "ab\n", "a,b", 'a"b', "a;b", "a#b"])
def test_template_filters_refuse_unsafe_values(value: str) -> None:
    with pytest.raises(templating.TemplateValueError):
        templating.safe_token(value)
    with pytest.raises(templating.TemplateValueError):
        templating.nft_quote(value)


def test_one_cached_environment() -> None:
    env = templating.environment()
    assert env is templating.environment()
    assert env.undefined is jinja2.StrictUndefined
    assert env.trim_blocks
    assert env.lstrip_blocks
    assert not env.autoescape


def test_a_conntrack_limit_is_counted_in_small_shares() -> None:
    """``ct count`` walks its whole list at every new connection: a router's
    limit is split by a hash of the connection into lists of at most 64."""
    from router.services.nftables.service import conntrack_shares

    assert conntrack_shares(0) is None
    assert conntrack_shares(40) == {"shares": 1, "per_share": 40}
    assert conntrack_shares(65536) == {"shares": 1024, "per_share": 64}
    big = conntrack_shares(1_000_000)
    assert big is not None
    assert big["shares"] == 4096
    assert big["shares"] * big["per_share"] <= 1_000_000
