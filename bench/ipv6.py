"""IPv6 and routed networks through one router, on the all-in-one.

1. Throughput and packet rate through the same router: a guest of a routed,
   dual-stack network sends to the internet host by IPv6 and by IPv4 (its own
   address, no NAT either way), and a guest of a plain network by IPv4 through
   source NAT. iperf3: TCP for 4 s (bits/s), UDP with 64-byte payloads for 4 s
   (packets/s received); rounds alternate the families, medians reported.
   Ratio IPv6 / IPv4 (routed) in the same run: goal >= 0.95.
2. Time from CreateNetwork of a routed, dual-stack network to both its
   prefixes (routed IPv4 and /64) in the edge's BGP table (the edge's stock
   FRR, polled every 20 ms): goal <= 3 s. Baseline in the same run: the time
   to the router applying the network (what any network costs).

    .venv/bin/python bench/ipv6.py [--rounds 3] [--networks 5] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb

from aio.allinone import INET_HOST_IP, AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest
from aio.topology import INET_HOST_IP6

IPERF_PORT = 5201
SECONDS = 4


def _wait(predicate: Any, what: str, timeout: float = 60, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


def _tenant(aio: AllInOne) -> Api:
    admin = Api(aio.listen, aio.admin_token)
    tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(
        name=f"bench-{uuid.uuid4().hex[:6]}"))
    secret = admin.call(admin.tenants.CreateToken,
                        pb.CreateTokenRequest(tenant_id=tenant.id)).secret
    return Api(aio.listen, secret)


def _guest(aio: AllInOne, api: Api, net: pb.Network, name: str) -> tuple[NamespaceGuest, pb.Port]:
    port = api.call(api.ports.CreatePort, pb.CreatePortRequest(
        port=pb.Port(network_id=net.id, hostname=name)))
    api.wait_router_active(net.router_id)
    g = NamespaceGuest(f"{aio.prefix}-g-{port.id[:8]}", aio.fabric,
                       f"bp{port.id.replace('-', '')[:10]}")
    g.attach(net.vlan_id, port.mac)
    return g, port


def _iperf(guest: NamespaceGuest, target: str, udp: bool) -> float:
    """bits/s (TCP) or packets/s received (UDP, 64-byte payloads)."""
    argv = ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(SECONDS), "-J"]
    if udp:
        argv += ["-u", "-b", "0", "-l", "64"]
    out = guest.run(argv, timeout=SECONDS + 30)
    if out.returncode:
        raise RuntimeError(f"iperf3 to {target}: {out.stdout[-300:]}{out.stderr[-300:]}")
    end = json.loads(out.stdout)["end"]
    if udp:
        s = end["sum"]
        return float(s["packets"] - s["lost_packets"]) / float(s["seconds"])
    return float(end["sum_received"]["bits_per_second"])


def run_throughput(aio: AllInOne, rounds: int) -> dict[str, Any]:
    api = _tenant(aio)
    routed = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(network=pb.Network(
        name="dual", cidr="", routed=True, ipv6_mode=rpb.IPV6_MODE_SLAAC)))
    natted = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(network=pb.Network(
        name="nat", cidr="10.77.0.0/24")))
    g, port = _guest(aio, api, routed, "dual")
    g.run(["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
    g.dhcp()
    # The IPv4 lease flushed the address SLAAC made: a new RS brings it back.
    g.run(["ip", "link", "set", "eth0", "down"])
    g.run(["ip", "link", "set", "eth0", "up"])
    g.run(["ip", "route", "replace", "default", "via", routed.gateway])
    _wait(lambda: port.ipv6 in g.run(["ip", "-6", "addr"]).stdout, "SLAAC", timeout=30)
    n, _ = _guest(aio, api, natted, "nat")
    n.dhcp()
    server = subprocess.Popen(["ip", "netns", "exec", aio.inet_ns, "iperf3", "-s", "-p",
                               str(IPERF_PORT)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: f":{IPERF_PORT}" in subprocess.run(
            ["ip", "netns", "exec", aio.inet_ns, "ss", "-ltn"], capture_output=True,
            text=True, check=False).stdout, "iperf3 server")
        paths = {"ipv6": (g, INET_HOST_IP6), "ipv4_routed": (g, INET_HOST_IP),
                 "ipv4_snat": (n, INET_HOST_IP)}
        samples: dict[str, dict[str, list[float]]] = {
            k: {"tcp_bps": [], "udp_pps": []} for k in paths}
        for r in range(rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for key in order:
                guest, target = paths[key]
                samples[key]["tcp_bps"].append(_iperf(guest, target, udp=False))
                samples[key]["udp_pps"].append(_iperf(guest, target, udp=True))
    finally:
        server.kill()
        server.wait()
        for guest in (g, n):
            guest.destroy()
        for net in (routed, natted):
            api.call(api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=net.id, force=True))
    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}
    return {
        "samples": samples, "median": med,
        "ratio_tcp_ipv6_vs_ipv4": med["ipv6"]["tcp_bps"] / med["ipv4_routed"]["tcp_bps"],
        "ratio_pps_ipv6_vs_ipv4": med["ipv6"]["udp_pps"] / med["ipv4_routed"]["udp_pps"],
        "ratio_tcp_ipv6_vs_ipv4_snat": med["ipv6"]["tcp_bps"] / med["ipv4_snat"]["tcp_bps"],
    }


def run_bgp_time(aio: AllInOne, networks: int) -> dict[str, Any]:
    api = _tenant(aio)
    edge = aio.bgp_edge
    rows = []
    for i in range(networks):
        start = time.perf_counter()
        net = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(network=pb.Network(
            name=f"r{i}", cidr="", routed=True, ipv6_mode=rpb.IPV6_MODE_SLAAC)))
        returned = time.perf_counter() - start
        api.wait_router_active(net.router_id)
        active = time.perf_counter() - start
        _wait(lambda net=net: {net.cidr, net.ipv6_cidr} <= set(edge.routes()),
              "prefixes in the edge's BGP table")
        rows.append({"api_returned_s": returned, "router_active_s": active,
                     "in_edge_bgp_s": time.perf_counter() - start})
        api.call(api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=net.id, force=True))
        _wait(lambda net=net: not {net.cidr, net.ipv6_cidr} & set(edge.routes()), "withdrawal")
    bgp = [r["in_edge_bgp_s"] for r in rows]
    act = [r["router_active_s"] for r in rows]
    return {"runs": rows, "in_edge_bgp_median_s": statistics.median(bgp),
            "api_returned_median_s": statistics.median(r["api_returned_s"] for r in rows),
            "in_edge_bgp_max_s": max(bgp), "router_active_median_s": statistics.median(act),
            "ratio_bgp_vs_active_median": statistics.median(bgp) / statistics.median(act)}


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 4))
    med = result["throughput"].get("median", {})
    keys = list(med)
    a.bar(keys, [med[k]["tcp_bps"] / 1e9 for k in keys], color=["C0", "C1", "C2"][:len(keys)])
    a.set_title("TCP through one router (Gbit/s, median)")
    b.bar(keys, [med[k]["udp_pps"] / 1e3 for k in keys], color=["C0", "C1", "C2"][:len(keys)])
    b.set_title("UDP 64 B (kpps received, median)")
    runs = result["bgp"].get("runs", [])
    c.plot([r["router_active_s"] for r in runs], "o-", label="router applied")
    c.plot([r["in_edge_bgp_s"] for r in runs], "s-", label="prefixes in edge BGP")
    c.axhline(3.0, color="red", linestyle="--", label="goal 3 s")
    c.set_title("CreateNetwork (routed, IPv6) to ... (s)")
    c.set_xlabel("network")
    c.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--networks", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    ap.add_argument("--part", choices=("all", "throughput", "bgp"), default="all")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cloudnet-bench-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    aio = AllInOne(insecure=True, prefix=f"b{uuid.uuid4().hex[:5]}", state_dir=work,
                   listen=f"127.0.0.1:{port}", fabric_kind="linuxbridge")
    try:
        aio.up()
        throughput = run_throughput(aio, args.rounds) if args.part != "bgp" else {}
        bgp = run_bgp_time(aio, args.networks) if args.part != "throughput" else {}
    finally:
        aio.down()
        shutil.rmtree(work, ignore_errors=True)
    met: dict[str, bool] = {}
    summary: dict[str, Any] = {}
    if throughput:
        met |= {"tcp": throughput["ratio_tcp_ipv6_vs_ipv4"] >= 0.95,
                "pps": throughput["ratio_pps_ipv6_vs_ipv4"] >= 0.95}
        summary |= {k: throughput[k] for k in (
            "ratio_tcp_ipv6_vs_ipv4", "ratio_pps_ipv6_vs_ipv4", "ratio_tcp_ipv6_vs_ipv4_snat",
            "median")}
    if bgp:
        met["bgp"] = bgp["in_edge_bgp_max_s"] <= 3.0
        summary |= {k: bgp[k] for k in (
            "in_edge_bgp_median_s", "in_edge_bgp_max_s", "router_active_median_s",
            "api_returned_median_s")}
    result = {
        "benchmark": "ipv6_and_bgp", "host": platform.node(), "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": os.getloadavg(),
        "throughput": throughput, "bgp": bgp,
        "goals": {"ratio_ipv6_vs_ipv4": 0.95, "in_edge_bgp_s": 3.0}, "met": met,
    }
    with open(os.path.join(args.out, "ipv6.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "ipv6.png"))
    print(json.dumps({**summary, "load_average": result["load_average"], "met": met}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
