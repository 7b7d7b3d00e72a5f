"""A Linux bridge per segment, inside a fabric network namespace of its own.

Keeping the bridges inside a namespace of their own leaves the host's root
namespace untouched, and lets several independent fabrics (one per test)
coexist on one machine.
"""

from __future__ import annotations

import errno
import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from common import netlink
from common.fabric.base import IFNAMSIZ, PROVIDER_SEGMENT, FabricError
from common.netns import ensure_netns, nic_has_mac, remove_netns

log = logging.getLogger(__name__)

# Ports one Linux bridge takes: the kernel numbers them in 10 bits, port 0
# unused (BR_MAX_PORTS in net/bridge/br_private.h); one more is EXFULL.
MAX_BRIDGE_PORTS = 1023


class LinuxBridgeFabric:
    """One Linux bridge per segment, in the namespace `fabric_netns`.

    Attachments are veth pairs: the fabric end (named `port`) is enslaved to
    the segment's bridge, the other end is moved into the target namespace,
    renamed `ifname` and given `mac`.
    """

    def __init__(self, fabric_netns: str) -> None:
        self.netns = fabric_netns

    def setup(self) -> None:
        ensure_netns(self.netns)

    def teardown(self) -> None:
        remove_netns(self.netns)

    @staticmethod
    def bridge_name(segment: int) -> str:
        return "br-public" if segment == PROVIDER_SEGMENT else f"br-seg{segment}"

    def _ensure_bridge(self, ipr: IPRoute, segment: int) -> int:
        name = self.bridge_name(segment)
        found = ipr.link_lookup(ifname=name)
        if not found:
            try:
                # No STP and no forwarding delay: ports forward as soon as they
                # are up, so a guest's first DHCP DISCOVER is not dropped.
                ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise FabricError(f"segment {segment}: cannot create bridge {name}: {e}") from e
            found = ipr.link_lookup(ifname=name)
        index = int(found[0])
        ipr.link("set", index=index, state="up")
        return index

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        if len(port) > IFNAMSIZ or len(ifname) > IFNAMSIZ:
            raise FabricError(f"port {port!r}/{ifname!r}: interface names are at most 15 bytes")
        with IPRoute(netns=self.netns, flags=0) as fab:
            bridge = self._ensure_bridge(fab, segment)
            existing = fab.link_lookup(ifname=port)
            if existing and self._attachment_ok(
                fab, existing[0], bridge, target_netns, ifname, mac
            ):
                return
            if existing:
                fab.link("del", index=existing[0])
            # Create both ends in the fabric namespace under temporary names,
            # then move the guest end: a clash with a name in the target
            # namespace cannot leave a half-made pair behind there.
            peer_tmp = f"{port[:13]}-p"
            try:
                fab.link("add", ifname=port, kind="veth", peer={"ifname": peer_tmp})
                peer = fab.link_lookup(ifname=peer_tmp)[0]
                fab.link("set", index=peer, address=mac)
                if mtu:
                    fab.link("set", index=peer, mtu=mtu)
                fab.link("set", index=peer, net_ns_fd=target_netns)
            except NetlinkError as e:
                for idx in fab.link_lookup(ifname=port):
                    fab.link("del", index=idx)
                raise FabricError(f"port {port}: cannot create attachment: {e}") from e
            index = fab.link_lookup(ifname=port)[0]
            if mtu:
                fab.link("set", index=index, mtu=mtu)
            try:
                fab.link("set", index=index, master=bridge, state="up")
            except NetlinkError as e:
                fab.link("del", index=index)  # the pair: its other end goes with it
                if e.code == errno.EXFULL:
                    raise FabricError(
                        f"segment {segment}: bridge {self.bridge_name(segment)} is full "
                        f"({MAX_BRIDGE_PORTS} ports, the kernel's limit for one Linux bridge); "
                        "the ovs fabric has no such limit") from e
                raise FabricError(f"port {port}: cannot attach to bridge "
                                  f"{self.bridge_name(segment)}: {e}") from e
        with IPRoute(netns=target_netns, flags=0) as tgt:
            idx = tgt.link_lookup(ifname=peer_tmp)[0]
            stale = tgt.link_lookup(ifname=ifname)
            if stale:
                tgt.link("del", index=stale[0])
            tgt.link("set", index=idx, ifname=ifname)
            tgt.link("set", index=idx, state="up")

    @staticmethod
    def _attachment_ok(
        fab: IPRoute, index: int, bridge: int, target_netns: str, ifname: str, mac: str
    ) -> bool:
        link = fab.get_links(index)[0]
        return link.get("IFLA_MASTER") == bridge and nic_has_mac(target_netns, ifname, mac)

    def unplug(self, port: str) -> None:
        try:
            link = netlink.find_link_by_name(self.netns, port)
            if link is not None:
                netlink.delete_link(self.netns, link.index)
        except netlink.NamespaceNotFound:
            return
        except netlink.NetlinkOpError as e:
            raise FabricError(f"port {port}: cannot remove: {e}") from e

    def ports(self) -> set[str]:
        try:
            return {link.name for link in netlink.links(self.netns) if link.kind == "veth"}
        except netlink.NamespaceNotFound:
            return set()
