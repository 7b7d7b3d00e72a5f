"""Security groups on both fabrics: do the rules cost the data path, and how
fast is a change enforced?

Measured in one run on this host, per fabric (a Linux-bridge fabric in a
namespace with ``common.fabric.port_firewall``, nftables; an Open vSwitch
bridge, userspace datapath, with ``common.fabric.ovs_firewall``, OpenFlow
with ct()), two namespace guests, each against a baseline from the same run:

* data path: iperf3 TCP throughput and UDP packets/s (64-byte datagrams)
  from one guest to the other, with no filters vs both guests filtered, the
  receiver's groups holding 1,000 rules that do not match the stream and,
  last, the rule that does (from a remote group of 200 members), in
  interleaved rounds (none then filtered, filtered then none, ...) so that
  the machine's drift cancels; medians of the rounds (goal: ratio >= 0.9),
  with the spread (quartiles, every round's ratio, the load average at
  each round: on a shared machine only a quiet run says anything);
* one change enforced, at 10 / 100 / 1,000 ports on the host: a rule added
  to one port, and one port joining a remote group, each one nft transaction
  (or OpenFlow bundle) committed (goal <= 50 ms, flat). After each change a
  real flow checks that it is in force (not timed: the commit is what
  enforces it). On OVS a change returns once the datapath's cached flows
  follow it (a revalidation round after the bundle's commit, see
  compute/ovs_datapath.py): that wait is part of the time measured, and
  the check's SYN cannot meet a cached verdict of the flows before. On OVS
  the ports beyond the two guests are flows for
  OpenFlow port numbers no interface has (the flows are what a change
  has to work through, not the interfaces).

    .venv/bin/python bench/security_groups.py [--fabrics linuxbridge,ovs] [--seconds 5]
        [--trials 5] [--repeats 5] [--out bench/out]
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import netns
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric
from common.fabric.ovs_firewall import OvsFirewall, Plugged
from common.fabric.port_firewall import Port, PortFirewall, Rule
from compute import openflow

PFX = f"sgb{os.getpid() % 10000}"
SEG = 10
GROUP = "00000000-0000-4000-8000-0000000000aa"
REMOTE = "00000000-0000-4000-8000-0000000000bb"
GUESTS = {"g1": ("10.8.0.11", "02:00:08:00:00:11"), "g2": ("10.8.0.12", "02:00:08:00:00:12")}


def in_ns(ns: str, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def filler_rules(n: int) -> tuple[Rule, ...]:
    """n rules that no stream of this bench matches (TCP to other ports, from
    other addresses)."""
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    return tuple(Rule("ingress", protocol="tcp", port_min=10000 + i % 50000,
                      remote_cidr=f"{ipaddress.IPv4Address(base + i)}/32") for i in range(n))


class FlowsOnlyOvsFirewall(OvsFirewall):
    """The bench's extra ports ("x..."): OpenFlow numbers no interface has."""

    def plugged(self, device: str) -> Plugged:
        if device.startswith("x"):
            return Plugged(10000 + int(device.rsplit("-", 1)[1]), 100 + SEG)
        return super().plugged(device)


