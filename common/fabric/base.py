"""The host fabric: how router and guest NICs reach their network's segment.

A *segment* is the isolation unit of a network (its VLAN ID); segment 0 is
the provider (public) segment. Whatever sits behind this interface (one Linux
bridge per segment inside a fabric network namespace, Open vSwitch with VLAN
access ports, or a bridge per VXLAN VNI), callers only plug and unplug NICs
by segment.

Implementations: `common.fabric.linuxbridge.LinuxBridgeFabric`,
`common.fabric.ovs.OvsFabric` (VLAN access ports on an Open vSwitch bridge)
and `common.fabric.vxlan.VxlanFabric` (a Linux bridge per VXLAN VNI).

They open sockets in other network namespaces from a thread that enters
them (`common.nsthread`), never by fork: safe beside gRPC's threads.
"""

from __future__ import annotations

from typing import Protocol

PROVIDER_SEGMENT = 0
IFNAMSIZ = 15


class FabricError(Exception):
    """A fabric operation failed; the message names the port or segment."""


class Fabric(Protocol):
    def setup(self) -> None:
        """Create the fabric's switch (namespace, bridge). Idempotent."""

    def plug(
        self, port: str, segment: int, target_netns: str, ifname: str, mac: str, mtu: int = 0
    ) -> None:
        """Connect NIC `ifname` (with `mac`) in `target_netns` to `segment`.

        `port` is the fabric-side name of the attachment, unique in the
        fabric. Idempotent: an existing, correct attachment is left alone.
        """

    def unplug(self, port: str) -> None:
        """Remove an attachment (and so its NIC). Idempotent."""

    def ports(self) -> set[str]:
        """The fabric-side names of every attachment, for sweeping stale ones."""
