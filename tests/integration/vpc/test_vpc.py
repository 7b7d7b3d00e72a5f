"""VPC tiers end to end: gRPC API → store → reconciler → agent → dnsmasq +
nftables, checked with real clients (udhcpc, dig, ping, socat, curl) from
namespace guests on two tiers."""

from __future__ import annotations

import os
import time

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from aio.allinone import INET_HOST_IP, WEB_PORT
from router.runtime import router_netns_name
from tests.lib.guest_servers import TCP, serve
from tests.lib.vpc import ask, dig, pings

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
    assert gw.lease.ip == pw.ip
    assert gw.lease.router == "10.20.1.1"
    assert gd.lease.ip == pd.ip
    assert gd.lease.router == "10.20.2.1"
    assert web.domain == f"web.{v.vpc.domain}"
    # Names resolve across tiers (full name, and <host>.<tier> via the search list).
    assert dig(gw, f"db1.{db.domain}") == [pd.ip]
    assert dig(gd, f"www1.{web.domain}") == [pw.ip]
    assert gw.run(["getent", "hosts", "db1.db"]).stdout.split()[:1] == [pd.ip]
    # dig tries db1.db. first: the router answers it (never its upstream).
    assert gw.run(["dig", "+short", "+search", "+time=2", "db1.db"]).stdout.split() == [pd.ip]

    # Guests of the two tiers talk through the router.
    assert pings(gw, pd.ip)
    serve(servers, gd, TCP, 5432, "db-answer")
    assert ask(gw, TCP, pd.ip, 5432) == "db-answer"
    # Both tiers leave through the VPC's source-NAT address.
    for g in (gw, gd):
        r = g.run(["curl", "-s", "--max-time", "5", f"http://{INET_HOST_IP}:{WEB_PORT}/"])
        assert r.stdout.strip() == v.vpc.source_nat_ip


def test_a_deleted_tier_leaves_the_router_and_a_deleted_vpc_takes_the_router(make_vpc):
    v = make_vpc("gone", "10.21.0.0/16")
    web, db = v.tier("web", "10.21.1.0/24"), v.tier("db", "10.21.2.0/24")
    v.guest(web, "www1")
    v.wait()
    v.call(v.t.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=web.id, force=True))
    router = v.wait()
    assert router.state == pb.ROUTER_STATE_ACTIVE
    v.call(v.t.api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=db.id))
    v.wait()
    v.call(v.stub.DeleteVpc, vpb.DeleteVpcRequest(id=v.vpc.id))
    ns = router_netns_name(v.t.cloud.prefix, v.vpc.router_id)
    deadline = time.monotonic() + 60
    while True:
        try:
            v.call(v.t.api.routers.GetRouter, pb.GetRouterRequest(id=v.vpc.router_id))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            if v.t.cloud.router_backend == "vm" or not os.path.exists(f"/run/netns/{ns}"):
                break
        assert time.monotonic() < deadline, "the VPC router was not removed"
        time.sleep(0.2)
