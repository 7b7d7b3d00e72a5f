"""The control plane under load: netmgr replicas, shard takeover, host failover.

Measured in one run on this machine, each against a baseline from the same run:

* API throughput: networks with ports created from many client threads
  (each call to the next replica; retried on another with the same request
  ID when one does not answer): calls/s, p50 and p99 latency, and seconds
  until every router is ACTIVE, for ``--replicas`` netmgr processes on
  PostgreSQL against one netmgr on SQLite (the baseline), both with the same
  ``--agents`` registered router hosts;
* replica takeover (PostgreSQL): during a second write load the replica
  holding the most shard leases is killed with SIGKILL: seconds until its
  shards are held again, seconds until a change to a router of one of its
  shards is ACTIVE, acknowledged writes lost, routers rolled back (every
  agent sampled all along, every ``--watch-interval`` s: 0.2 by default, a
  watcher's realistic rate; each sample is a ListRouterStatus: every 20 ms
  asked each agent 100 times as often as netmgr's own resync does);
* host failover: the router host with the most routers loses its power (its
  agent and its routers' daemons killed, their links cut; its namespaces are
  removed after the figure, as a dead machine's kernel would never do on the
  survivors' CPUs): seconds until every one of its routers is ACTIVE on
  another host (the grace included).

    .venv/bin/python bench/control_plane.py [--networks 1000 --ports 10 --threads 20
        --replicas 3 --agents 4] [--quick] [--create-only] [--out bench/out]

``--create-only`` runs the replicas' create phase alone (about 6 minutes at
full size): two trees compared one run after the other, on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf import field_mask_pb2

from aio import replicas
from aio.allinone import AllInOne
from aio.demo import Api
from netmgr.store.leases import SHARDS, shard_of
from tests.lib import cpu_share
from tests.lib.replicas import (
    AgentWatch,
    WriteLoad,
    free_ports,
    lease_holders,
    percentile,
    shards_of,
)
from tests.lib.router_hosts import RouterHost

AGENT_HEALTH_INTERVAL = 5.0  # router/agent/server.py's default
# The host phase's wait for the dead host's routers to serve elsewhere (the
# goal is 30 s; a slow move is a figure, not a crash of the run).
HOST_MOVE_TIMEOUT = 900.0
BIG_ZONE = {"public_cidr": "100.64.0.0/16", "public_gateway": "100.64.0.1",
            "public_pool_start": "100.64.0.10", "public_pool_end": "100.64.255.250",
            "vlan_min": 100, "vlan_max": 3000,
            # The all-in-one's BGP peer is on its default provider network:
            # gone with it (the bench routes nothing by BGP).
            "bgp_peers": []}


def wait_for(check: Any, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``check()`` is true (raises after ``timeout``). A call
    that times out on the overloaded machine (1,000 routers being made) is
    one more "not yet", not the end of the run."""
    started = time.monotonic()

    def ok() -> bool:
        try:
            return bool(check())
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise
            return False

    while not ok():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{check} after {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def all_routers(api: Api) -> list[pb.Router]:
    out: list[pb.Router] = []
    token = ""
    while True:
        page = api.call(api.routers.ListRouters,
                        pb.ListRoutersRequest(page_size=500, page_token=token))
        out.extend(page.routers)
        token = page.next_page_token
        if not token:
            return out


def listed_ids(api: Api, method: Any, request_type: Any, field: str) -> set[str]:
    """Every ID a List call returns, page after page."""
    out: set[str] = set()
    token = ""
    while True:
        page = api.call(method, request_type(page_size=500, page_token=token))
        out.update(o.id for o in getattr(page, field))
        token = page.next_page_token
        if not token:
            return out


def active(r: pb.Router) -> bool:
    return bool(r.applied_generation >= r.desired_generation and
                r.state == pb.ROUTER_STATE_ACTIVE)


class Cloud:
    """An all-in-one with ``replicas`` netmgr processes and ``agents`` router hosts."""

    def __init__(self, replicas_n: int, db: str, agents: int, host_grace: float,
                 fabric: str) -> None:
        self.state_dir = tempfile.mkdtemp(prefix="cn-bench-cp-", dir="/tmp")
        os.chmod(self.state_dir, 0o711)  # the postgres user runs <state>/pg
        self.aio = AllInOne(
            insecure=True, prefix=f"b{uuid.uuid4().hex[:5]}", state_dir=self.state_dir,
                            listen=f"127.0.0.1:{free_ports(replicas_n)}",
                            fabric_kind=fabric, health_interval=5.0,
                            replicas=replicas_n, db=db,
                            netmgr_args=("--host-grace", str(host_grace)))
        # The agents check their daemons at the agent's default interval (the
        # tests' 1 s costs 250 routers' checks a second per agent).
        self.hosts = [RouterHost(self.aio, f"h{i}", health_interval=AGENT_HEALTH_INTERVAL)
                      for i in range(agents)]

    def up(self) -> None:
        self.aio.up()
        for h in self.hosts:
            h.start()
        admin = self.admin()
        wait_for(lambda: sum(1 for r in self._host_list(admin) if r) >= len(self.hosts), 60)

    @staticmethod
    def _host_list(admin: Api) -> list[bool]:
        from cloudnet.netmgr.v1 import hosts_pb2 as hpb
        from cloudnet.netmgr.v1 import hosts_pb2_grpc

        stub = hosts_pb2_grpc.HostServiceStub(admin.channel)
        return [h.role == "router" and h.state == hpb.HOST_STATE_UP for h in stub.ListHosts(
            hpb.ListHostsRequest(), metadata=admin.metadata, timeout=10).hosts]

    def admin(self, replica: int = 0) -> Api:
        return Api(replicas.listens(self.aio)[replica], self.aio.admin_token)

    def tenant(self, networks: int) -> str:
        admin = self.admin()
        if networks > 200:  # more source-NAT addresses and VLANs than the default zone's
            admin.call(admin.zone.UpdateZone, pb.UpdateZoneRequest(
                zone=pb.Zone(**BIG_ZONE),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=list(BIG_ZONE))))
        t = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="bench"))
        return str(admin.call(admin.tenants.CreateToken, pb.CreateTokenRequest(
            tenant_id=t.id, name="bench")).secret)

    def down(self, keep_logs: str | None = None) -> None:
        with contextlib.suppress(Exception):
            self.aio.down()
        for h in self.hosts:
            with contextlib.suppress(Exception):
                h.stop_routers()
        if keep_logs:  # netmgr's and the agents' logs, for a look afterwards
            with contextlib.suppress(OSError):
                shutil.copytree(os.path.join(self.state_dir, "log"), keep_logs,
                                dirs_exist_ok=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def part_of(cloud: Cloud) -> Any:
    """Which part of the run a process is (tests.lib.cpu_share): netmgr's
    replicas, the router agents (and the daemons they start), PostgreSQL,
    this bench's client threads."""
    return cpu_share.cloud_parts(cloud.aio.pids)


def create_phase(cloud: Cloud, token: str, args: argparse.Namespace) -> dict[str, Any]:
    load = WriteLoad(replicas.listens(cloud.aio), token, threads=args.threads,
                     networks=args.networks, ports=args.ports)
    part = part_of(cloud)
    cpu_before = cpu_share.snapshot(part)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    load.start()
    load.join()
    took = time.monotonic() - started
    cpu = cpu_share.spent(cpu_before, cpu_share.snapshot(part))
    load_after = os.getloadavg()[0]
    api = Api(replicas.listens(cloud.aio)[0], token)
    try:
        to_active = wait_for(lambda: all(active(r) for r in all_routers(api)),
                             args.active_timeout, step=0.5) + took
    finally:
        api.close()
        load.close()
    # The whole machine's CPU from the first call until every router served:
    # where the work lands (during the calls or after them) moves the per-call
    # figures between runs; this total does not.
    machine_to_active = cpu_share.machine_busy() - cpu_before[("machine", 0)]
    lat = load.acked.latencies
    return {"calls": len(lat), "seconds": round(took, 3),
            "calls_per_s": round(len(lat) / took, 1),
            "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
            "networks_acked": len(load.acked.networks),
            "all_active_s": round(to_active, 2),
            "machine_cpu_s_to_all_active": round(machine_to_active, 1),
            # While the calls ran: CPU seconds per part, and per call in ms.
            "cpu_s": cpu,
            "cpu_ms_per_call": {k: round(v * 1000 / max(1, len(lat)), 2)
                                for k, v in cpu.items()},
            "load_average": [round(load_before, 2), round(load_after, 2)]}


def takeover_phase(cloud: Cloud, token: str, args: argparse.Namespace,
                   watches: list[AgentWatch]) -> dict[str, Any]:
    aio = cloud.aio
    url = replicas.db_url(aio)
    load = WriteLoad(replicas.listens(aio), token, threads=args.threads,
                     networks=args.kill_networks, ports=args.ports, cidr_base=args.networks)
    load.start()
    wait_for(lambda: len(load.acked.networks) >= max(2, args.kill_networks // 4), 300)
    holders = lease_holders(url)
    victim = max(holders, key=lambda pid: holders[pid])
    victim_name = next(n for n, p in aio.pids.items() if p == victim)
    survivor = next(i for i in range(aio.replicas) if replicas.name(i) != victim_name)
    api = Api(replicas.listens(aio)[survivor], token)
    # A router of the victim's shards to change right after the kill.
    nets = api.call(api.networks.ListNetworks, pb.ListNetworksRequest(page_size=500)).networks
    victim_shards = shards_of(url, victim)
    probe = next((n for n in nets if shard_of(n.router_id) in victim_shards), None)
    killed_at = time.time()  # for reading the logs beside the figures
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    aio.pids.pop(victim_name, None)
    served = None
    probe_acked = None
    if probe is not None:  # a change the victim would have pushed, made at once
        api.call(api.ports.CreatePort, pb.CreatePortRequest(port=pb.Port(network_id=probe.id)))
        probe_acked = time.monotonic() - killed

    def all_held() -> bool:
        h = lease_holders(url)
        return sum(h.values()) == SHARDS and victim not in h

    wait_for(all_held, 120, step=0.02)
    held_s = time.monotonic() - killed
    if probe is not None:
        wait_for(lambda: active(api.call(api.routers.GetRouter,
                                         pb.GetRouterRequest(id=probe.router_id))), 120)
        served = time.monotonic() - killed
    load.join()
    listed = listed_ids(api, api.networks.ListNetworks, pb.ListNetworksRequest, "networks")
    ports = listed_ids(api, api.ports.ListPorts, pb.ListPortsRequest, "ports")
    lost = sum(1 for n in load.acked.networks if n not in listed) + sum(
        1 for ps in load.acked.networks.values() for p in ps if p not in ports)
    wait_for(lambda: all(active(r) for r in all_routers(api)), args.active_timeout, step=0.5)
    api.close()
    load.close()
    return {"victim_shards": len(victim_shards), "shards_held_again_s": round(held_s, 2),
            "killed_at": time.strftime("%H:%M:%S", time.gmtime(killed_at))
            + f".{int(killed_at * 1000) % 1000:03d}Z",
            "victim_router": probe.router_id if probe is not None else None,
            "victim_router_change_acked_s": round(probe_acked, 2)
            if probe_acked is not None else None,
            "victim_router_change_active_s": round(served, 2) if served is not None else None,
            "acked_writes": len(load.acked.networks) + sum(
                len(p) for p in load.acked.networks.values()),
            "acked_writes_lost": lost, "calls_retried_elsewhere": load.acked.failures,
            "routers_rolled_back": sum(len(w.rollbacks) for w in watches)}


def live_listen(aio: AllInOne) -> str:
    """The API address of a replica still running."""
    listens = replicas.listens(aio)
    return next(listens[i] for i in range(aio.replicas) if replicas.name(i) in aio.pids)


def host_phase(cloud: Cloud, token: str) -> dict[str, Any]:
    api = Api(live_listen(cloud.aio), token)
    routers = all_routers(api)
    counts = {h.name: sum(1 for r in routers if r.host == h.name) for h in cloud.hosts}
    dead = max(cloud.hosts, key=lambda h: counts[h.name])
    moving = {r.id for r in routers if r.host == dead.name}
    started = time.monotonic()
    dead.power_off()
    down = time.monotonic() - started

    def moved() -> bool:
        # Two listings of 500 rather than a GetRouter per router: the
        # bench's own load, polling, competes with the failover.
        now = {r.id: r for r in all_routers(api) if r.id in moving}
        return len(now) == len(moving) and all(
            r.host != dead.name and active(r) for r in now.values())

    wait_for(moved, HOST_MOVE_TIMEOUT, step=0.5)
    took = time.monotonic() - started
    api.close()
    removed = time.monotonic()
    dead.stop_routers()  # the dead machine's remains, after the figure
    return {"host_routers": len(moving), "routers_serving_elsewhere_s": round(took, 2),
            "dead_host_down_s": round(down, 2),
            "dead_host_remains_removed_s": round(time.monotonic() - removed, 2)}


class Results:
    """The run's figures, written out (JSON and plot) after every phase: a
    long run that is stopped or crashes keeps what it measured so far. A
    phase not run yet is absent from the JSON ("complete" is false until the
    end) and from the plot."""

    def __init__(self, out_dir: str, head: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.result: dict[str, Any] = {**head, "complete": False}

    def phase(self, variant: str, out: dict[str, Any]) -> None:
        """The figures of ``variant`` ("baseline" or "replicated") so far."""
        self.result[variant] = out
        b, r = self.result.get("baseline", {}).get("create"), \
            self.result.get("replicated", {}).get("create")
        if b and r:
            self.result["ratio_calls_per_s"] = round(r["calls_per_s"] / b["calls_per_s"], 2)
            self.result["ratio_p99"] = round(r["p99_ms"] / b["p99_ms"], 2) if b["p99_ms"] \
                else None
        self.write()

    def write(self) -> None:
        path = os.path.join(self.out_dir, "control_plane.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.result, f, indent=2)
        os.replace(path + ".tmp", path)  # never a half-written file
        try:
            plot(self.result, os.path.join(self.out_dir, "control_plane.png"))
        except Exception as e:  # the figures matter more than the plot
            print(f"plot failed: {e}", file=sys.stderr, flush=True)
        print(json.dumps(self.result), file=sys.stderr, flush=True)


def run(replicas_n: int, db: str, args: argparse.Namespace, failures: bool,
        results: Results, variant: str) -> dict[str, Any]:
    cloud = Cloud(replicas_n, db, args.agents, args.host_grace, args.fabric)
    watches: list[AgentWatch] = []
    try:
        cloud.up()
        token = cloud.tenant(args.networks + args.kill_networks + 50)
        watches = [AgentWatch(f"unix://{h.socket}", interval=args.watch_interval)
                   for h in cloud.hosts]
        for w in watches:
            w.start()
        out: dict[str, Any] = {"replicas": replicas_n, "db": db, "agents": args.agents,
                               "create": create_phase(cloud, token, args)}
        results.phase(variant, out)
        if failures:
            out["replica_kill"] = takeover_phase(cloud, token, args, watches)
            out["routers_rolled_back"] = sum(len(w.rollbacks) for w in watches)
            results.phase(variant, out)
            out["host_kill"] = host_phase(cloud, token)
            results.phase(variant, out)
        for w in watches:
            w.stop()
        out["routers_rolled_back"] = sum(len(w.rollbacks) for w in watches)
        results.phase(variant, out)
        return out
    finally:
        for w in watches:
            with contextlib.suppress(Exception):
                w.stop()
        cloud.down(os.path.join(args.keep_logs, variant) if args.keep_logs else None)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # What was measured so far: a partial run plots its finished phases.
    creates = [(label, result[variant]["create"]) for variant, label in (
        ("baseline", "1 replica, SQLite"),
        ("replicated", f"{result.get('replicated', {}).get('replicas', '?')} replicas, "
                       "PostgreSQL")) if "create" in result.get(variant, {})]
    colors = ["#888", "#4c72b0"][:len(creates)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].bar([lb for lb, _ in creates], [c["calls_per_s"] for _, c in creates], color=colors)
    axes[0].axhline(300, color="k", linestyle=":", linewidth=1, label="goal 300/s")
    axes[0].set_ylabel("API calls/s")
    axes[0].legend(fontsize=8)
    short = ["SQLite", "replicas"][:len(creates)]
    axes[1].bar([f"{lb}\np50" for lb in short] + [f"{lb}\np99" for lb in short],
                [c["p50_ms"] for _, c in creates] + [c["p99_ms"] for _, c in creates],
                color=colors * 2)
    axes[1].axhline(100, color="k", linestyle=":", linewidth=1, label="goal p99 100 ms")
    axes[1].set_ylabel("ms per call")
    axes[1].tick_params(axis="x", labelsize=8)
    axes[1].legend(fontsize=8)
    rep = result.get("replicated", {})
    kill, host = rep.get("replica_kill"), rep.get("host_kill")
    bars = ([("shards held\nagain", kill["shards_held_again_s"], "#55a868"),
             ("their router's\nchange served", kill["victim_router_change_active_s"], "#8ccf9a")]
            if kill else []) + (
        [("host failover", host["routers_serving_elsewhere_s"], "#c44e52")] if host else [])
    axes[2].bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for goal, label in ((5, "goal takeover 5 s"), (30, "goal host failover 30 s")):
        axes[2].axhline(goal, color="k", linestyle=":", linewidth=1)
        axes[2].annotate(label, (0, goal), fontsize=7, xytext=(2, 2),
                         textcoords="offset points", xycoords=("axes fraction", "data"))
    axes[2].tick_params(axis="x", labelsize=8)
    axes[2].set_ylabel("seconds")
    if kill:
        axes[2].set_title(f"lost {kill['acked_writes_lost']}, rolled back "
                          f"{rep.get('routers_rolled_back', '?')}", fontsize=9)
    fig.suptitle(f"control plane: {result['networks']} networks x {result['ports']} ports, "
                 f"{result['threads']} threads, {result['agents']} router hosts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=1000)
    ap.add_argument("--ports", type=int, default=10, help="ports per network")
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--agents", type=int, default=4, help="router host agents")
    ap.add_argument("--kill-networks", type=int, default=100,
                    help="networks of the write load the replica is killed in")
    ap.add_argument("--host-grace", type=float, default=10.0)
    ap.add_argument("--active-timeout", type=float, default=1800.0)
    ap.add_argument("--watch-interval", type=float, default=0.2,
                    help="seconds between the rollback watch's samples of each agent "
                         "(a ListRouterStatus each; netmgr itself asks every 2 s)")
    ap.add_argument("--quick", action="store_true",
                    help="a quick run: 40 networks x 4 ports, 20 killed-load networks, 2 agents")
    ap.add_argument("--fabric", choices=("linuxbridge", "ovs"), default="linuxbridge",
                    help="the hosts' fabric (one for all the run's hosts). The ovs fabric "
                         "runs OVS's userspace datapath here (no kernel module): past about "
                         "1,000 ports each port added takes ovs-vswitchd seconds")
    ap.add_argument("--keep-logs", metavar="DIR",
                    help="copy netmgr's and the agents' logs there (per variant)")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="only the replicas (no SQLite baseline: no ratios)")
    ap.add_argument("--create-only", action="store_true",
                    help="only the replicas' create phase (no baseline, no failures): "
                         "for comparing two trees, one run after the other")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    if args.quick:
        args.networks, args.ports, args.kill_networks, args.agents = 40, 4, 20, 2
    os.makedirs(args.out, exist_ok=True)
    results = Results(args.out, {
        "benchmark": "control_plane", "host": platform.node(), "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "networks": args.networks, "ports": args.ports, "threads": args.threads,
        "agents": args.agents, "host_grace_s": args.host_grace, "fabric": args.fabric,
        "watch_interval_s": args.watch_interval})
    if not (args.skip_baseline or args.create_only):
        run(1, "sqlite", args, failures=False, results=results, variant="baseline")
    run(args.replicas, "postgresql", args, failures=not args.create_only, results=results,
        variant="replicated")
    results.result["complete"] = True
    results.write()
    print(json.dumps(results.result, indent=2))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
