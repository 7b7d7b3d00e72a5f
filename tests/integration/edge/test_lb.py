"""Load balancers end to end: HAProxy in the router, real HTTP servers in
guests, curl from the internet host. Algorithms counted, stickiness,
health checks taking a member out and back, seamless reloads."""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import time

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.lib.edge import Edge
from tests.lib.guest_servers import Web, in_ns

pytestmark = pytest.mark.integration

SITE_CIDR = "10.61.0.0/24"


@pytest.fixture(scope="module")
def module_web():
    w = Web()
    yield w
    w.close()


@pytest.fixture
def web(module_web):
    return module_web


def curl(ns: str, url: str, *extra: str) -> str:
    r = in_ns(ns, ["curl", "-s", "--max-time", "3", *extra, url])
    return r.stdout.strip() if r.returncode == 0 else f"error {r.returncode}"


def counts(ns: str, url: str, n: int, *extra: str) -> collections.Counter:
    return collections.Counter(curl(ns, url, *extra) for _ in range(n))


@pytest.fixture(scope="module")
def web_site(module_site, module_web):
    """Three web servers in guests and a public IP, for every test of the module."""
    ports, guests = module_site.ports(3)
    for i, g in enumerate(guests):
        module_web.start(g, f"web{i}")
    e = Edge(module_site.t)
    ip = e.public_ip(module_site.net.id)
    module_site.keep_ips.add(ip.id)
    return ports, e, ip


@pytest.fixture
def lbnet(web_site, site):
    ports, e, ip = web_site
    return site.t, site.net, ports, e, ip


def make_lb(e: Edge, ip, ports, **fields) -> epb.LoadBalancer:
    members = fields.pop("members", [epb.LoadBalancerMember(port_id=p.id) for p in ports])
    lb = e.call(e.lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
        load_balancer=epb.LoadBalancer(public_ip_id=ip.id, private_port=8080, members=members,
                                       **fields)))
    return e.wait_active(e.lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id))


def test_algorithms_weights_and_stickiness(cloud, lbnet):
    _t, net, ports, e, ip = lbnet
    inet = cloud.inet_ns
    rr = make_lb(e, ip, ports, public_port=80, protocol="http")
    assert rr.state == pb.OBJECT_STATE_ACTIVE
    assert rr.algorithm == "roundrobin"
    c = counts(inet, f"http://{ip.ip}/", 30)
    assert c == {"web0": 10, "web1": 10, "web2": 10}, c
    # Weights 1:2:3 over TCP mode.
    make_lb(e, ip, ports, public_port=81, protocol="tcp", members=[
        epb.LoadBalancerMember(port_id=p.id, weight=w) for p, w in zip(ports, (1, 2, 3),
                                                                       strict=True)])
    c = counts(inet, f"http://{ip.ip}:81/", 60)
    assert c == {"web0": 10, "web1": 20, "web2": 30}, c
    # leastconn with sequential clients still reaches every member.
    make_lb(e, ip, ports, public_port=82, protocol="tcp", algorithm="leastconn")
    assert set(counts(inet, f"http://{ip.ip}:82/", 30)) == {"web0", "web1", "web2"}
    # source: one client address, one member.
    make_lb(e, ip, ports, public_port=83, protocol="tcp", algorithm="source")
    assert len(counts(inet, f"http://{ip.ip}:83/", 15)) == 1
    # Stickiness by source address over roundrobin.
    make_lb(e, ip, ports, public_port=84, protocol="http", stickiness="source")
    assert len(counts(inet, f"http://{ip.ip}:84/", 15)) == 1
    # Cookie stickiness: with the cookie, one member; without, all of them.
    make_lb(e, ip, ports, public_port=85, protocol="http", stickiness="cookie")
    jar = f"/tmp/cn-lb-cookies-{net.id[:8]}"
    try:
        first = curl(inet, f"http://{ip.ip}:85/", "-c", jar)
        assert counts(inet, f"http://{ip.ip}:85/", 10, "-b", jar) == {first: 10}
    finally:
        subprocess.run(["rm", "-f", jar], check=False)
    assert len(counts(inet, f"http://{ip.ip}:85/", 9)) == 3
    # Not a load balancer port: dropped.
    assert curl(inet, f"http://{ip.ip}:86/").startswith("error")


