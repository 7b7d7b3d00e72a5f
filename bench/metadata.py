"""The router's guest metadata service (nginx): what the per-guest check costs,
and how soon a change is served.

Measured in one run on one router made by the agent in this process (real
nftables, nginx; a guest namespace on a Linux bridge fabric):

* requests/s (ab, keep-alive) of ``/latest/meta-data/instance-id`` from a
  guest through the router's metadata service (nftables (iif, MAC, IP) set,
  tree chosen by source address) against a second nginx in the same router
  serving the same tree on another port with no per-guest check (goal:
  ratio >= 0.9);
* the nginx worker's CPU time per request of each (from
  ``/proc/<worker>/schedstat``, nanoseconds on the CPU): the same comparison,
  steady when other jobs share the machine and ab's requests/s swing by 5x;
*   apply -> served: a new user data for one guest applied as the next
  generation (``RouterRegistry.apply``, what ``ApplyConfig`` runs) until curl
  in the guest reads it, with 10, 100 and 1,000 guests on the router (goal
  <= 100 ms, flat). netmgr's API and reconciler are not in this path.

``--part netmgr`` (or ``all``) measures the whole path in a real all-in-one
(netmgr's gRPC API, store, reconciler, the router agent, nginx; Linux bridge
fabric): one network, 10, 100 and 1,000 ports each carrying ``--user-data-kib``
of user data, one of them a namespace guest; ``UpdatePort(user_data)`` of
that port until curl in the guest (to 169.254.169.254, from its own address)
reads the new user data. The load average is recorded with the figures.

    .venv/bin/python bench/metadata.py [--part all|agent|netmgr] [--repeat 10]
        [--requests 20000] [--sizes 10,100,1000] [--user-data-kib 1] [--out bench/out]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from common.fabric.linuxbridge import LinuxBridgeFabric
from router.agent.registry import RouterRegistry
from router.runtime import router_netns_name
from tests.lib.routerlab import HOSTS, Topology, make_config, sh

MD = "169.254.169.254"
BASELINE_PORT = 8081


def config(router_id: str, generation: int, guests: int, user_data: bytes) -> pb.RouterConfig:
    """make_config's router on a /22 with ``guests`` ports' metadata (p1 is the guest)."""
    cfg = make_config(router_id, generation, ["p1"], cidr="10.10.0.0/22")
    cfg.interfaces[1].addresses[:] = ["10.10.0.1/22"]
    net = ipaddress.IPv4Network("10.10.0.0/22")
    mac, ip, host = HOSTS["p1"]
    cfg.guest_metadata.append(mpb.GuestMetadata(
        port_id="p1", interface="g-net1", mac=mac, ip=ip, hostname=host,
        availability_zone="zone1", user_data=user_data, network_id="net1"))
    for n in range(1, guests):
        addr = net.network_address + 20 + n  # .21 up to 10.10.3.251
        cfg.guest_metadata.append(mpb.GuestMetadata(
            port_id=f"x{n}", interface="g-net1", mac=f"02:bb:00:00:{n >> 8:02x}:{n & 255:02x}",
            ip=str(addr), hostname=f"x{n}", availability_zone="zone1",
            user_data=b"#cloud-config\n", network_id="net1"))
    return cfg


def worker_seconds(master: int) -> float:
    """CPU seconds used so far by the workers of the nginx whose master is ``master``."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != master:
                continue
            with open(f"/proc/{entry}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except (OSError, ValueError):
            continue
    return total


def read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def ab_with_cpu(ns: str, url: str, requests: int, master: int) -> tuple[float, float]:
    """(requests/s, worker CPU microseconds per request)."""
    before = worker_seconds(master)
    rps = ab(ns, url, requests)
    return rps, (worker_seconds(master) - before) / requests * 1e6


def ab(ns: str, url: str, requests: int) -> float:
    out = sh("ip", "netns", "exec", ns, "ab", "-q", "-k", "-n", str(requests), "-c", "8", url,
             timeout=300)
    m = re.search(r"Requests per second:\s+([0-9.]+)", out)
    assert m, out
    return float(m.group(1))


def served(ns: str, url: str, want: bytes, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "2", url],
                             capture_output=True, check=False).stdout
        if got == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: still {got[:40]!r}")


def baseline_nginx(state: str, netns: str, tree: str) -> str:
    """A plain nginx in the router serving ``tree`` on BASELINE_PORT (no per-guest check)."""
    conf = os.path.join(state, "baseline.conf")
    with open(conf, "w") as f:
        f.write(f"""user root;
worker_processes 1;
daemon on;
pid {state}/baseline.pid;
error_log {state}/baseline.log warn;
events {{ worker_connections 1024; }}
http {{
	access_log off;
	default_type text/plain;
	client_body_temp_path {state}/tmp;
	server {{
		listen 10.10.0.1:{BASELINE_PORT};
		root {tree};
		index _index;
	}}
}}
""")
    os.makedirs(f"{state}/tmp", exist_ok=True)
    sh("ip", "netns", "exec", netns, "nginx", "-e", f"{state}/baseline.log", "-c", conf)
    sh("ip", "netns", "exec", netns, "nft", "insert", "rule", "inet", "cloudnet", "input",
       "tcp", "dport", str(BASELINE_PORT), "accept")
    return conf


