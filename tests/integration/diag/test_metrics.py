"""The router agent's Prometheus metrics, scraped over HTTP from a real agent."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from router.agent import metrics
from tests.lib.routerlab import make_config

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_agent_metrics_per_router(agent):
    router_id = str(uuid.uuid4())
    cfg = make_config(router_id, 3, ["p1", "p2"])
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == 3
    port = metrics.serve(agent.agent, "127.0.0.1:0")
    m = scrape(port)
    gen = {s.labels["router"]: s.value for s in m["cloudnet_router_applied_generation"]}
    assert gen[router_id] == 3
    assert any(s.labels["router"] == router_id and s.value > 0
               for s in m["cloudnet_router_apply_seconds"])
    health = {(s.labels["router"], s.labels["service"]): s.value
              for s in m["cloudnet_router_service_healthy"]}
    assert health[(router_id, "dnsmasq")] == 1.0
    assert health[(router_id, "nftables")] == 1.0
    leases = {s.labels["network"]: s.value for s in m["cloudnet_router_dhcp_leases"]
              if s.labels["router"] == router_id}
    assert leases == {"net1": 0.0}
    assert any(s.labels["router"] == router_id for s in m["cloudnet_router_conntrack_entries"])
    rules = [s for s in m["cloudnet_router_rule_packets"] if s.labels["router"] == router_id]
    assert any(s.labels["object_kind"] == "firewall-default" for s in rules)


def test_agent_daemon_serves_metrics_and_diagnostics(topo, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import grpc
    from cloudnet.router.v1 import agent_pb2_grpc, diag_pb2, diag_pb2_grpc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = f"unix://{tmp_path}/agent.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.agent.server", "--listen", sock,
         "--state-dir", os.path.join(topo.state_dir, "agent"), "--netns-prefix", topo.prefix,
         "--fabric-netns", topo.fabric.netns, "--metrics-listen", f"127.0.0.1:{port}"],
        start_new_session=True)
    try:
        channel = grpc.insecure_channel(sock)
        grpc.channel_ready_future(channel).result(timeout=30)
        router_id = str(uuid.uuid4())
        agent_pb2_grpc.RouterAgentStub(channel).ApplyConfig(
            pb.ApplyConfigRequest(config=make_config(router_id, 5, ["p1"])), timeout=60)
        deadline = time.monotonic() + 10
        while True:
            try:
                m = scrape(port)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        gen = {s.labels["router"]: s.value for s in m["cloudnet_router_applied_generation"]}
        assert gen[router_id] == 5
        ifaces = diag_pb2_grpc.RouterDiagnosticsStub(channel).Show(diag_pb2.ShowRequest(
            router_id=router_id, kind=diag_pb2.SHOW_KIND_INTERFACES), timeout=30).interfaces
        assert {i.role for i in ifaces} >= {"guest", "public"}
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)  # its routers (and dnsmasq) go with the topology's cleanup
