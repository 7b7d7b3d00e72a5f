"""CPU per API call: what one netmgr replica, its database, the router agents
and the client spend on each call, measured in one short run.

For each database (one netmgr on SQLite, then one netmgr replica on
PostgreSQL, both with ``--agents`` registered router hosts):

* the floor: ``--floor-calls`` WhoAmI calls (a call that authenticates and
  reads nothing else: gRPC, the interceptors, the token lookup), from
  ``--threads`` client threads;
* the write path: ``--networks`` networks with ``--ports`` ports each, created
  from the same threads (each network makes a router on an agent; each port
  changes it).

Each phase reports calls/s, p50 and p99 latency, and CPU milliseconds per call
of each part (netmgr, postgresql, router_agents with the daemons they start,
bench_client; "other" is the rest of the machine, other users included).
The floor and the SQLite figures are the baselines of the same run: a write
costs what it costs above the floor, and PostgreSQL's round trips what they
cost above SQLite's file.

    .venv/bin/python bench/api_call_cost.py [--networks 500 --ports 1 --threads 10
        --agents 2 --floor-calls 1000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import hosts_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf import field_mask_pb2

from aio import replicas
from aio.allinone import AllInOne
from aio.demo import Api
from tests.lib import cpu_share
from tests.lib.replicas import WriteLoad, free_ports, percentile
from tests.lib.router_hosts import RouterHost

AGENT_HEALTH_INTERVAL = 5.0  # router/agent/server.py's default
BIG_ZONE = {"public_cidr": "100.64.0.0/16", "public_gateway": "100.64.0.1",
            "public_pool_start": "100.64.0.10", "public_pool_end": "100.64.255.250",
            "vlan_min": 100, "vlan_max": 3000, "bgp_peers": []}
Part = Callable[[int, str], str | None]


class Cloud:
    """One netmgr on ``db`` and ``agents`` router hosts, as real processes."""

    def __init__(self, db: str, agents: int) -> None:
        self.state_dir = tempfile.mkdtemp(prefix="cn-bench-cost-", dir="/tmp")
        os.chmod(self.state_dir, 0o711)  # the postgres user runs <state>/pg
        self.aio = AllInOne(insecure=True, prefix=f"c{uuid.uuid4().hex[:5]}",
                            state_dir=self.state_dir, listen=f"127.0.0.1:{free_ports(1)}",
                            fabric_kind="linuxbridge", health_interval=5.0, replicas=1, db=db)
        self.hosts = [RouterHost(self.aio, f"h{i}", health_interval=AGENT_HEALTH_INTERVAL)
                      for i in range(agents)]

    def up(self) -> None:
        self.aio.up()
        for h in self.hosts:
            h.start()
        admin = Api(self.listen, self.aio.admin_token)
        stub = hosts_pb2_grpc.HostServiceStub(admin.channel)
        deadline = time.monotonic() + 120
        while sum(1 for h in stub.ListHosts(hpb.ListHostsRequest(), metadata=admin.metadata,
                                             timeout=10).hosts
                  if h.role == "router" and h.state == hpb.HOST_STATE_UP) < len(self.hosts):
            if time.monotonic() > deadline:
                raise TimeoutError("router hosts not up")
            time.sleep(0.2)
        admin.close()

    @property
    def listen(self) -> str:
        return replicas.listens(self.aio)[0]

    def tenant(self) -> str:
        admin = Api(self.listen, self.aio.admin_token)
        try:
            admin.call(admin.zone.UpdateZone, pb.UpdateZoneRequest(
                zone=pb.Zone(**BIG_ZONE),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=list(BIG_ZONE))))
            t = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="bench"))
            return str(admin.call(admin.tenants.CreateToken, pb.CreateTokenRequest(
                tenant_id=t.id, name="bench")).secret)
        finally:
            admin.close()

    def part_of(self) -> Part:
        return cpu_share.cloud_parts(self.aio.pids)

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.aio.down()
        for h in self.hosts:
            with contextlib.suppress(Exception):
                h.stop_routers()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def measured(part: Part, run: Callable[[], list[float]]) -> dict[str, Any]:
    """Calls/s, latency and CPU ms per call of each part while ``run`` makes
    its calls (it returns their latencies)."""
    before = cpu_share.snapshot(part)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    latencies = run()
    took = time.monotonic() - started
    after = cpu_share.snapshot(part)
    cpu: dict[str, float] = {}
    for key, seconds in after.items():  # unrounded (cpu_share.spent rounds to 0.1 s)
        cpu[key[0]] = cpu.get(key[0], 0.0) + seconds - before.get(key, 0.0)
    machine = cpu.pop("machine", 0.0)
    cpu["other"] = machine - sum(cpu.values())
    cpu["machine"] = machine
    n = max(1, len(latencies))
    return {"calls": len(latencies), "seconds": round(took, 2),
            "calls_per_s": round(len(latencies) / took, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "cpu_ms_per_call": {k: round(v * 1000 / n, 2) for k, v in cpu.items()},
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def floor_calls(target: str, token: str, calls: int, threads: int) -> list[float]:
    """``calls`` WhoAmI calls from ``threads`` threads: their latencies."""
    todo = iter(range(calls))
    lock = threading.Lock()
    latencies: list[float] = []

    def worker() -> None:
        api = Api(target, token)
        try:
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                started = time.monotonic()
                api.call(api.tenants.WhoAmI, pb.WhoAmIRequest())
                with lock:
                    latencies.append(time.monotonic() - started)
        finally:
            api.close()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def write_calls(target: str, token: str, args: argparse.Namespace) -> list[float]:
    load = WriteLoad([target], token, threads=args.threads, networks=args.networks,
                     ports=args.ports)
    try:
        load.start()
        load.join()
        return list(load.acked.latencies)
    finally:
        load.close()


def run(db: str, args: argparse.Namespace) -> dict[str, Any]:
    cloud = Cloud(db, args.agents)
    try:
        cloud.up()
        token = cloud.tenant()
        part = cloud.part_of()
        # A few calls first: connections made, code paths warm.
        floor_calls(cloud.listen, token, 50, args.threads)
        floor = measured(part, lambda: floor_calls(cloud.listen, token, args.floor_calls,
                                                   args.threads))
        writes = measured(part, lambda: write_calls(cloud.listen, token, args))
        return {"db": db, "floor_whoami": floor, "create_network_and_ports": writes}
    finally:
        cloud.down()


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ["netmgr", "postgresql", "router_agents", "bench_client"]
    colors = ["#4c72b0", "#55a868", "#c44e52", "#888"]
    bars = [(f"{v['db']}\n{label}", v[phase]) for v in result["runs"]
            for phase, label in (("floor_whoami", "WhoAmI (floor)"),
                                 ("create_network_and_ports", "creates"))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bottom = [0.0] * len(bars)
    for p, c in zip(parts, colors, strict=True):
        values = [b[1]["cpu_ms_per_call"].get(p, 0.0) for b in bars]
        axes[0].bar([b[0] for b in bars], values, bottom=bottom, color=c, label=p)
        bottom = [x + y for x, y in zip(bottom, values, strict=True)]
    axes[0].set_ylabel("CPU ms per call")
    axes[0].legend(fontsize=8)
    axes[0].tick_params(axis="x", labelsize=7)
    axes[1].bar([b[0] for b in bars], [b[1]["calls_per_s"] for b in bars], color="#4c72b0")
    axes[1].set_ylabel("calls/s")
    axes[1].tick_params(axis="x", labelsize=7)
    fig.suptitle(f"API call cost: {result['networks']} networks x {result['ports']} ports, "
                 f"{result['threads']} threads, {result['agents']} router hosts, one netmgr")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=500)
    ap.add_argument("--ports", type=int, default=1, help="ports per network")
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--agents", type=int, default=2, help="router host agents")
    ap.add_argument("--floor-calls", type=int, default=1000)
    ap.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    for name in ("networks", "threads", "agents", "floor_calls"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.ports < 0:
        ap.error("--ports must be 0 or more")
    os.makedirs(args.out, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "api_call_cost", "host": platform.node(), "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "networks": args.networks, "ports": args.ports, "threads": args.threads,
        "agents": args.agents, "floor_calls": args.floor_calls, "runs": []}
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    path = os.path.join(args.out, "api_call_cost.json")
    for db in dbs:
        result["runs"].append(run(db, args))
        with open(path + ".tmp", "w") as f:  # what was measured so far, never half a file
            json.dump(result, f, indent=2)
        os.replace(path + ".tmp", path)
        print(json.dumps(result["runs"][-1]), file=sys.stderr, flush=True)
    try:
        plot(result, os.path.join(args.out, "api_call_cost.png"))
    except Exception as e:  # the figures matter more than the plot
        print(f"plot failed: {e}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
