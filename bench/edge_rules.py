"""Edge services at scale: does the rule count matter?

Measured in one run on the all-in-one (real netmgr, agent, nftables,
HAProxy; namespaces on one host), each against a baseline from the same run:

* data path: iperf3 TCP throughput and UDP packets/s from the internet host
  through a port forward to a guest, with 0 rules vs 50,000 port forwards +
  10,000 firewall rules in the router (goal: ratio >= 0.95);
* full apply in the router: render + ``nft -f`` of the whole table with
  1k/10k/50k rules (goal <= 300 ms at 10k), against the same rules loaded as a
  linear chain of individual DNAT rules (what iptables-style routers do);
* one rule change, API call -> the port forward answers from the internet
  host, with 100 ... 50,000 rules already present (goal <= 50 ms, flat; the
  ratio to the fewest rules is reported): the change travels as an edge
  delta (``netmgr.reconcile.delta_push`` -> ``router.services.nftables.delta``), the rules present
  having been loaded by a full push first;
* load balancer requests/s (ab, keep-alive) vs a port forward straight to one
  member (the same router, no HAProxy).

The N rules already present are written into the store in bulk (SQL, one
generation bump) rather than through N API calls: the API is what the
one-change latency measures.

    .venv/bin/python bench/edge_rules.py [--max-rules 50000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.router.v1 import agent_pb2 as apb
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine, text

from aio.allinone import AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest
from common.netns import ensure_netns, remove_netns
from router.lib import libnft
from router.services.base import Context
from router.services.host import KernelProbe
from router.services.nftables import service as nftables

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from matplotlib.axes import Axes

# A tiny keep-alive HTTP responder (asyncio), fast enough not to be the
# bottleneck of the load balancer comparison.
HTTP_SERVER = r"""
import asyncio, sys
BODY = sys.argv[2].encode()
HEAD = b'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: '
RESP = HEAD + str(len(BODY)).encode() + b'\r\n\r\n' + BODY
async def handle(r, w):
    try:
        while True:
            req = await r.readuntil(b'\r\n\r\n')
            w.write(RESP)
            if b'onnection: close' in req:
                break
            await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(handle, '0.0.0.0', int(sys.argv[1]), backlog=1024)
    async with s:
        await s.serve_forever()
asyncio.run(main())
"""

# Connects to ip:port every few ms until it answers; prints the wall time.
PROBE = r"""
import socket, sys, time
ip, port, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
print('ready', flush=True)
while time.time() < deadline:
    try:
        with socket.create_connection((ip, port), timeout=0.005):
            print(repr(time.time()), flush=True)
            sys.exit(0)
    except OSError:
        time.sleep(0.001)
