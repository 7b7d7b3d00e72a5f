"""cloudnet all-in-one: the whole cloud on this host, on the embedded defaults.

The topology (every piece in a network namespace of its own, named from one
prefix so several all-in-ones, e.g. one per test, can live side by side):

    guests (netns, VMs) ─┐                   ┌─ <prefix>-edge ── <prefix>-inet
                         ├─ fabric ──────────┤  203.0.113.1      198.51.100.10 (web)
    routers (netns) ─────┘  a VLAN/segment   │  (provider gw)    198.51.100.53 (DNS)
                            provider segment ┘

The fabric is Open vSwitch (bridge <prefix>-br, userspace datapath, each NIC
an access port tagged with its network's VLAN) by default, or a Linux bridge
per segment inside the namespace <prefix>-fabric (--fabric linuxbridge).

The provider edge routes the public range (203.0.113.0/24, source-NAT and
public IPs) to an "internet" host that runs a web server answering with the
client's address, and an upstream DNS server for names under example.test.
The router agent and the network manager run as real daemons.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
from pyroute2 import IPRoute, netns

from aio.demo import run_demo
from aio.topology import (
    EDGE_INET_IP,
    EDGE_PUBLIC_IP,
    INET_DNS_IP,
    INET_HOST_IP,
    INET_PREFIXLEN,
    PUBLIC_CIDR,
    PUBLIC_PREFIXLEN,
    UPSTREAM_NAMES,
    WEB_PORT,
)
from common.fabric.base import PROVIDER_SEGMENT
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric, bridge_exists
from common.fabric.vxlan import VxlanFabric
from common.netns import ensure_netns, install, remove_netns
from router.agent.registry import stop_routers

# The topology's addresses are importable from here too (tests, benchmarks).
__all__ = ["EDGE_INET_IP", "EDGE_PUBLIC_IP", "INET_DNS_IP", "INET_HOST_IP", "INET_PREFIXLEN",
           "PUBLIC_CIDR", "PUBLIC_PREFIXLEN", "UPSTREAM_NAMES", "WEB_PORT", "AllInOne", "main",
           "running", "serve_whoami"]

log = logging.getLogger("cloudnet.aio")


@dataclasses.dataclass
class AllInOne:
    prefix: str = "cn"
    state_dir: str = "/var/lib/cloudnet"
    listen: str = "127.0.0.1:7070"
    admin_token: str = ""
    # How often the agent repairs dead daemons and lost rulesets.
    health_interval: float = 5.0
    # "ovs" (VLAN access ports on the Open vSwitch bridge <prefix>-br, the
    # fabric VMs attach to; the host services of scripts/host-services.sh are
    # started for it) or "linuxbridge" (a bridge per segment in
    # <prefix>-fabric, no daemon needed).
    fabric_kind: str = "ovs"
    # With fabric_kind "vxlan": this host's underlay address (in the
    # namespace <prefix>-ul, which the operator or a test wires to the other
    # hosts) and the other hosts' underlay addresses.
    vxlan_local: str = ""
    vxlan_remotes: tuple[str, ...] = ()
    # "netns" or "vm": routers as appliance VMs booted by a compute agent of
    # this all-in-one (aio.vm_backend; OVS fabric only).
    router_backend: str = "netns"
    # More VM backend settings (KEY=VALUE, see netmgr.reconcile.vm_backend.credentials).
    router_vm_settings: tuple[str, ...] = ()
    compute_listen: str = ""
    pids: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        install()  # fork-free pyroute2 namespaces: this process also runs gRPC channels
        self.fabric: LinuxBridgeFabric | OvsFabric | VxlanFabric
        if self.fabric_kind == "ovs":
            self.fabric = OvsFabric(f"{self.prefix}-br")
        elif self.fabric_kind == "vxlan":
            # Device names are <prefix>{b,x,p}...: at most 6 bytes of prefix.
            self.fabric = VxlanFabric(f"{self.prefix[:5]}v", self.underlay_ns, self.vxlan_local,
                                      list(self.vxlan_remotes))
        else:
            self.fabric = LinuxBridgeFabric(f"{self.prefix}-fabric")
        self.edge_ns = f"{self.prefix}-edge"
        self.inet_ns = f"{self.prefix}-inet"
        self.agent_socket = os.path.join(self.state_dir, "run", "agent.sock")
        if not self.admin_token:
            self.admin_token = self._load_or_make_admin_token()

    # ------------------------------------------------------------ topology

    def _load_or_make_admin_token(self) -> str:
        path = os.path.join(self.state_dir, "admin.token")
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
        os.makedirs(self.state_dir, exist_ok=True)
        token = "adm_" + secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    def build_topology(self) -> None:
        if isinstance(self.fabric, OvsFabric):
            from aio.host_services import ensure_running

            ensure_running()
        self.fabric.setup()
        ensure_netns(self.edge_ns)
        ensure_netns(self.inet_ns)
        self.fabric.plug("edge", PROVIDER_SEGMENT, self.edge_ns, "eth0", "02:00:cb:00:71:01")
        with IPRoute(netns=self.edge_ns, flags=0) as ipr:
            if not ipr.link_lookup(ifname="inet0"):
                ipr.link("add", ifname="inet0", kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": self.inet_ns})
            for ifname, ip, plen in (("eth0", EDGE_PUBLIC_IP, PUBLIC_PREFIXLEN),
                                     ("inet0", EDGE_INET_IP, INET_PREFIXLEN)):
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.ensure(ipr.addr, present=True, index=idx, address=ip, prefixlen=plen)
                ipr.link("set", index=idx, state="up")
        with IPRoute(netns=self.inet_ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            for ip in (INET_HOST_IP, INET_DNS_IP):
                ipr.ensure(ipr.addr, present=True, index=idx, address=ip, prefixlen=INET_PREFIXLEN)
            ipr.link("set", index=idx, state="up")
            ipr.route("replace", dst=PUBLIC_CIDR, gateway=EDGE_INET_IP)
        self._ns_run(self.edge_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if self.router_backend == "vm":
            from aio import vm_backend as aio_vm

            aio_vm.build_control_network(self)

    @staticmethod
    def _ns_run(ns: str, argv: list[str]) -> None:
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

    def spawn(self, name: str, argv: list[str], ns: str | None = None) -> None:
        os.makedirs(os.path.join(self.state_dir, "log"), exist_ok=True)
        logf = open(os.path.join(self.state_dir, "log", f"{name}.log"), "ab")  # noqa: SIM115
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        logf.close()
        self.pids[name] = proc.pid
        self._write_pids()

    def _write_pids(self) -> None:
        with open(os.path.join(self.state_dir, "aio.pids.json"), "w") as f:
            json.dump(self.pids, f)

    def start_internet_services(self) -> None:
        """Upstream DNS (dnsmasq) and a web server on the internet host."""
        records = [f"--address=/{n}/{ip}" for n, ip in UPSTREAM_NAMES.items()]
        self.spawn("upstream-dns", [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={INET_DNS_IP}", "--log-facility=-", "--conf-file=/dev/null",
            *records], ns=self.inet_ns)
        self.spawn("web", [sys.executable, "-m", "aio.allinone", "whoami", "--port",
                            str(WEB_PORT)], ns=self.inet_ns)

    def start_agent(self) -> None:
        self.spawn("router-agent", [
            sys.executable, "-m", "router.agent.server", "--listen", f"unix://{self.agent_socket}",
            "--state-dir", os.path.join(self.state_dir, "agent"),
            "--netns-prefix", self.prefix, *self._fabric_args(),
            "--health-interval", str(self.health_interval)])

    @property
    def underlay_ns(self) -> str:
        return f"{self.prefix}-ul"

    def _fabric_args(self) -> list[str]:
        if isinstance(self.fabric, OvsFabric):
            return ["--fabric", "ovs", "--ovs-bridge", self.fabric.bridge]
        if isinstance(self.fabric, VxlanFabric):
            return ["--fabric", "vxlan", "--vxlan-prefix", self.fabric.prefix,
                    "--vxlan-underlay-netns", self.fabric.underlay_netns,
                    "--vxlan-local", self.fabric.local,
                    *(a for r in self.fabric.remotes for a in ("--vxlan-remote", r))]
        return ["--fabric-netns", self.fabric.netns]

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        self._kill("router-agent", sig)

    def start_netmgr(self) -> None:
        token_file = os.path.join(self.state_dir, "admin.token")
        with open(token_file, "w") as f:
            f.write(self.admin_token + "\n")
        self.spawn("netmgr", [
            sys.executable, "-m", "netmgr.server", "--listen", self.listen,
            "--db-url", f"sqlite:///{os.path.join(self.state_dir, 'netmgr.db')}",
            "--admin-token-file", token_file,
            "--agent", f"local=unix://{self.agent_socket}", *self._vm_args()])

    def _vm_args(self) -> list[str]:
        if self.router_backend != "vm":
            return []
        from aio import vm_backend as aio_vm

        return aio_vm.netmgr_args(self)

    def stop_netmgr(self, sig: int = signal.SIGTERM) -> None:
        self._kill("netmgr", sig)

    def _kill(self, name: str, sig: int) -> None:
        pid = self.pids.pop(name, None)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        self._write_pids()

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until both daemons answer gRPC health checks."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for target in (f"unix://{self.agent_socket}", self.listen):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with grpc.insecure_channel(target) as ch:
                        r = health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(), timeout=2)
                        if r.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} not serving after {timeout}s; see "
                                       f"{self.state_dir}/log/")
                time.sleep(0.1)

    def up(self) -> None:
        os.makedirs(os.path.join(self.state_dir, "run"), exist_ok=True)
        self.build_topology()
        self.start_internet_services()
        self.start_agent()
        self.start_netmgr()
        self.wait_ready()
        if self.router_backend == "vm":
            from aio import vm_backend as aio_vm

            aio_vm.start_compute(self, self.compute_listen or "127.0.0.1:7171")
            aio_vm.wait_registered(self)

    def down(self) -> None:
        """Stop everything this all-in-one started and remove its namespaces."""
        path = os.path.join(self.state_dir, "aio.pids.json")
        if not self.pids and os.path.exists(path):
            with open(path) as f:
                self.pids = json.load(f)
        for name in list(self.pids):
            self._kill(name, signal.SIGTERM)
        if self.router_backend == "vm":
            from aio import vm_backend as aio_vm

            aio_vm.remove_vms(self.prefix)
        # What runs in the routers (dnsmasq, HAProxy, charon...): the agent
        # leaves it running when it stops; found by each router's records
        # and namespace, never by command line.
        stop_routers(os.path.join(self.state_dir, "agent"), self.prefix)
        # The OVS bridge, also when `down` is not told the fabric.
        ovs = self.fabric if isinstance(self.fabric, OvsFabric) else OvsFabric(f"{self.prefix}-br")
        if os.path.exists("/var/run/openvswitch/db.sock") and bridge_exists(ovs.bridge):
            ovs.teardown()
        if isinstance(self.fabric, VxlanFabric):
            self.fabric.teardown()  # its bridges and devices live in the root namespace
        for ns in netns.listnetns():
            if ns.startswith(f"{self.prefix}r-") or ns.startswith(f"{self.prefix}-"):
                remove_netns(ns)
                with contextlib.suppress(FileNotFoundError):
                    import shutil

                    shutil.rmtree(f"/etc/netns/{ns}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ----------------------------------------------------------- internet host

class _WhoAmI(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"web: {self.client_address[0]} {fmt % args}\n")


def serve_whoami(port: int) -> None:
    """Answer every GET with the client's source address (to show SNAT)."""
    http.server.ThreadingHTTPServer(("0.0.0.0", port), _WhoAmI).serve_forever()


