"""Routers on one host: 1,000 namespace routers, their memory, an agent restart.

Through the router agent's own gRPC API (ApplyConfig, ListRouterStatus: what
netmgr calls; netmgr itself is not in the loop), with the agent as a host runs
it (``python -m router.agent.server``, its own process) on a Linux bridge
fabric in a namespace of the run's own. Each router: a public interface on
the provider segment (its own address, source NAT), one guest network on a
segment of its own with one port: one namespace, one dnsmasq, one table.

In one run, at --small routers and then at --routers (the routers added):

* create: ApplyConfig, --workers at a time; seconds until every router reports
  its generation applied with every service healthy (the "ACTIVE" of netmgr);
* memory: the agent's RSS, the routers' dnsmasq PSS summed (shared pages
  divided among them), the host's MemAvailable drop and kernel slab growth
  per router, the mount namespaces the dnsmasqs are in;
* restart: kill -9 the agent and start it again; seconds from the start until
  every router reports applied and healthy again, and whether every dnsmasq
  kept its pid (adopted untouched);
* baseline (same run, same routers): the same restart where the agent applies
  every router again one at a time, as every start did before adoption (an
  unknown rendering version, --reapply-workers 1); and again 8 at a time (what
  an agent upgrade does now).

Every namespace and process the run made is removed at the end (also on
failure); every wait is bounded.

    .venv/bin/python bench/routers_scale.py [--routers 1000] [--small 100] [--out bench/out]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC_GW = "100.64.255.254"
SEGMENT_BASE = 1000


def router_config(router_id: str, i: int) -> pb.RouterConfig:
    public_ip = f"100.64.{i // 250}.{i % 250 + 1}"
    return pb.RouterConfig(
        router_id=router_id, generation=1,
        interfaces=[
            pb.Interface(name="pub0", role=pb.INTERFACE_ROLE_PUBLIC,
                         mac=f"02:01:00:00:{i >> 8:02x}:{i & 0xff:02x}",
                         addresses=[f"{public_ip}/16"], segment_id=0),
            pb.Interface(name="g-net1", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:01",
                         addresses=["10.10.0.1/24"], segment_id=SEGMENT_BASE + i,
                         network_id="net1"),
        ],
        routes=[pb.Route(destination="0.0.0.0/0", gateway=PUBLIC_GW, interface="pub0")],
        guest_networks=[pb.GuestNetwork(
            network_id="net1", interface="g-net1", cidr="10.10.0.0/24", gateway="10.10.0.1",
            domain="bench.test", hosts=[pb.DhcpHost(port_id="p1", mac="02:aa:00:00:00:11",
                                                    ip="10.10.0.11", hostname="vm1")])],
        dns=pb.Dns(upstream_servers=[PUBLIC_GW]),
        source_nats=[pb.SourceNat(network_id="net1", source_cidr="10.10.0.0/24",
                                  public_ip=public_ip, public_interface="pub0")],
    )


def rss_kib(pid: int, field: str = "Rss:") -> int:
    """A process's resident memory (``Pss:``: its shared pages divided among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def meminfo_kib(field: str = "MemAvailable:") -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def connect(path: str, proc: subprocess.Popen[bytes],
            timeout: float) -> tuple[grpc.Channel, Any]:
    """A channel to the agent's socket once it serves (a channel of its own:
    one that tried the socket of the killed agent may wait out a backoff)."""
    deadline = time.perf_counter() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited ({proc.returncode})")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the agent did not serve within {timeout:.0f} s")
        if not os.path.exists(path):
            time.sleep(0.01)
            continue
        channel = grpc.insecure_channel(f"unix://{path}",
                                        options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            grpc.channel_ready_future(channel).result(timeout=5)
        except grpc.FutureTimeoutError:
            channel.close()
            continue
        return channel, agent_pb2_grpc.RouterAgentStub(channel)


class Agent:
    """The router agent as its own process, on this run's prefix and fabric."""

    def __init__(self, top: str, prefix: str) -> None:
        self.top, self.prefix = top, prefix
        self.state_dir = os.path.join(top, "agent")
        self.socket = os.path.join(top, "agent.sock")
        self.log_path = os.path.join(top, "agent.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.stub: Any = None

    def start(self, *extra: str) -> float:
        """Start; returns the seconds until its gRPC socket answers."""
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router.agent.server", "--listen",
                 f"unix://{self.socket}", "--state-dir", self.state_dir, "--netns-prefix",
                 self.prefix, "--fabric-netns", f"{self.prefix}-fab", "--agent-id", "bench",
                 *extra],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.channel, self.stub = connect(self.socket, self.proc, 900)
        return time.perf_counter() - t0

    def kill(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=60)
        # The next agent replaces it; a client that found this one first
        # would wait out a reconnect backoff, which is not the agent's time.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    def listed(self) -> list[pb.RouterStatus]:
        return list(self.stub.ListRouterStatus(pb.ListRouterStatusRequest(), timeout=300).routers)

    def dnsmasq_pids(self, ids: list[str]) -> dict[str, int]:
        return {r: read_pid(os.path.join(self.state_dir, "routers", r, "dnsmasq", "dnsmasq.pid"))
                for r in ids}


def active(s: pb.RouterStatus) -> bool:
    return s.applied_generation == 1 and not s.last_error and all(x.healthy for x in s.services)


def wait_all_active(agent: Agent, ids: list[str], t0: float,
                    timeout: float) -> tuple[float, int]:
    """Seconds from ``t0`` until every router is active; and how many polls that took."""
    want = set(ids)
    polls = 0
    deadline = time.perf_counter() + timeout
    while True:
        polls += 1
        listed = agent.listed()
        if want <= {s.router_id for s in listed if active(s)}:
            return time.perf_counter() - t0, polls
        if time.perf_counter() > deadline:
            bad = [(s.router_id[:8], s.last_error[:120],
                    [x.detail for x in s.services if not x.healthy]) for s in listed
                   if s.router_id in want and not active(s)]
            raise RuntimeError(f"not all active after {timeout:.0f} s: {len(bad)} not; {bad[:3]}")
        time.sleep(0.05)


def create(agent: Agent, ids: list[str], start: int, workers: int) -> dict[str, Any]:
    """ApplyConfig for routers ``start``.. of ``ids``; time to all active."""
    done: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()

    def one(i: int) -> None:
        reply = agent.stub.ApplyConfig(
            pb.ApplyConfigRequest(config=router_config(ids[i], i)), timeout=300)
        if reply.status.applied_generation != 1:
            errors.append(f"{ids[i][:8]}: {reply.status.last_error[:200]}")
        done.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(start, len(ids))))
    if errors:
        raise RuntimeError(f"{len(errors)} routers failed, e.g. {errors[:3]}")
    applied = time.perf_counter() - t0
    all_active, _ = wait_all_active(agent, ids, t0, timeout=600)
    t1 = time.perf_counter()
    agent.listed()
    list_seconds = time.perf_counter() - t1
    return {"routers_added": len(ids) - start, "applied_seconds": round(applied, 2),
            "all_active_seconds": round(all_active, 2),
            "seconds_per_router": round(all_active / max(1, len(ids) - start), 4),
            "list_status_seconds": round(list_seconds, 3),
            "timeline": sorted(round(t, 3) for t in done)}


