"""The guest VMs of this compute host: what the compute agent's API does.

The agent asks netmgr for one port per NIC *with the caller's token* (as Nova
asks Neutron), so netmgr decides which networks the caller may use and the
router's DHCP and DNS know the VM before it boots; the NIC's MAC is the
port's MAC. Cleanup (rollback of a failed create, delete) uses the admin
token acting as the VM's tenant, so it works even if the caller's token is
gone.

State: libvirt holds the domains (named `<prefix><vm id>`), the state
directory one folder per VM (`vm.json`, the record below; the overlay disk;
the console log).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ipaddress
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from typing import Any

import libvirt
from cloudnet.compute.v1 import compute_pb2 as pb
from cloudnet.netmgr.v1 import hosts_pb2
from cloudnet.netmgr.v1 import netmgr_pb2 as npb

from common.fabric.base import FabricError
from common.grpc_errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Violation,
    quote,
)
from common.request_checks import uuid_problem
from compute import images
from compute import libvirt_driver as lv
from compute.agent.netmgr_client import TENANT_HEADER, Metadata, Netmgr
from compute.host import HostConfig

log = logging.getLogger("cloudnet.compute")

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MIN_MEMORY_MIB = 32
MAX_NICS = 8
# What a VM gives its ports for its guest (docs/metadata.md): netmgr checks
# them; the size here too, so an oversized request makes no port at all.
MAX_USER_DATA = 32 * 1024
PORT_METADATA_FIELDS = {"port.user_data": "vm.user_data",
                        "port.ssh_key_pair_id": "vm.ssh_key_pair_id", "port.labels": "vm.labels",
                        "port.metadata_tokens": "vm.metadata_tokens"}


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

    def to_pb(self, host: str, accel: str, state: pb.VmState.ValueType) -> pb.Vm:
        vm = pb.Vm(id=self.id, tenant_id=self.tenant_id, name=self.name, image=self.image,
                   vcpus=self.vcpus, memory_mib=self.memory_mib, host=host, accel=accel,
                   state=state, nics=[pb.Nic(**n) for n in self.nics])
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
        # Set once netmgr knows this host: its VMs' ports are then bound to it
        # (Port.binding_host), and netmgr pushes their filters here.
        self.registered = False
        # Called once a VM's NICs are on the fabric (created or started): the
        # host's port filters are applied again, so a new tap is filtered at
        # once rather than at netmgr's next push.
        self.after_plug: Callable[[], None] = lambda: None
        # Test hook: raise after this step of CreateVm ("ports", "overlay", "define").
        self.fail_after: str = ""

    # ------------------------------------------------------------ records

    def _path(self, vm_id: str, *parts: str) -> str:
        return os.path.join(self.vm_dir, vm_id, *parts)

    def records(self) -> list[Record]:
        """This host's VMs as recorded (their NICs' ports and taps)."""
        return self._records()

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
        state = pb.VM_STATE_UNSPECIFIED if dom is None else lv.VM_STATES.get(
            self.driver.state(dom), pb.VM_STATE_UNSPECIFIED)
        return rec.to_pb(self.cfg.name, self.accel, state)

    def _owned(self, tenant_id: str, vm_id: str) -> Record:
        if (problem := uuid_problem(vm_id)) is not None:
            raise InvalidArgument.one("id", problem)
        rec = self._record(vm_id)
        if rec is None or (tenant_id and rec.tenant_id != tenant_id):
            raise NotFound(f"vm {vm_id} not found")
        return rec

    # ------------------------------------------------------------ identity

    def whoami(self, md: Metadata) -> str:
        """The caller's tenant ("" for the admin not acting as a tenant)."""
        return self.netmgr.whoami(md)

    # ------------------------------------------------------------ create

    def _check(self, vm: pb.Vm) -> images.Image:
        bad: list[Violation] = []
        if not NAME_RE.fullmatch(vm.name):
            bad.append(Violation("vm.name", "must be an RFC 1123 label (a-z, 0-9, -), 1-63"))
        image = self.images.get(vm.image)
        if image is None:
            bad.append(Violation("vm.image", f"unknown image {quote(vm.image)} (this host has: "
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
            if (problem := uuid_problem(nic.network_id)) is not None:
                bad.append(Violation(f"vm.nics[{i}].network_id", problem))
            if nic.fixed_ip:
                try:
                    ipaddress.IPv4Address(nic.fixed_ip)
                except ValueError:
                    bad.append(Violation(f"vm.nics[{i}].fixed_ip", "must be an IPv4 address"))
        if len(vm.user_data) > MAX_USER_DATA:
            bad.append(Violation("vm.user_data", f"at most {MAX_USER_DATA} bytes"))
        if vm.ssh_key_pair_id and (problem := uuid_problem(vm.ssh_key_pair_id)) is not None:
            bad.append(Violation("vm.ssh_key_pair_id", problem))
        if bad:
            raise InvalidArgument(bad)
        assert image is not None
        return image

    def create(self, md: Metadata, vm: pb.Vm) -> pb.Vm:
        image = self._check(vm)
        tenant_id = self.whoami(md)
        if not tenant_id:
            raise InvalidArgument.one(TENANT_HEADER, "the admin must name a tenant")
        networks = [self.netmgr.get_network(md, nic.network_id, f"vm.nics[{i}].network_id")
                    for i, nic in enumerate(vm.nics)]
        if vm.ssh_key_pair_id:  # the tenant's own, before any port is made
            self.netmgr.get_key_pair(md, vm.ssh_key_pair_id, "vm.ssh_key_pair_id")
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

    def _create_locked(self, md: Metadata, vm: pb.Vm, vm_id: str,
                       tenant_id: str, image: images.Image, networks: list[npb.Network]) -> pb.Vm:
        ports: list[npb.Port] = []
        made_dir = False
        try:
            named: set[str] = set()
            for i, (nic, net) in enumerate(zip(vm.nics, networks, strict=True)):
                # The VM's name is the DNS name of its first NIC on each network.
                hostname = vm.name if net.id not in named else f"{vm.name}-nic{i}"
                named.add(net.id)
                ports.append(self.netmgr.create_port(
                    md, npb.Port(network_id=net.id, ip=nic.fixed_ip, hostname=hostname,
                                 name=f"{vm.name}-nic{i}", device_id=vm_id,
                                 binding_host=self.cfg.name if self.registered else "",
                                 user_data=vm.user_data, ssh_key_pair_id=vm.ssh_key_pair_id,
                                 labels=dict(vm.labels), metadata_tokens=vm.metadata_tokens),
                    field=f"vm.nics[{i}].fixed_ip" if nic.fixed_ip else f"vm.nics[{i}]",
                    hostname_field="vm.name", own_fields=PORT_METADATA_FIELDS))
            self._fault("ports")
            os.makedirs(self._path(vm_id), mode=0o700)
            made_dir = True
            overlay = self._path(vm_id, "disk.qcow2")
            images.create_overlay(image.disk, overlay)
            self._fault("overlay")
            nics: list[dict[str, Any]] = []
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
            for made in nics:
                self.cfg.fabric.harden_tap(str(made["device"]))
            self._filter_nics(vm.name)
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

    def _filter_nics(self, name: str) -> None:
        try:
            self.after_plug()
        except DomainError as e:  # netmgr's next push tries again
            log.warning("vm %s: port filters not applied: %s", name, e)

    def _fault(self, step: str) -> None:
        if self.fail_after == step:
            raise FailedPrecondition(f"injected failure after {step}")

    def _remove(self, vm_id: str, tenant_id: str, port_ids: list[str], taps: list[str],
                has_dir: bool = True) -> None:
        """Domain, taps, ports, state directory: each step runs even if one fails."""
        errors = []
        steps: list[Callable[[], None]] = [
            lambda: self.driver.remove(vm_id),
            *[functools.partial(self.cfg.fabric.release_tap, t) for t in taps],
            *[functools.partial(self.netmgr.delete_port, tenant_id, p) for p in port_ids]]
        for step in steps:
            try:
                step()
            except Exception as e:  # keep going: leave as little behind as possible
                errors.append(e)
                log.exception("vm %s: cleanup step failed", vm_id)
        if has_dir:
            shutil.rmtree(self._path(vm_id), ignore_errors=True)
        if errors:
            raise FailedPrecondition(f"vm {vm_id}: cleanup incomplete: {errors[0]}")

    # ------------------------------------------------------------ the rest

    def get(self, tenant_id: str, vm_id: str) -> pb.Vm:
        return self._to_pb(self._owned(tenant_id, vm_id))

    def list(self, tenant_id: str) -> list[pb.Vm]:
        return [self._to_pb(r) for r in self._records()
                if not tenant_id or r.tenant_id == tenant_id]

    def start(self, tenant_id: str, vm_id: str) -> pb.Vm:
        rec = self._owned(tenant_id, vm_id)
        self.driver.start(vm_id)
        self._filter_nics(rec.name)
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
        """Tell netmgr (HostService) about this host."""
        host = self.netmgr.register_host(hosts_pb2.Host(
            name=self.cfg.name, address=self.cfg.address, fabric=self.cfg.fabric_kind,
            vcpus=self.cfg.vcpus, memory_mib=self.cfg.memory_mib))
        self.registered = True
        return host
