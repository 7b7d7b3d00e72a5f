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

from common import netlink
from common.fabric import links
from common.fabric.base import IFNAMSIZ, PROVIDER_SEGMENT, FabricError
from common.netns import ensure_netns, nic_has_mac, remove_netns, write_sysctls
from common.rtnl import LinkInfo, Rtnl

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
# The fabric's namespace is a switch: no IPv6 of its own on any link, made
# before ("all") or after ("default") its set-up. With it on, each of a
# segment's thousands of fabric ends held a link-local address and an
# ff00::/8 route, and each listener report one sent looked its route up among
# all of them (a tenth of a loaded machine's CPU at 1,000 routers). Frames
# are bridged the same: this is the namespace's own stack only.
QUIET_IPV6 = {"net.ipv6.conf.default.disable_ipv6": "1",
              "net.ipv6.conf.all.disable_ipv6": "1"}


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
        try:
            write_sysctls(self.netns, QUIET_IPV6, missing_ok=True)
        except OSError as e:
            raise FabricError(f"fabric namespace {self.netns}: cannot turn IPv6 off: {e}") from e

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

    def _ensure_bridge(self, fab: Rtnl, segment: int, overflow: int = 0) -> int:
        """The index of the segment's bridge (``overflow`` > 0: its overflow
        bridge of that number, made and joined to the one before when missing)."""
        name = self.bridge_name(segment) if not overflow else self._bridge(segment, overflow)
        try:
            found = links.ensure_bridge(fab, name)
        except OSError as e:
            raise FabricError(f"segment {segment}: cannot create bridge {name}: "
                              f"{e.strerror}") from e
        except LookupError as e:
            raise FabricError(f"segment {segment}: {e}") from e
        if not found.up:
            fab.set_link(found.index, up=True)
        if overflow:
            self._join(fab, segment, overflow, found.index)
        return found.index

    def _join(self, fab: Rtnl, segment: int, overflow: int, index: int) -> None:
        """Link overflow bridge ``overflow`` (``index``) to the one before it."""
        name = self._bridge(segment, overflow)
        up, down = f"{name}u", f"{name}d"  # on it; on the bridge before
        if fab.link(name=up) is None:
            try:
                fab.add_veth(up, down)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise FabricError(f"segment {segment}: cannot link bridge {name}: "
                                      f"{e.strerror}") from e
        before = self._ensure_bridge(fab, segment, overflow - 1)
        for dev, bridge in ((up, index), (down, before)):
            link = fab.link(name=dev)
            if link is None:
                raise FabricError(f"segment {segment}: link {dev} of bridge {name} is missing")
            if link.master == bridge and link.up and link.mtu == LINK_MTU:
                continue
            try:
                fab.set_link(link.index, master=bridge, mtu=LINK_MTU, up=True)
            except OSError as e:
                if e.errno == errno.EXFULL:  # filled up before its link was made
                    raise FabricError(
                        f"segment {segment}: bridge {self._bridge(segment, overflow - 1)} is "
                        f"full ({MAX_BRIDGE_PORTS} ports, the kernel's limit for one Linux "
                        f"bridge) and has no room left for its link to {name}") from e
                raise FabricError(f"segment {segment}: cannot link bridge {name}: "
                                  f"{e.strerror}") from e

    def _enslave(self, fab: Rtnl, segment: int, index: int, port: str) -> None:
        """Put the fabric end ``index`` of ``port`` on the first bridge of the
        segment's chain with room for it."""
        for overflow in range(self.max_bridges):
            bridge = self._ensure_bridge(fab, segment, overflow)
            try:
                fab.set_link(index, master=bridge, up=True)
            except OSError as e:
                if e.errno == errno.EXFULL:
                    continue
                raise FabricError(f"port {port}: cannot attach to bridge "
                                  f"{self.bridge_name(segment)}: {e.strerror}") from e
            if overflow + 1 < self.max_bridges and self._port_number(fab, index) >= (
                    MAX_BRIDGE_PORTS - SPARE_PORTS):
                self._ensure_bridge(fab, segment, overflow + 1)  # its link, while it fits
            return
        raise FabricError(
            f"segment {segment}: its {self.max_bridges} bridges ({self.bridge_name(segment)} "
            f"and its overflow bridges) are full ({MAX_BRIDGE_PORTS} ports each, the kernel's "
            "limit for one Linux bridge)")

    @staticmethod
    def _port_number(fab: Rtnl, index: int) -> int:
        """The bridge's number for its port ``index`` (the kernel gives the
        lowest free one, 1 to 1,023)."""
        link = fab.link(index=index)
        return link.port_no if link else 0

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        if len(port) > IFNAMSIZ or len(ifname) > IFNAMSIZ:
            raise FabricError(f"port {port!r}/{ifname!r}: interface names are at most 15 bytes")
        if port.startswith(OWN_PREFIX):
            raise FabricError(f"port {port!r}: names starting {OWN_PREFIX!r} are the fabric's own")
        try:
            with netlink.rtnl(self.netns) as fab:
                self._ensure_bridge(fab, segment)
                existing = fab.link(name=port)
                if existing and self._attachment_ok(
                    fab, existing, self.bridge_name(segment), target_netns, ifname, mac
                ):
                    return
                if existing:
                    fab.delete_link(existing.index)
                try:
                    links.add_pair(fab, port, mtu, mac, target_netns)
                except OSError as e:
                    raise FabricError(f"port {port}: cannot create attachment: "
                                      f"{e.strerror}") from e
                made = fab.link(name=port)
                if made is None:
                    raise FabricError(f"port {port}: missing right after it was made")
                try:
                    self._enslave(fab, segment, made.index, port)
                except (FabricError, OSError):
                    fab.delete_link(made.index)  # the pair: its other end goes with it
                    raise
            links.rename_in_target(target_netns, port, ifname)
        except (netlink.NetlinkOpError, LookupError) as e:
            raise FabricError(f"port {port}: {e}") from e

    @staticmethod
    def _attachment_ok(
        fab: Rtnl, link: LinkInfo, root: str, target_netns: str, ifname: str, mac: str
    ) -> bool:
        """On a bridge of the segment whose first bridge is ``root``, its
        other end in place with ``mac``."""
        if not link.master:
            return False
        bridge = fab.link(index=link.master)
        name = bridge.name if bridge else ""
        on_segment = name == root or name.startswith(f"{root}.")
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
