"""The links the fabrics make on raw rtnetlink (``common.rtnl``).

* The veth pair a namespace is plugged with: both ends made in one request,
  the namespace's end straight in its namespace with its MAC and MTU (all or
  nothing: a clash there leaves no half-made pair behind), under a temporary
  name that the fabric then renames to the interface's own.
* A segment's bridge, made when missing (no STP, no forwarding delay: ports
  forward as soon as they are up, so a guest's first DHCP DISCOVER is not
  dropped).
"""

from __future__ import annotations

import errno

from common import netlink
from common.rtnl import LinkInfo, Rtnl


def temporary_name(device: str) -> str:
    """The namespace end's name until it is renamed (<= 15 bytes)."""
    return f"{device[:13]}-p"


def add_pair(sock: Rtnl, device: str, mtu: int, mac: str, target_netns: str) -> None:
    """``device`` in ``sock``'s namespace, its peer ``temporary_name(device)``
    in ``target_netns`` with ``mac``; both ends with ``mtu`` (0: the default).

    A plug that died between making the pair and renaming its end left that
    end behind in the target: it is removed and the pair made again (it would
    be refused at every plug after)."""
    peer = temporary_name(device)
    try:
        sock.add_veth(device, peer, mtu=mtu, peer_mac=mac, peer_netns=target_netns)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
        with netlink.rtnl(target_netns) as tgt:
            left = tgt.link(name=peer)
            if left is None:
                raise
            tgt.delete_link(left.index)
        sock.add_veth(device, peer, mtu=mtu, peer_mac=mac, peer_netns=target_netns)


def rename_in_target(target_netns: str, device: str, ifname: str) -> None:
    """The namespace's end takes its interface name (a stale link of that
    name removed first) and goes up. LookupError if the end is not there."""
    peer = temporary_name(device)
    with netlink.rtnl(target_netns) as tgt:
        end = tgt.link(name=peer)
        if end is None:
            raise LookupError(f"its end {peer} is not in {target_netns}")
        stale = tgt.link(name=ifname)
        if stale is not None:
            tgt.delete_link(stale.index)
        tgt.set_link(end.index, name=ifname, up=True)


def ensure_bridge(sock: Rtnl, name: str) -> LinkInfo:
    """Bridge ``name`` in ``sock``'s namespace, made if missing (one made
    meanwhile by another plug is taken as it is). OSError: the kernel's
    refusal; LookupError: gone as soon as made."""
    found = sock.link(name=name)
    if found is None:
        try:
            sock.add_bridge(name)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        found = sock.link(name=name)
        if found is None:
            raise LookupError(f"bridge {name} vanished as it was made")
    return found