def wait_health(e: Edge, lb_id: str, want: dict[str, str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lb = e.call(e.lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb_id))
        got = {m.port_id: m.health for m in lb.members}
        if all(got.get(k, "").startswith(v) for k, v in want.items()):
            return
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def test_health_checks_take_a_member_out_and_back(cloud, lbnet, web):
    t, _net, ports, e, ip = lbnet
    inet = cloud.inet_ns
    lb = make_lb(e, ip, ports, public_port=80, protocol="http",
                 health_check=epb.LoadBalancerHealthCheck(
                     type="http", path="/health", expect_status=200, interval_ms=200, rise=2,
                     fall=2))
    wait_health(e, lb.id, {p.id: "UP" for p in ports})
    web.stop("web1")
    # fall 2 x 200 ms: out of rotation well within a second or two.
    wait_health(e, lb.id, {ports[1].id: "DOWN"})
    c = counts(inet, f"http://{ip.ip}/", 20)
    assert c == {"web0": 10, "web2": 10}, c
    guest = next(g for g in t.guests if g.netns.endswith(ports[1].id[:8]))
    web.start(guest, "web1")
    wait_health(e, lb.id, {ports[1].id: "UP"})
    assert set(counts(inet, f"http://{ip.ip}/", 30)) == {"web0", "web1", "web2"}


def test_a_load_balancer_the_router_refuses_is_error_and_the_rest_goes_active(cloud, lbnet):
    """A health-check path stored before the API refused it (an older netmgr
    let "/a'b" in): the router refuses that one load balancer, netmgr shows it
    ERROR with the router's reason, and the rest of the router moves on."""
    t, net, ports, e, ip = lbnet
    lb = make_lb(e, ip, ports, public_port=8081, protocol="http",
                 health_check=epb.LoadBalancerHealthCheck(type="http", path="/ok"))
    with sqlite3.connect(os.path.join(cloud.state_dir, "netmgr.db")) as db:
        (check,) = db.execute("SELECT health_check FROM load_balancers WHERE id = ?",
                              (lb.id,)).fetchone()
        db.execute("UPDATE load_balancers SET health_check = ? WHERE id = ?",
                   (json.dumps({**json.loads(check), "path": "/a'b"}), lb.id))
    port = t.port(net.id, hostname=f"late{lb.id[:6]}")  # the router's next generation
    t.api.wait_router_active(net.router_id)
    got = e.call(e.lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id))
    assert got.state == pb.OBJECT_STATE_ERROR, got
    assert "path" in got.error
    assert t.api.call(t.api.ports.GetPort, pb.GetPortRequest(id=port.id)).state == \
        pb.OBJECT_STATE_ACTIVE
    assert t.guest(net, port).dhcp().ip == port.ip


def test_bad_load_balancers_are_refused(cloud, lbnet, make_tenant):
    import grpc

    t, net, ports, e, ip = lbnet
    other = make_tenant()
    onet = other.network(name="o", cidr="10.62.0.0/24")
    oport = other.port(onet.id, hostname="o1")
    net2 = t.network(name="lb2", cidr="10.63.0.0/24")
    p2 = t.port(net2.id, hostname="x1")
    cases: list[tuple[dict[str, object], str]] = [
        (dict(public_port=0), "load_balancer.public_port"),
        (dict(public_port=80, protocol="udp"), "load_balancer.protocol"),
        (dict(public_port=80, protocol="tcp", stickiness="cookie"), "load_balancer.stickiness"),
        (dict(public_port=80, protocol="http", algorithm="random"), "load_balancer.algorithm"),
        (dict(public_port=80, protocol="http",
              health_check=epb.LoadBalancerHealthCheck(type="http", path="/a b")),
         "load_balancer.health_check.path"),
        (dict(public_port=80, protocol="http",
              members=[epb.LoadBalancerMember(port_id=p2.id)]), "members[0].port_id"),
        (dict(public_port=80, protocol="http",
              members=[epb.LoadBalancerMember(port_id=oport.id)]), "port"),
    ]
    before = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
    for fields, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            make_lb(e, ip, ports, **fields)
        assert text in err.value.details(), (fields, err.value.details())
    after = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
    assert after.desired_generation == before.desired_generation
