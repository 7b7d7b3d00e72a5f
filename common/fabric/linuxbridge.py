"""A Linux bridge per segment, inside a fabric network namespace of its own.

Keeping the bridges inside a namespace of their own leaves the host's root
namespace untouched, and lets several independent fabrics (one per test)
coexist on one machine.

One Linux bridge takes 1,023 ports. A segment with more (the provider
segment has a port per router: 1,100 routers on one machine's hosts) grows
overflow bridges, ``br-public.1``, ``br-public.2``, ... in a chain, each
joined to the one before by a veth pair: no loop, so no STP. A port goes to
the first bridge of the chain with room (the kernel's own refusal, EXFULL,
says which has none); a bridge whose ports are numbered near the limit gets
its link to the next bridge then, while it has room for it.
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
# Bridges one segment may grow to (its first and the overflow ones): about
# 65,000 ports in all.
MAX_SEGMENT_BRIDGES = 64
# A port numbered this close to the limit makes its bridge's link to the next
# one at once: agents plugging at the same time must not take its last slot.
SPARE_PORTS = 64
# The fabric's own links (bridges, the links between a segment's bridges)
# are named with this prefix; attachments' names never start with it.
OWN_PREFIX = "br-"
# The link between two bridges of a segment never lowers either's MTU.
LINK_MTU = 65535


class LinuxBridgeFabric:
    """One Linux bridge per segment, in the namespace `fabric_netns`.

    Attachments are veth pairs: the fabric end (named `port`) is enslaved to
    the segment's bridge, the other end is moved into the target namespace,
    renamed `ifname` and given `mac`.
    """

    def __init__(self, fabric_netns: str, max_bridges: int = MAX_SEGMENT_BRIDGES) -> None:
        """``max_bridges``: bridges one segment may grow to (its first included)."""
        self.netns = fabric_netns
        self.max_bridges = max_bridges

    def setup(self) -> None:
        ensure_netns(self.netns)

    def teardown(self) -> None:
        remove_netns(self.netns)

    @staticmethod
    def bridge_name(segment: int) -> str:
        return "br-public" if segment == PROVIDER_SEGMENT else f"br-seg{segment}"

    def _bridge(self, segment: int, overflow: int) -> str:
        root = self.bridge_name(segment)
        name = f"{root}.{overflow}" if overflow else root
        if len(name) + 1 > IFNAMSIZ:  # its link is named after it, one byte longer
            raise FabricError(f"segment {segment}: no overflow bridge name fits in "
                              f"{IFNAMSIZ} bytes for {name!r}")
        return name

    def _ensure_bridge(self, ipr: IPRoute, segment: int, overflow: int = 0) -> int:
        """The index of the segment's bridge (``overflow`` > 0: its overflow
        bridge of that number, made and joined to the one before when missing)."""
        name = self.bridge_name(segment) if not overflow else self._bridge(segment, overflow)
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
        if overflow:
            self._join(ipr, segment, overflow, index)
        return index

    def _join(self, ipr: IPRoute, segment: int, overflow: int, index: int) -> None:
        """Link overflow bridge ``overflow`` (``index``) to the one before it."""
        name = self._bridge(segment, overflow)
        up, down = f"{name}u", f"{name}d"  # on it; on the bridge before
        if not ipr.link_lookup(ifname=up):
            try:
                ipr.link("add", ifname=up, kind="veth", peer={"ifname": down})
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise FabricError(f"segment {segment}: cannot link bridge {name}: {e}") from e
        before = self._ensure_bridge(ipr, segment, overflow - 1)
        for dev, bridge in ((up, index), (down, before)):
            dev_index = ipr.link_lookup(ifname=dev)[0]
            try:
                ipr.link("set", index=dev_index, master=bridge, mtu=LINK_MTU, state="up")
            except NetlinkError as e:
                if e.code == errno.EXFULL:  # filled up before its link was made
                    raise FabricError(
                        f"segment {segment}: bridge {self._bridge(segment, overflow - 1)} is "
                        f"full ({MAX_BRIDGE_PORTS} ports, the kernel's limit for one Linux "
                        f"bridge) and has no room left for its link to {name}") from e
                raise FabricError(f"segment {segment}: cannot link bridge {name}: {e}") from e

    def _enslave(self, fab: IPRoute, segment: int, index: int, port: str) -> None:
        """Put the fabric end ``index`` of ``port`` on the first bridge of the
        segment's chain with room for it."""
        for overflow in range(self.max_bridges):
            bridge = self._ensure_bridge(fab, segment, overflow)
            try:
                fab.link("set", index=index, master=bridge, state="up")
            except NetlinkError as e:
                if e.code == errno.EXFULL:
                    continue
                raise FabricError(f"port {port}: cannot attach to bridge "
                                  f"{self.bridge_name(segment)}: {e}") from e
            if overflow + 1 < self.max_bridges and self._port_number(fab, index) >= (
                    MAX_BRIDGE_PORTS - SPARE_PORTS):
                self._ensure_bridge(fab, segment, overflow + 1)  # its link, while it fits
            return
        raise FabricError(
            f"segment {segment}: its {self.max_bridges} bridges ({self.bridge_name(segment)} "
            f"and its overflow bridges) are full ({MAX_BRIDGE_PORTS} ports each, the kernel's "
            "limit for one Linux bridge)")

    @staticmethod
    def _port_number(fab: IPRoute, index: int) -> int:
        """The bridge's number for its port ``index`` (the kernel gives the
        lowest free one, 1 to 1,023)."""
        link = fab.link("get", index=index)[0]
        number = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_NO")
        return int(number or 0)

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        if len(port) > IFNAMSIZ or len(ifname) > IFNAMSIZ:
            raise FabricError(f"port {port!r}/{ifname!r}: interface names are at most 15 bytes")
        if port.startswith(OWN_PREFIX):
            raise FabricError(f"port {port!r}: names starting {OWN_PREFIX!r} are the fabric's own")
        with IPRoute(netns=self.netns, flags=0) as fab:
            self._ensure_bridge(fab, segment)
            existing = fab.link_lookup(ifname=port)
            if existing and self._attachment_ok(
                fab, existing[0], self.bridge_name(segment), target_netns, ifname, mac
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
                self._enslave(fab, segment, index, port)
            except (FabricError, NetlinkError):
                fab.link("del", index=index)  # the pair: its other end goes with it
                raise
        with IPRoute(netns=target_netns, flags=0) as tgt:
            idx = tgt.link_lookup(ifname=peer_tmp)[0]
            stale = tgt.link_lookup(ifname=ifname)
            if stale:
                tgt.link("del", index=stale[0])
            tgt.link("set", index=idx, ifname=ifname)
            tgt.link("set", index=idx, state="up")

    @staticmethod
    def _attachment_ok(
        fab: IPRoute, index: int, root: str, target_netns: str, ifname: str, mac: str
    ) -> bool:
        """On a bridge of the segment whose first bridge is ``root``, its
        other end in place with ``mac``."""
        master = fab.link("get", index=index)[0].get("IFLA_MASTER")
        if not master:
            return False
        bridge = fab.link("get", index=master)[0].get("IFLA_IFNAME")
        on_segment = bridge == root or str(bridge).startswith(f"{root}.")
        return on_segment and nic_has_mac(target_netns, ifname, mac)

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
            return {link.name for link in netlink.links(self.netns)
                    if link.kind == "veth" and not link.name.startswith(OWN_PREFIX)}
        except netlink.NamespaceNotFound:
            return set()
