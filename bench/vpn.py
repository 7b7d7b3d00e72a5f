"""Site-to-site VPN: how long a tunnel takes to come up, and what it costs.

Measured in one run, with the router agent in-process (real charon through
vici, kernel-libipsec: this host's kernel has no ESP) and a stock strongSwan
peer in its own namespace (the tests' harness, ``tests/integration/vpn``):

* establishment: from ApplyConfig with a new connection to an ESTABLISHED
  IKE SA with its child SA installed, cold (charon not running yet) and
  after a reset (the connection reloaded into a running charon);
* recovery: the peer's charon killed (no DELETE) and restarted a second
  later, until the router has a new ESTABLISHED SA (DPD delay 2 s);
* throughput: iperf3 TCP from a guest behind the router to a host behind
  the peer, through the tunnel (ESP in UDP, AES-GCM-256) vs the very same
  path without it (the router source-NATs, the uplink routes the peer's
  networks in clear): the ratio is the tunnel's cost.

    .venv/bin/python bench/vpn.py [--repeat 5] [--seconds 5] [--out bench/out]

Writes bench/out/vpn.json and bench/out/vpn.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudnet.router.v1 import agent_pb2 as pb

from common.fabric.linuxbridge import LinuxBridgeFabric
from router.agent.registry import RouterRegistry
from tests.lib.peerlab import (
    PEER_HOSTS,
    PEER_IP,
    make_peer,
    router_connection,
)
from tests.lib.routerlab import Topology, make_config, sh

ROUTER = "vpn-bench"
GUEST_IP = "10.10.0.11"


def established(agent: RouterRegistry, other_than: int = 0) -> bool:
    st = agent.status(ROUTER).vpn_connections
    return bool(st) and st[0].ike_state == "ESTABLISHED" and st[0].ike_unique_id != other_than \
        and any(ch.state == "INSTALLED" for ch in st[0].children)


def wait(pred: object, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while not pred():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.01)
    return time.monotonic() - t0


def iperf(ns: str, dst: str, seconds: int) -> float:
    out = sh("ip", "netns", "exec", ns, "iperf3", "-c", dst, "-t", str(seconds), "-J",
             timeout=seconds + 60)
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def config(generation: int, vpn: bool, reset: int = 0) -> pb.RouterConfig:
    cfg = make_config(ROUTER, generation, ["p1"])
    if vpn:
        cfg.vpn_connections.append(router_connection(2, reset_serial=reset))
    return cfg


def run(repeat: int, seconds: int) -> dict[str, object]:
    prefix = f"b{uuid.uuid4().hex[:6]}"
    state_dir = tempfile.mkdtemp(prefix="cn-vpn-bench-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    topo = Topology(prefix, state_dir, fabric, namespaces=[fabric.netns])
    agent = RouterRegistry(os.path.join(state_dir, "agent"), netns_prefix=prefix,
                           fabric_netns=fabric.netns, agent_id="bench")
    iperf_server: subprocess.Popen[bytes] | None = None
    try:
        agent.start()
        topo.internet()
        guest = topo.guest("p1")
        topo.configure_guest(guest, GUEST_IP)
        peer = make_peer(topo, f"{prefix}-up", 2)
        peer.start()
        gen = 0

        def apply(cfg: pb.RouterConfig) -> float:
            t0 = time.monotonic()
            status = agent.apply(cfg)
            assert status.applied_generation == cfg.generation, status.last_error
            return time.monotonic() - t0

        cold, cold_apply, reset = [], [], []
        for _ in range(repeat):
            gen += 1
            apply(config(gen, vpn=False))  # charon stopped
            gen += 1
            t0 = time.monotonic()
            cold_apply.append(apply(config(gen, vpn=True)))
            wait(lambda: established(agent))
            cold.append(time.monotonic() - t0)
        for i in range(repeat):
            before = agent.status(ROUTER).vpn_connections[0].ike_unique_id
            gen += 1
            t0 = time.monotonic()
            apply(config(gen, vpn=True, reset=i + 1))
            wait(lambda b=before: established(agent, other_than=b))
            reset.append(time.monotonic() - t0)

        # The peer crashes (no DELETE) and comes back 1 s later: DPD (2 s) and
        # the retransmissions find the SA dead, the router re-establishes.
        recover = []
        for _ in range(min(repeat, 3)):
            before = agent.status(ROUTER).vpn_connections[0].ike_unique_id
            pid = peer.pid()
            assert pid
            t0 = time.monotonic()
            os.kill(pid, 9)
            peer.stop()
            time.sleep(1.0)
            peer.start()
            wait(lambda b=before: established(agent, other_than=b), timeout=120)
            recover.append(time.monotonic() - t0)

        iperf_server = subprocess.Popen(["ip", "netns", "exec", peer.hosts[0], "iperf3", "-s"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        tunnel = [iperf(guest, PEER_HOSTS[0], seconds) for _ in range(repeat)]
        # The same path in clear: no VPN, the uplink routes the peer's networks.
        gen += 1
        apply(config(gen, vpn=False))
        sh("ip", "-n", f"{prefix}-up", "route", "replace", "172.16.0.0/16", "via", PEER_IP)
        clear = [iperf(guest, PEER_HOSTS[0], seconds) for _ in range(repeat)]
        med_t, med_c = statistics.median(tunnel), statistics.median(clear)
        return {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
            "backend": agent.host.vpn_backend(),
            "proposals": {"ike": "aes256gcm16-prfsha384-ecp384", "esp": "aes256gcm16-ecp384"},
            "establish_cold_s": cold, "apply_cold_s": cold_apply, "establish_reset_s": reset,
            "peer_crash_recovery_s": recover, "dpd_delay_s": 2,
            "peer_crash_recovery_median_s": statistics.median(recover),
            "establish_cold_median_s": statistics.median(cold),
            "establish_reset_median_s": statistics.median(reset),
            "iperf_seconds": seconds,
            "tunnel_bps": tunnel, "clear_bps": clear,
            "tunnel_median_bps": med_t, "clear_median_bps": med_c,
            "tunnel_vs_clear_ratio": med_t / med_c if med_c else 0.0,
        }
    finally:
        if iperf_server is not None:
            iperf_server.kill()
            iperf_server.wait()
        try:
            agent.delete(ROUTER, keep_leases=False)
        finally:
            topo.cleanup()


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    cold, reset = result["establish_cold_s"], result["establish_reset_s"]
    a.boxplot([cold, reset])
    a.set_xticks([1, 2], ["cold (charon start)", "reset (reload)"])
    a.set_ylabel("seconds to ESTABLISHED + child SA")
    a.set_title("tunnel establishment")
    med = [float(result["clear_median_bps"]) / 1e9, float(result["tunnel_median_bps"]) / 1e9]
    b.bar(["same path, clear", f"IPsec ({result['backend']})"], med, color=["grey", "tab:blue"])
    b.set_ylabel("iperf3 TCP Gbit/s (median)")
    b.set_title(f"throughput, ratio {float(result['tunnel_vs_clear_ratio']):.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = run(args.repeat, args.seconds)
    with open(os.path.join(args.out, "vpn.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "vpn.png"))
    print(json.dumps({k: v for k, v in result.items() if "median" in k or "ratio" in k},
                     indent=2))


if __name__ == "__main__":
    main()
