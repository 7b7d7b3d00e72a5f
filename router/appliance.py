"""Appliance mode: the router agent inside a router VM (images/router).

    python -m router.appliance boot     (cloudnet-boot.service, before the agent)

Boot identity comes from SMBIOS OEM strings (type 11), set by the host
(QEMU ``-smbios type=11,value=cloudnet.router_id=...`` or libvirt's
``<sysinfo type='smbios'><oemStrings>``); only root can read them in the
guest (/sys/firmware/dmi/entries/11-*/raw is 0400), unlike the kernel
command line. Keys:

    cloudnet.router_id        the one router this VM serves
    cloudnet.control_mac      MAC of the control NIC (NICs are found by MAC, never by order)
    cloudnet.control_address  CIDR on the control NIC; the agent listens there only
    cloudnet.control_gateway  optional default route on the control network
    cloudnet.agent_port       gRPC port (default 50051)
    cloudnet.token            the per-router bearer token netmgr must present

`boot` writes /run/cloudnet/identity.json, token and agent.env (all 0600),
renames the control NIC ``ctl0`` and configures it, in the VM's root
namespace. The agent then runs with ``--fabric appliance``: ONE router, in a
network namespace of its own inside the VM as on a host, whose interfaces are
the VM's NICs moved in by MAC (ApplianceFabric) instead of veths on a bridge.
Keeping the router out of the root namespace keeps the control plane (agent,
control NIC) out of reach of tenant traffic and of the router's nftables
input policy (drop), and leaves every service module unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import ipaddress
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from compute.fabric import FabricError, netns_exists
from router import netlink, validate
from router.agent import Agent, RequestError
from router.errors import ConfigError
from router.services.interfaces import fabric_port_name

OEM_GLOB = "/sys/firmware/dmi/entries/11-*/raw"
RUN_DIR = "/run/cloudnet"
CONTROL_IFNAME = "ctl0"
DEFAULT_PORT = 50051
PREFIX = "cloudnet."


# ---- boot identity ---------------------------------------------------------------

def parse_oem_strings(raw: bytes) -> list[str]:
    """The strings of one SMBIOS type 11 structure (header, then NUL-ended strings)."""
    if len(raw) < 5 or raw[0] != 11:
        raise ValueError("not an SMBIOS type 11 (OEM strings) structure")
    length, count = raw[1], raw[4]
    strings = raw[length:].split(b"\0")
    return [s.decode("utf-8", "replace") for s in strings[:count]]


def read_oem_strings(pattern: str = OEM_GLOB) -> dict[str, str]:
    """Every ``cloudnet.key=value`` OEM string of the machine (later tables win)."""
    found: dict[str, str] = {}
    for path in sorted(glob.glob(pattern)):
        with open(path, "rb") as f:
            for s in parse_oem_strings(f.read()):
                key, sep, value = s.partition("=")
                if sep and key.startswith(PREFIX):
                    found[key[len(PREFIX):]] = value
    return found


@dataclass(frozen=True)
class Identity:
    router_id: str
    control_mac: str
    control_address: str  # CIDR
    control_gateway: str = ""
    agent_port: int = DEFAULT_PORT

    @property
    def listen(self) -> str:
        return f"{ipaddress.IPv4Interface(self.control_address).ip}:{self.agent_port}"


def identity_from(values: dict[str, str]) -> tuple[Identity, str]:
    """(identity, token) from the OEM strings; ValueError names what is wrong."""
    missing = [k for k in ("router_id", "control_mac", "control_address", "token")
               if not values.get(k)]
    if missing:
        raise ValueError("boot identity: missing " + ", ".join(PREFIX + k for k in missing))
    try:
        validate.check_id("router", values["router_id"])
        mac = validate.check_mac("control NIC", values["control_mac"])
        addr = validate.parse_ipv4_interface("control address", values["control_address"])
        gw = values.get("control_gateway", "")
        if gw and validate.parse_ipv4("control gateway", gw) not in addr.network:
            raise ConfigError(f"control gateway {gw} is not in {addr.network}")
        port = int(values.get("agent_port") or DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise ConfigError(f"agent port {port} is not 1..65535")
    except (ConfigError, ValueError) as e:
        raise ValueError(f"boot identity: {e}") from None
    from router.auth import TokenError, check_token

    try:
        check_token(values["token"], PREFIX + "token")
    except TokenError as e:
        raise ValueError(f"boot identity: {e}") from None
    return Identity(values["router_id"], mac, str(addr), gw, port), values["token"]


def _write_private(path: str, text: str) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_run_files(ident: Identity, token: str, run_dir: str = RUN_DIR) -> None:
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    _write_private(os.path.join(run_dir, "token"), token + "\n")
    _write_private(os.path.join(run_dir, "identity.json"),
                   json.dumps(asdict(ident), indent=1, sort_keys=True) + "\n")
    _write_private(os.path.join(run_dir, "agent.env"),
                   f"CLOUDNET_ROUTER_ID={ident.router_id}\nCLOUDNET_LISTEN={ident.listen}\n")


def configure_control(ident: Identity, timeout: float = 60.0) -> netlink.Link:
    """Rename the NIC with the control MAC ``ctl0``, address it, bring it up."""
    deadline = time.monotonic() + timeout
    link = netlink.find_link_by_mac(None, ident.control_mac)
    while link is None and time.monotonic() < deadline:  # udev may still load virtio_net
        time.sleep(0.1)
        link = netlink.find_link_by_mac(None, ident.control_mac)
    if link is None:
        raise RuntimeError(f"no NIC with the control MAC {ident.control_mac}")
    netlink.set_link(None, link, name=CONTROL_IFNAME)
    addr = ipaddress.IPv4Interface(ident.control_address)
    netlink.reconcile_ipv4_addresses(None, link.index, [addr])
    if ident.control_gateway:
        netlink.reconcile_routes(None, {netlink.RouteSpec(
            ipaddress.IPv4Network("0.0.0.0/0"), ident.control_gateway, link.index)})
    return link


def boot(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m router.appliance boot")
    p.add_argument("--oem-glob", default=OEM_GLOB)
    p.add_argument("--run-dir", default=RUN_DIR)
    args = p.parse_args(argv)
    try:
        ident, token = identity_from(read_oem_strings(args.oem_glob))
        write_run_files(ident, token, args.run_dir)
        configure_control(ident)
    except (OSError, ValueError, RuntimeError, netlink.NetlinkOpError) as e:
        print(f"CLOUDNET-BOOT-FAILED {e}", flush=True)
        return 1
    with contextlib.suppress(OSError):
        socket.sethostname(f"router-{ident.router_id[:12]}")
    print(f"CLOUDNET-BOOT router={ident.router_id} control={CONTROL_IFNAME} "
          f"mac={ident.control_mac} listen={ident.listen}", flush=True)
    return 0


# ---- the agent's side: one router, NICs by MAC ------------------------------------

class ApplianceFabric:
    """The VM's own NICs as the router's interfaces, found by MAC.

    plug() moves the NIC with the interface's MAC from the VM's root namespace
    into the router's namespace and names it; unplug() moves it back. There is
    no switch to set up: the host's fabric (bridge, OVS) is outside the VM.
    The control NIC is never handed to the router.
    """

    def __init__(self, router_id: str, control_mac: str = "") -> None:
        self.router_id = router_id
        self.control_mac = control_mac.lower()
        self.router_netns = ""  # learnt from plug()

    def setup(self) -> None:
        """Nothing to create."""

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        mac = mac.lower()
        if self.control_mac and mac == self.control_mac:
            raise FabricError(f"interface {ifname}: {mac} is the control NIC")
        self.router_netns = target_netns
        link = netlink.find_link_by_mac(target_netns, mac)
        if link is None:
            root = netlink.find_link_by_mac(None, mac)
            if root is None:
                raise FabricError(f"interface {ifname}: no NIC with MAC {mac} in this VM")
            try:
                with IPRoute() as ipr:
                    # A temporary name first: the NIC's kernel name may clash in the target.
                    ipr.link("set", index=root.index, state="down", ifname=port)
                    ipr.link("set", index=root.index, net_ns_fd=target_netns)
            except NetlinkError as e:
                raise FabricError(f"interface {ifname}: cannot move NIC {mac}: {e}") from e
            link = netlink.find_link_by_mac(target_netns, mac)
            if link is None:
                raise FabricError(f"interface {ifname}: NIC {mac} lost while moving it")
        if link.name != ifname:
            clash = netlink.find_link_by_name(target_netns, ifname)
            if clash is not None:  # another NIC holds the name: park it under its port name
                netlink.set_link(target_netns, clash,
                                 name=fabric_port_name(self.router_id, clash.mac))
        netlink.set_link(target_netns, link, mtu=mtu, name=ifname)

    def _router_links(self) -> list[netlink.Link]:
        if not self.router_netns or not netns_exists(self.router_netns):
            return []
        return [link for link in netlink.links(self.router_netns) if link.name != "lo"]

    def unplug(self, port: str) -> None:
        for link in self._router_links():
            if fabric_port_name(self.router_id, link.name) == port:
                try:
                    with IPRoute(netns=self.router_netns, flags=0) as ipr:
                        ipr.link("set", index=link.index, state="down")
                        ipr.link("set", index=link.index, net_ns_pid=1)
                except NetlinkError as e:
                    if e.code != errno.ENODEV:
                        raise FabricError(f"port {port}: cannot move NIC back: {e}") from e

    def ports(self) -> set[str]:
        return {fabric_port_name(self.router_id, link.name) for link in self._router_links()}


class ApplianceAgent(Agent):
    """An agent that serves exactly one router: the VM's boot identity."""

    def __init__(self, router_id: str, state_dir: str, netns_prefix: str = "cn",
                 agent_id: str = "", dnsmasq_user: str = "dnsmasq",
                 control_mac: str = "") -> None:
        validate.check_id("router", router_id)
        super().__init__(state_dir, netns_prefix, "", agent_id or router_id, dnsmasq_user,
                         ApplianceFabric(router_id, control_mac))
        self.router_id = router_id

    def runtime(self, router_id: str, create: bool = True):  # type: ignore[no-untyped-def]
        if router_id and router_id != self.router_id:
            raise RequestError(f"this appliance serves router {self.router_id} only")
        return super().runtime(router_id, create)


def control_mac_from(run_dir: str = RUN_DIR) -> str:
    """The control NIC's MAC from the boot helper's identity.json ('' if absent)."""
    try:
        with open(os.path.join(run_dir, "identity.json")) as f:
            return str(json.load(f).get("control_mac", ""))
    except (OSError, ValueError):
        return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["boot"]:
        return boot(argv[1:])
    print("usage: python -m router.appliance boot [--oem-glob GLOB] [--run-dir DIR]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
