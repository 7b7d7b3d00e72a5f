"""cloudnet compute agent: boots guest VMs with libvirt on this host's fabric.

    python -m compute.agent.server --name host-a --listen 127.0.0.1:7171 \\
        --netmgr 127.0.0.1:7070 --admin-token-file /var/lib/cloudnet/admin.token \\
        --fabric ovs --ovs-bridge cn-br --state-dir /var/lib/cloudnet/compute

Callers authenticate with their netmgr bearer token. The agent asks netmgr
for one port per NIC *with the caller's token* (as Nova asks Neutron), so
netmgr decides which networks the caller may use and the router's DHCP and
DNS know the VM before it boots; the NIC's MAC is the port's MAC. Cleanup
(rollback of a failed create, delete) uses the admin token acting as the
VM's tenant, so it works even if the caller's token is gone.

State: libvirt holds the domains (named `<prefix><vm id>`), the state
directory one folder per VM (`vm.json`, the overlay disk, the console log).
The agent registers its host with netmgr (HostService) at start.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, Protocol, TypeAlias

import grpc
import libvirt
from cloudnet.compute.v1 import compute_pb2 as pb
from cloudnet.compute.v1 import compute_pb2_grpc as rpc
from cloudnet.netmgr.v1 import hosts_pb2, hosts_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as npb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as nrpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.fabric.base import FabricError
from common.grpc_errors import (
    AlreadyExists,
    DomainError,
    ErrorMappingInterceptor,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Violation,
)
from compute import images
from compute import libvirt_driver as lv

log = logging.getLogger("cloudnet.compute")

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MIN_MEMORY_MIB = 32
MAX_NICS = 8
TENANT_HEADER = "x-cloudnet-tenant"
STATES = {
    libvirt.VIR_DOMAIN_RUNNING: pb.VM_STATE_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: pb.VM_STATE_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: pb.VM_STATE_PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: pb.VM_STATE_RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: pb.VM_STATE_STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: pb.VM_STATE_CRASHED,
}


class VmFabric(Protocol):
    def setup(self) -> None: ...
    def vm_interface_xml(self, tap: str, segment: int, mac: str) -> str: ...
    def harden_tap(self, tap: str) -> None: ...
    def release_tap(self, tap: str) -> None: ...
    def taps(self, prefix: str = "vt") -> set[str]: ...


@dataclasses.dataclass
class HostConfig:
    name: str
    state_dir: str
    netmgr: str
    admin_token: str
    fabric_kind: str
    fabric: VmFabric
    images: dict[str, str]
    address: str = ""
    accel: str = "auto"
    vcpus: int = 0
    memory_mib: int = 0
    domain_prefix: str = ""

    def __post_init__(self) -> None:
        self.vcpus = self.vcpus or (os.cpu_count() or 1)
        if not self.memory_mib:
            with open("/proc/meminfo") as f:
                kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            self.memory_mib = kib // 1024
        self.domain_prefix = self.domain_prefix or f"cn-{self.name}-"


def _caller_metadata(context: grpc.ServicerContext) -> list[tuple[str, str]]:
    md = dict(context.invocation_metadata())  # type: ignore[arg-type]
    auth = str(md.get("authorization", ""))
    if not auth:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    out = [("authorization", auth)]
    if md.get(TENANT_HEADER):
        out.append((TENANT_HEADER, str(md[TENANT_HEADER])))
    return out


class Netmgr:
    """netmgr stubs on one channel; every call names the metadata it carries."""

    def __init__(self, target: str, admin_token: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.admin_token = admin_token
        self.tenants = nrpc.TenantServiceStub(self.channel)
        self.networks = nrpc.NetworkServiceStub(self.channel)
        self.ports = nrpc.PortServiceStub(self.channel)
        self.hosts = hosts_pb2_grpc.HostServiceStub(self.channel)

    def admin_as(self, tenant_id: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.admin_token}"), (TENANT_HEADER, tenant_id)]

    def close(self) -> None:
        self.channel.close()


def _netmgr_error(e: grpc.RpcError, field: str, what: str) -> DomainError:
    code = e.code()  # type: ignore[attr-defined]
    detail = e.details()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(detail)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return InvalidArgument.one(field, f"unknown {what}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidArgument.one(field, f"netmgr: {detail}")
    return FailedPrecondition(f"netmgr: {code.name}: {detail}")


@dataclasses.dataclass
class Record:
    """What the agent keeps of a VM (vm.json); libvirt holds the domain."""

    id: str
    tenant_id: str
    name: str
    image: str
    vcpus: int
    memory_mib: int
    nics: list[dict[str, Any]]
    created: str

    def to_pb(self, host: str, accel: str, state: int) -> pb.Vm:
        vm = pb.Vm(id=self.id, tenant_id=self.tenant_id, name=self.name, image=self.image,
                   vcpus=self.vcpus, memory_mib=self.memory_mib, host=host, accel=accel,
                   state=state,  # type: ignore[arg-type]
                   nics=[pb.Nic(**n) for n in self.nics])
        vm.create_time.FromDatetime(dt.datetime.fromisoformat(self.created))
        return vm


class Compute:
    """The VMs of this host. Thread-safe; one lock serialises creates and deletes."""

    def __init__(self, cfg: HostConfig, netmgr: Netmgr,
                 driver: lv.Driver | None = None) -> None:
        self.cfg = cfg
        self.netmgr = netmgr
        self.driver = driver or lv.Driver(cfg.domain_prefix)
        self.images = {name: images.load(name, d) for name, d in cfg.images.items()}
        self.vm_dir = os.path.join(cfg.state_dir, "vms")
        os.makedirs(self.vm_dir, exist_ok=True)
        self.accel = cfg.accel if cfg.accel != "auto" else lv.detect_accel(
            next(iter(self.images.values()), None), cfg.state_dir)
        self._lock = threading.Lock()
        # Test hook: raise after this step of CreateVm ("ports", "overlay", "define").
        self.fail_after: str = ""

    # ------------------------------------------------------------ records

    def _path(self, vm_id: str, *parts: str) -> str:
        return os.path.join(self.vm_dir, vm_id, *parts)

    def _records(self) -> list[Record]:
        out = []
        for vm_id in sorted(os.listdir(self.vm_dir)):
            rec = self._record(vm_id)
            if rec is not None:
                out.append(rec)
        return out

    def _record(self, vm_id: str) -> Record | None:
        try:
            with open(self._path(vm_id, "vm.json")) as f:
                return Record(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def _to_pb(self, rec: Record) -> pb.Vm:
        dom = self.driver.lookup(rec.id)
        state = pb.VM_STATE_UNSPECIFIED if dom is None else STATES.get(
            self.driver.state(dom), pb.VM_STATE_UNSPECIFIED)
        return rec.to_pb(self.cfg.name, self.accel, state)

    def _owned(self, tenant_id: str, vm_id: str) -> Record:
        try:
            uuid.UUID(vm_id)
        except ValueError:
            raise InvalidArgument.one("id", "must be a VM ID (UUID)") from None
        rec = self._record(vm_id)
        if rec is None or (tenant_id and rec.tenant_id != tenant_id):
            raise NotFound(f"vm {vm_id} not found")
        return rec

    # ------------------------------------------------------------ identity

    def whoami(self, md: Sequence[tuple[str, str]]) -> str:
        """The caller's tenant ("" for the admin not acting as a tenant)."""
        try:
            r = self.netmgr.tenants.WhoAmI(npb.WhoAmIRequest(), metadata=md, timeout=10)
        except grpc.RpcError as e:
            raise _netmgr_error(e, "authorization", "token") from e
        return str(r.tenant_id)

    # ------------------------------------------------------------ create

    def _check(self, vm: pb.Vm) -> images.Image:
        bad: list[Violation] = []
        if not NAME_RE.fullmatch(vm.name):
            bad.append(Violation("vm.name", "must be an RFC 1123 label (a-z, 0-9, -), 1-63"))
        image = self.images.get(vm.image)
        if image is None:
            bad.append(Violation("vm.image", f"unknown image {vm.image!r} (this host has: "
                                             f"{', '.join(sorted(self.images)) or 'none'})"))
        if not 1 <= vm.vcpus <= self.cfg.vcpus:
            bad.append(Violation("vm.vcpus", f"must be 1-{self.cfg.vcpus} (this host's CPUs)"))
        low = max(MIN_MEMORY_MIB, image.min_memory_mib if image else 0)
        if not low <= vm.memory_mib <= self.cfg.memory_mib:
            bad.append(Violation("vm.memory_mib",
                                 f"must be {low}-{self.cfg.memory_mib} MiB (this host's memory)"))
        if not 1 <= len(vm.nics) <= MAX_NICS:
            bad.append(Violation("vm.nics", f"1-{MAX_NICS} NICs"))
        for i, nic in enumerate(vm.nics):
            try:
                uuid.UUID(nic.network_id)
            except ValueError:
                bad.append(Violation(f"vm.nics[{i}].network_id", "must be a network ID"))
            if nic.fixed_ip:
                try:
                    ipaddress.IPv4Address(nic.fixed_ip)
                except ValueError:
                    bad.append(Violation(f"vm.nics[{i}].fixed_ip", "must be an IPv4 address"))
        if bad:
            raise InvalidArgument(bad)
        assert image is not None
        return image

    def create(self, md: Sequence[tuple[str, str]], vm: pb.Vm) -> pb.Vm:
        image = self._check(vm)
        tenant_id = self.whoami(md)
        if not tenant_id:
            raise InvalidArgument.one(TENANT_HEADER, "the admin must name a tenant")
        networks = []
        for i, nic in enumerate(vm.nics):
            try:
                networks.append(self.netmgr.networks.GetNetwork(
                    npb.GetNetworkRequest(id=nic.network_id), metadata=md, timeout=10))
            except grpc.RpcError as e:
                raise _netmgr_error(e, f"vm.nics[{i}].network_id", "network") from e
        with self._lock:
            records = self._records()
            if any(r.tenant_id == tenant_id and r.name == vm.name for r in records):
                raise AlreadyExists("vm.name", f"a VM named {vm.name!r} exists")
            used = sum(r.memory_mib for r in records)
            if used + vm.memory_mib > self.cfg.memory_mib:
                raise ResourceExhausted(
                    "vm.memory_mib", f"this host has {self.cfg.memory_mib - used} MiB left")
            vm_id = str(uuid.uuid4())
            return self._create_locked(md, vm, vm_id, tenant_id, image, networks)

    def _create_locked(self, md: Sequence[tuple[str, str]], vm: pb.Vm, vm_id: str,
                       tenant_id: str, image: images.Image, networks: list[npb.Network]) -> pb.Vm:
        ports: list[npb.Port] = []
        made_dir = False
        try:
            named: set[str] = set()
            for i, (nic, net) in enumerate(zip(vm.nics, networks, strict=True)):
                # The VM's name is the DNS name of its first NIC on each network.
                hostname = vm.name if net.id not in named else f"{vm.name}-nic{i}"
                named.add(net.id)
                try:
                    ports.append(self.netmgr.ports.CreatePort(npb.CreatePortRequest(
                        port=npb.Port(network_id=net.id, ip=nic.fixed_ip, hostname=hostname,
                                      name=f"{vm.name}-nic{i}", device_id=vm_id)),
                        metadata=md, timeout=30))
                except grpc.RpcError as e:
                    field = f"vm.nics[{i}].fixed_ip" if nic.fixed_ip else f"vm.nics[{i}]"
                    if e.code() == grpc.StatusCode.ALREADY_EXISTS and \
                            "hostname" in (e.details() or ""):
                        field = "vm.name"
                    raise _netmgr_error(e, field, "network") from e
            self._fault("ports")
            os.makedirs(self._path(vm_id), mode=0o700)
            made_dir = True
            overlay = self._path(vm_id, "disk.qcow2")
            images.create_overlay(image.disk, overlay)
            self._fault("overlay")
            nics = []
            ifaces = []
            for i, (port, net) in enumerate(zip(ports, networks, strict=True)):
                tap = lv.tap_name(vm_id, i)
                ifaces.append(self.cfg.fabric.vm_interface_xml(tap, net.vlan_id, port.mac))
                nics.append(dict(network_id=net.id, fixed_ip=vm.nics[i].fixed_ip,
                                 port_id=port.id, mac=port.mac, ip=port.ip,
                                 vlan_id=net.vlan_id, fqdn=port.fqdn, device=tap))
            rec = Record(id=vm_id, tenant_id=tenant_id, name=vm.name, image=vm.image,
                         vcpus=vm.vcpus, memory_mib=vm.memory_mib, nics=nics,
                         created=dt.datetime.now(dt.UTC).isoformat())
            lv.atomic_write(self._path(vm_id, "vm.json"), json.dumps(dataclasses.asdict(rec)))
            xml = lv.domain_xml(
                name=self.driver.domain_name(vm_id), uuid=vm_id, accel=self.accel,
                vcpus=vm.vcpus, memory_mib=vm.memory_mib, image=image, overlay=overlay,
                console=self._path(vm_id, "console.log"), hostname=vm.name, interfaces=ifaces)
            self.driver.define_and_start(xml)
            for nic in nics:
                self.cfg.fabric.harden_tap(str(nic["device"]))
            self._fault("define")
            log.info("vm %s (%s) of tenant %s started", vm.name, vm_id, tenant_id)
            return self._to_pb(rec)
        except BaseException as e:
            log.warning("vm %s: create failed, rolling back: %s", vm.name, e)
            self._remove(vm_id, tenant_id, [p.id for p in ports],
                         [lv.tap_name(vm_id, i) for i in range(len(vm.nics))], made_dir)
            if isinstance(e, DomainError):
                raise
            if isinstance(e, libvirt.libvirtError | images.ImageError | FabricError):
                raise FailedPrecondition(f"vm {vm.name}: {e}") from e
            raise

    def _fault(self, step: str) -> None:
        if self.fail_after == step:
            raise FailedPrecondition(f"injected failure after {step}")

    def _remove(self, vm_id: str, tenant_id: str, port_ids: list[str], taps: list[str],
                has_dir: bool = True) -> None:
        """Domain, taps, ports, state directory: each step runs even if one fails."""
        errors = []
        for step in (lambda: self.driver.remove(vm_id),
                     *[(lambda t=t: self.cfg.fabric.release_tap(t)) for t in taps],
                     *[(lambda p=p: self._delete_port(tenant_id, p)) for p in port_ids]):
            try:
                step()
            except Exception as e:  # keep going: leave as little behind as possible
                errors.append(e)
                log.exception("vm %s: cleanup step failed", vm_id)
        if has_dir:
            shutil.rmtree(self._path(vm_id), ignore_errors=True)
        if errors:
            raise FailedPrecondition(f"vm {vm_id}: cleanup incomplete: {errors[0]}")

    def _delete_port(self, tenant_id: str, port_id: str) -> None:
        try:
            self.netmgr.ports.DeletePort(npb.DeletePortRequest(id=port_id),
                                         metadata=self.netmgr.admin_as(tenant_id), timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise

    # ------------------------------------------------------------ the rest

    def get(self, tenant_id: str, vm_id: str) -> pb.Vm:
        return self._to_pb(self._owned(tenant_id, vm_id))

    def list(self, tenant_id: str) -> list[pb.Vm]:
        return [self._to_pb(r) for r in self._records()
                if not tenant_id or r.tenant_id == tenant_id]

    def start(self, tenant_id: str, vm_id: str) -> pb.Vm:
        rec = self._owned(tenant_id, vm_id)
        self.driver.start(vm_id)
        return self._to_pb(rec)

    def stop(self, tenant_id: str, vm_id: str, force: bool) -> pb.Vm:
        rec = self._owned(tenant_id, vm_id)
        self.driver.stop(vm_id, force=force)
        return self._to_pb(rec)

    def delete(self, tenant_id: str, vm_id: str) -> None:
        with self._lock:
            rec = self._owned(tenant_id, vm_id)
            self._remove(vm_id, rec.tenant_id, [n["port_id"] for n in rec.nics],
                         [n["device"] for n in rec.nics])
            log.info("vm %s (%s) deleted", rec.name, vm_id)

    def console(self, tenant_id: str, vm_id: str, offset: int) -> pb.ConsoleLog:
        self._owned(tenant_id, vm_id)
        try:
            with open(self._path(vm_id, "console.log"), "rb") as f:
                f.seek(offset)
                data = f.read(1 << 20)
        except FileNotFoundError:
            data = b""
        return pb.ConsoleLog(data=data, next_offset=offset + len(data))

    def host_info(self) -> pb.HostInfo:
        return pb.HostInfo(name=self.cfg.name, fabric=self.cfg.fabric_kind, accel=self.accel,
                           vcpus=self.cfg.vcpus, memory_mib=self.cfg.memory_mib,
                           vms=len(self._records()))

    def register(self) -> hosts_pb2.Host:
        md = [("authorization", f"Bearer {self.netmgr.admin_token}")]
        return self.netmgr.hosts.RegisterHost(hosts_pb2.RegisterHostRequest(host=hosts_pb2.Host(
            name=self.cfg.name, address=self.cfg.address, fabric=self.cfg.fabric_kind,
            vcpus=self.cfg.vcpus, memory_mib=self.cfg.memory_mib)), metadata=md, timeout=10)


Ctx: TypeAlias = grpc.ServicerContext


class ComputeServicer(rpc.ComputeServiceServicer):
    def __init__(self, compute: Compute) -> None:
        self.c = compute

    def _tenant(self, context: Ctx) -> str:
        return self.c.whoami(_caller_metadata(context))

    def CreateVm(self, request: pb.CreateVmRequest, context: Ctx) -> pb.Vm:
        return self.c.create(_caller_metadata(context), request.vm)

    def GetVm(self, request: pb.GetVmRequest, context: Ctx) -> pb.Vm:
        return self.c.get(self._tenant(context), request.id)

    def ListVms(self, request: pb.ListVmsRequest, context: Ctx) -> pb.ListVmsResponse:
        return pb.ListVmsResponse(vms=self.c.list(self._tenant(context)))

    def StartVm(self, request: pb.StartVmRequest, context: Ctx) -> pb.Vm:
        return self.c.start(self._tenant(context), request.id)

    def StopVm(self, request: pb.StopVmRequest, context: Ctx) -> pb.Vm:
        return self.c.stop(self._tenant(context), request.id, request.force)

    def DeleteVm(self, request: pb.DeleteVmRequest, context: Ctx) -> pb.DeleteVmResponse:
        self.c.delete(self._tenant(context), request.id)
        return pb.DeleteVmResponse()

    def GetConsoleLog(self, request: pb.GetConsoleLogRequest, context: Ctx) -> pb.ConsoleLog:
        return self.c.console(self._tenant(context), request.id, request.offset)

    def ListImages(self, request: pb.ListImagesRequest, context: Ctx) -> pb.ListImagesResponse:
        self._tenant(context)
        return pb.ListImagesResponse(images=[
            pb.Image(name=i.name, min_memory_mib=i.min_memory_mib,
                     kernel_release=i.kernel_release)
            for i in sorted(self.c.images.values(), key=lambda i: i.name)])

    def GetHostInfo(self, request: pb.GetHostInfoRequest, context: Ctx) -> pb.HostInfo:
        self._tenant(context)
        return self.c.host_info()


SERVICE = pb.DESCRIPTOR.services_by_name["ComputeService"].full_name


def create_server(compute: Compute, listen: str) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8,
                                                    thread_name_prefix="compute-api"),
                         interceptors=[ErrorMappingInterceptor()])
    rpc.add_ComputeServiceServicer_to_server(ComputeServicer(compute), server)
    from compute.router_vm import service as router_vm

    router_vm_service = router_vm.add_to_server(compute, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE, router_vm_service, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {listen}")
    return server, port


def make_fabric(kind: str, ovs_bridge: str, vxlan_args: dict[str, str]) -> VmFabric:
    if kind == "ovs":
        from common.fabric.ovs import OvsFabric

        return OvsFabric(ovs_bridge)
    if kind == "vxlan":
        from common.fabric.vxlan import VxlanFabric

        return VxlanFabric(**vxlan_args)  # type: ignore[arg-type]
    raise SystemExit(f"compute agent: unknown fabric {kind!r}")


def main(argv: list[str] | None = None,
         on_ready: Callable[[grpc.Server], None] | None = None) -> None:
    p = argparse.ArgumentParser(prog="cloudnet-compute-agent",
                                description=__doc__.split("\n")[0])
    p.add_argument("--name", default=socket.gethostname().split(".")[0].lower())
    p.add_argument("--listen", default="127.0.0.1:7171")
    p.add_argument("--netmgr", default="127.0.0.1:7070")
    p.add_argument("--admin-token-file", default="/var/lib/cloudnet/admin.token")
    p.add_argument("--state-dir", default="/var/lib/cloudnet/compute")
    p.add_argument("--fabric", choices=("ovs", "vxlan"), default="ovs")
    p.add_argument("--ovs-bridge", default="cn-br")
    p.add_argument("--vxlan-prefix", default="cnvx", help="VXLAN fabric: device name prefix")
    p.add_argument("--vxlan-underlay-netns", default="", help="VXLAN fabric: underlay namespace")
    p.add_argument("--vxlan-local", default="", help="VXLAN fabric: this host's underlay IP")
    p.add_argument("--vxlan-remote", action="append", default=[],
                   help="VXLAN fabric: another host's underlay IP (repeatable)")
    p.add_argument("--image", action="append", default=[], metavar="NAME=DIR",
                   help=f"a bootable image directory (default: tiny={images.DEFAULT_GUEST_DIR})")
    p.add_argument("--accel", choices=("auto", "kvm", "qemu"), default="auto")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.admin_token_file) as f:
        admin_token = f.read().strip()
    image_dirs = dict(i.split("=", 1) for i in args.image) or {
        "tiny": images.DEFAULT_GUEST_DIR}
    fabric = make_fabric(args.fabric, args.ovs_bridge, {
        "prefix": args.vxlan_prefix, "underlay_netns": args.vxlan_underlay_netns,
        "local": args.vxlan_local, "remotes": args.vxlan_remote})
    fabric.setup()
    cfg = HostConfig(name=args.name, state_dir=args.state_dir, netmgr=args.netmgr,
                     admin_token=admin_token, fabric_kind=args.fabric, fabric=fabric,
                     images=image_dirs, address=args.listen, accel=args.accel)
    compute = Compute(cfg, Netmgr(args.netmgr, admin_token))
    server, _port = create_server(compute, args.listen)
    server.start()
    if not args.no_register:
        compute.register()
    log.info("compute agent %s (%s, %s) listening on %s", cfg.name, args.fabric, compute.accel,
             args.listen)
    stopped = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        server.stop(grace=5).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if on_ready:
        on_ready(server)
    stopped.wait()




if __name__ == "__main__":
    main()
