"""Open vSwitch host fabric: one OVS bridge per host, VLAN access ports.

Every router or guest NIC is an *access port* of the host's bridge tagged
with its network's VLAN (the segment); hosts are joined by *trunk* ports
that carry 802.1Q-tagged frames. OVS runs in userspace (`datapath_type=
netdev`) when its kernel module is missing, as here.

ovs-vswitchd opens its ports in the host's root namespace, so the OVS-side
end of a namespace attachment (a veth pair) lives there too, under a name
derived from the bridge and the logical port (several fabrics, e.g. one per
test, share the host's OVS). The logical port name is kept in the OVS
Interface's `external_ids:cloudnet-port`, which is what `ports()` lists.

Isolation rests on OVS's access-port semantics: a frame that arrives on an
access port already carrying an 802.1Q header is dropped (so a guest cannot
hop VLANs by tagging its own frames, nor double-tag past the trunk).
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import logging
import socket
import struct
import subprocess

from common import netlink
from common.fabric import links
from common.fabric.base import IFNAMSIZ, PROVIDER_SEGMENT, FabricError
from common.netns import ensure_netns, nic_has_mac, run_in_netns

log = logging.getLogger(__name__)

# The provider (public) segment rides a VLAN of its own on the trunk: no
# traffic crosses a trunk untagged.
DEFAULT_PROVIDER_VLAN = 4000
EXT_PORT = "cloudnet-port"
EXT_FABRIC = "cloudnet-fabric"


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def disable_tx_checksum(ifname: str, netns: str | None = None) -> None:
    """Turn off TX checksum offload (and with it TSO/GSO) on `ifname`.

    OVS's userspace datapath reads veth/tap ports with AF_PACKET and does not
    complete offloaded checksums: without this, UDP and TCP from a namespace
    arrive with bad checksums (ICMP, checksummed in software, still works).
    """
    def ioctl() -> None:
        data = array.array("B", struct.pack("II", ETHTOOL_STXCSUM, 0))
        ifr = struct.pack("16sP", ifname.encode(), data.buffer_info()[0])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)

    try:
        if netns:
            run_in_netns(netns, ioctl)
        else:
            ioctl()
    except OSError as e:
        raise FabricError(f"{ifname}: cannot turn off TX checksum offload: {e}") from e


# QEMU's userspace virtio-net without checksum/segmentation offloads: OVS's
# userspace datapath would pass partial checksums on (see disable_tx_checksum).
NO_OFFLOAD_DRIVER = (
    "<driver name='qemu'>"
    "<host csum='off' gso='off' tso4='off' tso6='off' ecn='off' ufo='off'/>"
    "<guest csum='off' tso4='off' tso6='off' ecn='off' ufo='off'/>"
    "</driver>"
)


def vsctl(*args: str, timeout: int = 10) -> str:
    proc = subprocess.run(["ovs-vsctl", f"--timeout={timeout}", *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise FabricError(f"ovs-vsctl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def bridge_exists(bridge: str) -> bool:
    return subprocess.run(["ovs-vsctl", "--timeout=10", "br-exists", bridge],
                          capture_output=True, check=False).returncode == 0


class OvsFabric:
    """The host's OVS bridge `bridge`; segments are VLAN IDs on access ports."""

    def __init__(self, bridge: str, provider_vlan: int = DEFAULT_PROVIDER_VLAN,
                 datapath_type: str = "netdev") -> None:
        if len(bridge) > IFNAMSIZ:
            raise FabricError(f"bridge {bridge!r}: names are at most 15 bytes")
        self.bridge = bridge
        self.provider_vlan = provider_vlan
        self.datapath_type = datapath_type

    # ------------------------------------------------------------ bridge

    def setup(self) -> None:
        vsctl("--may-exist", "add-br", self.bridge, "--",
              "set", "bridge", self.bridge, f"datapath_type={self.datapath_type}",
              f"external_ids:{EXT_FABRIC}={self.bridge}")

    def teardown(self) -> None:
        for port in self.ports():
            self.unplug(port)
        for trunk in self.trunks():
            self.remove_trunk(trunk)
        if bridge_exists(self.bridge):
            vsctl("--if-exists", "del-br", self.bridge)

    def vlan(self, segment: int) -> int:
        if segment == self.provider_vlan:
            # Would put a tenant's NIC on the provider's wire.
            raise FabricError(f"segment {segment}: the provider segment's VLAN is reserved")
        vid = self.provider_vlan if segment == PROVIDER_SEGMENT else segment
        if not 1 <= vid <= 4094:
            raise FabricError(f"segment {segment}: not a VLAN ID (1-4094)")
        return vid

    def device_name(self, port: str) -> str:
        """Root-namespace name of the OVS side of attachment `port` (≤ 15 bytes)."""
        return "o" + hashlib.sha1(f"{self.bridge}/{port}".encode()).hexdigest()[:12]

    # ------------------------------------------------------------ access ports

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        if len(ifname) > IFNAMSIZ:
            raise FabricError(f"port {port!r}/{ifname!r}: interface names are at most 15 bytes")
        vid = self.vlan(segment)
        dev = self.device_name(port)
        try:
            existing = netlink.find_link_by_name(None, dev)
        except netlink.NetlinkOpError as e:
            raise FabricError(f"port {port}: {e}") from e
        if existing is not None:
            if self._attachment_ok(dev, vid, target_netns, ifname, mac):
                return
            self.unplug(port)
        ensure_netns(target_netns)
        try:
            with netlink.rtnl(None) as root:
                links.add_pair(root, dev, mtu, mac, target_netns)
                quiet_ipv6(dev)  # before it is up: no link-local address, no reports
                made = root.link(name=dev)
                if made is not None:
                    root.set_link(made.index, up=True)
        except netlink.NetlinkOpError as e:
            self.unplug(port)  # the pair, if made: its other end goes with it
            raise FabricError(f"port {port}: cannot create attachment: {e}") from e
        try:
            self._add_access_port(dev, port, vid)
            links.rename_in_target(target_netns, dev, ifname)
            disable_tx_checksum(ifname, target_netns)
            disable_tx_checksum(dev)
        except (FabricError, netlink.NetlinkOpError, LookupError, OSError) as e:
            self.unplug(port)
            raise FabricError(f"port {port}: cannot attach to {self.bridge}: {e}") from e

    def _add_access_port(self, dev: str, port: str, vid: int) -> None:
        vsctl("--may-exist", "add-port", self.bridge, dev, f"tag={vid}",
              "vlan_mode=access", "--",
              "set", "interface", dev, f"external_ids:{EXT_PORT}={port}",
              f"external_ids:{EXT_FABRIC}={self.bridge}")

    def _attachment_ok(self, dev: str, vid: int, target_netns: str, ifname: str,
                       mac: str) -> bool:
        try:
            tag = vsctl("get", "port", dev, "tag").strip()
        except FabricError:
            return False
        return tag == str(vid) and nic_has_mac(target_netns, ifname, mac)

    def vm_interface_xml(self, tap: str, segment: int, mac: str) -> str:
        """libvirt <interface> of a VM NIC: an OVS access port on the segment's VLAN."""
        return (
            "<interface type='bridge'>"
            f"<mac address='{mac}'/><source bridge='{self.bridge}'/>"
            "<virtualport type='openvswitch'/>"
            f"<vlan><tag id='{self.vlan(segment)}'/></vlan>"
            f"<target dev='{tap}'/><model type='virtio'/>{NO_OFFLOAD_DRIVER}"
            "</interface>"
        )

    def harden_tap(self, tap: str) -> None:
        """Make a VM tap's port an explicit access port (libvirt only sets the tag):
        frames the guest sends with its own 802.1Q header are dropped."""
        vsctl("set", "port", tap, "vlan_mode=access")

    def release_tap(self, tap: str) -> None:
        """Remove a VM tap's OVS port if libvirt left it behind. Idempotent."""
        vsctl("--if-exists", "del-port", self.bridge, tap)

    def taps(self, prefix: str = "vt") -> set[str]:
        """The bridge's ports named like VM taps (the compute agent names them)."""
        if not bridge_exists(self.bridge):
            return set()
        return {n for n in vsctl("list-ifaces", self.bridge).split() if n.startswith(prefix)}

    def vm_port(self, port: str) -> str:
        """Name of the tap a VM NIC of attachment `port` gets (libvirt creates it)."""
        return "t" + self.device_name(port)[1:]

    def unplug(self, port: str) -> None:
        for dev in {self.device_name(port), self.vm_port(port)}:
            vsctl("--if-exists", "del-port", self.bridge, dev)
            try:
                link = netlink.find_link_by_name(None, dev)
                if link is not None:
                    netlink.delete_link(None, link.index)
            except netlink.NetlinkOpError as e:
                raise FabricError(f"port {port}: cannot remove {dev}: {e}") from e

    def ports(self) -> set[str]:
        if not bridge_exists(self.bridge):
            return set()
        out = vsctl("--format=csv", "--data=bare", "--no-headings", "--columns=name,external_ids",
                    "find", "interface", f"external_ids:{EXT_FABRIC}={self.bridge}")
        names: set[str] = set()
        for line in out.splitlines():
            for item in line.split(","):
                for kv in item.replace('"', "").split():
                    if kv.startswith(f"{EXT_PORT}="):
                        names.add(kv.split("=", 1)[1])
        return names

    def port_tags(self) -> dict[str, int]:
        """OVS port name → access VLAN, for every access port of the bridge."""
        tags: dict[str, int] = {}
        for name in vsctl("list-ports", self.bridge).split():
            tag = vsctl("get", "port", name, "tag").strip()
            if tag.isdigit():
                tags[name] = int(tag)
        return tags

    # ------------------------------------------------------------ trunks

    def add_trunk(self, device: str, vlans: list[int] | None = None) -> None:
        """Make existing root-namespace device `device` a trunk port (802.1Q)."""
        args = ["--may-exist", "add-port", self.bridge, device, "vlan_mode=trunk"]
        if vlans:
            args.append("trunks=" + ",".join(str(v) for v in vlans))
        vsctl(*args, "--", "set", "interface", device,
              f"external_ids:{EXT_FABRIC}-trunk={self.bridge}")
        try:
            with netlink.rtnl(None) as root:
                link = root.link(name=device)
                if link is not None:
                    root.set_link(link.index, up=True)
        except netlink.NetlinkOpError as e:
            raise FabricError(f"trunk {device}: {e}") from e

    def remove_trunk(self, device: str) -> None:
        vsctl("--if-exists", "del-port", self.bridge, device)

    def trunks(self) -> list[str]:
        if not bridge_exists(self.bridge):
            return []
        out = vsctl("--data=bare", "--no-headings", "--columns=name", "find", "interface",
                    f"external_ids:{EXT_FABRIC}-trunk={self.bridge}")
        return [n for n in out.split() if n]


def quiet_ipv6(dev: str) -> None:
    """No IPv6 autoconfiguration chatter from a root-namespace switch device."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass


def connect_trunk(a: OvsFabric, b: OvsFabric, name_a: str, name_b: str) -> None:
    """Join two hosts' bridges by a veth pair standing for the physical switch."""
    with netlink.rtnl(None) as root:
        if root.link(name=name_a) is None:
            root.add_veth(name_a, name_b)
    for dev in (name_a, name_b):
        quiet_ipv6(dev)
    a.add_trunk(name_a)
    b.add_trunk(name_b)


def disconnect_trunk(a: OvsFabric, b: OvsFabric, name_a: str, name_b: str) -> None:
    a.remove_trunk(name_a)
    b.remove_trunk(name_b)
    with netlink.rtnl(None) as root:
        link = root.link(name=name_a)
        if link is not None:
            root.delete_link(link.index)
