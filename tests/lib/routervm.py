"""Boot the router appliance (images/router/out) under QEMU (TCG) for tests and bench/.

Everything stays inside one network namespace (the "host" of the lab): the
VM's NICs are tap devices created there, QEMU runs there, the guest and
public segments are Linux bridges of a LinuxBridgeFabric in that namespace,
and the control network is the control tap itself (10.250.0.1/24, the VM is
.2). The test process reaches the agent through socat in the namespace,
listening on a unix socket (0600) on this side: nothing is addressed outside
this machine, and the host's own namespace gets no address or route.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.fabric.base import PROVIDER_SEGMENT
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.netns import ensure_netns, remove_netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_DIR = os.environ.get("CLOUDNET_ROUTER_IMAGE", os.path.join(REPO, "images", "router", "out"))
CONTROL_HOST = "10.250.0.1"
CONTROL_VM = "10.250.0.2"
AGENT_PORT = 50051


def image_manifest() -> dict[str, Any] | None:
    """The built image's manifest, or None when images/router/build.sh has not run."""
    path = os.path.join(IMAGE_DIR, "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        m = json.load(f)
    if not all(os.path.exists(os.path.join(IMAGE_DIR, m[k])) for k in ("kernel", "initrd", "disk")):
        return None
    return dict(m)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@dataclass
class Nic:
    name: str  # tap name in the lab namespace (≤ 15 bytes)
    mac: str
    segment: int | None = None  # bridge it joins (None: the control tap, addressed)


@dataclass
class RouterVM:
    """One appliance VM: overlay disk, serial console file, QEMU by PID."""

    lab: ImageLab
    router_id: str
    token: str
    control: Nic
    nics: list[Nic] = field(default_factory=list)
    memory_mib: int = 512
    smp: int = 1
    extra_cmdline: str = ""
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def console_path(self) -> str:
        return os.path.join(self.lab.workdir, f"{self.router_id}.console.log")

    def start(self) -> None:
        m = image_manifest()
        assert m is not None, "router image not built"
        work = self.lab.workdir
        overlay = os.path.join(work, f"{self.router_id}.qcow2")
        _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", os.path.join(IMAGE_DIR, m["disk"]), overlay)
        # The token goes through a file (0600), not QEMU's argv: argv is
        # world-readable in the host's /proc.
        token_file = os.path.join(work, f"{self.router_id}.token")
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"cloudnet.token={self.token}")
        oem = [f"cloudnet.router_id={self.router_id}", f"cloudnet.control_mac={self.control.mac}",
               f"cloudnet.control_address={CONTROL_VM}/24", f"cloudnet.agent_port={AGENT_PORT}"]
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-cpu", "max",
            "-m", str(self.memory_mib), "-smp", str(self.smp), "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-kernel", os.path.join(IMAGE_DIR, m["kernel"]),
            "-initrd", os.path.join(IMAGE_DIR, m["initrd"]),
            "-append", f"{m['cmdline']} {self.extra_cmdline}".strip(),
            "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
            "-serial", f"file:{self.console_path}",
            "-smbios", "type=11," + ",".join(f"value={v}" for v in oem) + f",path={token_file}",
        ]
        for i, nic in enumerate([self.control, *self.nics]):
            argv += ["-netdev", f"tap,id=n{i},ifname={nic.name},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n{i},mac={nic.mac}"]
        self.started = time.monotonic()
        # `ip netns exec` execs QEMU: the Popen's pid is QEMU's.
        with open(os.path.join(work, f"{self.router_id}.qemu.log"), "w") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.netns, *argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )

    def console(self) -> str:
        try:
            with open(self.console_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_console(self, marker: str, timeout: float) -> float:
        """Seconds since start when `marker` appeared on the serial console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.console():
                return time.monotonic() - self.started
            if not self.alive():
                break
            time.sleep(0.2)
        raise TimeoutError(f"{marker!r} not on the console; tail:\n{self.console()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class ImageLab:
    """The lab namespace: taps, bridges, and a unix-socket path to the control address."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix or "ci" + secrets.token_hex(2)
        self.netns = f"{self.prefix}-vmh"
        self.fabric = LinuxBridgeFabric(self.netns)
        self.workdir = tempfile.mkdtemp(prefix="cloudnet-routervm-")
        self.agent_socket = os.path.join(self.workdir, "agent.sock")
        self._socat: subprocess.Popen[bytes] | None = None
        self.vms: list[RouterVM] = []

    def setup(self) -> None:
        ensure_netns(self.netns)
        self.fabric.setup()

    def tap(self, nic: Nic) -> None:
        ns = self.netns
        _run("ip", "-n", ns, "tuntap", "add", "dev", nic.name, "mode", "tap")
        if nic.segment is None:
            _run("ip", "-n", ns, "addr", "add", f"{CONTROL_HOST}/24", "dev", nic.name)
        else:
            # The fabric's bridge for the segment (created by a plug, or here).
            br = self.fabric.bridge_name(nic.segment)
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "-n", ns, "link", "add", br, "type", "bridge",
                     "stp_state", "0", "forward_delay", "0")
            _run("ip", "-n", ns, "link", "set", br, "up")
            _run("ip", "-n", ns, "link", "set", nic.name, "master", br)
        _run("ip", "-n", ns, "link", "set", nic.name, "up")

    def vm(self, router_id: str, guest_segments: list[int], token: str = "") -> RouterVM:
        """A VM with a control NIC, a public NIC and one NIC per guest segment."""
        n = len(self.vms)
        def mac(k: int) -> str:
            return f"52:54:00:{n:02x}:{k:02x}:01"
        control = Nic(f"{self.prefix}c{n}", mac(0))
        nics = [Nic(f"{self.prefix}p{n}", mac(1), PROVIDER_SEGMENT)]
        nics += [Nic(f"{self.prefix}g{n}{i}", mac(2 + i), seg)
                 for i, seg in enumerate(guest_segments)]
        for nic in [control, *nics]:
            self.tap(nic)
        vm = RouterVM(self, router_id, token or secrets.token_urlsafe(32), control, nics)
        self.vms.append(vm)
        return vm

    def channel(self) -> grpc.Channel:
        """A channel to the agent on the control address (through socat in the lab)."""
        if self._socat is None:
            self._socat = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "socat",
                 f"UNIX-LISTEN:{self.agent_socket},fork,mode=600",
                 f"TCP:{CONTROL_VM}:{AGENT_PORT}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5
            while not os.path.exists(self.agent_socket) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Short reconnect backoff: while the VM boots every connection fails,
        # and gRPC's default backoff (growing to minutes) would hide the moment
        # the agent starts listening.
        return grpc.insecure_channel(f"unix://{self.agent_socket}", options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 250),
        ])

    def teardown(self) -> None:
        for vm in self.vms:
            vm.stop()
        if self._socat is not None:
            self._socat.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._socat.wait(5)
            self._socat = None
        remove_netns(self.netns)  # its taps and bridges go with it
        shutil.rmtree(self.workdir, ignore_errors=True)


