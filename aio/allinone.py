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
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import grpc

from aio import replicas
from aio.bgp_edge import EDGE_FRR_ROOT, BgpEdge, EdgeBgpConfig
from aio.demo import run_demo
from aio.topology import (
    EDGE_ASN,
    EDGE_INET_IP,
    EDGE_INET_IP6,
    EDGE_PUBLIC_IP,
    EDGE_PUBLIC_IP6,
    INET_DNS_IP,
    INET_HOST_IP,
    INET_HOST_IP6,
    INET_PREFIXLEN,
    IPV6_POOL,
    PUBLIC_CIDR,
    PUBLIC_CIDR6,
    PUBLIC_PREFIXLEN,
    ROUTED_POOL,
    UPSTREAM_NAMES,
    WEB_PORT,
    ZONE_ASN,
)
from aio.whoami import serve_whoami
from common import netlink
from common.channels import make_channel
from common.fabric.base import PROVIDER_SEGMENT
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric, bridge_exists
from common.fabric.vxlan import VxlanFabric
from common.netns import ensure_netns, list_netns, remove_netns
from common.private_files import ensure_private_dir, write_private
from common.rtnl import RouteInfo
from common.tls import (
    AGENT_CERT_NAME,
    CA_CERT,
    ROLE_AGENT,
    TlsFiles,
)
from netmgr.certificates import CertificateAuthority, ensure_issued
from router.agent.registry import stop_routers

# The topology's addresses are importable from here too (tests, benchmarks).
__all__ = ["EDGE_INET_IP", "EDGE_PUBLIC_IP", "INET_DNS_IP", "INET_HOST_IP", "INET_PREFIXLEN",
           "PUBLIC_CIDR", "PUBLIC_PREFIXLEN", "UPSTREAM_NAMES", "WEB_PORT", "AllInOne", "main",
           "running", "serve_whoami"]

