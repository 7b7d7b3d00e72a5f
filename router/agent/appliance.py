"""Appliance mode: the router agent inside a router VM (images/router).

The VM's boot identity (router ID, control MAC and address, token) comes from
SMBIOS OEM strings; the image's boot helper (images/router/rootfs/usr/local/
sbin/cloudnet-boot, see images/router/README.md) writes /run/cloudnet/token
and agent.env and configures the control NIC ``ctl0`` found by its MAC, in
the VM's root namespace. The agent then runs with ``--fabric appliance``: ONE router, in a
network namespace of its own inside the VM as on a host, whose interfaces are
the VM's NICs moved in by MAC (ApplianceFabric) instead of veths on a bridge.
Keeping the router out of the root namespace keeps the control plane (agent,
control NIC) out of reach of tenant traffic and of the router's nftables
input policy (drop), and leaves every service module unchanged.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os

from common import netlink
from common.fabric.base import FabricError
from common.netns import netns_exists
from router.agent.registry import RouterRegistry
from router.lib import garp, validate
from router.runtime import router_netns_name
from router.services.host import KernelProbe
from router.services.interfaces import fabric_port_name

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
                with netlink.rtnl(None) as sock:
                    # A temporary name first: the NIC's kernel name may clash in the target.
                    sock.set_link(root.index, up=False, name=port)
                    sock.set_link(root.index, netns=target_netns)
            except netlink.NetlinkOpError as e:
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
            # Either instance of a redundant router (its ports are named apart).
            if port in (fabric_port_name(self.router_id, link.name),
                        fabric_port_name(self.router_id, link.name, 1)):
                try:
                    with netlink.rtnl(self.router_netns) as sock:
                        sock.set_link(link.index, up=False)
                        sock.set_link(link.index, netns_pid=1)  # the VM's own namespace
                except netlink.NetlinkOpError as e:
                    if e.code != errno.ENODEV:
                        raise FabricError(f"port {port}: cannot move NIC back: {e}") from e

    def ports(self) -> set[str]:
        return {fabric_port_name(self.router_id, link.name) for link in self._router_links()}


def appliance_registry(router_id: str, state_dir: str, netns_prefix: str = "cn",
                       agent_id: str = "", dnsmasq_user: str = "dnsmasq",
                       control_mac: str = "") -> RouterRegistry:
    """The registry of an agent that serves exactly one router: the VM's boot identity."""
    validate.check_id("router", router_id)
    fabric = ApplianceFabric(router_id, control_mac)
    fabric.router_netns = router_netns_name(netns_prefix, router_id)
    # The router's NICs are the VM's; the host's switch is outside the VM, so
    # no extra port (a diagnostics probe port) can be plugged into a segment.
    # The VM's connection tracking is this router's alone: no share to cap.
    return RouterRegistry(state_dir, netns_prefix, "", agent_id or router_id, dnsmasq_user,
                          fabric, only_router=router_id, probe_ports=False,
                          host=KernelProbe(conntrack_limit=0))


def control_mac_from_env() -> str:
    """The control NIC's MAC, from the boot helper's agent.env (systemd EnvironmentFile)."""
    return os.environ.get("CLOUDNET_CONTROL_MAC", "")


log = logging.getLogger(__name__)
CONTROL_IFNAME = "ctl0"  # named by the boot helper (images/router)


def announce_control(listen: str, control_mac: str) -> None:
    """Gratuitous ARP for the control address, once the agent listens.

    A new router VM may get the control address of a deleted one: netmgr's
    side of the control network still holds the old VM's MAC for it and
    sends its connection attempts there until that entry is re-resolved
    (30 s and more: router VMs through netmgr were healthy half a minute
    after their agent served). Best effort, like router/lib/garp.py."""
    host = listen.rsplit(":", 1)[0]
    try:
        ip = ipaddress.IPv4Interface(host)
    except ValueError:
        return
    try:
        garp.announce(None, CONTROL_IFNAME, control_mac, [ip])
    except ValueError as e:  # no control MAC given
        log.warning("gratuitous ARP for the control address %s: %s", ip.ip, e)


def boot_times() -> str:
    """Kernel uptime when this process started and now (the agent serves), as
    `process_start_uptime=S serving_uptime=S`: the agent's part of the VM's
    boot, read back from the console by bench/router_image.py."""
    with open("/proc/self/stat") as f:
        # Field 22 (starttime, clock ticks since boot); the name (field 2) may hold spaces.
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        now = float(f.read().split()[0])
    return (f"process_start_uptime={start_ticks / os.sysconf('SC_CLK_TCK'):.2f} "
            f"serving_uptime={now:.2f}")