def wait_healthy(channel: grpc.Channel, vm: RouterVM, timeout: float) -> float:
    """Seconds from the VM's start to the agent's first SERVING health answer."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not vm.alive():
            raise RuntimeError(f"QEMU exited; console tail:\n{vm.console()[-3000:]}")
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return time.monotonic() - vm.started
        except grpc.RpcError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"agent not healthy after {timeout} s; console tail:\n"
                       f"{vm.console()[-3000:]}")


_UPTIME_MARKS = (
    # (phase end, regex on the console): kernel uptimes printed by the image.
    ("initramfs", r"CLOUDNET-INITRAMFS .*?uptime=([\d.]+)"),
    ("boot_script", r"CLOUDNET-BOOT .*?uptime=([\d.]+)"),
    ("agent_process", r"CLOUDNET-AGENT serving process_start_uptime=([\d.]+)"),
    ("agent_serving", r"CLOUDNET-AGENT serving .*?serving_uptime=([\d.]+)"),
)


def boot_phases(console: str) -> dict[str, float]:
    """The boot's phases in seconds of guest uptime, from the console:
    kernel + initramfs (root mounted), systemd until the boot script is done,
    systemd until the agent's process starts, its Python start until it
    serves, and the first apply (the agent's own figure). Missing marks
    (an older image) are left out."""
    at = {}
    for name, rx in _UPTIME_MARKS:
        m = re.search(rx, console)
        if m:
            at[name] = float(m.group(1))
    out = {}
    prev = 0.0
    for name, _ in _UPTIME_MARKS:
        if name in at:
            out[f"{name}_s"] = round(at[name] - prev, 2)
            prev = at[name]
    if "agent_serving" in at:
        out["uptime_serving_s"] = at["agent_serving"]
    m = re.search(r"generation 1 applied \(.*?\) in ([\d.]+) s", console)
    if m:
        out["agent_first_apply_s"] = float(m.group(1))
    return out


def agent_stub(channel: grpc.Channel) -> agent_pb2_grpc.RouterAgentStub:
    return agent_pb2_grpc.RouterAgentStub(channel)


GUEST_SEGMENT = 100
GUEST_MAC = "02:aa:00:00:00:11"
GUEST_IP = "10.10.0.11"


def one_network_config(vm: RouterVM, generation: int = 1, hosts: int = 1) -> pb.RouterConfig:
    """A router with a public NIC and one guest network, on the VM's NICs (by MAC)."""
    public, guest = vm.nics[0], vm.nics[1]
    return pb.RouterConfig(
        router_id=vm.router_id, generation=generation,
        interfaces=[
            pb.Interface(name="pub0", role=pb.INTERFACE_ROLE_PUBLIC, mac=public.mac,
                         addresses=["203.0.113.10/24"], segment_id=0),
            pb.Interface(name="g-net1", role=pb.INTERFACE_ROLE_GUEST, mac=guest.mac,
                         addresses=["10.10.0.1/24"], segment_id=GUEST_SEGMENT),
        ],
        routes=[pb.Route(destination="0.0.0.0/0", gateway="203.0.113.1", interface="pub0")],
        guest_networks=[pb.GuestNetwork(
            network_id="net1", interface="g-net1", cidr="10.10.0.0/24", gateway="10.10.0.1",
            domain="web.acme.cloud.internal", lease_seconds=3600,
            hosts=[pb.DhcpHost(port_id="p1", mac=GUEST_MAC, ip=GUEST_IP, hostname="vm1")] + [
                pb.DhcpHost(port_id=f"p{i}", mac=f"02:aa:00:00:{i // 256:02x}:{i % 256:02x}",
                            ip=f"10.10.0.{i}", hostname=f"vm{i}")
                for i in range(20, 20 + hosts - 1)
            ],
        )],
        dns=pb.Dns(upstream_servers=["198.51.100.53"]),
        source_nats=[pb.SourceNat(network_id="net1", source_cidr="10.10.0.0/24",
                                  public_ip="203.0.113.10", public_interface="pub0")],
    )
