"""Rules for the values of IPv6, routed networks and BGP: each returns the
problem, or None (like ``netmgr.model.field_rules``, which they complement).

A value of the other family gets its own message ("an IPv4 CIDR where an IPv6
one is expected"), and so do link-local and multicast addresses where a
unicast one is needed: guests and peers must be reachable by them.
"""

from __future__ import annotations

import ipaddress

from netmgr.model.field_rules import FORBIDDEN_NETS, has_control_chars, show

IPV6_PREFIX = 64  # every network's IPv6 prefix: SLAAC needs exactly /64
IPV6_POOL_MIN, IPV6_POOL_MAX = 20, 63
ROUTED_POOL_MIN, ROUTED_POOL_MAX = 8, 29
ROUTED_DEFAULT_PREFIX = 24  # a routed network's CIDR when none is given
ASN_MIN, ASN_MAX = 1, 4294967294
MAX_BGP_PEERS = 8
_LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")
_MULTICAST6 = ipaddress.IPv6Network("ff00::/8")
_SPECIAL6 = (ipaddress.IPv6Network("::/8"), ipaddress.IPv6Network("::ffff:0:0/96"))


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    """The network ``value`` names, or why it names none."""
    if has_control_chars(value) or "/" not in value:
        return f"{show(value)} is not a CIDR (address/prefix length)"
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        if "host bits" in str(e):
            return f"{show(value)} has host bits set"
        return f"{show(value)} is not a CIDR"


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    if has_control_chars(value):
        return f"{show(value)} is not an IP address"
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return f"{show(value)} is not an IP address"


def ipv6_net_kind_problem(net: ipaddress.IPv6Network, value: str) -> str | None:
    """Link-local, multicast and the special ranges never name a guest network."""
    if net.overlaps(_LINK_LOCAL6):
        return f"{show(value)} is link-local (fe80::/10); a routable prefix is needed"
    if net.overlaps(_MULTICAST6):
        return f"{show(value)} is multicast (ff00::/8); a unicast prefix is needed"
    if any(net.overlaps(s) for s in _SPECIAL6):
        return f"{show(value)} is in a reserved range (::/8, IPv4-mapped)"
    return None


def ipv6_cidr_problem(value: str, prefix_min: int = IPV6_PREFIX,
                      prefix_max: int = IPV6_PREFIX) -> str | None:
    """An IPv6 network of a unicast range with a prefix in [min, max]."""
    net = _network(value)
    if isinstance(net, str):
        return net
    if net.version != 6:
        return f"{show(value)} is an IPv4 CIDR; an IPv6 one is expected"
    if not prefix_min <= net.prefixlen <= prefix_max:
        want = (f"/{prefix_min}" if prefix_min == prefix_max
                else f"/{prefix_min} to /{prefix_max}")
        return f"prefix /{net.prefixlen} of {show(value)} is not {want}"
    return ipv6_net_kind_problem(net, value)


def ipv6_pool_problem(value: str) -> str | None:
    return ipv6_cidr_problem(value, IPV6_POOL_MIN, IPV6_POOL_MAX)


def routed_pool_problem(value: str) -> str | None:
    net = _network(value)
    if isinstance(net, str):
        return net
    if net.version != 4:
        return f"{show(value)} is an IPv6 CIDR; an IPv4 one is expected"
    if not ROUTED_POOL_MIN <= net.prefixlen <= ROUTED_POOL_MAX:
        return f"prefix /{net.prefixlen} is not between /{ROUTED_POOL_MIN} and /{ROUTED_POOL_MAX}"
    for bad in FORBIDDEN_NETS:
        if net.overlaps(bad):
            return f"{value} overlaps reserved range {bad}"
    return None


def unicast_ipv6_problem(value: str) -> str | None:
    addr = _address(value)
    if isinstance(addr, str):
        return addr
    if addr.version != 6:
        return f"{show(value)} is an IPv4 address; an IPv6 one is expected"
    return unicast_ip_problem(value)


def unicast_ip_problem(value: str) -> str | None:
    """A unicast address of either family a peer or a guest can be reached at."""
    addr = _address(value)
    if isinstance(addr, str):
        return addr
    if addr.is_link_local:
        return f"{value} is link-local; a routable unicast address is needed"
    if addr.is_multicast:
        return f"{value} is multicast; a unicast address is needed"
    if addr.is_unspecified or addr.is_loopback or addr.is_reserved:
        return f"{value} is not a unicast address"
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return f"{value} is an IPv4-mapped address; write the IPv4 address"
    return None


def asn_problem(asn: int) -> str | None:
    if not ASN_MIN <= asn <= ASN_MAX:
        return f"{asn} is not an ASN ({ASN_MIN}-{ASN_MAX})"
    return None


def cidr_any_family_problem(value: str, *, allow_ipv6: bool = True) -> str | None:
    """A source or destination CIDR of a rule: IPv4, or IPv6 where allowed."""
    net = _network(value)
    if isinstance(net, str):
        return net
    if net.version == 6 and not allow_ipv6:
        return f"{show(value)} is an IPv6 CIDR; this rule matches IPv4 only"
    if net.version == 6 and net.prefixlen and net.overlaps(_MULTICAST6):
        return f"{show(value)} is multicast (ff00::/8)"
    return None


def same_family(a: str, b: str) -> bool:
    """Both addresses or networks (valid ones) are of one family."""
    return ipaddress.ip_network(a, strict=False).version == ipaddress.ip_network(
        b, strict=False).version


def eui64(mac: str, cidr: str) -> str:
    """The SLAAC address (modified EUI-64) of ``mac`` in the /64 ``cidr``."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    iid = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    net = ipaddress.IPv6Network(cidr)
    return str(net.network_address + int.from_bytes(bytes(iid), "big"))


def ipv6_gateway(cidr: str) -> str:
    """The router's address on a network's /64: the first after the prefix."""
    return str(ipaddress.IPv6Network(cidr).network_address + 1)
