"""VPC tiers end to end: gRPC API → store → reconciler → agent → dnsmasq +
nftables, checked with real clients (udhcpc, dig, ping, socat, curl) from
namespace guests on two tiers."""

from __future__ import annotations

import pytest

from netmgr.aio import INET_HOST_IP, WEB_PORT
from tests.integration.vpc.conftest import TCP, ask, dig, pings, serve

pytestmark = pytest.mark.integration


def test_guests_of_two_tiers_lease_resolve_and_talk_through_the_router(make_vpc, servers):
    v = make_vpc("shop", "10.20.0.0/16")
    web = v.tier("web", "10.20.1.0/24")
    db = v.tier("db", "10.20.2.0/24")
    assert web.vlan_id != db.vlan_id
    assert web.router_id == db.router_id == v.vpc.router_id
    assert web.source_nat_ip == db.source_nat_ip != ""
    pw, gw = v.guest(web, "www1")
    pd, gd = v.guest(db, "db1")

    # Each tier leases from its own interface on the VPC router.
    assert gw.lease.ip == pw.ip and gw.lease.router == "10.20.1.1"
    assert gd.lease.ip == pd.ip and gd.lease.router == "10.20.2.1"
    assert web.domain == f"web.{v.vpc.domain}"
    # Names resolve across tiers (full name, and <host>.<tier> via the search list).
    assert dig(gw, f"db1.{db.domain}") == [pd.ip]
    assert dig(gd, f"www1.{web.domain}") == [pw.ip]
    assert gw.run(["getent", "hosts", "db1.db"]).stdout.split()[:1] == [pd.ip]

    # Guests of the two tiers talk through the router.
    assert pings(gw, pd.ip)
    serve(servers, gd, TCP, 5432, "db-answer")
    assert ask(gw, TCP, pd.ip, 5432) == "db-answer"
    # Both tiers leave through the VPC's source-NAT address.
    for g in (gw, gd):
        r = g.run(["curl", "-s", "--max-time", "5", f"http://{INET_HOST_IP}:{WEB_PORT}/"])
        assert r.stdout.strip() == v.vpc.source_nat_ip
