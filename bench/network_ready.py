"""Time from CreateNetwork to a working guest, over N networks.

"Working" means: the guest holds its DHCP lease, resolves another name with
the router's DNS, and reaches the internet host through source NAT (the host
sees the network's public address). Each network is timed in phases:
API calls (network + port), router active (config applied), DHCP, DNS, SNAT.

Baseline, measured in the same run on the same topology: the same guest
checks against a router built by hand with the same daemons (a namespace,
dnsmasq with one static host, one nft SNAT rule), i.e. the floor that the
daemons and clients cost without cloudnet's control plane. The ratio
cloudnet / baseline is what to compare across machines and days.

    .venv/bin/python bench/network_ready.py [--networks 10] [--out bench/out]
"""

from __future__ import annotations

import argparse
import ipaddress
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

from aio.allinone import INET_HOST_IP, WEB_PORT, AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest
from common import netlink
from common.fabric.base import PROVIDER_SEGMENT
from common.netns import ensure_netns, remove_netns
from common.rtnl import RouteInfo

PHASES = ("api", "router_active", "dhcp", "dns", "snat")


def guest_checks(guest: NamespaceGuest, name: str, want_ip: str, want_src: str,
                 t: dict[str, float]) -> None:
    t0 = time.perf_counter()
    lease = guest.dhcp(interval=1)
    t["dhcp"] = time.perf_counter() - t0
    assert lease.ip == want_ip, (lease, want_ip)
    t0 = time.perf_counter()
    out = guest.run(["dig", "+short", "+time=1", name]).stdout.split()
    t["dns"] = time.perf_counter() - t0
    assert out, f"{name} did not resolve"
    t0 = time.perf_counter()
    seen = guest.run(["curl", "-s", "--max-time", "5",
                      f"http://{INET_HOST_IP}:{WEB_PORT}/"]).stdout.strip()
    t["snat"] = time.perf_counter() - t0
    assert seen == want_src, (seen, want_src)


def run_cloudnet(aio: AllInOne, n: int) -> list[dict[str, float]]:
    admin = Api(aio.listen, aio.admin_token)
    tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="bench"))
    secret = admin.call(admin.tenants.CreateToken,
                        pb.CreateTokenRequest(tenant_id=tenant.id)).secret
    api = Api(aio.listen, secret)
    rows = []
    for i in range(n):
        t: dict[str, float] = {}
        start = time.perf_counter()
        net = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name=f"b{i}", cidr=f"10.{100 + i}.0.0/24")))
        port = api.call(api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname="vm")))
        t["api"] = time.perf_counter() - start
        t0 = time.perf_counter()
        api.wait_router_active(net.router_id)
        t["router_active"] = time.perf_counter() - t0
        guest = NamespaceGuest(f"{aio.prefix}-g{i}", aio.fabric, f"gb{i}")
        guest.attach(net.vlan_id, port.mac)
        try:
            guest_checks(guest, f"vm.{net.domain}", port.ip, net.source_nat_ip, t)
        finally:
            guest.destroy()
        t["total"] = time.perf_counter() - start
        rows.append(t)
        print(f"cloudnet network {i}: " + " ".join(f"{k}={v * 1000:.0f}ms" for k, v in t.items()),
              flush=True)
    api.close()
    admin.close()
    return rows


