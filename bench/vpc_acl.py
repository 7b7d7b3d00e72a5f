"""VPC network ACLs: does the length of a tier's list matter?

Measured in one run on the all-in-one (real netmgr, agent, nftables;
namespace guests on two tiers of one VPC), each against a baseline from the
same run:

* data path between tiers, from a web-tier guest to a db-tier guest, with
  the db tier under a list of N rules where the allow that matches is the
  last one (the worst case of ordered, first-match evaluation), against
  default_allow (one rule), the two measured alternately (3 rounds, medians;
  the shared machine's load moves during a run): iperf3 TCP throughput (one
  long connection: only its first packet meets the list, conntrack takes the
  rest) and new connections/s (ab without keep-alive against busybox httpd:
  every connection's first packet walks the list);
* one rule change, API call -> the rule ACTIVE (the router applied the
  generation: the table reloaded atomically), with N rules in the list;
  median over trials, ratio to the shortest list.

    .venv/bin/python bench/vpc_acl.py [--sizes 10,100,400] [--out bench/out]
"""

from __future__ import annotations

import argparse
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

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc

from aio.allinone import AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest

if TYPE_CHECKING:
    from google.protobuf.message import Message


def conn_rate(guest: NamespaceGuest, ip: str, n: int = 2000) -> float:
    """New TCP connections (HTTP requests without keep-alive) per second."""
    r = guest.run(["ab", "-q", "-n", str(n), "-c", "8", f"http://{ip}/"], timeout=120)
    m = re.search(r"Requests per second:\s+([\d.]+)", r.stdout)
    failed = re.search(r"Failed requests:\s+(\d+)", r.stdout)
    if r.returncode or not m or not failed or failed.group(1) != "0":
        raise RuntimeError(f"ab: {r.stderr[-300:]} {r.stdout[-300:]}")
    return float(m.group(1))


def iperf(guest: NamespaceGuest, ip: str, seconds: int) -> float:
    r = guest.run(["iperf3", "-c", ip, "-t", str(seconds), "-J"], timeout=seconds + 30)
    if r.returncode:
        raise RuntimeError(f"iperf3: {r.stderr[-300:]} {r.stdout[-300:]}")
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])


