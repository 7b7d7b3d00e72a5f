"""Routers on one host through netmgr: 1,000 networks, memory of both daemons, restarts.

The whole control path as a user drives it: netmgr (its own process, SQLite)
and the router agent (its own process, Linux-bridge fabric in a namespace of
the run's own), a tenant creating networks through the public API from
--clients threads. The zone is widened first (a /16 provider range: one
source-NAT address per network; a guest VLAN range of --routers + 100) with
the admin's UpdateZone, as an operator sizing a zone would.

In one run, at --small networks and then at --routers (the networks added):

* create: CreateNetwork calls/s and p50/p99 latency; seconds until netmgr
  shows every router ACTIVE at its desired generation;
* memory: netmgr's and the agent's RSS;
* agent restart: kill -9 the agent and start it again; seconds until netmgr
  shows every router ACTIVE again, and how many full applies the agent made
  (it adopts its routers: netmgr pushes only what it lacks; baseline in the
  same run: the count of routers, what a restart cost when netmgr pushed all);
* netmgr restart: kill -9 netmgr, start it again; seconds until it serves and
  until every router shows ACTIVE again (its first resync).

Every namespace and process the run made is removed at the end.

    .venv/bin/python bench/routers_scale_netmgr.py [--routers 1000] [--small 100] [--out bench/out]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from google.protobuf import field_mask_pb2
from routers_scale import REPO, Agent, cleanup, rss_kib

from aio.demo import Api

APPLIED = "generation 1 applied"


class Netmgr:
    """netmgr as its own process on a unix socket, SQLite in the run's directory."""

    def __init__(self, top: str, agent_socket: str) -> None:
        self.top = top
        self.socket = os.path.join(top, "netmgr.sock")
        self.token = uuid.uuid4().hex
        self.token_file = os.path.join(top, "admin.token")
        with open(os.open(self.token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.token + "\n")
        self.agent_socket = agent_socket
        self.log_path = os.path.join(top, "netmgr.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netmgr.server", "--listen", f"unix:{self.socket}",
                 "--db-url", f"sqlite:///{os.path.join(self.top, 'netmgr.db')}",
                 "--admin-token-file", self.token_file,
                 "--agent", f"local=unix://{self.agent_socket}"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.perf_counter() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"netmgr exited ({self.proc.returncode})")
            if time.perf_counter() > deadline:
                raise RuntimeError("netmgr did not serve within 120 s")
            if os.path.exists(self.socket):
                with grpc.insecure_channel(f"unix:{self.socket}") as ch:
                    try:
                        rpc.ZoneServiceStub(ch).GetZone(
                            pb.GetZoneRequest(), timeout=2,
                            metadata=(("authorization", f"Bearer {self.token}"),))
                        return time.perf_counter() - t0
                    except grpc.RpcError:
                        pass
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=60)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)


# The API's stubs with a bearer token: the demo's client (aio.demo.Api).
Client = Api


def widen_zone(admin: Client, routers: int) -> None:
    zone = pb.Zone(public_cidr="100.64.0.0/16", public_gateway="100.64.255.254",
                   public_pool_start="100.64.0.1", public_pool_end="100.64.250.250",
                   vlan_min=100, vlan_max=100 + routers + 100)
    admin.call(admin.zone.UpdateZone, pb.UpdateZoneRequest(
        zone=zone, update_mask=field_mask_pb2.FieldMask(paths=[
            "public_cidr", "public_gateway", "public_pool_start", "public_pool_end",
            "vlan_min", "vlan_max"])))


def all_routers(admin: Client) -> list[pb.Router]:
    out: list[pb.Router] = []
    token = ""
    while True:
        reply = admin.call(admin.routers.ListRouters,
                           pb.ListRoutersRequest(page_size=500, page_token=token))
        out.extend(reply.routers)
        token = reply.next_page_token
        if not token:
            return out


def is_active(r: pb.Router) -> bool:
    return r.state == pb.ROUTER_STATE_ACTIVE and r.applied_generation >= r.desired_generation


def wait_active(admin: Client, want: int, t0: float, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            routers = all_routers(admin)
        except grpc.RpcError:
            routers = []
        if len(routers) >= want and all(is_active(r) for r in routers):
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            bad = [(r.id[:8], pb.RouterState.Name(r.state), r.last_error[:100])
                   for r in routers if not is_active(r)]
            raise RuntimeError(f"{len(bad)} of {len(routers)} not ACTIVE after "
                               f"{timeout:.0f} s: {bad[:3]}")
        time.sleep(0.1)


def create(tenant: Client, admin: Client, start: int, end: int,
           clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    t0 = time.perf_counter()

    def one(i: int) -> None:
        t = time.perf_counter()
        tenant.call(tenant.networks.CreateNetwork, pb.CreateNetworkRequest(network=pb.Network(
            # A tenant's networks may not overlap (VPN and VPC peering need that).
            name=f"n{i}", cidr=f"10.{i // 256}.{i % 256}.0/24")))
        latencies.append(time.perf_counter() - t)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(start, end)))
    calls = time.perf_counter() - t0
    active = wait_active(admin, end, t0, timeout=1800)
    q = statistics.quantiles(latencies, n=100)
    return {"networks_added": end - start, "create_calls_per_s": round((end - start) / calls, 1),
            "create_p50_ms": round(q[49] * 1000, 1), "create_p99_ms": round(q[98] * 1000, 1),
            "all_active_seconds": round(active, 2)}


