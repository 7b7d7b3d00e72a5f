"""IPv6 and routed networks in a router's config: its IPv6 uplink (an EUI-64
address of its public MAC in the provider's /64, the edge as default route)
and BGP (the zone's ASN and peers, the router's routed prefixes).

BGP is configured only on a router that holds routed prefixes (a routed
IPv4 network, an IPv6 /64) in a zone with an ASN and peers: announcing
nothing needs no session. Likewise the IPv6 uplink, and the sessions to IPv6
peers over it, only on a router with an IPv6 /64.
"""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import routing_pb2 as rpb

from netmgr.model.core import RouterSnapshot
from netmgr.model.ipv6_rules import eui64


def routed_prefixes(snapshot: RouterSnapshot) -> list[str]:
    """What the router announces: routed IPv4 CIDRs and IPv6 /64s, sorted."""
    out = [n.cidr for n in snapshot.networks if n.routed]
    out += [n.ipv6_cidr for n in snapshot.networks if n.ipv6_cidr]
    return sorted(out)


def add_routing(config: pb.RouterConfig, snapshot: RouterSnapshot, public_ip: str) -> None:
    zone, router = snapshot.zone, snapshot.router
    if not public_ip:
        return
    # The uplink only for a router with IPv6 of its own to route: one without
    # keeps IPv6 off on its links (see router/services/interfaces.py).
    uplink6 = bool(zone.public_cidr6 and zone.public_gateway6
                   and any(n.ipv6_cidr for n in snapshot.networks))
    if uplink6:
        config.ipv6_uplink.CopyFrom(rpb.Ipv6Uplink(
            address=f"{eui64(router.public_mac, zone.public_cidr6)}/64",
            gateway=zone.public_gateway6))
    prefixes = routed_prefixes(snapshot)
    if prefixes and zone.bgp_asn and zone.bgp_peers:
        # IPv6 peers are sent IPv6 prefixes only, over the uplink.
        config.bgp.CopyFrom(rpb.Bgp(
            asn=zone.bgp_asn, router_id=public_ip, prefixes=prefixes,
            neighbors=[rpb.BgpNeighbor(address=p.address, asn=p.asn) for p in zone.bgp_peers
                       if p.address.count(":") == 0 or uplink6]))