print('timeout', flush=True)
"""


def ns_run(ns: str, argv: list[str], timeout: float = 120) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                       check=False, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)} -> {r.returncode}: {r.stderr[-500:]}"
                           f"{r.stdout[-500:]}")
    return r.stdout


def iperf(ns: str, ip: str, udp: bool, seconds: int) -> float:
    argv = ["iperf3", "-c", ip, "-t", str(seconds), "-J"]
    if udp:
        argv += ["-u", "-b", "0", "-l", "64"]
    out = json.loads(ns_run(ns, argv, timeout=seconds + 30))
    if udp:
        s = out["end"]["sum"]
        return float((s["packets"] - s["lost_packets"]) / s["seconds"])  # received packets/s
    return float(out["end"]["sum_received"]["bits_per_second"])


def ab(ns: str, url: str, n: int, c: int) -> float:
    out = ns_run(ns, ["ab", "-q", "-k", "-n", str(n), "-c", str(c), url])
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    assert m, out
    assert failed, out
    assert failed.group(1) == "0", out
    return float(m.group(1))


class Bench:
    def __init__(self, aio: AllInOne) -> None:
        self.aio = aio
        admin = Api(aio.listen, aio.admin_token)
        tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="edgebench"))
        self.tenant_id = tenant.id
        secret = admin.call(admin.tenants.CreateToken,
                            pb.CreateTokenRequest(tenant_id=tenant.id)).secret
        self.api = Api(aio.listen, secret)
        ch = self.api.channel
        self.ips = erpc.PublicIpServiceStub(ch)
        self.forwards = erpc.PortForwardServiceStub(ch)
        self.lbs = erpc.LoadBalancerServiceStub(ch)
        self.procs: list[subprocess.Popen[Any]] = []
        self.db = create_engine(f"sqlite:///{os.path.join(aio.state_dir, 'netmgr.db')}")
        self.present = {"pf": 0, "fw": 0}

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        return self.api.call(method, request, timeout=300)

    def setup(self) -> None:
        self.net = self.api.call(self.api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name="edge", cidr="10.90.0.0/24")))
        self.ports = [self.api.call(self.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=self.net.id, hostname=f"m{i}"))) for i in range(2)]
        self.api.wait_router_active(self.net.router_id)
        self.guests = []
        for i, p in enumerate(self.ports):
            g = NamespaceGuest(f"{self.aio.prefix}-eg{i}", self.aio.fabric, f"ebg{i}")
            g.attach(self.net.vlan_id, p.mac)
            g.dhcp()
            self.guests.append(g)
            self.procs.append(g.popen([sys.executable, "-c", HTTP_SERVER, "8080", f"m{i}"]))
        self.procs.append(self.guests[0].popen(["iperf3", "-s"], stdout=subprocess.DEVNULL))
        self.main_ip = self.call(self.ips.AllocatePublicIp,
                                 epb.AllocatePublicIpRequest(network_id=self.net.id))
        self.bulk_ips = [self.call(self.ips.AllocatePublicIp,
                                   epb.AllocatePublicIpRequest(network_id=self.net.id))
                         for _ in range(3)]
        for proto in ("tcp", "udp"):
            self.forward(5201, self.ports[0].id, 5201, proto)
        self.forward(8080, self.ports[0].id, 8080)  # direct to one member
        self.call(self.lbs.CreateLoadBalancer, epb.CreateLoadBalancerRequest(
            load_balancer=epb.LoadBalancer(
                public_ip_id=self.main_ip.id, public_port=80, protocol="http",
                private_port=8080, health_check=epb.LoadBalancerHealthCheck(type="none"),
                members=[epb.LoadBalancerMember(port_id=p.id) for p in self.ports])))
        self.api.wait_router_active(self.net.router_id, timeout=120)
        time.sleep(0.5)

    def forward(self, public: int, port_id: str, private: int, proto: str = "tcp") -> Any:
        return self.call(self.forwards.CreatePortForward, epb.CreatePortForwardRequest(
            port_forward=epb.PortForward(public_ip_id=self.main_ip.id, protocol=proto,
                                         public_port=public, port_id=port_id,
                                         private_port=private)))

    def bulk(self, pf_total: int, fw_total: int) -> None:
        """Grow the rules present to these counts, in the store, one generation bump."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.db.begin() as c:
            c.execute(text("UPDATE routers SET desired_generation = desired_generation + 1 "
                           "WHERE id = :r"), {"r": self.net.router_id})
            gen = c.execute(text("SELECT desired_generation FROM routers WHERE id = :r"),
                            {"r": self.net.router_id}).scalar()
            rows = []
            for k in range(self.present["pf"], pf_total):
                ip = self.bulk_ips[k // 25000]
                rows.append(dict(id=str(uuid.uuid4()), t=self.tenant_id, n=self.net.id,
                                 ip=ip.id, pp=10000 + k % 25000, port=self.ports[1].id,
                                 gen=gen, at=now))
            if rows:
                c.execute(text(
                    "INSERT INTO port_forwards (id, tenant_id, network_id, public_ip_id, protocol,"
                    " public_port, public_port_end, port_id, private_port, private_port_end,"
                    " source_cidrs, generation, error, created_at) VALUES (:id, :t, :n, :ip,"
                    " 'tcp', :pp, :pp, :port, 8080, 8080, '[]', :gen, '', :at)"), rows)
            rows = []
            for k in range(self.present["fw"], fw_total):
                rows.append(dict(id=str(uuid.uuid4()), t=self.tenant_id, n=self.net.id,
                                 ip=self.bulk_ips[2].id, p=1 + k, gen=gen, at=now))
            if rows:
                c.execute(text(
                    "INSERT INTO firewall_rules (id, tenant_id, direction, network_id,"
                    " public_ip_id, protocol, port, port_end, icmp_type, icmp_code, cidrs,"
                    " generation, error, created_at) VALUES (:id, :t, 'ingress', :n, :ip, 'tcp',"
                    " :p, :p, -1, -1, '[\"192.0.2.0/24\"]', :gen, '', :at)"), rows)
        self.present = {"pf": pf_total, "fw": fw_total}
        self.api.wait_router_active(self.net.router_id, timeout=600)

    def data_path(self, seconds: int) -> dict[str, Any]:
        inet, ip = self.aio.inet_ns, self.main_ip.ip
        # Medians of 5 runs each, TCP and UDP interleaved: single runs on a
        # shared 2-core machine vary by ±15 %.
        tcp, udp = [], []
        for _ in range(5):
            tcp.append(iperf(inet, ip, False, seconds))
            udp.append(iperf(inet, ip, True, seconds))
        return {"tcp_bps": statistics.median(tcp), "udp_pps": statistics.median(udp),
                "tcp_runs_bps": tcp, "udp_runs_pps": udp}

    def _opened(self, public: int, change: Callable[[], object]) -> float:
        """Seconds from `change()` (an API call) until ip:public answers."""
        probe = subprocess.Popen(
            ["ip", "netns", "exec", self.aio.inet_ns, sys.executable, "-c", PROBE,
             self.main_ip.ip, str(public), "60"], stdout=subprocess.PIPE, text=True)
        assert probe.stdout is not None
        assert probe.stdout.readline().strip() == "ready"
        time.sleep(0.05)
        start = time.time()
        change()
        line = probe.stdout.readline().strip()
        probe.wait(timeout=10)
        assert line != "timeout", "the port forward never opened"
        return float(line) - start

    def one_change(self, trials: int) -> tuple[list[float], list[float]]:
        """API create of one port forward -> the internet host connects through
        it; and an update of a forward to a closed port moving it to an open one."""
        created, updated = [], []
        for i in range(trials):
            made: list[Any] = []

            def create(i: int = i, made: list[Any] = made) -> None:
                made.append(self.forward(60000 + i, self.ports[0].id, 8080))

            created.append(self._opened(60000 + i, create))
            self.call(self.forwards.DeletePortForward, epb.DeletePortForwardRequest(
                id=made[0].id))
            f = self.forward(61000 + i, self.ports[0].id, 9)  # nothing listens on 9
            self.api.wait_router_active(self.net.router_id, timeout=300)

            def update(f: Any = f) -> None:
                self.call(self.forwards.UpdatePortForward, epb.UpdatePortForwardRequest(
                    port_forward=epb.PortForward(id=f.id, private_port=8080),
                    update_mask=field_mask_pb2.FieldMask(paths=["private_port"])))

            updated.append(self._opened(61000 + i, update))
            self.call(self.forwards.DeletePortForward, epb.DeletePortForwardRequest(id=f.id))
            self.api.wait_router_active(self.net.router_id, timeout=300)
        return created, updated

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=5)
        for g in getattr(self, "guests", []):
            g.destroy()
        self.db.dispose()