def memory(agent: Agent, ids: list[str], avail_before: int, slab_before: int) -> dict[str, Any]:
    assert agent.proc is not None
    dnsmasq = [p for p in agent.dnsmasq_pids(ids).values() if p]
    return {"agent_rss_mib": round(rss_kib(agent.proc.pid) / 1024, 1),
            "agent_open_fds": len(os.listdir(f"/proc/{agent.proc.pid}/fd")),
            "dnsmasq_pss_mib_total": round(sum(rss_kib(p, "Pss:") for p in dnsmasq) / 1024, 1),
            "host_mem_per_router_mib": round((avail_before - meminfo_kib())
                                             / 1024 / max(1, len(ids)), 2),
            "kernel_slab_per_router_kib": round((meminfo_kib("Slab:") - slab_before)
                                                / max(1, len(ids))),
            "mount_namespaces": len({os.readlink(f"/proc/{p}/ns/mnt") for p in dnsmasq})}


def restart(agent: Agent, ids: list[str], *extra: str, version: str = "",
            timeout: float = 900) -> dict[str, Any]:
    """kill -9, start again; seconds to all active; were the dnsmasqs kept?"""
    before = agent.dnsmasq_pids(ids)
    agent.kill()
    if version:
        with open(os.path.join(agent.state_dir, "render-version"), "w") as f:
            f.write(version + "\n")
    t0 = time.perf_counter()
    serving = agent.start(*extra)
    seconds, polls = wait_all_active(agent, ids, t0, timeout)
    after = agent.dnsmasq_pids(ids)
    assert agent.proc is not None
    return {"all_active_seconds": round(seconds, 3), "serving_seconds": round(serving, 3),
            "status_polls": polls,
            "dnsmasq_kept": sum(1 for r in ids if before[r] and before[r] == after[r]),
            "agent_rss_mib": round(rss_kib(agent.proc.pid) / 1024, 1)}