def run_baseline(aio: AllInOne, n: int, workdir: str) -> list[dict[str, float]]:
    """The same checks against routers made by hand: namespace, dnsmasq, one SNAT rule."""
    rows = []
    for i in range(n):
        t: dict[str, float] = {}
        ns, segment = f"{aio.prefix}-raw{i}", 3000 + i
        public_ip, cidr = f"203.0.113.{200 + i}", f"10.{200 + i}.0"
        gmac, d = f"02:00:00:aa:00:{i:02x}", os.path.join(workdir, f"raw{i}")
        os.makedirs(d, exist_ok=True)
        start = time.perf_counter()
        ensure_netns(ns)
        aio.fabric.plug(f"rawp{i}", PROVIDER_SEGMENT, ns, "pub0", f"02:00:00:bb:00:{i:02x}")
        aio.fabric.plug(f"rawg{i}", segment, ns, "g0", f"02:00:00:cc:00:{i:02x}")
        netlink.configure_link(ns, "pub0", [ipaddress.IPv4Interface(f"{public_ip}/24")],
                               routes=[RouteInfo("0.0.0.0", 0, "203.0.113.1", 0)])
        netlink.configure_link(ns, "g0", [ipaddress.IPv4Interface(f"{cidr}.1/24")])
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True)
        rules = (f"table ip raw {{\n chain post {{\n"
                 f"  type nat hook postrouting priority 100;\n"
                 f"  ip saddr {cidr}.0/24 oifname pub0 snat to {public_ip}\n }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                       check=True)
        subprocess.run(["ip", "netns", "exec", ns, "dnsmasq", "--no-resolv", "--no-hosts",
                        "--interface=g0", "--bind-dynamic", "--no-ping",
                        f"--dhcp-range={cidr}.0,static,3600", f"--dhcp-host={gmac},{cidr}.10,vm",
                        "--domain=raw.test", "--local=/raw.test/",
                        f"--address=/vm.raw.test/{cidr}.10",
                        "--server=198.51.100.53", f"--pid-file={d}/pid",
                        f"--dhcp-leasefile={d}/leases"], check=True)
        t["router_active"] = time.perf_counter() - start
        guest = NamespaceGuest(f"{aio.prefix}-rg{i}", aio.fabric, f"rawv{i}")
        guest.attach(segment, gmac)
        try:
            guest_checks(guest, "vm.raw.test", f"{cidr}.10", public_ip, t)
        finally:
            guest.destroy()
            with open(f"{d}/pid") as f:
                os.kill(int(f.read()), 15)
            for p in (f"rawp{i}", f"rawg{i}"):
                aio.fabric.unplug(p)
            remove_netns(ns)
        t["api"] = 0.0
        t["total"] = time.perf_counter() - start
        rows.append(t)
        print(f"baseline network {i}: " + " ".join(f"{k}={v * 1000:.0f}ms" for k, v in t.items()),
              flush=True)
    return rows


def summarize(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {"median_s": statistics.median(r[k] for r in rows),
                "max_s": max(r[k] for r in rows)} for k in (*PHASES, "total")}


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for offset, rows in enumerate((result["cloudnet"]["runs"], result["baseline"]["runs"])):
        xs = [i * 2.4 + offset for i in range(len(rows))]
        bottom = [0.0] * len(rows)
        for phase, color in zip(PHASES, ("#888", "#4c72b0", "#55a868", "#c44e52", "#8172b2"),
                                strict=True):
            vals = [r[phase] * 1000 for r in rows]
            ax.bar(xs, vals, bottom=bottom, color=color, width=0.9,
                   hatch="//" if offset else None, label=phase if offset == 0 else None)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.axhline(1000, color="k", linestyle=":", linewidth=1, label="target 1 s")
    ax.set_xticks([i * 2.4 + 0.5 for i in range(len(result["cloudnet"]["runs"]))])
    ax.set_xticklabels([str(i) for i in range(len(result["cloudnet"]["runs"]))])
    ax.set_xlabel("network (left: cloudnet, right hatched: hand-built baseline)")
    ax.set_ylabel("ms from CreateNetwork to working guest")
    ax.set_title(f"CreateNetwork → lease + DNS + SNAT: cloudnet/baseline = "
                 f"{result['ratio_total_median']:.2f}x")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cloudnet-bench-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    aio = AllInOne(
        insecure=True, prefix=f"b{uuid.uuid4().hex[:5]}", state_dir=work,
        listen=f"127.0.0.1:{port}")
    try:
        aio.up()
        baseline = run_baseline(aio, args.networks, work)
        cloud = run_cloudnet(aio, args.networks)
    finally:
        aio.down()
        shutil.rmtree(work, ignore_errors=True)
    c, b = summarize(cloud), summarize(baseline)
    result = {
        "benchmark": "create_network_to_working_guest",
        "host": platform.node(), "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "networks": args.networks,
        "cloudnet": {"summary": c, "runs": cloud},
        "baseline": {"summary": b, "runs": baseline},
        "ratio_total_median": c["total"]["median_s"] / b["total"]["median_s"],
        "target_s": 1.0,
        "met_target": c["total"]["max_s"] <= 1.0,
    }
    with open(os.path.join(args.out, "network_ready.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "network_ready.png"))
    print(json.dumps({k: result[k] for k in ("ratio_total_median", "met_target")} | {
        "cloudnet_total_median_s": c["total"]["median_s"],
        "cloudnet_total_max_s": c["total"]["max_s"],
        "baseline_total_median_s": b["total"]["median_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
