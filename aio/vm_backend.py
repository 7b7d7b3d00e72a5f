"""The all-in-one's VM router backend (cloudnet-aio --router-backend vm).

Adds to the all-in-one: the control network (namespace <prefix>-ctl with
netmgr's side, 10.250.0.1/16, plugged into the OVS bridge as an access port
of the control VLAN), a compute agent (host <prefix>-h1) that boots the
router VMs (and guest VMs) and registers with netmgr, and the netmgr flags of
the VM backend. The router image comes from images/router/out (build it with
images/router/build.sh).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import time
from typing import Protocol

import grpc

from common import netlink
from common.channels import make_channel
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric
from common.fabric.vxlan import VxlanFabric
from common.netns import ensure_netns
from common.tls import TlsFiles
from compute import images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUTER_IMAGE_DIR = os.environ.get("CLOUDNET_ROUTER_IMAGE",
                                  os.path.join(REPO, "images", "router", "out"))
CONTROL_CIDR = "10.250.0.0/16"
CONTROL_VLAN = 4001
CONTROL_MAC = "02:00:0a:fa:00:01"


class VmAllInOne(Protocol):
    """The all-in-one (``aio.allinone.AllInOne``) as its VM backend uses it."""

    @property
    def prefix(self) -> str: ...

    @property
    def state_dir(self) -> str: ...

    @property
    def listen(self) -> str:
        """netmgr's API address."""
        ...

    @property
    def admin_token(self) -> str: ...

    @property
    def client_tls(self) -> TlsFiles | None:
        """The CA that vouches for netmgr (None: plaintext)."""
        ...

    def agent_tls_args(self, name: str) -> list[str]:
        """An agent's TLS flags: ``--tls-dir`` with a certificate issued for
        it, or ``--insecure``."""
        ...

    @property
    def router_vm_settings(self) -> tuple[str, ...]:
        """More ``--router-vm KEY=VALUE`` settings for netmgr."""
        ...

    # The compute agent's address: the one asked for, or (empty) read back
    # from netmgr's host registry once the agent registered (wait_registered).
    compute_listen: str

    # Tests only: router VMs get the fault channel (``--fault-channel``).
    fault_channel: bool

    @property
    def fabric(self) -> LinuxBridgeFabric | OvsFabric | VxlanFabric:
        """Where the VMs attach: the VM backend needs OVS."""
        ...

    def spawn(self, name: str, argv: list[str], ns: str | None = None) -> None:
        """Start a daemon of the all-in-one (stopped by ``down``)."""
        ...


def control_netns(prefix: str) -> str:
    return f"{prefix}-ctl"


def host_name(prefix: str) -> str:
    return f"{prefix}-h1"


def compute_state_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "compute")


def build_control_network(aio: VmAllInOne) -> None:
    ns = control_netns(aio.prefix)
    ensure_netns(ns)  # its loopback up too
    aio.fabric.plug("ctl", CONTROL_VLAN, ns, "ctl0", CONTROL_MAC)
    net = ipaddress.IPv4Network(CONTROL_CIDR)
    netlink.configure_link(ns, "ctl0", [ipaddress.IPv4Interface(f"{net[1]}/{net.prefixlen}")])


def netmgr_args(aio: VmAllInOne) -> list[str]:
    run = os.path.join(aio.state_dir, "run")
    return ["--router-backend", "vm",
            "--router-vm", f"control_netns={control_netns(aio.prefix)}",
            "--router-vm", f"control_cidr={CONTROL_CIDR}",
            "--router-vm", f"control_vlan={CONTROL_VLAN}",
            "--router-vm", f"key_file={os.path.join(aio.state_dir, 'router-vm.key')}",
            "--router-vm", f"run_dir={os.path.join(run, 'ctl')}",
            *(a for kv in aio.router_vm_settings for a in ("--router-vm", kv))]


def _ovs(aio: VmAllInOne) -> OvsFabric:
    if not isinstance(aio.fabric, OvsFabric):
        raise ValueError("router VMs need the OVS fabric (--fabric ovs)")
    return aio.fabric


def start_compute(aio: VmAllInOne, listen: str) -> None:
    image_args = ["--image", f"router={ROUTER_IMAGE_DIR}"]
    for name, directory in images.default_images().items():
        if images.built(directory):
            image_args += ["--image", f"{name}={directory}"]
    aio.spawn("compute", [
        sys.executable, "-m", "compute.agent.server", "--name", host_name(aio.prefix),
        "--listen", listen, "--netmgr", aio.listen,
        "--admin-token-file", os.path.join(aio.state_dir, "admin.token"),
        "--fabric", "ovs", "--ovs-bridge", _ovs(aio).bridge, "--accel", "qemu",
        "--state-dir", compute_state_dir(aio.state_dir), *image_args,
        *(["--fault-channel"] if aio.fault_channel else []),
        *aio.agent_tls_args("compute")])


def wait_registered(aio: VmAllInOne, timeout: float = 60, since: float = 0.0) -> None:
    """Until the compute agent registered (at ``since``, a time.time(), or
    later: a reused database holds the previous run's registration)."""
    from cloudnet.netmgr.v1 import hosts_pb2, hosts_pb2_grpc

    md = [("authorization", f"Bearer {aio.admin_token}")]
    deadline = time.monotonic() + timeout
    with make_channel(aio.listen, tls=aio.client_tls) as ch:
        stub = hosts_pb2_grpc.HostServiceStub(ch)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                hosts = stub.ListHosts(hosts_pb2.ListHostsRequest(), metadata=md, timeout=5)
                mine = [h for h in hosts.hosts if h.name == host_name(aio.prefix)
                        and h.update_time.ToMicroseconds() / 1e6 >= since - 1.0]
                if mine:
                    aio.compute_listen = mine[0].address
                    return
            time.sleep(0.2)
    raise TimeoutError(f"compute agent {host_name(aio.prefix)} did not register; see "
                       f"{aio.state_dir}/log/compute.log")


def remove_vms(prefix: str) -> None:
    """Every domain of this all-in-one's compute host (router and guest VMs)."""
    import libvirt

    from compute import libvirt_driver as lv

    with contextlib.suppress(libvirt.libvirtError):
        driver = lv.Driver(f"cn-{host_name(prefix)}-")
        for vm_id in list(driver.domains()):
            with contextlib.suppress(libvirt.libvirtError):
                driver.remove(vm_id)
