"""`explain` (the model) agrees with live packets on a table of flows."""

from __future__ import annotations

import subprocess
import time

import pytest
from cloudnet.netmgr.v1 import debug_pb2
from cloudnet.netmgr.v1 import edge_pb2 as epb

from aio.allinone import INET_DNS_IP, INET_HOST_IP, WEB_PORT
from tests.lib.diag import Debug
from tests.lib.edge import Edge

pytestmark = pytest.mark.integration


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def test_explain_agrees_with_live_probes(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="explain", cidr="10.8.0.0/24")
    p1 = t.port(net.id, hostname="web1")
    p2 = t.port(net.id, hostname="web2")
    t.api.wait_router_active(net.router_id)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)
    g1.dhcp()
    g2.dhcp()
    server = g1.popen(["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hi"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while ":80 " not in g1.run(["ss", "-Htln"]).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        e = Edge(t)
        pip = e.public_ip(net.id).ip
        ip_id = next(i.id for i in e.call(e.ips.ListPublicIps,
                                          epb.ListPublicIpsRequest()).public_ips if i.ip == pip)
        f = e.forward(public_ip_id=ip_id, protocol="tcp", public_port=8080, port_id=p1.id,
                      private_port=80)
        e.wait_active(e.forwards.GetPortForward, epb.GetPortForwardRequest(id=f.id))
        inet = ["ip", "netns", "exec", cloud.inet_ns]

        def curl_from_inet(ip: str, port: int) -> bool:
            return _ok([*inet, "socat", "-T2", "-", f"TCP:{ip}:{port},connect-timeout=2"])

        cases = [
            # (from, to, expected decider kind, live check)
            (p1.id, f"{INET_HOST_IP}:{WEB_PORT}/tcp", "egress-default",
             lambda: g1.run(["curl", "-s", "--max-time", "3",
                             f"http://{INET_HOST_IP}:{WEB_PORT}/"]).returncode == 0),
            ("internet", f"{pip}:8080/tcp", "portforward", lambda: curl_from_inet(pip, 8080)),
            ("internet", f"{pip}:9090/tcp", "firewall-default", lambda: curl_from_inet(pip, 9090)),
            ("internet", f"{net.source_nat_ip}:80/tcp", "firewall-default",
             lambda: curl_from_inet(net.source_nat_ip, 80)),
            ("internet", f"{p1.ip}:80/tcp", "network", lambda: curl_from_inet(p1.ip, 80)),
            (p1.id, f"{net.gateway}:53/udp", "router",
             lambda: g1.run(["dig", "+short", "+time=2", "+tries=1", f"@{net.gateway}",
                             f"web2.{net.domain}"]).stdout.strip() == p2.ip),
            (p1.id, f"{net.gateway}:22/tcp", "firewall-default",
             lambda: g1.run(["nc", "-z", "-w", "2", net.gateway, "22"]).returncode == 0),
            (p2.id, f"{p1.ip}:80/tcp", "network",
             lambda: g2.run(["nc", "-z", "-w", "2", p1.ip, "80"]).returncode == 0),
        ]
        stub = Debug(t).stub

        def check(cases) -> None:
            disagree = []
            for src, to, kind, live in cases:
                r = t.api.call(stub.Explain, debug_pb2.ExplainRequest(**{"from": src, "to": to}))
                seen = live()
                if r.allowed != seen or r.decided_by_kind != kind:
                    disagree.append((src, to, r.allowed, r.decided_by_kind, r.reason, seen))
            assert not disagree

        check(cases)
        # Egress denied by default, one rule opens the web port: the rule decides.
        e.call(e.firewall.SetEgressPolicy, epb.SetEgressPolicyRequest(policy=epb.EgressPolicy(
            network_id=net.id, default_action=epb.EGRESS_ACTION_DENY)))
        allow = e.rule(direction=epb.FIREWALL_DIRECTION_EGRESS, network_id=net.id,
                       protocol="tcp", port=WEB_PORT)
        e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=allow.id))
        t.api.wait_router_active(net.router_id)
        check([
            (p1.id, f"{INET_HOST_IP}:{WEB_PORT}/tcp", "firewall",
             lambda: g1.run(["curl", "-s", "--max-time", "3",
                             f"http://{INET_HOST_IP}:{WEB_PORT}/"]).returncode == 0),
            # Hairpin through the public address: egress rules are not consulted.
            (p2.id, f"{pip}:8080/tcp", "portforward",
             lambda: g2.run(["socat", "-T2", "-", f"TCP:{pip}:8080,connect-timeout=2"],
                            ).returncode == 0),
            (p1.id, f"{INET_DNS_IP}:53/udp", "firewall-default",
             lambda: g1.run(["dig", "+short", "+time=2", "+tries=1", f"@{INET_DNS_IP}",
                             "www.example.test"]).stdout.strip() == INET_HOST_IP),
        ])
        r = t.api.call(stub.Explain, debug_pb2.ExplainRequest(
            **{"from": p1.id, "to": f"{INET_HOST_IP}:{WEB_PORT}/tcp"}))
        assert r.decided_by_id == allow.id
    finally:
        server.kill()
        server.wait(5)