def applies_in_log(path: str) -> int:
    with open(path, errors="replace") as f:
        return sum(1 for line in f if "applied (" in line)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--routers", type=int, default=1000)
    p.add_argument("--small", type=int, default=100, help="the first stage (0: none)")
    p.add_argument("--clients", type=int, default=20, help="API client threads")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out"))
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 0 <= args.small < args.routers <= 3000:
        p.error("need 0 <= --small < --routers <= 3000")
    prefix = f"bn{uuid.uuid4().hex[:4]}"
    top = tempfile.mkdtemp(prefix="cn-routers-netmgr-", dir="/tmp")
    os.chmod(top, 0o755)  # dnsmasq's user reads its host directories there
    agent = Agent(top, prefix)
    netmgr = Netmgr(top, agent.socket)
    result: dict[str, Any] = {
        "bench": "routers_scale_netmgr", "via": "netmgr public API -> router agent",
        "host": {"cores": os.cpu_count(), "kernel": platform.release()}, "stages": {}}
    admin = tenant = None
    try:
        agent.start("--log-level", "info")
        netmgr.start()
        admin = Client(f"unix:{netmgr.socket}", netmgr.token)
        widen_zone(admin, args.routers)
        t = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="bench"))
        secret = admin.call(admin.tenants.CreateToken,
                            pb.CreateTokenRequest(tenant_id=t.id, name="bench")).secret
        tenant = Client(f"unix:{netmgr.socket}", secret)
        start = 0
        for n in [x for x in (args.small, args.routers) if x]:
            print(f"creating networks {start}..{n - 1}", file=sys.stderr)
            applies = applies_in_log(agent.log_path)
            stage: dict[str, Any] = {"create": create(tenant, admin, start, n, args.clients)}
            # The log line counted below, seen once per router created.
            stage["create"]["full_applies"] = applies_in_log(agent.log_path) - applies
            assert netmgr.proc is not None
            assert agent.proc is not None
            stage["memory"] = {"netmgr_rss_mib": round(rss_kib(netmgr.proc.pid) / 1024, 1),
                               "agent_rss_mib": round(rss_kib(agent.proc.pid) / 1024, 1)}
            print(f"{n}: {json.dumps(stage)}; restarting the agent", file=sys.stderr)
            before = applies_in_log(agent.log_path)
            agent.kill()
            t0 = time.perf_counter()
            agent.start("--log-level", "info")
            seconds = wait_active(admin, n, t0, timeout=900)
            time.sleep(3)  # a resync or two more: pushes that would come, came
            stage["agent_restart"] = {
                "all_active_seconds": round(seconds, 2),
                "full_applies": applies_in_log(agent.log_path) - before,
                "full_applies_if_netmgr_pushed_all (baseline)": n}
            print("restarting netmgr", file=sys.stderr)
            admin.close()
            tenant.close()
            netmgr.kill()
            t0 = time.perf_counter()
            serving = netmgr.start()
            admin = Client(f"unix:{netmgr.socket}", netmgr.token)
            tenant = Client(f"unix:{netmgr.socket}", secret)
            stage["netmgr_restart"] = {
                "serving_seconds": round(serving, 2),
                "all_active_seconds": round(wait_active(admin, n, t0, timeout=900), 2)}
            assert netmgr.proc is not None
            stage["memory"]["netmgr_rss_after_restart_mib"] = round(
                rss_kib(netmgr.proc.pid) / 1024, 1)
            result["stages"][str(n)] = stage
            start = n
    finally:
        with open(agent.log_path, errors="replace") as f:
            result["agent_log"] = [line for line in f.read().splitlines()
                                   if "persisted routers" in line or "host limit" in line
                                   or "repair" in line][-12:]
        for c in (admin, tenant):
            if c is not None:
                c.close()
        netmgr.kill()
        os.makedirs(args.out, exist_ok=True)
        for log_path in (netmgr.log_path, agent.log_path):  # kept for a look afterwards
            with contextlib.suppress(OSError):
                shutil.copy(log_path, os.path.join(args.out, "routers_scale_netmgr."
                                                   + os.path.basename(log_path)))
        print("cleaning up", file=sys.stderr)
        cleanup(agent, prefix)
    os.makedirs(args.out, exist_ok=True)
    plot(result, os.path.join(args.out, "routers_scale_netmgr.png"))
    with open(os.path.join(args.out, "routers_scale_netmgr.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    stages = list(result["stages"].items())
    names = [f"{k} networks" for k, _ in stages]
    x = range(len(stages))
    w = 0.27
    for j, (label, fn) in enumerate((
            ("create to all ACTIVE", lambda s: s["create"]["all_active_seconds"]),
            ("agent kill -9 to all ACTIVE", lambda s: s["agent_restart"]["all_active_seconds"]),
            ("netmgr kill -9 to all ACTIVE", lambda s: s["netmgr_restart"]["all_active_seconds"]),
    )):
        left.bar([i + (j - 1) * w for i in x], [fn(s) for _, s in stages], w, label=label)
    left.set_xticks(list(x), names)
    left.set_ylabel("seconds")
    left.set_yscale("log")
    left.legend(fontsize=8)
    left.set_title("time (log)")
    for j, (label, key) in enumerate((("netmgr RSS", "netmgr_rss_mib"),
                                      ("agent RSS", "agent_rss_mib"))):
        right.bar([i + (j - 0.5) * w for i in x], [s["memory"][key] for _, s in stages], w,
                  label=label)
    right.set_xticks(list(x), names)
    right.set_ylabel("MiB")
    right.legend(fontsize=8)
    right.set_title("memory")
    fig.suptitle(f"routers on one host through netmgr ({result['host']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
