"""VXLAN host fabric: a Linux bridge per network VNI, joined to the other
hosts by a vxlan device over the hosts' underlay addresses.

Segment N (a network's VLAN ID) is VNI N; the provider segment 0 is VNI
`provider_vni`. Per segment this host has, in its root namespace:

    <prefix>b<vni>   a Linux bridge (no STP, no forwarding delay)
    <prefix>x<vni>   the vxlan device, enslaved to the bridge

The vxlan device is created in the *underlay namespace* (where this host's
underlay address lives), bound to `local`, with one all-zeros FDB entry per
remote host (head-end replication of broadcast and unknown unicast), then
moved into the root namespace: its UDP socket stays in the underlay
namespace, so VXLAN packets travel between the hosts' underlay namespaces,
as between two machines. NICs are veth pairs (namespaces) or libvirt taps
(VMs) enslaved to the segment's bridge.
"""

from __future__ import annotations

import hashlib
import logging

from common import netlink
from common.fabric import links
from common.fabric.base import IFNAMSIZ, PROVIDER_SEGMENT, FabricError
from common.fabric.ovs import NO_OFFLOAD_DRIVER
from common.netns import ensure_netns

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
DEFAULT_PROVIDER_VNI = 4000
# 50 bytes of VXLAN/UDP/IP/Ethernet overhead on a 1500-byte underlay.
VXLAN_MTU = 1450


class VxlanFabric:
    def __init__(self, prefix: str, underlay_netns: str, local: str, remotes: list[str],
                 provider_vni: int = DEFAULT_PROVIDER_VNI) -> None:
        if len(prefix) > 6:
            raise FabricError(f"prefix {prefix!r}: at most 6 bytes (device names)")
        self.prefix = prefix
        self.underlay_netns = underlay_netns
        self.local = local
        self.remotes = list(remotes)
        self.provider_vni = provider_vni

    def vni(self, segment: int) -> int:
        if segment == self.provider_vni:
            # Would bridge a tenant's NIC onto the provider's wire.
            raise FabricError(f"segment {segment}: the provider segment's VNI is reserved")
        vni = self.provider_vni if segment == PROVIDER_SEGMENT else segment
        if not 1 <= vni < 1 << 24:
            raise FabricError(f"segment {segment}: not a VNI")
        return vni

    def bridge_name(self, segment: int) -> str:
        return f"{self.prefix}b{self.vni(segment)}"

    def vxlan_name(self, segment: int) -> str:
        return f"{self.prefix}x{self.vni(segment)}"

    def device_name(self, port: str) -> str:
        return f"{self.prefix}p" + hashlib.sha1(port.encode()).hexdigest()[:8]

    # ------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        ensure_netns(self.underlay_netns)

    def teardown(self) -> None:
        for link in netlink.links(None):
            if link.name.startswith(self.prefix) and link.name[len(self.prefix)] in "bxp":
                netlink.delete_link(None, link.index)

    def ensure_segment(self, segment: int) -> int:
        """The segment's bridge (with its vxlan device) exists and is up; its index."""
        vni = self.vni(segment)
        br, vx = self.bridge_name(segment), self.vxlan_name(segment)
        try:
            with netlink.rtnl(None) as root:
                try:
                    bridge = links.ensure_bridge(root, br)
                except OSError as e:
                    raise FabricError(f"segment {segment}: bridge {br}: {e.strerror}") from e
                except LookupError as e:
                    raise FabricError(f"segment {segment}: {e}") from e
                root.set_link(bridge.index, mtu=VXLAN_MTU, up=True)
                if root.link(name=vx) is None:
                    self._make_vxlan(vx, vni)
                made = root.link(name=vx)
                if made is None:
                    raise FabricError(f"VNI {vni}: {vx} missing after it was made")
                root.set_link(made.index, master=bridge.index, up=True)
        except netlink.NetlinkOpError as e:
            raise FabricError(f"segment {segment}: {e}") from e
        return bridge.index

    def _make_vxlan(self, name: str, vni: int) -> None:
        with netlink.rtnl(self.underlay_netns) as ul:
            if ul.link(name=name) is None:
                try:
                    ul.add_vxlan(name, vni, self.local, VXLAN_PORT)
                except OSError as e:
                    raise FabricError(f"VNI {vni}: cannot create {name}: {e.strerror}") from e
            made = ul.link(name=name)
            if made is None:
                raise FabricError(f"VNI {vni}: {name} missing after it was made")
            ul.set_link(made.index, mtu=VXLAN_MTU)
            for remote in self.remotes:
                ul.append_fdb(made.index, "00:00:00:00:00:00", remote)
            # Into the root namespace, where the bridges and VM taps are; the
            # UDP socket stays in the underlay namespace.
            ul.set_link(made.index, netns_pid=1)

    # ------------------------------------------------------------ NICs

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        if len(ifname) > IFNAMSIZ:
            raise FabricError(f"port {port!r}/{ifname!r}: interface names are at most 15 bytes")
        bridge = self.ensure_segment(segment)
        dev = self.device_name(port)
        mtu = min(mtu or VXLAN_MTU, VXLAN_MTU)
        ensure_netns(target_netns)
        try:
            _delete_root_link(dev)
            with netlink.rtnl(None) as root:
                links.add_pair(root, dev, mtu, mac, target_netns)
                made = root.link(name=dev)
                if made is not None:
                    root.set_link(made.index, master=bridge, up=True)
            links.rename_in_target(target_netns, dev, ifname)
        except (netlink.NetlinkOpError, LookupError) as e:
            _delete_root_link(dev)  # the pair, if made: its other end goes with it
            raise FabricError(f"port {port}: cannot create attachment: {e}") from e

    def unplug(self, port: str) -> None:
        _delete_root_link(self.device_name(port))

    def ports(self) -> set[str]:
        """Root-namespace names of this fabric's attachments (hashed port names)."""
        return {link.name for link in netlink.links(None)
                if link.name.startswith(f"{self.prefix}p")}

    def vm_interface_xml(self, tap: str, segment: int, mac: str) -> str:
        bridge = self.bridge_name(segment)
        self.ensure_segment(segment)
        return (
            "<interface type='bridge'>"
            f"<mac address='{mac}'/><source bridge='{bridge}'/>"
            f"<target dev='{tap}'/><model type='virtio'/><mtu size='{VXLAN_MTU}'/>"
            f"{NO_OFFLOAD_DRIVER}</interface>"
        )

    def harden_tap(self, tap: str) -> None:
        """Nothing to do: a guest's 802.1Q tag stays inside its VNI's frames."""

    def release_tap(self, tap: str) -> None:
        _delete_root_link(tap)

    def taps(self, prefix: str = "vt") -> set[str]:
        with netlink.rtnl(None) as root:
            every = root.links()
        bridges = {link.index for link in every if link.name.startswith(f"{self.prefix}b")}
        return {link.name for link in every
                if link.master in bridges and link.name.startswith(prefix)}


def _delete_root_link(name: str) -> None:
    """Remove root-namespace device `name`. Idempotent."""
    link = netlink.find_link_by_name(None, name)
    if link is not None:
        netlink.delete_link(None, link.index)