log = logging.getLogger("cloudnet.aio")
HOME_CLIENT_CONFIG = "~/.config/cloudnet/config"


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
    # The compute agent's address (VM backend); empty: a free port the agent
    # takes itself (so two all-in-ones never collide), read back from
    # netmgr's host registry once it registered.
    compute_listen: str = ""
    # Tests only: router VMs get the fault channel (cloudnet-compute
    # --fault-channel; tests/lib/vm_faults.py).
    fault_channel: bool = False
    # HOST:PORT for Prometheus metrics: netmgr's on PORT, the router agent's
    # on PORT+1 (docs/metrics.md); empty: off.
    metrics_listen: str = ""
    # netmgr processes and their database ("sqlite" or "postgresql": a local
    # cluster under <state-dir>/pg; aio.replicas).
    replicas: int = 1
    db: str = "sqlite"
    # More netmgr flags (e.g. --host-grace for a test of router hosts).
    netmgr_args: tuple[str, ...] = ()
    # Plaintext on netmgr's API and the compute agent (TLS is the default:
    # netmgr makes its CA in <state_dir>/tls at first start).
    insecure: bool = False
    pids: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
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
        with netlink.rtnl(self.edge_ns) as sock:
            if sock.link(name="inet0") is None:
                sock.add_veth("inet0", "eth0", peer_netns=self.inet_ns)
        for ifname, ip, plen in (("eth0", EDGE_PUBLIC_IP, PUBLIC_PREFIXLEN),
                                 ("inet0", EDGE_INET_IP, INET_PREFIXLEN)):
            netlink.configure_link(self.edge_ns, ifname, [IPv4Interface(f"{ip}/{plen}")])
        netlink.configure_link(
            self.inet_ns, "eth0",
            [IPv4Interface(f"{ip}/{INET_PREFIXLEN}") for ip in (INET_HOST_IP, INET_DNS_IP)],
            routes=[RouteInfo(str(IPv4Network(cidr).network_address),
                              IPv4Network(cidr).prefixlen, EDGE_INET_IP, 0)
                    for cidr in (PUBLIC_CIDR, ROUTED_POOL)])
        self._ns_run(self.edge_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self._build_ipv6()
        if self.router_backend == "vm":
            from aio import vm_backend

            vm_backend.build_control_network(self)

    def _build_ipv6(self) -> None:
        """IPv6 on the provider network and to the internet host; the edge
        forwards it, and routes each network's /64 (and routed IPv4) by what
        its BGP speaker learns from the routers."""
        for ns in (self.edge_ns, self.inet_ns):
            self._ns_run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                              "net.ipv6.conf.default.accept_dad=0"])
        for ns, dev, addr in ((self.edge_ns, "eth0", f"{EDGE_PUBLIC_IP6}/64"),
                              (self.edge_ns, "inet0", f"{EDGE_INET_IP6}/64"),
                              (self.inet_ns, "eth0", f"{INET_HOST_IP6}/64")):
            self._ns_run(ns, ["ip", "-6", "addr", "replace", addr, "dev", dev, "nodad"])
        self._ns_run(self.inet_ns, ["ip", "-6", "route", "replace", "default", "via",
                                    EDGE_INET_IP6])
        self._ns_run(self.edge_ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    @property
    def bgp_edge(self) -> BgpEdge:
        # Under /run: FRR's daemons run as its user, who must reach their
        # directory (the state directory's parents may be the caller's only).
        return BgpEdge(self.edge_ns, os.path.join(EDGE_FRR_ROOT, self.prefix), EdgeBgpConfig(
            asn=EDGE_ASN, router_id=EDGE_PUBLIC_IP, routers_asn=ZONE_ASN,
            listen_ranges=(PUBLIC_CIDR, PUBLIC_CIDR6)))

    def zone_config(self) -> str:
        """netmgr's [zone] for a new database: the routing settings on top of
        the embedded defaults (the routers peer with the edge)."""
        path = os.path.join(self.state_dir, "netmgr-zone.toml")
        with open(path, "w") as f:
            f.write(f'[zone]\nipv6_pool = "{IPV6_POOL}"\nrouted_pool = "{ROUTED_POOL}"\n'
                    f'public_cidr6 = "{PUBLIC_CIDR6}"\npublic_gateway6 = "{EDGE_PUBLIC_IP6}"\n'
                    f"bgp_asn = {ZONE_ASN}\n"
                    f'[[zone.bgp_peers]]\naddress = "{EDGE_PUBLIC_IP}"\nasn = {EDGE_ASN}\n'
                    f'[[zone.bgp_peers]]\naddress = "{EDGE_PUBLIC_IP6}"\nasn = {EDGE_ASN}\n')
        return path

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
        self.spawn("web", [sys.executable, "-m", "aio.whoami", "--port", str(WEB_PORT)],
                   ns=self.inet_ns)

    def start_agent(self) -> None:
        self.spawn("router-agent", [
            sys.executable, "-m", "router.agent.server", "--listen", f"unix://{self.agent_socket}",
            "--state-dir", os.path.join(self.state_dir, "agent"),
            "--netns-prefix", self.prefix, *self._fabric_args(),
            "--health-interval", str(self.health_interval),
            *self._metrics_args(1)])

    def metrics_address(self, offset: int) -> str:
        """Where the daemon at PORT + offset serves metrics ("" when off):
        netmgr at 0, the router agent at 1."""
        if not self.metrics_listen:
            return ""
        host, _, port = self.metrics_listen.rpartition(":")
        return f"{host}:{int(port) + offset}"

    def _metrics_args(self, offset: int) -> list[str]:
        address = self.metrics_address(offset)
        return ["--metrics-listen", address] if address else []

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

    @property
    def tls_dir(self) -> str:
        return os.path.join(self.state_dir, "tls")

    @property
    def client_tls(self) -> TlsFiles | None:
        """What a client of netmgr's API checks it by (None: plaintext)."""
        return None if self.insecure else TlsFiles(ca=Path(self.tls_dir) / CA_CERT)

    def cli_cert_dir(self) -> str:
        """The CLI's client certificate (the compute agents require one of the CA)."""
        ca = CertificateAuthority.load_or_create(self.tls_dir)
        directory = os.path.join(self.tls_dir, "cli")
        ensure_issued(ca, directory, AGENT_CERT_NAME, ROLE_AGENT)
        return directory

    def agent_tls_args(self, name: str) -> list[str]:
        """An agent's TLS flags: a certificate issued for it from netmgr's CA
        (made by netmgr at its first start), or ``--insecure``."""
        if self.insecure:
            return ["--insecure"]
        ca = CertificateAuthority.load_or_create(self.tls_dir)
        directory = os.path.join(self.tls_dir, name)
        ensure_issued(ca, directory, AGENT_CERT_NAME, ROLE_AGENT)
        return ["--tls-dir", directory]

    def start_netmgr(self, only: int | None = None) -> None:
        """Every replica (``only``: replica ``only``), the first one alone
        first: it migrates the database the others then open (and makes the
        cloud's CA at a first start, which the others then use)."""
        token_file = os.path.join(self.state_dir, "admin.token")
        write_private(token_file, (self.admin_token + "\n").encode())
        tls = ["--insecure"] if self.insecure else ["--tls-dir", self.tls_dir]
        url = replicas.db_url(self)
        for i, listen in enumerate(replicas.listens(self)):
            if only is not None and i != only:
                continue
            self.spawn(replicas.name(i), [
                sys.executable, "-m", "netmgr.server", "--config", self.zone_config(),
                "--listen", listen, "--db-url", url,
                "--admin-token-file", token_file, *tls,
                "--agent", f"local=unix://{self.agent_socket}", *self._vm_args(),
                *(self._metrics_args(0) if i == 0 else []), *self.netmgr_args])
            if i == 0 and only is None and self.replicas > 1:
                self.wait_ready(targets=[listen])

    def write_client_config(self, home_config: str | None = None) -> list[str]:
        """The CLI's settings for this cloud (address, CA, admin token file):
        beside the state, and in ``home_config`` (~/.config/cloudnet/config),
        so ``cloudnet`` needs no flags. The files written."""
        text = client_config_text(",".join(replicas.listens(self)), None if self.insecure else
                                  os.path.join(self.tls_dir, CA_CERT),
                                  os.path.join(self.state_dir, "admin.token"),
                                  None if self.insecure else self.cli_cert_dir())
        written = []
        for path in (os.path.join(self.state_dir, "client.toml"), home_config):
            if path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_private(path, text.encode())
                written.append(path)
        return written

    def _vm_args(self) -> list[str]:
        if self.router_backend != "vm":
            return []
        from aio import vm_backend

        return vm_backend.netmgr_args(self)

    def stop_netmgr(self, sig: int = signal.SIGTERM, replica: int | None = None) -> None:
        """Every replica, or replica ``replica``."""
        for i in range(self.replicas):
            if replica is None or replica == i:
                self._kill(replicas.name(i), sig)

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

    def wait_ready(self, timeout: float = 30, targets: list[str] | None = None) -> None:
        """Wait until the agent and every netmgr answer gRPC health checks."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if targets is None:
            targets = [f"unix://{self.agent_socket}", *replicas.listens(self)]
        for target in targets:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    # netmgr makes its CA at start: read it at each attempt.
                    tls = self.client_tls
                    if tls is not None and tls.ca is not None and not tls.ca.exists():
                        raise FileNotFoundError(tls.ca)
                    with make_channel(target, tls=tls) as ch:
                        r = health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(), timeout=2)
                        if r.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                except (grpc.RpcError, FileNotFoundError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} not serving after {timeout}s; see "
                                       f"{self.state_dir}/log/")
                time.sleep(0.1)

    def up(self) -> None:
        # Nobody else lists it (searchable: the agent's dnsmasq, running as its
        # own user, reads its host files below it).
        ensure_private_dir(self.state_dir, 0o711)
        os.makedirs(os.path.join(self.state_dir, "run"), exist_ok=True)
        self.build_topology()
        self.bgp_edge.start()
        self.start_internet_services()
        self.start_agent()
        self.start_netmgr()
        self.wait_ready()
        if self.router_backend == "vm":
            from aio import vm_backend

            started = time.time()
            vm_backend.start_compute(self, self.compute_listen_request())
            vm_backend.wait_registered(self, since=started)

    def compute_listen_request(self) -> str:
        """What the compute agent is told to listen on: the address asked
        for, or port 0 (the agent takes a free port and registers it)."""
        return self.compute_listen or "127.0.0.1:0"

    # ------------------------------------------------------------ state dir

    def previous_state(self) -> str | None:
        """What a previous run left in the state directory and comes back
        with this one (None: nothing); netmgr's database is only read."""
        db = os.path.join(self.state_dir, "netmgr.db")
        if not os.path.exists(db):
            return None
        counts = previous_objects(db)
        what = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts if n)
        return (f"reusing the state in {self.state_dir} from a previous run: "
                f"{what or 'an empty database'}; they come back with their routers and "
                "addresses (up --fresh starts empty)")

    def wipe_state(self) -> None:
        """Forget a previous run: netmgr's database, the agents' state. The
        admin token and the logs stay."""
        import shutil

        for name in os.listdir(self.state_dir) if os.path.isdir(self.state_dir) else ():
            path = os.path.join(self.state_dir, name)
            if name.startswith("netmgr.db") or name == "aio.pids.json":
                os.unlink(path)
            elif name == "pg":
                replicas.wipe(self)
            elif name in ("agent", "compute", "run"):
                shutil.rmtree(path)

    def down(self) -> None:
        """Stop everything this all-in-one started and remove its namespaces."""
        path = os.path.join(self.state_dir, "aio.pids.json")
        if not self.pids and os.path.exists(path):
            with open(path) as f:
                self.pids = json.load(f)
        for name in list(self.pids):
            self._kill(name, signal.SIGTERM)
        replicas.stop_postgres(self)
        self.bgp_edge.stop()
        if self.router_backend == "vm":
            from aio import vm_backend

            vm_backend.remove_vms(self.prefix)
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
        for ns in list_netns():
            if ns.startswith(f"{self.prefix}r-") or ns.startswith(f"{self.prefix}-"):
                remove_netns(ns)
                with contextlib.suppress(FileNotFoundError):
                    import shutil

                    shutil.rmtree(f"/etc/netns/{ns}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# What a reused database brings back, by table: (label, SQL).
_PREVIOUS = (("tenant", "SELECT count(*) FROM tenants"),
             ("network", "SELECT count(*) FROM networks"),
             ("VPC", "SELECT count(*) FROM vpcs"),
             ("source-NAT IP", "SELECT count(*) FROM public_ips WHERE kind = 'source_nat'"),
             ("public IP", "SELECT count(*) FROM public_ips WHERE kind = 'tenant'"))


def client_config_text(server: str, ca_file: str | None, token_file: str,
                       cert_dir: str | None = None) -> str:
    """The CLI's config file (TOML; netmgr/cli/config.py reads it); ``cert_dir``:
    the CLI's certificate for the compute agents (agent.crt, agent.key)."""
    def q(value: str) -> str:
        return json.dumps(value)  # a TOML basic string (the same escapes)

    lines = ["# Written by cloudnet-aio: the CLI's settings for this all-in-one.",
             f"server = {q(server)}", f"token_file = {q(token_file)}"]
    lines.append(f"ca_file = {q(ca_file)}" if ca_file else "insecure = true")
    if cert_dir:
        lines += [f"cert_file = {q(os.path.join(cert_dir, AGENT_CERT_NAME + '.crt'))}",
                  f"key_file = {q(os.path.join(cert_dir, AGENT_CERT_NAME + '.key'))}"]
    return "\n".join(lines) + "\n"


def previous_objects(db: str) -> list[tuple[str, int]]:
    """(label, count) of what a netmgr SQLite database holds, read-only."""
    import sqlite3

    out = []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        for label, sql in _PREVIOUS:
            try:
                out.append((label, int(conn.execute(sql).fetchone()[0])))
            except sqlite3.Error:  # an older schema: say what can be said
                continue
    return out


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
    p.add_argument("--metrics-listen", metavar="HOST:PORT", default="",
                   help="serve Prometheus metrics: netmgr's on HOST:PORT, the router agent's "
                        "on HOST:PORT+1 (default: off)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext gRPC on TCP (default: TLS from a CA netmgr makes)")
    p.add_argument("--no-home-config", action="store_true",
                   help="do not write ~/.config/cloudnet/config (the CLI's settings)")
    p.add_argument("--compute-listen", metavar="HOST:PORT", default="",
                   help="the compute agent's address with --router-backend vm (default: a "
                        "free port on 127.0.0.1, printed at start)")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="netmgr processes (default: 1); above 1 needs --db postgresql. "
                        "Replica i listens on the API port + i (docs/replicas.md)")
    p.add_argument("--db", choices=replicas.DATABASES, default="sqlite",
                   help="netmgr's database: a SQLite file (default) or a local PostgreSQL "
                        "cluster this all-in-one starts under <state-dir>/pg")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the all-in-one cloud and keep it running")
    up.add_argument("--demo", action="store_true",
                    help="create a demo tenant network with two guests and show it working")
    up.add_argument("--exit", action="store_true", help="stop everything after the demo")
    up.add_argument("--fresh", action="store_true",
                    help="forget a previous run's networks, VPCs and addresses (the state "
                         "dir's database and agent state; the admin token stays)")
    # Also after `up` (scripts/aio.sh passes its arguments there).
    up.add_argument("--replicas", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    up.add_argument("--db", choices=replicas.DATABASES, default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS)
    sub.add_parser("down", help="stop everything and remove the namespaces")
    args = p.parse_args(argv)
    if problem := replicas.check(args.replicas, args.db):
        p.error(problem)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    aio = AllInOne(prefix=args.prefix, state_dir=args.state_dir, listen=args.listen,
                   fabric_kind=args.fabric, router_backend=args.router_backend,
                   metrics_listen=args.metrics_listen, compute_listen=args.compute_listen,
                   replicas=args.replicas, db=args.db, insecure=args.insecure)
    if args.cmd == "down":
        aio.down()
        return 0
    aio.down()  # a previous run's leftovers
    if args.fresh:
        aio.wipe_state()
    elif (note := aio.previous_state()) is not None:
        print(note, flush=True)
    try:
        aio.up()
        home = None if args.no_home_config else os.path.expanduser(HOME_CLIENT_CONFIG)
        configs = aio.write_client_config(home)
        print(f"cloudnet all-in-one is up: netmgr API on {', '.join(replicas.listens(aio))} "
              f"({'plaintext' if aio.insecure else 'TLS'})")
        print(f"  admin token: {os.path.join(aio.state_dir, 'admin.token')}")
        print(f"  CLI settings: {', '.join(configs)}")
        print(f"  logs: {os.path.join(aio.state_dir, 'log')}/")
        if aio.metrics_listen:
            print(f"  metrics: http://{aio.metrics_address(0)}/metrics (netmgr), "
                  f"http://{aio.metrics_address(1)}/metrics (router agent)")
        if aio.router_backend == "vm":
            print(f"  compute agent: {aio.compute_listen} (cloudnet vm --compute ...)")
        if args.demo:
            ok = run_demo(aio)
            if args.exit:
                return 0 if ok else 1
        print("Ctrl-C stops it and removes its namespaces.")
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