def run(repeat: int, requests: int) -> dict[str, Any]:
    prefix = f"b{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    state_dir = tempfile.mkdtemp(prefix="cn-bench-md-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    topo = Topology(prefix, state_dir, fabric, namespaces=[fabric.netns])
    registry = RouterRegistry(os.path.join(state_dir, "agent"), netns_prefix=prefix,
                              fabric_netns=fabric.netns, agent_id="bench")
    router_id = uuid.uuid4().hex
    result: dict[str, Any] = {}
    try:
        registry.start()
        gen = 1
        status = registry.apply(config(router_id, gen, 10, b"#cloud-config\n"))
        assert status.applied_generation == gen, status.last_error
        guest = topo.guest("p1")
        topo.configure_guest(guest, HOSTS["p1"][1])
        netns = router_netns_name(prefix, router_id)
        tree = os.path.realpath(os.path.join(state_dir, "agent", "routers", router_id,
                                             "metadata", "by-ip", HOSTS["p1"][1]))
        baseline_nginx(state_dir, netns, tree)
        path = "/latest/meta-data/instance-id"
        md_master = read_pid(os.path.join(state_dir, "agent", "routers", router_id,
                                          "metadata", "nginx.pid"))
        base_master = read_pid(os.path.join(state_dir, "baseline.pid"))
        md_rps, base_rps, md_cpu, base_cpu = [], [], [], []
        for _ in range(max(3, repeat // 3)):
            rps, cpu = ab_with_cpu(guest, f"http://{MD}{path}", requests, md_master)
            md_rps.append(rps)
            md_cpu.append(cpu)
            rps, cpu = ab_with_cpu(guest, f"http://10.10.0.1:{BASELINE_PORT}{path}", requests,
                                   base_master)
            base_rps.append(rps)
            base_cpu.append(cpu)
        result["metadata_rps"] = md_rps
        result["baseline_rps"] = base_rps
        result["rps_ratio"] = statistics.median(md_rps) / statistics.median(base_rps)
        result["metadata_worker_cpu_us_per_request"] = md_cpu
        result["baseline_worker_cpu_us_per_request"] = base_cpu
        # >1: the metadata service spends less CPU a request than the baseline.
        result["cpu_ratio"] = statistics.median(base_cpu) / statistics.median(md_cpu)

        latency: dict[str, list[float]] = {}
        for guests in (10, 100, 1000):
            gen += 1
            status = registry.apply(config(router_id, gen, guests, b"#cloud-config\n"))
            assert status.applied_generation == gen, status.last_error
            times = []
            for i in range(repeat):
                gen += 1
                data = f"#cloud-config\n# {guests} {i}\n".encode()
                started = time.monotonic()
                status = registry.apply(config(router_id, gen, guests, data))
                assert status.applied_generation == gen, status.last_error
                served(guest, f"http://{MD}/latest/user-data", data)
                times.append((time.monotonic() - started) * 1000)
            latency[str(guests)] = times
        result["apply_to_served_ms"] = latency
        result["apply_to_served_median_ms"] = {k: statistics.median(v)
                                               for k, v in latency.items()}
    finally:
        for rt in registry.runtimes():
            registry.delete(rt.ctx.router_id, keep_leases=False)
        topo.pidfiles.append(os.path.join(state_dir, "baseline.pid"))
        topo.cleanup()
    return result


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _add_ports(api: Any, network_id: str, start: int, stop: int, user_data: bytes) -> None:
    from cloudnet.netmgr.v1 import netmgr_pb2 as npb

    for n in range(start, stop):
        api.call(api.ports.CreatePort, npb.CreatePortRequest(port=npb.Port(
            network_id=network_id, hostname=f"x{n}", user_data=user_data)))


def run_netmgr(repeat: int, sizes: list[int], user_data_kib: int) -> dict[str, Any]:
    """UpdatePort(user_data) -> served, through a real all-in-one."""
    import shutil
    import socket

    from cloudnet.netmgr.v1 import netmgr_pb2 as npb

    from aio.allinone import AllInOne
    from aio.demo import Api
    from aio.nsguest import NamespaceGuest

    work = tempfile.mkdtemp(prefix="cloudnet-bench-md-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{sock.getsockname()[1]}"
    aio = AllInOne(insecure=True, prefix=f"b{uuid.uuid4().hex[:5]}", state_dir=work,
                   listen=listen, fabric_kind="linuxbridge")
    # Room for the "# <size> <repeat>" line each update adds (the API takes 32 KiB).
    filler = (b"#cloud-config\n# " + b"x" * max(0, user_data_kib * 1024 - 40) + b"\n")
    result: dict[str, Any] = {"user_data_bytes_per_port": len(filler), "load_before": _load()}
    guest = None
    try:
        aio.up()
        admin = Api(aio.listen, aio.admin_token)
        tenant = admin.call(admin.tenants.CreateTenant, npb.CreateTenantRequest(
            name=f"bench-{uuid.uuid4().hex[:6]}"))
        secret = admin.call(admin.tenants.CreateToken,
                            npb.CreateTokenRequest(tenant_id=tenant.id)).secret
        api = Api(aio.listen, secret)
        net = api.call(api.networks.CreateNetwork, npb.CreateNetworkRequest(
            network=npb.Network(name="md", cidr="10.40.0.0/21")))
        port = api.call(api.ports.CreatePort, npb.CreatePortRequest(port=npb.Port(
            network_id=net.id, hostname="g1", user_data=filler)))
        api.wait_router_active(net.router_id)
        guest = NamespaceGuest(f"{aio.prefix}-g-{port.id[:8]}", aio.fabric,
                               f"bp{port.id.replace('-', '')[:10]}")
        guest.attach(net.vlan_id, port.mac)
        guest.dhcp()
        url = f"http://{MD}/latest/user-data"

        def fetch() -> bytes:
            return subprocess.run(
                ["ip", "netns", "exec", guest.netns, "curl", "-s", "--max-time", "2",
                 "--interface", port.ip, url], capture_output=True, check=False).stdout

        latency: dict[str, list[float]] = {}
        load: dict[str, list[float]] = {}
        have = 1
        for size in sizes:
            started = time.monotonic()
            _add_ports(api, net.id, have, size, filler)
            have = max(have, size)
            api.wait_router_active(net.router_id, timeout=900)
            result.setdefault("ports_created_seconds", {})[str(size)] = round(
                time.monotonic() - started, 1)
            times = []
            for i in range(repeat):
                data = filler + f"# {size} {i}\n".encode()
                started = time.monotonic()
                api.call(api.ports.UpdatePort, npb.UpdatePortRequest(
                    port=npb.Port(id=port.id, user_data=data)))
                deadline = started + 60
                while fetch() != data:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{size} ports: user data not served in 60 s")
                times.append((time.monotonic() - started) * 1000)
            latency[str(size)] = times
            load[str(size)] = _load()
        result["update_port_to_served_ms"] = latency
        result["update_port_to_served_median_ms"] = {k: statistics.median(v)
                                                     for k, v in latency.items()}
        result["load_after_each_size"] = load
    finally:
        if guest is not None:
            guest.destroy()
        aio.down()
        shutil.rmtree(work, ignore_errors=True)
    return result


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = result.get("netmgr")
    if "metadata_rps" not in result:
        assert net is not None
        fig, c = plt.subplots(1, 1, figsize=(5, 4))
        _plot_netmgr(c, net)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return
    fig, axes = plt.subplots(1, 3 if net else 2, figsize=(15 if net else 10, 4))
    a, b = axes[0], axes[1]
    if net:
        _plot_netmgr(axes[2], net)
    a.bar(["metadata (per-guest check)", "same nginx, no check"],
          [statistics.median(result["metadata_rps"]), statistics.median(result["baseline_rps"])],
          color=["tab:blue", "grey"])
    a.set_ylabel("requests/s (ab -k -c 8, median)")
    a.set_title(f"rps ratio {result['rps_ratio']:.2f}, worker CPU/request ratio "
                f"{result['cpu_ratio']:.2f}", fontsize=9)
    lat = result["apply_to_served_ms"]
    b.boxplot([lat[k] for k in sorted(lat, key=int)])
    b.set_xticks(range(1, len(lat) + 1), sorted(lat, key=int))
    b.set_xlabel("guests on the router")
    b.set_ylabel("ms, apply -> new user data served")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_netmgr(ax: Any, net: dict[str, Any]) -> None:
    lat = net["update_port_to_served_ms"]
    ax.boxplot([lat[k] for k in sorted(lat, key=int)])
    ax.set_xticks(range(1, len(lat) + 1), sorted(lat, key=int))
    ax.set_xlabel(f"ports on the router ({net['user_data_bytes_per_port']} B user data each)")
    ax.set_ylabel("ms, UpdatePort -> new user data served")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    p.add_argument("--part", choices=("all", "agent", "netmgr"), default="all")
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--user-data-kib", type=int, default=1)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result: dict[str, Any] = {}
    if args.part in ("all", "agent"):
        result = run(args.repeat, args.requests)
    if args.part in ("all", "netmgr"):
        result["netmgr"] = run_netmgr(args.repeat, [int(x) for x in args.sizes.split(",")],
                                      args.user_data_kib)
    print(json.dumps(result, indent=2))
    with open(os.path.join(args.out, "metadata.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "metadata.png"))


if __name__ == "__main__":
    main()
