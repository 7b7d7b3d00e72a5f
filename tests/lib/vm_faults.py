"""The host's end of a router VM's fault channel (tests only): a command to the
VM's fault responder (router/agent/fault_responder.py) over the unix socket
libvirt gives the VM's virtio-serial port. The compute agent adds the port
only with ``--fault-channel`` (``vm_cloud_up(..., fault_channel=True)``)."""

from __future__ import annotations

import socket
import time
import uuid
import xml.etree.ElementTree as ET

import libvirt

from compute import libvirt_driver as lv
from compute.router_vm import nics

DAEMONS = ("keepalived", "agent", "conntrackd")


class FaultChannelError(RuntimeError):
    """The responder said ``error: ...``, or did not answer in time."""


def socket_of(domain_prefix: str, router_id: str) -> str:
    """The fault socket of a router's VM on the host whose domains are named
    ``<domain_prefix>r-<router id>``."""
    dom = lv.Driver(f"{domain_prefix}r-").lookup(router_id)
    if dom is None:
        raise FaultChannelError(f"no router VM for {router_id} ({domain_prefix}r-...)")
    path = lv.fault_socket(dom)
    if not path:
        raise FaultChannelError(f"router VM {dom.name()} has no fault channel "
                                "(the compute agent runs without --fault-channel)")
    return path


def command(path: str, line: str, timeout: float = 30.0) -> str:
    """Send one command line, return the reply line (without ``\\n``).

    Under TCG the responder may take seconds to answer (one vCPU shared with
    the router's daemons); an error reply raises."""
    deadline = time.monotonic() + timeout
    # A reply to a command whose reader gave up waits in the port for the
    # next connection: the tag tells ours from it.
    tag = f"#{uuid.uuid4().hex[:12]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(f"{tag} {line}\n".encode())
        buf = b""
        reply = None
        while reply is None:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except TimeoutError as e:
                raise FaultChannelError(f"{line!r}: no answer within {timeout} s") from e
            if not chunk:
                raise FaultChannelError(f"{line!r}: the channel closed")
            buf += chunk
            while b"\n" in buf and reply is None:
                raw, buf = buf.split(b"\n", 1)
                text = raw.decode(errors="replace")
                if text.startswith(tag + " "):
                    reply = text[len(tag) + 1:]
    if reply.startswith("error:"):
        raise FaultChannelError(f"{line!r}: {reply}")
    return reply


def wait_ready(path: str, timeout: float = 120.0) -> None:
    """Until the responder answers ``ping`` (the VM booted far enough)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if command(path, "ping", timeout=min(10.0, max(1.0, deadline - time.monotonic()))) \
                    == "pong":
                return
        except (OSError, FaultChannelError) as e:
            last = e
        time.sleep(0.5)
    raise FaultChannelError(f"{path}: no pong within {timeout} s ({last})")


def pid(path: str, daemon: str) -> int:
    return int(command(path, f"pid {daemon}"))


def kill(path: str, daemon: str) -> int:
    """SIGKILL ``daemon`` in the VM; the pid killed."""
    reply = command(path, f"kill {daemon}")
    if not reply.startswith("killed "):
        raise FaultChannelError(f"kill {daemon}: unexpected reply {reply!r}")
    return int(reply.split()[1])


def set_link(domain: str, mac: str, up: bool) -> None:
    """The link of a VM's NIC up or down, from the host (QEMU's link state:
    the guest sees its carrier go, as with a pulled cable or a dead switch
    port; nothing inside the VM is touched)."""
    conn = libvirt.open(lv.URI)
    try:
        dom = conn.lookupByName(domain)
        iface = nics.interfaces(dom).get(mac.lower())
        if iface is None:
            raise FaultChannelError(f"{domain} has no NIC {mac}")
        link = iface.find("link")
        if link is None:
            link = ET.SubElement(iface, "link")
        link.set("state", "up" if up else "down")
        dom.updateDeviceFlags(ET.tostring(iface, encoding="unicode"),
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
    finally:
        conn.close()
