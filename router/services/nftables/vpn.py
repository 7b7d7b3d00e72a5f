"""The VPN's part of the router's nftables table (``inet cloudnet``).

The table is replaced whole by ``nft -f``; the VPN's rules are rendered into
it (a separate table could not undo the main table's drop policies), so a
replacement for an unrelated change keeps them, and established SAs (held by
charon or the kernel, not by nftables) never notice it. What they do:

* IKE (UDP 500/4500) and ESP from each configured peer to the local gateway
  address are accepted (input, and before the edge's default drop).
* Traffic between the local and the peer CIDRs is forwarded: outbound from
  guest interfaces, inbound only when it was decrypted (kernel ESP: a
  secpath; libipsec: it comes out of charon's TUN device).
* It is exempt from source NAT (IPv4; IPv6 is never translated).
* IPv6 selectors (a dual-stack network's /64s, the peer's IPv6 networks) get
  sets and rules of their own (``vpn_local_nets6``, ``vpn_peer_nets6``): the
  same forward and guard rules. Like IPv4, traffic from the peer's networks
  that came through the tunnel reaches the guests without a guest ingress
  rule (the tunnel is the tenant's own, authenticated link), while IPv6 from
  anywhere else still needs one.
* Outbound traffic to a peer CIDR that would leave the public interface
  unencrypted (tunnel down, no XFRM bundle) is dropped: nothing in clear.

``context(cfg, tun)`` gives the template's variables; values are verified
addresses and CIDRs (``strongswan.verify``); ``tun`` is the device
kernel-libipsec decrypts into ("" for kernel ESP: ``base.vpn_tun``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb


def _collapse(cidrs: set[str], version: int) -> list[str]:
    # Interval sets refuse overlapping elements; one set per family.
    if version == 4:
        nets4 = [ipaddress.IPv4Network(c) for c in cidrs if ":" not in c]
        return [str(n) for n in sorted(ipaddress.collapse_addresses(nets4))]
    nets6 = [ipaddress.IPv6Network(c) for c in cidrs if ":" in c]
    return [str(n) for n in sorted(ipaddress.collapse_addresses(nets6))]


def context(cfg: pb.RouterConfig, tun: str) -> dict[str, Any]:
    conns = cfg.vpn_connections
    local = {n for c in conns for n in c.local_cidrs}
    peer = {n for c in conns for n in c.peer_cidrs}
    return {
        "vpn_gateways": sorted({(c.local_address, c.peer_address) for c in conns}),
        "vpn_local_nets": _collapse(local, 4),
        "vpn_peer_nets": _collapse(peer, 4),
        "vpn_local_nets6": _collapse(local, 6),
        "vpn_peer_nets6": _collapse(peer, 6),
        "vpn_tun": tun if conns else "",
    }