class Bench:
    def __init__(self, fabric: str) -> None:
        self.kind = fabric
        self.fabric: LinuxBridgeFabric | OvsFabric
        self.fw: PortFirewall | OvsFirewall
        if fabric == "ovs":
            self.fabric = OvsFabric(f"{PFX}br")
            # As the compute agent does: one kept OpenFlow connection.
            self.fw = FlowsOnlyOvsFirewall(self.fabric.bridge,
                                           flows=openflow.Connection(self.fabric.bridge))
        else:
            self.fabric = LinuxBridgeFabric(f"{PFX}-fab")
            self.fw = PortFirewall(self.fabric.netns)
        self.made: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def ns(self, g: str) -> str:
        return f"{PFX}-{g}"

    def dev(self, g: str) -> str:
        if isinstance(self.fabric, OvsFabric):
            return self.fabric.device_name(f"{PFX}-{g}")
        return f"{PFX}-{g}"

    def setup(self) -> None:
        self.fabric.setup()
        for g, (ip, mac) in GUESTS.items():
            netns.ensure_netns(self.ns(g))
            self.made.append(self.ns(g))
            self.fabric.plug(f"{PFX}-{g}", SEG, self.ns(g), "eth0", mac)
            in_ns(self.ns(g), ["ip", "link", "set", "lo", "up"])
            in_ns(self.ns(g), ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.ns("g2"), "iperf3", "-s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while ":5201 " not in in_ns(self.ns("g2"), ["ss", "-Htln"]).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)

    def teardown(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.made:
            netns.remove_netns(ns)
        if isinstance(self.fw, OvsFirewall):
            self.fw.close()
        self.fabric.teardown()

    def port(self, g: str, rules: tuple[Rule, ...]) -> Port:
        ip, mac = GUESTS[g]
        return Port(self.dev(g), mac, (ip,), (), rules)

    def iperf(self, udp: bool, seconds: int) -> float:
        argv = ["iperf3", "-c", GUESTS["g2"][0], "-t", str(seconds), "-J"]
        if udp:
            argv += ["-u", "-b", "0", "-l", "64"]
        for _ in range(50):
            r = in_ns(self.ns("g1"), argv, timeout=seconds + 60)
            data = json.loads(r.stdout)
            # The server still closing the last test (a loaded host): again.
            if "server is busy" not in data.get("error", ""):
                break
            time.sleep(0.2)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        end = data["end"]
        if udp:
            s = end["sum"]
            return float((s["packets"] - s["lost_packets"]) / s["seconds"])
        return float(end["sum_received"]["bits_per_second"])

    def data_path(self, seconds: int, rules: int, members: int,
                  repeats: int) -> dict[str, Any]:
        """Runs alternate between no filters (the tables exist, no port is in
        their maps) and the filters, `repeats` rounds of each; a round runs
        both back to back, in the order none-filtered, then filtered-none in
        the next round (ABBA: a drift of the machine's load within a round
        counts against each side alike). Medians compared, and the spread:
        each side's quartiles, the rounds' ratios and their quartiles, and
        the load average at every round."""
        self.fw.setup()
        stream = Rule("ingress", protocol="all", remote_group_id=REMOTE)
        fake = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.8.1.0")) + i))
                for i in range(members - 1)]
        filtered = [self.port("g1", (Rule("egress"),)),
                    self.port("g2", (*filler_rules(rules), stream, Rule("egress")))]
        runs: dict[str, list[float]] = {k: [] for k in ("base_tcp", "base_udp", "tcp", "udp")}
        loads: list[float] = []

        def set_filters(filters: bool) -> None:
            self.fw.apply(filtered if filters else [],
                          {REMOTE: [GUESTS["g1"][0], *fake]} if filters else {})

        def side(filters: bool) -> None:
            set_filters(filters)
            runs["tcp" if filters else "base_tcp"].append(self.iperf(False, seconds))
            runs["udp" if filters else "base_udp"].append(self.iperf(True, seconds))

        for filters in (True, False):  # warm-up: OVS's first packets go to its slow path
            set_filters(filters)
            self.iperf(False, 1)
            self.iperf(True, 1)
        for r in range(repeats):
            loads.append(os.getloadavg()[0])
            for filters in ((False, True) if r % 2 == 0 else (True, False)):
                side(filters)
        med = {k: statistics.median(v) for k, v in runs.items()}
        ratios = {kind: [f / b for f, b in zip(runs[kind], runs["base_" + kind], strict=True)]
                  for kind in ("tcp", "udp")}
        return {"rules": rules, "remote_group_members": members, "repeats": repeats,
                "seconds": seconds, "runs": runs, "loadavg_per_round": loads,
                "quartiles": {k: quartiles(v) for k, v in runs.items()},
                "round_ratio_quartiles_tcp": quartiles(ratios["tcp"]),
                "round_ratio_quartiles_udp": quartiles(ratios["udp"]),
                "median_round_ratio_tcp": statistics.median(ratios["tcp"]),
                "median_round_ratio_udp": statistics.median(ratios["udp"]),
                "baseline_tcp_bps": med["base_tcp"], "filtered_tcp_bps": med["tcp"],
                "ratio_tcp": med["tcp"] / med["base_tcp"],
                "baseline_udp_pps": med["base_udp"], "filtered_udp_pps": med["udp"],
                "ratio_udp": med["udp"] / med["base_udp"],
                "round_ratios_tcp": ratios["tcp"], "round_ratios_udp": ratios["udp"]}

    def probe(self, port: int) -> bool:
        """A TCP connection from g1 to g2:port is refused (RST: the filter let
        the SYN through) rather than timing out (dropped)."""
        r = in_ns(self.ns("g1"), ["socat", "-T1", "-", f"TCP:{GUESTS['g2'][0]}:{port},"
                                  "connect-timeout=1"], timeout=10)
        return "refused" in r.stderr.lower()

    def one_change(self, n_ports: int, trials: int) -> dict[str, Any]:
        """n_ports ports on the host (two real guests, the rest names in the
        maps: the filters are keyed on names), each in GROUP."""
        others = [Port(f"x{PFX}-{i}", f"02:00:09:00:{i // 256:02x}:{i % 256:02x}",
                       (str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.9.0.0")) + i)),),
                       (), (Rule("ingress", protocol="tcp", port_min=22,
                                 remote_group_id=GROUP), Rule("egress")))
                  for i in range(n_ports - 2)]
        members = [p.ips[0] for p in others]
        self.fw.setup()
        g1 = self.port("g1", (Rule("egress"),))
        g2_rules: tuple[Rule, ...] = (Rule("ingress", protocol="tcp", port_min=22,
                                           remote_group_id=GROUP), Rule("egress"))
        self.fw.apply([g1, self.port("g2", g2_rules), *others], {GROUP: members})
        rule_s, join_s = [], []
        self.fw.set_port(self.port("g2", g2_rules))  # g2's number looked up once
        for t in range(trials):
            port = 20000 + t
            added = self.port("g2", (*g2_rules, Rule("ingress", protocol="tcp",
                                                     port_min=port)))
            start = time.perf_counter()
            self.fw.set_port(added)
            rule_s.append(time.perf_counter() - start)
            if not self.probe(port):
                raise RuntimeError(f"{self.kind}, {n_ports} ports, trial {t}: rule for {port} "
                                   "not in force after its transaction")
            self.fw.set_port(self.port("g2", g2_rules))
            # Changes come apart: the last one's deferred kernel clean-up (an
            # RCU grace period, ~10 ms here) is not this one's cost.
            time.sleep(0.05)
            start = time.perf_counter()
            self.fw.set_members(GROUP, [*members, GUESTS["g1"][0]])
            join_s.append(time.perf_counter() - start)
            if not self.probe(22):
                raise RuntimeError(f"{self.kind}, {n_ports} ports, trial {t}: joining the group "
                                   "did not open port 22")
            self.fw.set_members(GROUP, members)
            time.sleep(0.05)
        self.fw.apply([], {})
        return {"ports": n_ports, "loadavg": os.getloadavg()[0],
                "rule_change_median_s": statistics.median(rule_s),
                "rule_change_max_s": max(rule_s), "join_median_s": statistics.median(join_s),
                "join_max_s": max(join_s)}


def quartiles(values: list[float]) -> list[float]:
    """Minimum, first quartile, median, third quartile, maximum."""
    if len(values) < 2:
        return [values[0]] * 5 if values else []
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [min(values), q1, q2, q3, max(values)]


def plot_data_path(ax: Any, kind: str, dp: dict[str, Any]) -> None:
    ratios = [dp["ratio_tcp"], dp["ratio_udp"]]
    ax.bar(["TCP throughput", "UDP packets/s"], ratios, color=["tab:blue", "tab:orange"])
    # The rounds' own ratios, as dots: the spread the medians hide.
    for x, key in ((0, "round_ratios_tcp"), (1, "round_ratios_udp")):
        ax.plot([x] * len(dp[key]), dp[key], "k.", alpha=0.6)
    ax.axhline(0.9, color="red", linestyle="--", label="goal 0.9")
    ax.set_ylim(0, max(1.3, max(ratios + dp["round_ratios_tcp"] + dp["round_ratios_udp"]) + 0.1))
    ax.set_title(f"{kind}: {dp['rules']} rules, {dp['remote_group_members']} remote "
                 "members / none")
    ax.legend()


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fabrics = result["fabrics"]
    fig, axes = plt.subplots(len(fabrics), 2, figsize=(11, 4.5 * len(fabrics)), squeeze=False)
    for row, (kind, res) in zip(axes, fabrics.items(), strict=True):
        ax = row[0]
        if "data_path" not in res:
            ax.set_visible(False)
        else:
            plot_data_path(ax, kind, res["data_path"])
        ax = row[1]
        if "one_change" not in res:
            ax.set_visible(False)
            continue
        oc = res["one_change"]
        ns = [o["ports"] for o in oc]
        ax.plot(ns, [o["rule_change_median_s"] * 1000 for o in oc], "o-", label="rule added")
        ax.plot(ns, [o["join_median_s"] * 1000 for o in oc], "s-", label="port joins a group")
        ax.axhline(50, color="red", linestyle=":", label="goal 50 ms")
        ax.set_xscale("log")
        ax.set_xlabel("ports on the host")
        ax.set_ylabel("ms (median)")
        ax.set_title(f"{kind}: one change, committed")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_fabric(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(kind)
    out: dict[str, Any] = {}
    try:
        bench.setup()
        if args.only in ("", "data"):
            out["data_path"] = bench.data_path(args.seconds, args.rules, args.members,
                                               args.repeats)
        if args.only in ("", "changes"):
            out["one_change"] = [bench.one_change(int(n), args.trials)
                                 for n in args.sizes.split(",")]
        return out
    finally:
        bench.teardown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fabrics", default="linuxbridge,ovs")
    ap.add_argument("--seconds", type=int, default=5, help="per iperf3 run")
    ap.add_argument("--trials", type=int, default=5, help="changes per size")
    ap.add_argument("--repeats", type=int, default=9,
                    help="interleaved rounds (none then filtered, filtered then none, ...) "
                    "of iperf3 runs (medians)")
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--only", choices=("", "data", "changes"), default="",
                    help="one half of the bench (default: both)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    result: dict[str, Any] = {
        "bench": "security_groups",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=False).stdout.strip(),
        "fabrics": {},
    }
    for kind in args.fabrics.split(","):
        if kind not in ("linuxbridge", "ovs"):
            raise SystemExit(f"--fabrics: {kind[:20]!r} is not linuxbridge or ovs")
        result["fabrics"][kind] = run_fabric(kind, args)
    result["loadavg_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "security_groups.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "security_groups.png"))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