# ------------------------------------------------------------- full apply


def synthetic(n: int) -> apb.RouterConfig:
    """A router config with n rules: 80 % port forwards, 20 % firewall rules."""
    pubs = [f"203.0.113.{200 + i}" for i in range(4)]
    cfg = apb.RouterConfig(
        router_id="bench", generation=1,
        interfaces=[apb.Interface(name="pub0", role=apb.INTERFACE_ROLE_PUBLIC,
                                  addresses=["203.0.113.10/24"] + [f"{p}/32" for p in pubs]),
                    apb.Interface(name="g-1", role=apb.INTERFACE_ROLE_GUEST,
                                  addresses=["10.90.0.1/24"], network_id="net")],
        source_nats=[apb.SourceNat(network_id="net", source_cidr="10.90.0.0/24",
                                   public_ip="203.0.113.10", public_interface="pub0")],
        public_addresses=[apb.PublicAddress(public_ip_id=f"ip{i}", ip=p, interface="pub0")
                          for i, p in enumerate(pubs)])
    n_pf = n * 4 // 5
    cfg.port_forwards.extend(
        apb.PortForwardRule(id=f"pf{k}", public_ip=pubs[k // 25000], protocol="tcp",
                            public_port_start=10000 + k % 25000, public_port_end=10000 + k % 25000,
                            private_ip="10.90.0.5", private_port_start=8080,
                            private_port_end=8080) for k in range(n_pf))
    cfg.ingress_rules.extend(
        apb.IngressRule(id=f"fw{k}", public_ip=pubs[3], protocol="tcp", port_start=1 + k,
                        port_end=1 + k, cidrs=["192.0.2.0/24"]) for k in range(n - n_pf))
    return cfg


def linear_ruleset(cfg: apb.RouterConfig) -> str:
    lines = ["table ip linear {}", "delete table ip linear", "table ip linear {",
             "chain pre { type nat hook prerouting priority dstnat; policy accept;"]
    lines += [f"ip daddr {f.public_ip} tcp dport {f.public_port_start} dnat to "
              f"{f.private_ip}:{f.private_port_start}" for f in cfg.port_forwards]
    lines += ["}", "chain filt { type filter hook forward priority filter; policy accept;"]
    lines += [f"ip saddr 192.0.2.0/24 tcp dport {r.port_start} accept" for r in cfg.ingress_rules]
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def full_apply(sizes: list[int], workdir: str, trials: int = 5) -> dict[str, dict[str, float]]:
    """The router's own full apply of the nftables table (what an agent start
    or a changed table layout costs): verify + render + check + load, as
    ``router.runtime`` runs them, in a fresh namespace; against loading the
    same rules as one chain of N rules with ``nft -f`` (the baseline)."""
    ns = f"cnbench-{uuid.uuid4().hex[:6]}"
    host = KernelProbe()
    out: dict[str, dict[str, float]] = {}
    try:
        ensure_netns(ns)
        for n in sizes:
            cfg = synthetic(n)
            ctx = Context(router_id="bench", netns=ns, state_dir=workdir,
                          fabric=None)  # type: ignore[arg-type]  # nftables needs none
            service = nftables.NftablesService(host)
            parts: list[tuple[float, float, float, float]] = []
            for _ in range(trials):
                service.forget_loaded()  # as after an agent start: a full load
                cfg.generation += 1
                t0 = time.perf_counter()
                service.verify(cfg)
                t1 = time.perf_counter()
                rendered = service.render(cfg, ctx.paths)
                t2 = time.perf_counter()
                service.check(ctx, rendered)
                t3 = time.perf_counter()
                service.apply(ctx, cfg, rendered, None)
                t4 = time.perf_counter()
                parts.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
            verify_s, render_s, check_s, load_s = (statistics.median(p)
                                                   for p in zip(*parts, strict=True))
            totals = [sum(p) for p in parts]
            lin = os.path.join(workdir, f"linear-{n}.nft")
            with open(lin, "w") as f:
                f.write(linear_ruleset(cfg))
            lin_loads = []
            for _ in range(3):
                t0 = time.perf_counter()
                ns_run(ns, ["nft", "-f", lin])
                lin_loads.append(time.perf_counter() - t0)
            ns_run(ns, ["nft", "delete", "table", "ip", "linear"])
            # One element more, in-process, on the loaded table.
            one = ("add element inet cloudnet pf_dnat { 203.0.113.203 . udp . 9 : "
                   "10.90.0.5 . 9 }\n")
            t0 = time.perf_counter()
            libnft.run(ns, one)
            t_one = time.perf_counter() - t0
            out[str(n)] = {"verify_s": verify_s, "render_s": render_s, "check_s": check_s,
                           "nft_load_s": load_s, "full_apply_s": statistics.median(totals),
                           "full_apply_max_s": max(totals),
                           "linear_chain_load_s": statistics.median(lin_loads),
                           "one_element_s": t_one}
            print(f"full apply {n}: {out[str(n)]}", file=sys.stderr, flush=True)
    finally:
        remove_netns(ns)
    return out


# --------------------------------------------------------------------- plot


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "data_path" not in result:  # --only latency / apply
        fig, ax = plt.subplots(1, 1, figsize=(6, 4.5))
        if "one_change" in result:
            _plot_latency(ax, result["one_change"])
        else:
            _plot_full_apply(ax, result["full_apply"])
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    dp = result["data_path"]
    ax = axes[0]
    labels = ["TCP throughput", "UDP packets/s", "LB req/s"]
    ratios = [dp["ratio_tcp"], dp["ratio_udp"], result["load_balancer"]["ratio"]]
    ax.bar(labels, ratios, color=["tab:blue", "tab:orange", "tab:green"])
    ax.axhline(0.95, color="red", linestyle="--", label="goal 0.95 (data path)")
    ax.set_ylim(0, max(1.3, max(ratios) + 0.1))
    ax.set_title(f"with {result['rules_present']} rules / without;\nLB / direct to one member")
    ax.legend()
    _plot_full_apply(axes[1], result["full_apply"])
    _plot_latency(axes[2], result["one_change"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_full_apply(ax: Axes, fa: dict[str, Any]) -> None:
    ns = [int(k) for k in fa]
    ax.plot(ns, [fa[str(n)]["full_apply_s"] * 1000 for n in ns], "o-",
            label="cloudnet: verify + render + check + load (maps/sets)")
    ax.plot(ns, [fa[str(n)]["linear_chain_load_s"] * 1000 for n in ns], "s--",
            label="baseline: nft -f, one rule per rule")
    ax.axhline(300, color="red", linestyle=":", label="goal 300 ms at 10k")
    ax.set_xscale("log")
    ax.set_xlabel("rules")
    ax.set_ylabel("ms")
    ax.set_title("full apply in the router")
    ax.legend(fontsize=8)


def _plot_latency(ax: Axes, lat: dict[str, Any]) -> None:
    ns = [int(k) for k in lat]
    ax.plot(ns, [lat[str(n)]["median_s"] * 1000 for n in ns], "o-",
            label="API call -> packet path open (median)")
    ax.plot(ns, [lat[str(n)]["max_s"] * 1000 for n in ns], "x:", label="max")
    if all("update_median_s" in lat[str(n)] for n in ns):
        ax.plot(ns, [lat[str(n)]["update_median_s"] * 1000 for n in ns], "s-",
                label="update in place -> new target answers (median)")
    for n in ns:
        ax.annotate(f"x{lat[str(n)]['ratio_vs_fewest']:.2f}", (n, lat[str(n)]["median_s"] * 1000),
                    textcoords="offset points", xytext=(0, 8), fontsize=8, ha="center")
    ax.axhline(50, color="red", linestyle=":", label="goal 50 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rules already present")
    ax.set_ylabel("ms (median)")
    ax.set_title("one rule change (ratio to the fewest rules)")
    ax.legend(fontsize=8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-rules", type=int, default=50000,
                    help="port forwards present for the data path (plus max/5 firewall rules)")
    ap.add_argument("--seconds", type=int, default=5, help="per iperf3 run")
    ap.add_argument("--trials", type=int, default=5, help="one-change trials per size")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    ap.add_argument("--only", choices=("latency", "apply"),
                    help="latency: only the one-change curve; apply: only the full apply "
                         "(no LB, iperf3)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cloudnet-edge-bench-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sizes = [n for n in (100, 1000, 10000, 50000) if n <= args.max_rules]
    if args.max_rules not in sizes:
        sizes.append(args.max_rules)
    result: dict[str, Any] = {"host": platform.node(), "kernel": platform.release(),
                    "cpus": os.cpu_count()}
    everything = args.only is None
    if everything or args.only == "apply":
        result["full_apply"] = full_apply(
            [n for n in (1000, 10000, 50000) if n <= args.max_rules] or [args.max_rules], work,
            trials=args.trials)
    if args.only == "apply":
        shutil.rmtree(work, ignore_errors=True)
        return finish(result, args.out)
    aio = AllInOne(
        insecure=True, prefix=f"e{uuid.uuid4().hex[:5]}", state_dir=work,
        listen=f"127.0.0.1:{port}")
    bench = None
    try:
        aio.up()
        bench = Bench(aio)
        bench.setup()
        inet = aio.inet_ns
        if everything:
            direct = ab(inet, f"http://{bench.main_ip.ip}:8080/", 20000, 32)
            via_lb = ab(inet, f"http://{bench.main_ip.ip}/", 20000, 32)
            result["load_balancer"] = {"direct_rps": direct, "lb_rps": via_lb,
                                       "ratio": via_lb / direct}
            print(f"lb: {result['load_balancer']}", file=sys.stderr, flush=True)
            before = bench.data_path(args.seconds)
            print(f"data path, 0 rules: {before}", file=sys.stderr, flush=True)
        one_change: dict[str, dict[str, float]] = {}
        for n in sizes:
            t0 = time.perf_counter()
            bench.bulk(n, n // 5)
            took = time.perf_counter() - t0
            lat, upd = bench.one_change(args.trials)
            one_change[str(n)] = {"median_s": statistics.median(lat), "max_s": max(lat),
                                  "update_median_s": statistics.median(upd),
                                  "update_max_s": max(upd),
                                  "bulk_apply_s": took, "rules": n + n // 5}
            print(f"one change with {n} forwards + {n // 5} fw rules: {one_change[str(n)]}",
                  file=sys.stderr, flush=True)
        base = one_change[str(sizes[0])]["median_s"]
        for v in one_change.values():
            # Flat means ~1: the latency with N rules over that with the fewest.
            v["ratio_vs_fewest"] = v["median_s"] / base
        result["one_change"] = one_change
        if not everything:
            return finish(result, args.out)
        after = bench.data_path(args.seconds)
        print(f"data path, {args.max_rules} + {args.max_rules // 5} rules: {after}",
              file=sys.stderr, flush=True)
        result["rules_present"] = f"{args.max_rules} forwards + {args.max_rules // 5} fw"
        result["data_path"] = {"without": before, "with": after,
                               "ratio_tcp": after["tcp_bps"] / before["tcp_bps"],
                               "ratio_udp": after["udp_pps"] / before["udp_pps"]}
    finally:
        if bench is not None:
            bench.close()
        aio.down()
        shutil.rmtree(work, ignore_errors=True)
    return finish(result, args.out)


def finish(result: dict[str, Any], out: str) -> int:
    name = ("edge_rules" if "data_path" in result
            else "edge_rules_apply" if "full_apply" in result else "edge_rules_latency")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(out, f"{name}.png"))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
