"""Router appliance VMs on this host, for netmgr's VM backend (RouterVmService).

netmgr (admin token) asks for a VM per router with the NICs it decided
(MACs, segments) and the boot identity as SMBIOS OEM strings; the token
reaches QEMU through a 0600 file (`-smbios type=11,path=`), never argv.
Domains are named `<host prefix>r-<router id>`, their files live in
`<state dir>/routers/<router id>/` (overlay disk, console log, OEM file).
A create for a router that already has a VM replaces it: that is how netmgr
replaces a dead router VM with the same MACs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Mapping
from typing import Protocol

import grpc
import libvirt
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.compute.v1 import router_vm_pb2 as pb
from cloudnet.compute.v1 import router_vm_pb2_grpc as rpc

from common.grpc_errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Violation,
    quote,
)
from common.request_checks import uuid_problem
from compute import images
from compute import libvirt_driver as lv
from compute.host import HostConfig
from compute.router_vm import nics

log = logging.getLogger("cloudnet.compute.router_vm")

# key=value, printable, no comma (QEMU's option syntax) and no newline.
OEM_RE = re.compile(r"cloudnet\.[a-z_]{1,32}=[\x21-\x2b\x2d-\x7e]{0,512}")


class Host(Protocol):
    """What router VMs need of their compute host (the agent's Compute is one)."""

    @property
    def cfg(self) -> HostConfig: ...
    @property
    def images(self) -> Mapping[str, images.Image]: ...
    @property
    def accel(self) -> str: ...


def check_spec(spec: pb.RouterVmSpec, images_known: Mapping[str, images.Image],
               max_vcpus: int, max_memory_mib: int) -> images.Image:
    bad: list[Violation] = []
    if (problem := uuid_problem(spec.router_id)) is not None:
        bad.append(Violation("spec.router_id", problem))
    image = images_known.get(spec.image)
    if image is None:
        bad.append(Violation("spec.image", f"unknown image {quote(spec.image)} (this host has: "
                                           f"{', '.join(sorted(images_known)) or 'none'})"))
    if not 1 <= spec.vcpus <= max_vcpus:
        bad.append(Violation("spec.vcpus", f"must be 1-{max_vcpus}"))
    low = image.min_memory_mib if image else 64
    if not low <= spec.memory_mib <= max_memory_mib:
        bad.append(Violation("spec.memory_mib", f"must be {low}-{max_memory_mib} MiB"))
    bad += nics.check_nics(spec.nics, "spec.nics")
    if len(spec.secret_oem_strings) > 1:
        bad.append(Violation("spec.secret_oem_strings", "at most one (one file per string)"))
    for field in ("oem_strings", "secret_oem_strings"):
        for i, s in enumerate(getattr(spec, field)):
            if not OEM_RE.fullmatch(s):
                bad.append(Violation(f"spec.{field}[{i}]",
                                     "must be cloudnet.<key>=<printable, no comma>"))
    if bad:
        raise InvalidArgument(bad)
    assert image is not None
    return image


class RouterVms:
    """The router VMs of one compute host (compute.agent.service.Compute has its guests)."""

    def __init__(self, compute: Host) -> None:
        self.c = compute
        self.driver = lv.Driver(f"{compute.cfg.domain_prefix}r-")
        self.dir = os.path.join(compute.cfg.state_dir, "routers")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, router_id: str, *parts: str) -> str:
        return os.path.join(self.dir, router_id, *parts)

    def _taps(self, router_id: str, spec: pb.RouterVmSpec) -> list[str]:
        """Named by MAC: a hot-plugged NIC keeps its tap whatever the list's order."""
        return [nics.tap(router_id, nic.mac) for nic in spec.nics]

    def create(self, spec: pb.RouterVmSpec) -> pb.RouterVm:
        image = check_spec(spec, self.c.images, self.c.cfg.vcpus, self.c.cfg.memory_mib)
        with self._lock:
            self._remove(spec.router_id)
            os.makedirs(self._path(spec.router_id), mode=0o700)
            try:
                return self._create_locked(spec, image)
            except BaseException:
                log.warning("router vm %s: create failed, rolling back", spec.router_id)
                self._remove(spec.router_id)
                raise

    def _create_locked(self, spec: pb.RouterVmSpec, image: images.Image) -> pb.RouterVm:
        rid = spec.router_id
        overlay = self._path(rid, "disk.qcow2")
        images.create_overlay(image.disk, overlay)
        oem_file = ""
        if spec.secret_oem_strings:
            oem_file = self._path(rid, "oem-secret")
            fd = os.open(oem_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                # QEMU reads the whole file as one string.
                f.write(spec.secret_oem_strings[0])
        faults = ""
        if self.c.cfg.fault_channel:
            faults = lv.fault_socket_path(self.driver.domain_name(rid))
            os.makedirs(os.path.dirname(faults), mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(faults)
        taps = self._taps(rid, spec)
        ifaces = [self.c.cfg.fabric.vm_interface_xml(tap, nic.segment, nic.mac)
                  for tap, nic in zip(taps, spec.nics, strict=True)]
        xml = lv.domain_xml(
            name=self.driver.domain_name(rid), uuid=str(uuid.uuid4()), accel=self.c.accel,
            vcpus=spec.vcpus, memory_mib=spec.memory_mib, image=image, overlay=overlay,
            console=self._path(rid, "console.log"), hostname=f"router-{rid[:8]}",
            interfaces=ifaces, oem_strings=tuple(spec.oem_strings), oem_file=oem_file,
            fault_socket=faults)
        self._record(spec)
        self.driver.define_and_start(xml)
        for tap in taps:
            self.c.cfg.fabric.harden_tap(tap)
        log.info("router vm %s started (%d NICs)", rid, len(spec.nics))
        return self.get(rid)

    def _record(self, spec: pb.RouterVmSpec) -> None:
        """The VM's spec as this host keeps it (its NICs follow hot-plugs)."""
        path = self._path(spec.router_id, "spec.pb")
        with open(path + ".tmp", "wb") as f:
            f.write(spec.SerializeToString())
        os.replace(path + ".tmp", path)

    def update_nics(self, request: pb.UpdateRouterVmNicsRequest) -> pb.RouterVm:
        """Hot-plug/unplug the running VM's NICs to the wanted list
        (compute.router_vm.nics); the record (spec.pb) follows each step."""
        nics.check_router_id(request.router_id)
        rid = request.router_id
        with self._lock:
            spec = self._spec(rid)
            if spec is None:
                raise NotFound(f"router vm {rid} not found on this host")
            nics.check_update(request, spec.nics)
            dom = self.driver.lookup(rid)
            if dom is None or not dom.isActive():
                raise FailedPrecondition(f"router vm {rid} is not running (its NICs are "
                                         "plugged when it is created)")
            state = {n.mac: n for n in spec.nics}
            try:
                nics.apply(dom, rid, self.c.cfg.fabric, state, request.nics)
            except libvirt.libvirtError as e:
                # No free slot, a device libvirt refuses...: netmgr replaces the VM.
                raise FailedPrecondition(f"router vm {rid}: cannot change its NICs: "
                                         f"{e.get_error_message()}") from e
            finally:
                now = nics.ordered(state, request.nics)
                if nics.key(now) != nics.key(spec.nics):
                    del spec.nics[:]
                    spec.nics.extend(now)
                    self._record(spec)
                    log.info("router vm %s: NICs now %s", rid,
                             ", ".join(f"{n.mac}/{n.segment}" for n in now))
        return self.get(rid)

    def _spec(self, router_id: str) -> pb.RouterVmSpec | None:
        try:
            with open(self._path(router_id, "spec.pb"), "rb") as f:
                return pb.RouterVmSpec.FromString(f.read())
        except OSError:
            return None

    def get(self, router_id: str) -> pb.RouterVm:
        spec = self._spec(router_id)
        if spec is None:
            raise NotFound(f"router vm {router_id} not found on this host")
        dom = self.driver.lookup(router_id)
        out = pb.RouterVm(router_id=router_id, host=self.c.cfg.name, accel=self.c.accel,
                          domain=self.driver.domain_name(router_id), nics=spec.nics)
        if dom is None:
            return out
        out.state = lv.VM_STATES.get(self.driver.state(dom), cpb.VM_STATE_UNSPECIFIED)
        if dom.isActive():
            pidfile = f"/run/libvirt/qemu/{out.domain}.pid"
            with contextlib.suppress(OSError, ValueError), open(pidfile) as f:
                out.pid = int(f.read().strip())
                started = os.stat(pidfile).st_mtime
                out.start_time.FromDatetime(dt.datetime.fromtimestamp(started, dt.UTC))
        return out

    def list(self) -> list[pb.RouterVm]:
        out = []
        for rid in sorted(os.listdir(self.dir)):
            with contextlib.suppress(NotFound):
                out.append(self.get(rid))
        return out

    def delete(self, router_id: str) -> None:
        nics.check_router_id(router_id)
        with self._lock:
            self._remove(router_id)

    def _remove(self, router_id: str) -> None:
        spec = self._spec(router_id)
        with contextlib.suppress(libvirt.libvirtError):
            self.driver.remove(router_id)
        if spec is not None:
            # Index-named taps: VMs defined before taps were named by MAC.
            legacy = [lv.tap_name(f"r-{router_id}", i) for i in range(len(spec.nics))]
            for tap in self._taps(router_id, spec) + legacy:
                with contextlib.suppress(Exception):
                    self.c.cfg.fabric.release_tap(tap)
        shutil.rmtree(self._path(router_id), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lv.fault_socket_path(self.driver.domain_name(router_id)))

    def console(self, router_id: str, offset: int) -> cpb.ConsoleLog:
        if self._spec(router_id) is None:
            raise NotFound(f"router vm {router_id} not found on this host")
        try:
            with open(self._path(router_id, "console.log"), "rb") as f:
                f.seek(offset)
                data = f.read(1 << 20)
        except FileNotFoundError:
            data = b""
        return cpb.ConsoleLog(data=data, next_offset=offset + len(data))


class RouterVmServicer(rpc.RouterVmServiceServicer):
    """Admin only: the caller must present this host's netmgr admin token."""

    def __init__(self, vms: RouterVms) -> None:
        self.vms = vms

    def _admin(self, context: grpc.ServicerContext) -> None:
        md = dict(context.invocation_metadata())
        auth = str(md.get("authorization", ""))
        if not auth.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        if not hmac.compare_digest(auth[7:].encode(), self.vms.c.cfg.admin_token.encode()):
            raise PermissionDenied("router VMs need the admin token")

    def CreateRouterVm(self, request: pb.CreateRouterVmRequest,
                       context: grpc.ServicerContext) -> pb.RouterVm:
        self._admin(context)
        return self.vms.create(request.spec)

    def GetRouterVm(self, request: pb.GetRouterVmRequest,
                    context: grpc.ServicerContext) -> pb.RouterVm:
        self._admin(context)
        return self.vms.get(request.router_id)

    def ListRouterVms(self, request: pb.ListRouterVmsRequest,
                      context: grpc.ServicerContext) -> pb.ListRouterVmsResponse:
        self._admin(context)
        return pb.ListRouterVmsResponse(vms=self.vms.list())

    def DeleteRouterVm(self, request: pb.DeleteRouterVmRequest,
                       context: grpc.ServicerContext) -> pb.DeleteRouterVmResponse:
        self._admin(context)
        self.vms.delete(request.router_id)
        return pb.DeleteRouterVmResponse()

    def UpdateRouterVmNics(self, request: pb.UpdateRouterVmNicsRequest,
                           context: grpc.ServicerContext) -> pb.RouterVm:
        self._admin(context)
        return self.vms.update_nics(request)

    def GetRouterVmConsole(self, request: pb.GetRouterVmConsoleRequest,
                           context: grpc.ServicerContext) -> cpb.ConsoleLog:
        self._admin(context)
        return self.vms.console(request.router_id, request.offset)


SERVICE = str(pb.DESCRIPTOR.services_by_name["RouterVmService"].full_name)


def add_to_server(compute: Host, server: grpc.Server) -> str:
    """Serve the router VMs of `compute` on `server`; the service's name."""
    rpc.add_RouterVmServiceServicer_to_server(RouterVmServicer(RouterVms(compute)), server)
    return SERVICE
