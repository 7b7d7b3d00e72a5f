"""verify(): good configs pass, each bad one is rejected naming the object."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router import runtime
from router.errors import ConfigError
from router.services.registry import router_services
from tests.lib.routerconfigs import HOST, good_config

Mutation = Callable[[pb.RouterConfig], None]


def verify(cfg: pb.RouterConfig) -> None:
    runtime.verify(cfg, router_services(HOST))


def host(c: pb.RouterConfig, i: int = 0) -> pb.DhcpHost:
    return c.guest_networks[0].hosts[i]


def setattr_(obj_of: Callable[[pb.RouterConfig], object], field: str, value: object) -> Mutation:
    return lambda c: setattr(obj_of(c), field, value)


def test_good_config_passes() -> None:
    verify(good_config())


def test_router_without_guest_networks_passes() -> None:
    c = good_config()
    del c.guest_networks[:]
    verify(c)


GOOD_VARIANTS: dict[str, Mutation] = {
    "hostname with digits and hyphen": setattr_(host, "hostname", "a-1-b"),
    "63-char hostname": setattr_(host, "hostname", "a" * 63),
    "no domain": setattr_(lambda c: c.guest_networks[0], "domain", ""),
    "no upstreams": lambda c: c.dns.ClearField("upstream_servers"),
    "mtu 0 means default": setattr_(lambda c: c.interfaces[1], "mtu", 0),
}


@pytest.mark.parametrize("mutate", GOOD_VARIANTS.values(), ids=GOOD_VARIANTS.keys())
def test_good_variants_pass(mutate: Mutation) -> None:
    c = good_config()
    mutate(c)
    verify(c)


BAD: list[tuple[str, Mutation, str]] = [
    # (id, mutation, substring the error must contain)
    ("hostname newline", setattr_(host, "hostname", "vm\nserver=/x/1.2.3.4"),
     "port p1: hostname"),
    ("hostname trailing newline", setattr_(host, "hostname", "vm1\n"), "port p1: hostname"),
    ("hostname space", setattr_(host, "hostname", "a b"), "port p1: hostname 'a b'"),
    ("hostname quote", setattr_(host, "hostname", 'a"b'), "port p1: hostname"),
    ("hostname semicolon", setattr_(host, "hostname", "a;b"), "port p1: hostname"),
    ("hostname comma", setattr_(host, "hostname", "a,b"), "port p1: hostname"),
    ("hostname dot", setattr_(host, "hostname", "a.b"), "port p1: hostname"),
    ("hostname of the router", setattr_(host, "hostname", "router"),
     "port p1: hostname 'router' is the router's own name"),
    ("hostname leading hyphen", setattr_(host, "hostname", "-a"), "port p1: hostname"),
    ("hostname empty", setattr_(host, "hostname", ""), "port p1: hostname"),
    ("hostname too long", setattr_(host, "hostname", "a" * 64), "port p1: hostname"),
    ("mac short", setattr_(host, "mac", "02:aa:00:00:00"), "port p1: MAC"),
    ("mac junk", setattr_(host, "mac", "zz:aa:00:00:00:11"), "port p1: MAC"),
    ("mac with newline", setattr_(host, "mac", "02:aa:00:00:00:11\n"), "port p1: MAC"),
    ("mac multicast", setattr_(host, "mac", "01:00:5e:00:00:01"), "port p1: MAC"),
    ("duplicate mac", setattr_(lambda c: host(c, 1), "mac", "02:aa:00:00:00:11"),
     "port p2: MAC 02:aa:00:00:00:11 is also port p1"),
    ("ip outside cidr", setattr_(host, "ip", "10.10.1.5"), "port p1: IP 10.10.1.5 is outside"),
    ("ip not an ip", setattr_(host, "ip", "10.10.0.300"), "port p1"),
    ("duplicate ip", setattr_(lambda c: host(c, 1), "ip", "10.10.0.11"), "port p2: IP"),
    ("ip is gateway", setattr_(host, "ip", "10.10.0.1"), "port p1: IP"),
    ("ip is broadcast", setattr_(host, "ip", "10.10.0.255"), "port p1: IP"),
    ("duplicate port id", setattr_(lambda c: host(c, 1), "port_id", "p1"), "port p1: duplicate"),
    ("port id with slash", setattr_(host, "port_id", "../etc"), "port '../etc'"),
    ("port id with newline", setattr_(host, "port_id", "p\n1"), "port"),
    ("port id trailing newline", setattr_(host, "port_id", "p1\n"), "port"),
    ("interface name trailing newline", setattr_(lambda c: c.interfaces[1], "name", "g1\n"),
     "interface"),
    ("duplicate hostname", setattr_(lambda c: host(c, 1), "hostname", "VM1"),
     "port p2: name vm1.tenant.test"),
    ("bad interface name", setattr_(lambda c: c.interfaces[1], "name", "G_NET"),
     "interface 'G_NET'"),
    ("interface name too long", setattr_(lambda c: c.interfaces[1], "name", "g" * 16),
     "interface"),
    ("interface named lo", setattr_(lambda c: c.interfaces[1], "name", "lo"), "interface 'lo'"),
    ("duplicate interface", setattr_(lambda c: c.interfaces[1], "name", "pub0"),
     "duplicate interface"),
    ("interface mac", setattr_(lambda c: c.interfaces[0], "mac", "nope"), "interface 'pub0'"),
    ("interface address without prefix", lambda c: c.interfaces[1].addresses.append("10.9.0.1"),
     "needs a prefix"),
    ("interface address is network", lambda c: c.interfaces[1].addresses.append("10.9.0.0/24"),
     "network or broadcast"),
    ("role unspecified", setattr_(lambda c: c.interfaces[1], "role", 0), "role"),
    ("guest on segment 0", setattr_(lambda c: c.interfaces[1], "segment_id", 0), "segment"),
    ("public off segment 0", setattr_(lambda c: c.interfaces[0], "segment_id", 7), "segment 0"),
    ("mtu too small", setattr_(lambda c: c.interfaces[1], "mtu", 100), "MTU"),
    ("router id with dot", setattr_(lambda c: c, "router_id", "a.b"), "router 'a.b'"),
    ("route gateway off-link", setattr_(lambda c: c.routes[0], "gateway", "192.0.2.1"),
     "not on a connected network"),
    ("route bad cidr", setattr_(lambda c: c.routes[0], "destination", "10.0.0.1/8"), "route"),
    ("route unknown iface", setattr_(lambda c: c.routes[0], "interface", "eth9"), "eth9"),
    ("network iface is public", setattr_(lambda c: c.guest_networks[0], "interface", "pub0"),
     "network net1: 'pub0' is not a guest interface"),
    ("gateway not on iface", setattr_(lambda c: c.guest_networks[0], "gateway", "10.10.0.2"),
     "network net1: gateway"),
    ("bad domain", setattr_(lambda c: c.guest_networks[0], "domain", "a..b"), "domain"),
    ("domain with newline", setattr_(lambda c: c.guest_networks[0], "domain", "a\nb"), "domain"),
    ("bad search domain", lambda c: c.guest_networks[0].domain_search.append("x y"),
     "search domain"),
    ("bad dns server", lambda c: c.guest_networks[0].dns_servers.append("dns.example"),
     "dns server"),
    ("lease too short", setattr_(lambda c: c.guest_networks[0], "lease_seconds", 60), "lease"),
    ("bad upstream", lambda c: c.dns.upstream_servers.append("1.2.3.4#53"), "upstream"),
    ("snat ip not on public", setattr_(lambda c: c.source_nats[0], "public_ip", "203.0.113.99"),
     "source NAT of network 'net1'"),
    ("snat iface not public", setattr_(lambda c: c.source_nats[0], "public_interface", "g-net1"),
     "not a public interface"),
    ("snat bad cidr", setattr_(lambda c: c.source_nats[0], "source_cidr", "10.10.0.0/33"),
     "source NAT"),
]


@pytest.mark.parametrize(("mutate", "message"), [(m, s) for _, m, s in BAD],
                         ids=[i for i, _, _ in BAD])
def test_bad_configs_are_rejected_naming_the_object(mutate: Mutation, message: str) -> None:
    c = good_config()
    mutate(c)
    with pytest.raises(ConfigError) as err:
        verify(c)
    assert message in str(err.value)


def test_port_errors_carry_the_port() -> None:
    c = good_config()
    host(c, 1).hostname = "bad name"
    with pytest.raises(ConfigError) as err:
        verify(c)
    assert (err.value.kind, err.value.object_id) == ("port", "p2")
