"""Redundant routers: what a failover costs the traffic through the router.

Two router agents (in this process) hold the two instances of one redundant
router on one fabric (tests/lib/redundantlab.py: a guest, an uplink, an
internet namespace). Guests stream through it the whole time: a UDP stream
at 100 packets/s guest -> internet, long-lived TCP streams through source
NAT (guest -> internet), through a port forward (internet -> guest) and
through a load balancer (internet -> HAProxy -> guest). For each trigger,
N failovers of the master (instance 0) to the backup, each followed by
the failed instance's return (it takes the master role back after its
preempt delay: a second move, measured too):

    keepalived   keepalived killed (SIGKILL); the agent's health pass restarts it
    uplink       the master's uplink (pub0) down; up again
    namespace    every process of the master's namespace killed, the namespace
                 deleted; the agent's health pass rebuilds it
    agent        the master's agent stops answering keepalived's check (its
                 notification socket closed); answering again
    agent-kill   the master's agent, a process of its own (``python -m
                 router.agent.server`` adopting the router), killed (SIGKILL):
                 its namespace and daemons run on orphaned, keepalived's
                 checks fail (a lower priority at once, FAULT after 5 checks);
                 a new agent adopts the instance and it takes the master back

Per failover: seconds without forwarding (the longest silence of the UDP
stream around the move), whether the guest's lease survived (DHCP again: the
same address), whether a new connection works at once. Per trigger: TCP
streams reset (goal 0) and load balancer connections cut (HAProxy has no
shared state: expected). Then the throughput (iperf3, guest -> internet)
through the redundant router vs the same router single (goal >= 0.95),
medians of ``--rounds`` runs each, taken in turns in the same run.

    .venv/bin/python bench/router_failover.py [--failovers 20] [--out bench/out]

``--backend vm`` (bench/router_failover_vm.py): the two instances are router
VMs on two compute hosts (TCG); 3 failovers by default, the master VM's QEMU
killed; no throughput comparison.

    .venv/bin/python bench/router_failover.py --backend vm [--failovers 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.lib.agentprocess import AgentProcess
from tests.lib.redundantlab import (
    FORWARD_IP,
    FORWARD_PORT,
    LB_PORT,
    SNAT_TCP_PORT,
    UDP_PORT,
    Flow,
    Pair,
    connects,
    new_topology,
    pair_config,
)
from tests.lib.routerlab import INET_HOST, wait_for

TRIGGERS = ("keepalived", "uplink", "namespace", "agent", "agent-kill")
GUEST_IP = "10.10.0.11"
SETTLE = 1.0  # seconds of steady streaming before each failover


# The agent process of instance 0 for the agent-kill trigger (handed over
# before each failover: ``prepare``).
_PROCESS: dict[str, AgentProcess] = {}


def prepare(pair: Pair, trigger: str) -> None:
    if trigger == "agent-kill":
        _PROCESS["agent"] = pair.agent_process(0)


def fail(pair: Pair, trigger: str) -> None:
    if trigger == "agent-kill":
        pair.kill_agent(_PROCESS.pop("agent"))
    elif trigger == "keepalived":
        pair.kill_keepalived(0)
    elif trigger == "uplink":
        pair.uplink(0, False)
    elif trigger == "namespace":
        pair.delete_namespace(0)
    elif trigger == "agent":
        pair.agents[0].vrrp_listener.stop()
    else:
        raise ValueError(trigger)


def restore(pair: Pair, trigger: str) -> None:
    if trigger == "uplink":
        pair.uplink(0, True)
    elif trigger == "agent":
        pair.agents[0].vrrp_listener.start()
    elif trigger == "agent-kill":
        pair.agent_back(0)
    else:
        pair.repair(0)


def holds(pair: Pair, i: int) -> bool:
    return pair.holds(i)


def moved_to(pair: Pair, i: int, timeout: float = 60) -> None:
    """Instance ``i`` holds the addresses (read from the kernel: an agent
    that stopped answering reports nothing) and the other does not, or is
    out (a keepalived killed leaves its addresses until the agent's health
    pass clears them; the new master's gratuitous ARPs took the traffic)."""
    wait_for(lambda: holds(pair, i) and (not holds(pair, 1 - i)
                                         or pair.state(1 - i) == "FAULT"),
             timeout, f"addresses on instance {i}")


def dhcp_ip(pair: Pair, tmp: str) -> str:
    try:
        return pair.topo.dhcp(pair.guest, tmp).get("ip", "")
    except AssertionError:
        return ""


def new_connection(pair: Pair) -> str:
    """A new connection guest -> internet through source NAT: "" or why not."""
    try:
        connects(pair.guest, INET_HOST, SNAT_TCP_PORT)
        return ""
    except AssertionError as e:
        return str(e).strip().splitlines()[-1][:200] if str(e).strip() else "failed"


def diagnose(pair: Pair) -> str:
    out = []
    for argv in (["ip", "-n", pair.netns(1), "route"], ["ip", "-n", pair.netns(1), "neigh"],
                 ["ip", "-n", pair.guest, "neigh"], ["ip", "-n", f"{pair.topo.prefix}-up", "neigh"],
                 ["ip", "-n", pair.netns(1), "-br", "addr"],
                 ["ip", "netns", "exec", pair.netns(1), "nstat", "-az", "TcpExtTCPSynRetrans"],
                 ["ip", "netns", "exec", pair.netns(1), "conntrack", "-L", "-p", "tcp",
                  "--dport", str(SNAT_TCP_PORT)]):
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        out.append(f"$ {' '.join(argv[-4:])}\n{p.stdout}{p.stderr}")
    return "\n".join(out)


def silence(gaps: list[list[float]], start: float, end: float) -> float:
    """The longest silence of the UDP stream that began in [start, end)."""
    return max((g[1] for g in gaps if start <= g[0] < end), default=0.0)


def run_trigger(pair: Pair, trigger: str, n: int, tmp: str) -> dict[str, Any]:
    clients = {
        "snat": Flow.start(pair.guest, "tcp-client", INET_HOST, str(SNAT_TCP_PORT)),
        "forward": Flow.start(pair.inet, "tcp-client", FORWARD_IP, str(FORWARD_PORT)),
        "lb": Flow.start(pair.inet, "tcp-client", FORWARD_IP, str(LB_PORT)),
    }
    sink = Flow.start(pair.inet, "udp-sink", str(UDP_PORT))
    source = Flow.start(pair.guest, "udp-source", INET_HOST, str(UDP_PORT), "100")
    moves: list[dict[str, Any]] = []
    try:
        for k in range(n):
            moved_to(pair, 0)
            prepare(pair, trigger)
            time.sleep(SETTLE)
            t0 = time.monotonic()
            fail(pair, trigger)
            moved_to(pair, 1)
            detected = time.monotonic() - t0
            lease = dhcp_ip(pair, tmp)
            fresh = new_connection(pair)
            if fresh:
                print(f"{trigger} {k + 1}/{n}: new connection failed: {fresh}\n"
                      + diagnose(pair), file=sys.stderr, flush=True)
            time.sleep(SETTLE)
            t1 = time.monotonic()
            restore(pair, trigger)
            moved_to(pair, 0)
            back = time.monotonic() - t1
            moves.append({"t0": t0, "t1": t1, "moved_s": detected, "back_s": back,
                          "lease_kept": lease == GUEST_IP, "new_connection": not fresh,
                          "new_connection_error": fresh})
            print(f"{trigger} {k + 1}/{n}: moved in {detected:.2f} s, back in {back:.2f} s",
                  file=sys.stderr, flush=True)
        time.sleep(SETTLE)
    finally:
        source_out = source.result()
        sink_out = sink.result()
        flows = {name: f.result() for name, f in clients.items()}
    gaps: list[list[float]] = sink_out.get("gaps", [])  # type: ignore[assignment]
    for i, m in enumerate(moves):
        nxt = moves[i + 1]["t0"] if i + 1 < len(moves) else float("inf")
        m["no_forwarding_s"] = silence(gaps, m["t0"] - 0.5, m["t1"] - 0.2)
        m["failback_no_forwarding_s"] = silence(gaps, m["t1"] - 0.2, nxt - 0.5)
    outages = [m["no_forwarding_s"] for m in moves]
    backs = [m["failback_no_forwarding_s"] for m in moves]
    return {
        "failovers": n,
        "no_forwarding_s": {"median": statistics.median(outages), "max": max(outages),
                            "all": [round(x, 3) for x in outages]},
        "failback_no_forwarding_s": {"median": statistics.median(backs), "max": max(backs),
                                     "all": [round(x, 3) for x in backs]},
        "moved_s_median": statistics.median(m["moved_s"] for m in moves),
        "tcp_streams_reset": sum(1 for name in ("snat", "forward") if flows[name]["error"]),
        "tcp_streams": 2,
        "tcp_errors": {name: flows[name]["error"] for name in ("snat", "forward")},
        "lb_connections_cut": 1 if flows["lb"]["error"] else 0,
        "lb_error": flows["lb"]["error"],
        "leases_lost": sum(1 for m in moves if not m["lease_kept"]),
        "new_connection_failures": sum(1 for m in moves if not m["new_connection"]),
        "udp": {"sent": source_out.get("sent"), "received": sink_out.get("received")},
    }


def iperf(pair: Pair, seconds: int, runs: int = 3) -> float:
    """Median bits/s guest -> internet (iperf3, one TCP stream)."""
    server = subprocess.Popen(["ip", "netns", "exec", pair.inet, "iperf3", "-s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = []
    try:
        for _ in range(runs):
            deadline = time.monotonic() + 20
            while True:
                proc = subprocess.run(
                    ["ip", "netns", "exec", pair.guest, "iperf3", "-c", INET_HOST, "-t",
                     str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 60,
                    check=False)
                try:
                    end = json.loads(proc.stdout)["end"]
                    out.append(float(end["sum_received"]["bits_per_second"]))
                    break
                except (ValueError, KeyError) as e:  # the server not listening yet, or busy
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"iperf3: {proc.stdout[-300:]} {proc.stderr[-300:]}") from e
                    time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    return statistics.median(out)


def as_single(pair: Pair, single: bool) -> None:
    """The same router single (instance 0 without its redundancy, instance 1
    gone) or redundant again."""
    pair.generation += 1
    if single:
        status = pair.agents[0].apply(pair_config(pair.router_id, pair.generation, 0,
                                                  lb=pair.lb, single=True))
        assert status.applied_generation == pair.generation, status.last_error
        pair.agents[1].delete(pair.router_id, keep_leases=False)
    else:
        pair.apply()
        moved_to(pair, 0)


def throughput(pair: Pair, seconds: int, rounds: int) -> dict[str, Any]:
    """Redundant and single in turns (the machine's load drifts: a block of
    one then a block of the other measured the drift), one iperf3 run each."""
    moved_to(pair, 0)
    redundant, single = [], []
    for k in range(rounds):
        # Which goes first alternates: a drift within a round cancels out.
        if k % 2 == 0:
            redundant.append(iperf(pair, seconds, runs=1))
            as_single(pair, True)
            single.append(iperf(pair, seconds, runs=1))
        else:
            as_single(pair, True)
            single.append(iperf(pair, seconds, runs=1))
            as_single(pair, False)
            redundant.append(iperf(pair, seconds, runs=1))
            as_single(pair, True)
        as_single(pair, False)
    r, s = statistics.median(redundant), statistics.median(single)
    # The ratio: the median of each round's (the load drifts between rounds).
    ratio = statistics.median(a / b for a, b in zip(redundant, single, strict=True))
    return {"redundant_bps": r, "single_bps": s, "ratio": ratio,
            "redundant_all": redundant, "single_all": single}


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    triggers = list(result["triggers"])
    if not triggers:  # --triggers "": the throughput only
        ax.set_axis_off()
    data = [result["triggers"][t]["no_forwarding_s"]["all"] for t in triggers]
    back = [result["triggers"][t]["failback_no_forwarding_s"]["all"] for t in triggers]
    if triggers:
        _plot_failovers(ax, result, triggers, data, back)
    ax = axes[1]
    if "throughput" in result:
        _plot_throughput(ax, result["throughput"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_failovers(ax: Any, result: dict[str, Any], triggers: list[str],
                    data: list[list[float]], back: list[list[float]]) -> None:
    pos = range(len(triggers))
    ax.boxplot(data, positions=[p - 0.18 for p in pos], widths=0.3)
    ax.boxplot(back, positions=[p + 0.18 for p in pos], widths=0.3)
    ax.set_xticks(list(pos), [f"{t}\n(failover | back)" for t in triggers])
    if result.get("backend") == "vm":
        ax.axhline(3.0, color="red", linestyle="--", label="goal 3 s (VM backend)")
    else:
        ax.axhline(1.0, color="red", linestyle="--", label="goal 1 s (namespace backend)")
    ax.set_ylabel("seconds without forwarding (UDP, 100 packets/s)")
    ax.set_title(f"{result['failovers_per_trigger']} failovers per trigger")
    ax.legend()


def _plot_throughput(ax: Any, t: dict[str, Any]) -> None:
    ax.bar(["single", "redundant"], [t["single_bps"] / 1e9, t["redundant_bps"] / 1e9],
           color=["tab:gray", "tab:blue"])
    ax.set_ylabel(f"Gbit/s (iperf3, one TCP stream, median of {len(t['single_all'])})")
    ax.set_title(f"throughput: redundant / single = {t['ratio']:.3f} (goal >= 0.95)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("netns", "vm"), default="netns")
    ap.add_argument("--failovers", type=int, default=None,
                    help="per trigger (default 20; 3 with --backend vm)")
    ap.add_argument("--triggers", default=None,
                    help=f"default {','.join(TRIGGERS)} "
                         "(--backend vm: vm, uplink, keepalived, agent)")
    ap.add_argument("--seconds", type=int, default=5, help="per iperf3 run")
    ap.add_argument("--rounds", type=int, default=5,
                    help="throughput: redundant and single runs, in turns")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    ap.add_argument("--consoles", default="",
                    help="--backend vm: copy the router VMs' consoles into this directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.backend == "vm":
        return main_vm(args)
    args.failovers = args.failovers or 20
    triggers = [t for t in (args.triggers or ",".join(TRIGGERS)).split(",") if t]
    prefix = f"bf{os.getpid() % 10000}"
    state_dir = tempfile.mkdtemp(prefix="cn-bench-failover-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    topo = new_topology(prefix, state_dir)
    pair: Pair | None = None
    servers: list[Flow] = []
    result: dict[str, Any] = {
        "bench": "router_failover", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "kernel": platform.release(),
        "failovers_per_trigger": args.failovers, "triggers": {},
        # The figures depend on what else runs on the cores: kept with them.
        "load_before": os.getloadavg(),
    }
    try:
        pair = Pair.build(topo, uuid.uuid4().hex, lb=True)
        pair.wait_master(0)
        with tempfile.TemporaryDirectory() as tmp:
            assert dhcp_ip(pair, tmp) == GUEST_IP
            pair.topo.configure_guest(pair.guest, GUEST_IP)
            servers = [Flow.start(pair.inet, "tcp-server", str(SNAT_TCP_PORT)),
                       Flow.start(pair.guest, "tcp-server", str(FORWARD_PORT))]
            for trigger in triggers:
                result["triggers"][trigger] = run_trigger(pair, trigger, args.failovers, tmp)
                # Kept as they come: a later failure loses nothing measured.
                print(json.dumps({trigger: result["triggers"][trigger]}), file=sys.stderr,
                      flush=True)
        result["throughput"] = throughput(pair, args.seconds, args.rounds)
        result["load_after"] = os.getloadavg()
    finally:
        for s in servers:
            s.result()
        if pair is not None:
            pair.close()
        topo.cleanup()
    return write(result, args.out, "router_failover")


def write(result: dict[str, Any], out: str, name: str) -> int:
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, f"{name}.png")
    plot(result, png)
    result["plot"] = png
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


def main_vm(args: argparse.Namespace) -> int:
    import router_failover_vm as vm  # beside this script (on sys.path)

    triggers = [t for t in (args.triggers or ",".join(vm.TRIGGERS)).split(",") if t]
    failovers = args.failovers or 3
    result: dict[str, Any] = {
        "bench": "router_failover", "backend": "vm",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "kernel": platform.release(),
        "load_before": os.getloadavg(), "failovers_per_trigger": failovers,
    }
    got = vm.run(failovers, triggers, args.consoles)
    result["pair_boot_s"] = got.pop("pair_boot_s", None)
    result["aborted"] = got.pop("aborted", "")
    result["arbiter_events"] = got.pop("arbiter_events", [])
    result["triggers"] = got
    result["load_after"] = os.getloadavg()
    return write(result, args.out, "router_failover_vm")


if __name__ == "__main__":
    sys.exit(main())
