"""A value a daemon refuses marks that one object and never stalls the rest of
the router: a load balancer HAProxy refuses (past the router's own check)
is reported with HAProxy's reason, HAProxy keeps it as it ran, and the rest
of the generation (a new port, a new load balancer) is applied."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router.services import haproxy
from tests.lib.routerlab import HOSTS, InProcessAgent, Topology, make_config, wait_for

pytestmark = pytest.mark.integration

LB_IP = "203.0.113.20"


def lb(lb_id: str, path: str, port: int, interval_ms: int = 0) -> pb.LoadBalancerRule:
    return pb.LoadBalancerRule(
        id=lb_id, public_ip=LB_IP, public_port=port, protocol="http", algorithm="roundrobin",
        health_check=pb.LbHealthCheck(type="http", path=path, interval_ms=interval_ms),
        members=[pb.LbBackend(port_id="p1", ip=HOSTS["p1"][1], port=8080, weight=1)])


def with_lbs(cfg: pb.RouterConfig, *lbs: pb.LoadBalancerRule) -> pb.RouterConfig:
    cfg.interfaces[0].addresses.append(f"{LB_IP}/32")
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip=LB_IP, interface="pub0"))
    cfg.load_balancers.extend(lbs)
    return cfg


def errors(status: pb.RouterStatus) -> dict[tuple[str, str], str]:
    return {(o.kind, o.id): o.error for o in status.objects if not o.ok}


def sections(path: str) -> dict[str, str]:
    """backend name -> its health-check line in haproxy.cfg."""
    with open(path) as f:
        text = f.read()
    return dict(re.findall(r"^backend be-(\S+)\n(?:\t.*\n)*?\toption httpchk (.*)$", text,
                           re.MULTILINE))


def test_a_load_balancer_haproxy_refuses_is_error_and_the_rest_moves_on(
        topo: Topology, agent: InProcessAgent, tmp_path: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A gap in the router's own check (it refuses quotes since): only HAProxy
    # stands between the value and the daemon.
    monkeypatch.setattr(haproxy, "_PATH", re.compile(r"^/.*$"))
    router_id = uuid.uuid4().hex
    apply = agent.stub.ApplyConfig
    status = apply(pb.ApplyConfigRequest(config=with_lbs(
        make_config(router_id, 1, ["p1"]), lb("lb1", "/ok", 80)))).status
    assert (status.applied_generation, errors(status)) == (1, {})
    conf = os.path.join(agent.agent.runtime(router_id).ctx.state_dir, "haproxy", "haproxy.cfg")
    master = haproxy.master_pid(agent.agent.runtime(router_id).ctx)

    status = apply(pb.ApplyConfigRequest(config=with_lbs(
        make_config(router_id, 2, ["p1", "p2"]), lb("lb1", "/a'b", 80),
        lb("lb2", "/new", 81)))).status

    assert (status.applied_generation, status.rejected_generation, status.last_error) == \
        (2, 0, "")
    bad = errors(status)
    assert list(bad) == [("loadbalancer", "lb1")]
    assert "haproxy -c" in bad[("loadbalancer", "lb1")]
    assert "quote" in bad[("loadbalancer", "lb1")]  # HAProxy's own words
    # The new port got its DHCP host and a lease.
    g2 = topo.guest("p2")
    assert topo.dhcp(g2, str(tmp_path))["ip"] == HOSTS["p2"][1]
    # HAProxy (reloaded, same master) runs lb1 as it was and the new lb2.
    assert sections(conf) == {"lb1": "GET /ok", "lb2": "GET /new"}
    assert haproxy.master_pid(agent.agent.runtime(router_id).ctx) == master
    served = agent.stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=router_id))
    assert errors(served) == bad
    assert {s.name: s.healthy for s in served.services}["haproxy"]

    # Fixed in the next generation: applied, no error left.
    status = apply(pb.ApplyConfigRequest(config=with_lbs(
        make_config(router_id, 3, ["p1", "p2"]), lb("lb1", "/fixed", 80),
        lb("lb2", "/new", 81)))).status
    assert (status.applied_generation, errors(status)) == (3, {})
    assert sections(conf) == {"lb1": "GET /fixed", "lb2": "GET /new"}


# Records the path of every request it is sent.
RECORDER = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        open(sys.argv[1], 'a').write(self.path + '\\n')\n"
    "        self.send_response(200); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
)


def test_every_path_the_router_accepts_reaches_the_member_as_it_is(
        topo: Topology, agent: InProcessAgent, tmp_path: object) -> None:
    """The characters verify lets through (the API allows the same): HAProxy
    takes the path and sends its health checks for exactly that path."""
    allowed = "._~!&()*+,;=:@%/-"
    assert haproxy._PATH.fullmatch("/" + allowed)
    for refused in "'\"$#\\ ?":
        assert not haproxy._PATH.fullmatch(f"/a{refused}b")
    g1 = topo.guest("p1")
    topo.configure_guest(g1, HOSTS["p1"][1])
    seen = os.path.join(str(tmp_path), "paths")
    server = subprocess.Popen(["ip", "netns", "exec", g1, sys.executable, "-c", RECORDER, seen])
    try:
        router_id = uuid.uuid4().hex
        path = "/x" + allowed + "Az09"
        status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=with_lbs(
            make_config(router_id, 1, ["p1"]), lb("lb1", path, 80, interval_ms=200)))).status
        assert (status.applied_generation, errors(status)) == (1, {})
        wait_for(lambda: os.path.exists(seen), 20, "a health check")
        with open(seen) as f:
            assert f.read().splitlines()[0] == path
    finally:
        server.kill()
        server.wait()
