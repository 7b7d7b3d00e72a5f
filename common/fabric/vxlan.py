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

import errno
import hashlib
import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from common import netlink
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
        with IPRoute() as root:
            found = root.link_lookup(ifname=br)
            if not found:
                try:
                    root.link("add", ifname=br, kind="bridge", br_stp_state=0,
                              br_forward_delay=0)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise FabricError(f"segment {segment}: bridge {br}: {e}") from e
                found = root.link_lookup(ifname=br)
            bridge = int(found[0])
            root.link("set", index=bridge, mtu=VXLAN_MTU, state="up")
            if not root.link_lookup(ifname=vx):
                self._make_vxlan(vx, vni)
            idx = root.link_lookup(ifname=vx)[0]
            root.link("set", index=idx, master=bridge, state="up")
        return bridge

    def _make_vxlan(self, name: str, vni: int) -> None:
        with IPRoute(netns=self.underlay_netns, flags=0) as ul:
            if not ul.link_lookup(ifname=name):
                try:
                    ul.link("add", ifname=name, kind="vxlan", vxlan_id=vni,
                            vxlan_local=self.local, vxlan_port=VXLAN_PORT,
                            vxlan_learning=1)
                except NetlinkError as e:
                    raise FabricError(f"VNI {vni}: cannot create {name}: {e}") from e
            idx = ul.link_lookup(ifname=name)[0]
            ul.link("set", index=idx, mtu=VXLAN_MTU)
            for remote in self.remotes:
                try:
                    ul.fdb("append", ifindex=idx, lladdr="00:00:00:00:00:00", dst=remote)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise FabricError(f"VNI {vni}: FDB entry for {remote}: {e}") from e
            # Into the root namespace, where the bridges and VM taps are; the
            # UDP socket stays in the underlay namespace.
            ul.link("set", index=idx, net_ns_pid=1)

    # ------------------------------------------------------------ NICs

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        if len(ifname) > IFNAMSIZ:
            raise FabricError(f"port {port!r}/{ifname!r}: interface names are at most 15 bytes")
        bridge = self.ensure_segment(segment)
        dev = self.device_name(port)
        peer_tmp = dev[:13] + "-q"
        mtu = min(mtu or VXLAN_MTU, VXLAN_MTU)
        with IPRoute() as root:
            for idx in root.link_lookup(ifname=dev):
                root.link("del", index=idx)
            try:
                root.link("add", ifname=dev, kind="veth", peer={"ifname": peer_tmp})
                peer = root.link_lookup(ifname=peer_tmp)[0]
                root.link("set", index=peer, address=mac, mtu=mtu)
                ensure_netns(target_netns)
                root.link("set", index=peer, net_ns_fd=target_netns)
                index = root.link_lookup(ifname=dev)[0]
                root.link("set", index=index, mtu=mtu, master=bridge, state="up")
            except (NetlinkError, OSError) as e:
                for idx in root.link_lookup(ifname=dev):
                    root.link("del", index=idx)
                raise FabricError(f"port {port}: cannot create attachment: {e}") from e
        with IPRoute(netns=target_netns, flags=0) as tgt:
            idx = tgt.link_lookup(ifname=peer_tmp)[0]
            for stale in tgt.link_lookup(ifname=ifname):
                tgt.link("del", index=stale)
            tgt.link("set", index=idx, ifname=ifname)
            tgt.link("set", index=idx, state="up")

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
        with IPRoute() as root:
            bridges = {link["index"] for link in root.get_links()
                       if str(link.get("IFLA_IFNAME")).startswith(f"{self.prefix}b")}
            return {str(link.get("IFLA_IFNAME")) for link in root.get_links()
                    if link.get("IFLA_MASTER") in bridges
                    and str(link.get("IFLA_IFNAME")).startswith(prefix)}


def _delete_root_link(name: str) -> None:
    """Remove root-namespace device `name`. Idempotent."""
    link = netlink.find_link_by_name(None, name)
    if link is not None:
        netlink.delete_link(None, link.index)
