"""libvirt (qemu:///system) domains of the compute agent.

One domain per VM, named `<prefix><vm id>` (the prefix names the host, so
several agents, e.g. one per test, share one libvirtd). The guest boots its
image's kernel + initrd directly, with a qcow2 overlay of the base disk and
its serial console written to a file. QEMU runs as root for these domains
(a per-domain DAC label): images and state may live in root-only places.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import libvirt
from cloudnet.compute.v1 import compute_pb2 as cpb

from compute.images import Image

log = logging.getLogger(__name__)

URI = "qemu:///system"
# The fault channel (tests only): a virtio-serial port of a router VM that
# the host reaches as a unix socket (router/agent/fault_responder.py serves
# it in the VM). Host-only: no network of the VM leads to it.
FAULT_PORT = "org.cloudnet.faults.0"
FAULT_SOCKET_DIR = "/run/cloudnet-faults"
QEMU = "/usr/bin/qemu-system-x86_64"
# A domain's libvirt state as the API shows it (guest and router VMs alike).
VM_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: cpb.VM_STATE_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: cpb.VM_STATE_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: cpb.VM_STATE_PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: cpb.VM_STATE_RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: cpb.VM_STATE_STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: cpb.VM_STATE_CRASHED,
}


def _silence(ctx: object, err: object) -> None:
    """libvirt prints every error on stderr by default; they are raised anyway."""


libvirt.registerErrorHandler(_silence, None)


def tap_name(vm_id: str, index: int | str) -> str:
    """Host-side device of NIC `index` (or MAC) (≤ 15 bytes, stable)."""
    return "vt" + hashlib.sha1(f"{vm_id}/{index}".encode()).hexdigest()[:11]


def detect_accel(image: Image | None, state_dir: str, timeout: float = 10) -> str:
    """"kvm" when /dev/kvm exists and really boots the guest, else "qemu" (TCG).

    The probe boots the image (kernel + initrd) with KVM and waits for its
    /init's CLOUDNET-BOOT line on the serial console. Where KVM is present but
    broken (here: a kernel panics fine, yet a real guest stalls, and libvirt
    shows the domain "paused") the probe times out. Cached per boot in
    `state_dir`.
    """
    if not os.path.exists("/dev/kvm") or image is None:
        return "qemu"
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    cache = os.path.join(state_dir, "accel")
    with contextlib.suppress(OSError, ValueError), open(cache) as f:
        cached_boot, accel = f.read().split()
        if cached_boot == boot_id:
            return accel
    accel = "kvm" if _boots(image, "kvm", timeout) else "qemu"
    os.makedirs(state_dir, exist_ok=True)
    with open(cache, "w") as f:
        f.write(f"{boot_id} {accel}\n")
    return accel


def _boots(image: Image, accel: str, timeout: float) -> bool:
    proc = subprocess.Popen(
        [QEMU, "-accel", accel, "-m", "128", "-nographic", "-no-reboot", "-nodefaults",
         "-serial", "stdio", "-kernel", image.kernel, "-initrd", image.initrd,
         "-append", f"{image.cmdline} cloudnet.hostname=probe"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    seen = b""
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            chunk = proc.stdout.read()
            if chunk:
                seen += chunk
                if b"CLOUDNET-BOOT" in seen:
                    return True
            time.sleep(0.1)
        return False
    finally:
        proc.kill()
        proc.wait()


def domain_xml(*, name: str, uuid: str, accel: str, vcpus: int, memory_mib: int, image: Image,
               overlay: str, console: str, hostname: str, interfaces: list[str],
               oem_strings: tuple[str, ...] = (), oem_file: str = "",
               fault_socket: str = "") -> str:
    """`oem_strings`: SMBIOS type 11 strings (a router VM's boot identity);
    `oem_file`: more type 11 strings read by QEMU from that file (secrets: the
    domain XML is root-only, but what libvirt puts on QEMU's command line is
    world-readable in /proc); `fault_socket`: the fault channel's unix socket
    on the host (tests only; empty: no channel)."""
    cmdline = f"{image.cmdline} cloudnet.hostname={hostname}"
    sysinfo = smbios = qemu_args = channel = ""
    if fault_socket:
        channel = (f"<channel type='unix'><source mode='bind' path={quoteattr(fault_socket)}/>"
                   f"<target type='virtio' name='{FAULT_PORT}'/></channel>")
    if oem_strings:
        entries = "".join(f"<entry>{escape(s)}</entry>" for s in oem_strings)
        sysinfo = f"<sysinfo type='smbios'><oemStrings>{entries}</oemStrings></sysinfo>"
        smbios = "<smbios mode='sysinfo'/>"
    if oem_file:
        qemu_args = ("<qemu:commandline><qemu:arg value='-smbios'/>"
                     f"<qemu:arg value={quoteattr('type=11,path=' + oem_file)}/>"
                     "</qemu:commandline>")
    return f"""<domain type='{accel}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{escape(name)}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(image.kernel)}</kernel>
    <initrd>{escape(image.initrd)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
    {smbios}
  </os>
  {sysinfo}
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(overlay)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {''.join(interfaces)}
    <serial type='file'>
      <source path={quoteattr(console)}/>
      <target port='0'/>
    </serial>
    {channel}
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  {qemu_args}
</domain>"""


def fault_socket_path(domain: str) -> str:
    """Where a domain's fault channel socket goes: a short path of its own
    (a unix socket's path is at most 107 bytes; state dirs can be long)."""
    return os.path.join(FAULT_SOCKET_DIR,
                        hashlib.sha1(domain.encode()).hexdigest()[:20] + ".sock")


def fault_socket(dom: libvirt.virDomain) -> str:
    """The host's end of a domain's fault channel, as its XML says ("": none)."""
    root = ET.fromstring(dom.XMLDesc(0))
    for ch in root.iterfind("./devices/channel[@type='unix']"):
        target, source = ch.find("target"), ch.find("source")
        if target is not None and source is not None and target.get("name") == FAULT_PORT:
            return source.get("path", "")
    return ""


class Driver:
    def __init__(self, prefix: str, uri: str = URI) -> None:
        self.prefix = prefix
        self.uri = uri
        self._conn: libvirt.virConnect | None = None

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    def domain_name(self, vm_id: str) -> str:
        return f"{self.prefix}{vm_id}"

    def lookup(self, vm_id: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(self.domain_name(vm_id))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def domains(self) -> dict[str, libvirt.virDomain]:
        """vm id → domain, for this agent's domains."""
        return {d.name()[len(self.prefix):]: d for d in self.conn.listAllDomains()
                if d.name().startswith(self.prefix)}

    def define_and_start(self, xml: str) -> libvirt.virDomain:
        dom = self.conn.defineXML(xml)
        try:
            dom.create()
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
            raise
        return dom

    def start(self, vm_id: str) -> None:
        dom = self.lookup(vm_id)
        if dom is not None and not dom.isActive():
            dom.create()

    def stop(self, vm_id: str, force: bool = False, grace: float = 10) -> None:
        dom = self.lookup(vm_id)
        if dom is None or not dom.isActive():
            return
        if not force:
            with contextlib.suppress(libvirt.libvirtError):
                dom.shutdown()
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and dom.isActive():
                time.sleep(0.2)
        if dom.isActive():
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()

    def remove(self, vm_id: str) -> None:
        """Destroy and undefine the domain. Idempotent."""
        dom = self.lookup(vm_id)
        if dom is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        try:
            dom.undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise

    @staticmethod
    def state(dom: libvirt.virDomain) -> int:
        return int(dom.state()[0])


def atomic_write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