class Bench:
    def __init__(self, aio: AllInOne) -> None:
        self.aio = aio
        admin = Api(aio.listen, aio.admin_token)
        tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="vpcbench"))
        secret = admin.call(admin.tenants.CreateToken,
                            pb.CreateTokenRequest(tenant_id=tenant.id)).secret
        admin.close()
        self.api = Api(aio.listen, secret)
        self.vpcs = vrpc.VpcServiceStub(self.api.channel)
        self.acls = vrpc.NetworkAclServiceStub(self.api.channel)
        self.guests: list[NamespaceGuest] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        return self.api.call(method, request, timeout=60)

    def setup(self) -> None:
        self.vpc = self.call(self.vpcs.CreateVpc, vpb.CreateVpcRequest(
            vpc=vpb.Vpc(name="bench", cidr="10.70.0.0/16")))
        self.web = self.tier("web", "10.70.1.0/24")
        self.db = self.tier("db", "10.70.2.0/24")
        self.api.wait_router_active(self.vpc.router_id)
        self.client = self.guest(self.web, "client")
        self.server = self.guest(self.db, "server")
        self.server_ip = self.server.lease.ip if self.server.lease else ""
        self.procs.append(self.server.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        www = tempfile.mkdtemp(prefix="cloudnet-vpc-bench-www-")
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("ok\n")
        self.www = www
        self.procs.append(self.server.popen(["busybox", "httpd", "-f", "-p", "80", "-h", www],
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        time.sleep(0.5)

    def tier(self, name: str, cidr: str) -> pb.Network:
        tier: pb.Network = self.call(self.api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name=name, cidr=cidr, vpc_id=self.vpc.id)))
        return tier

    def guest(self, tier: pb.Network, hostname: str) -> NamespaceGuest:
        port = self.call(self.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=tier.id, hostname=hostname)))
        self.api.wait_router_active(self.vpc.router_id)
        g = NamespaceGuest(f"{self.aio.prefix}-b-{port.id[:6]}", self.aio.fabric,
                           f"bp{port.id.replace('-', '')[:10]}")
        g.attach(tier.vlan_id, port.mac)
        self.guests.append(g)
        g.dhcp()
        return g

    def list_of(self, n: int) -> tuple[str, list[vpb.AclRule]]:
        """A list of n rules: n-1 denies that never match this flow (other
        sources), then the allow that does, and an egress allow."""
        acl = self.call(self.acls.CreateNetworkAcl, vpb.CreateNetworkAclRequest(
            network_acl=vpb.NetworkAcl(vpc_id=self.vpc.id, name=f"n{n}")))
        rules = []
        for i in range(n - 1):
            rules.append(self.call(self.acls.CreateAclRule, vpb.CreateAclRuleRequest(
                rule=vpb.AclRule(acl_id=acl.id, number=i + 1, action=vpb.ACL_ACTION_DENY,
                                 direction=vpb.ACL_DIRECTION_INGRESS, protocol="tcp",
                                 port=1000 + i, cidrs=[f"172.{16 + i // 250}.{i % 250}.0/24"]))))
        rules.append(self.call(self.acls.CreateAclRule, vpb.CreateAclRuleRequest(
            rule=vpb.AclRule(acl_id=acl.id, number=n, action=vpb.ACL_ACTION_ALLOW,
                             direction=vpb.ACL_DIRECTION_INGRESS, protocol="all"))))
        self.call(self.acls.CreateAclRule, vpb.CreateAclRuleRequest(rule=vpb.AclRule(
            acl_id=acl.id, number=n + 1, action=vpb.ACL_ACTION_ALLOW,
            direction=vpb.ACL_DIRECTION_EGRESS, protocol="all")))
        return acl.id, rules

    def use(self, acl_id: str) -> None:
        self.call(self.acls.ReplaceNetworkAcl, vpb.ReplaceNetworkAclRequest(
            network_id=self.db.id, acl_id=acl_id))
        self.api.wait_router_active(self.vpc.router_id)

    def one_change(self, rule: vpb.AclRule, trials: int) -> list[float]:
        """Edit one rule (its port) and wait until the router applied it."""
        out = []
        for t in range(trials):
            edited = vpb.AclRule()
            edited.CopyFrom(rule)
            edited.port, edited.port_end = 2000 + t, 0
            t0 = time.perf_counter()
            self.call(self.acls.UpdateAclRule, vpb.UpdateAclRuleRequest(rule=edited))
            while self.call(self.acls.GetAclRule, vpb.GetAclRuleRequest(
                    id=rule.id)).state != pb.OBJECT_STATE_ACTIVE:
                time.sleep(0.002)
            out.append(time.perf_counter() - t0)
        return out

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=5)
        for g in self.guests:
            g.destroy()
        shutil.rmtree(self.www, ignore_errors=True)
        self.api.close()


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(k) for k in result["lists"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(sizes, [result["lists"][str(n)]["tcp_ratio"] for n in sizes], "o-",
            label="TCP throughput (iperf3)")
    a1.plot(sizes, [result["lists"][str(n)]["conn_ratio"] for n in sizes], "s-",
            label="new connections/s (ab)")
    a1.axhline(1.0, color="grey", linestyle=":")
    a1.set_xscale("log")
    a1.set_xlabel("rules in the tier's list (the match is last)")
    a1.set_ylabel("ratio to default_allow (same run, alternated)")
    a1.set_title("tier to tier")
    a1.legend(fontsize=8)
    a2.plot(sizes, [result["lists"][str(n)]["change_median_s"] * 1000 for n in sizes], "o-",
            label="median")
    a2.plot(sizes, [result["lists"][str(n)]["change_max_s"] * 1000 for n in sizes], "x:",
            label="max")
    a2.set_xscale("log")
    a2.set_xlabel("rules in the list")
    a2.set_ylabel("ms")
    a2.set_title("one rule edited: API call -> rule ACTIVE")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,400", help="list lengths, comma-separated")
    ap.add_argument("--seconds", type=int, default=3, help="per iperf3 run")
    ap.add_argument("--rounds", type=int, default=3, help="alternations list/default_allow")
    ap.add_argument("--trials", type=int, default=5, help="one-change trials per size")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cloudnet-vpc-bench-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result: dict[str, Any] = {"host": platform.node(), "kernel": platform.release(),
                    "cpus": os.cpu_count(), "lists": {}}
    aio = AllInOne(insecure=True, prefix=f"q{uuid.uuid4().hex[:5]}", state_dir=work,
                   listen=f"127.0.0.1:{port}")
    bench = None
    try:
        aio.up()
        bench = Bench(aio)
        bench.setup()
        allow = next(a.id for a in bench.call(bench.acls.ListNetworkAcls,
                                              vpb.ListNetworkAclsRequest(
                                                  vpc_id=bench.vpc.id)).network_acls
                     if a.name == "default_allow")
        ip = bench.server_ip
        for n in sizes:
            acl_id, rules = bench.list_of(n)
            runs: dict[str, list[float]] = {"bps": [], "base_bps": [], "cps": [],
                                            "base_cps": []}
            for _ in range(args.rounds):
                for key, acl in (("base_", allow), ("", acl_id)):
                    bench.use(acl)
                    runs[key + "bps"].append(iperf(bench.client, ip, args.seconds))
                    runs[key + "cps"].append(conn_rate(bench.client, ip))
            lat = bench.one_change(rules[0], args.trials)
            med = {k: statistics.median(v) for k, v in runs.items()}
            result["lists"][str(n)] = {
                "tcp_bps": med["bps"], "default_allow_tcp_bps": med["base_bps"],
                "tcp_ratio": med["bps"] / med["base_bps"],
                "conn_per_s": med["cps"], "default_allow_conn_per_s": med["base_cps"],
                "conn_ratio": med["cps"] / med["base_cps"],
                "change_median_s": statistics.median(lat), "change_max_s": max(lat)}
            print(f"{n} rules: {result['lists'][str(n)]}", file=sys.stderr, flush=True)
        first = result["lists"][str(sizes[0])]["change_median_s"]
        for v in result["lists"].values():
            v["change_ratio_vs_shortest"] = v["change_median_s"] / first
    finally:
        if bench is not None:
            bench.close()
        aio.down()
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(args.out, "vpc_acl.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "vpc_acl.png"))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