def cleanup(agent: Agent, prefix: str) -> None:
    """Kill the agent, every process in the run's namespaces, remove them and the files."""
    agent.kill()
    names = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
    for ns in names:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                             timeout=30, check=False).stdout
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60, check=False)
    shutil.rmtree(agent.top, ignore_errors=True)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, stage in result["stages"].items():
        t = stage["create"]["timeline"]
        left.plot(t, range(1, len(t) + 1), label=f"{key}: {stage['create']['routers_added']} "
                  f"added, all active {stage['create']['all_active_seconds']} s")
    left.set_xlabel("seconds")
    left.set_ylabel("routers applied")
    left.set_title("create (ApplyConfig, in parallel)")
    left.legend(fontsize=8)
    labels, values = [], []
    for key, stage in result["stages"].items():
        for name, r in stage["restart"].items():
            labels.append(f"{key} routers\n{name.replace(', ', chr(10))}")
            values.append(r["all_active_seconds"])
    bars = right.bar(range(len(values)), values, color="tab:blue")
    for b, v in zip(bars, values, strict=True):
        right.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                       va="bottom", fontsize=8)
    right.set_xticks(range(len(values)), labels, fontsize=6.5)
    right.set_yscale("log")
    right.set_ylabel("seconds, kill -9 to all active (log)")
    right.set_title("agent restart")
    fig.suptitle(f"routers on one host ({result['host']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--routers", type=int, default=1000)
    p.add_argument("--small", type=int, default=100, help="the first stage (0: none)")
    p.add_argument("--workers", type=int, default=8, help="ApplyConfig calls at once")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the re-applying restarts (minutes at 1,000 routers)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out"))
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 0 <= args.small < args.routers <= 60000:
        p.error("need 0 <= --small < --routers <= 60000")
    prefix = f"bs{uuid.uuid4().hex[:4]}"
    # Under /tmp, 0755: dnsmasq's user reads its host directories there.
    top = tempfile.mkdtemp(prefix="cn-routers-scale-", dir="/tmp")
    os.chmod(top, 0o755)
    agent = Agent(top, prefix)
    ids = [uuid.uuid4().hex for _ in range(args.routers)]
    result: dict[str, Any] = {
        "bench": "routers_scale", "via": "router agent gRPC (no netmgr)",
        "host": {"cores": os.cpu_count(), "kernel": platform.release(),
                 "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES")
                                        * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)},
        "stages": {}}
    try:
        avail, slab = meminfo_kib(), meminfo_kib("Slab:")
        agent.start()
        start = 0
        for n in [x for x in (args.small, args.routers) if x]:
            print(f"creating routers {start}..{n - 1}", file=sys.stderr)
            stage: dict[str, Any] = {"create": create(agent, ids[:n], start, args.workers)}
            stage["memory"] = memory(agent, ids[:n], avail, slab)
            print(f"{n} routers: {json.dumps(stage['memory'])}; restarting", file=sys.stderr)
            stage["restart"] = {"adopted": restart(agent, ids[:n])}
            if not args.no_baseline:
                stage["restart"]["reapplied, 8 at once"] = restart(
                    agent, ids[:n], version="bench-baseline-8")
                stage["restart"]["reapplied, serially (before)"] = restart(
                    agent, ids[:n], "--reapply-workers", "1", version="bench-baseline-1")
                base = stage["restart"]["reapplied, serially (before)"]["all_active_seconds"]
                stage["restart_ratio_vs_serial"] = round(
                    stage["restart"]["adopted"]["all_active_seconds"] / base, 4)
                # Back to the default agent, adopted, for the next stage.
                restart(agent, ids[:n])
            result["stages"][str(n)] = stage
            start = n
    finally:
        with open(agent.log_path, errors="replace") as f:
            log_tail = [line for line in f.read().splitlines()
                        if "host limit" in line or "persisted routers" in line]
        result["agent_log"] = log_tail[-12:]
        print("cleaning up", file=sys.stderr)
        cleanup(agent, prefix)
    for stage in result["stages"].values():
        stage["create"]["timeline_len"] = len(stage["create"]["timeline"])
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "routers_scale.png")
    plot(result, png)
    for stage in result["stages"].values():
        stage["create"].pop("timeline")
    with open(os.path.join(args.out, "routers_scale.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