@contextlib.contextmanager
def running(aio: AllInOne) -> Iterator[AllInOne]:
    try:
        aio.up()
        yield aio
    finally:
        aio.down()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cloudnet-aio", description=__doc__.split("\n")[0])
    p.add_argument("--prefix", default="cn", help="namespace name prefix (default: cn)")
    p.add_argument("--state-dir", default="/var/lib/cloudnet")
    p.add_argument("--listen", default="127.0.0.1:7070", help="netmgr API address")
    p.add_argument("--router-backend", choices=("netns", "vm"), default="netns",
                   help="routers as namespaces (default) or appliance VMs (images/router)")
    p.add_argument("--fabric", choices=("ovs", "linuxbridge"), default="ovs",
                   help="host fabric: Open vSwitch VLANs (default; VMs attach to it too), "
                        "or Linux bridges in a namespace")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the all-in-one cloud and keep it running")
    up.add_argument("--demo", action="store_true",
                    help="create a demo tenant network with two guests and show it working")
    up.add_argument("--exit", action="store_true", help="stop everything after the demo")
    sub.add_parser("down", help="stop everything and remove the namespaces")
    w = sub.add_parser("whoami", help=argparse.SUPPRESS)
    w.add_argument("--port", type=int, default=WEB_PORT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.cmd == "whoami":
        serve_whoami(args.port)
        return 0
    aio = AllInOne(prefix=args.prefix, state_dir=args.state_dir, listen=args.listen,
                   fabric_kind=args.fabric, router_backend=args.router_backend)
    if args.cmd == "down":
        aio.down()
        return 0
    aio.down()  # a previous run's leftovers
    try:
        aio.up()
        print(f"cloudnet all-in-one is up: netmgr API on {aio.listen}")
        print(f"  admin token: {os.path.join(aio.state_dir, 'admin.token')}")
        print(f"  logs: {os.path.join(aio.state_dir, 'log')}/")
        if args.demo:
            ok = run_demo(aio)
            if args.exit:
                return 0 if ok else 1
        print("Ctrl-C stops it and removes its namespaces.")
        # Only now: pyroute2 forks helpers that inherit handlers, and it ends
        # them with SIGTERM, which must not raise in them.
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        aio.down()


if __name__ == "__main__":
    sys.exit(main())
