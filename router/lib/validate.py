"""Validators shared by the services' verify() functions.

Every value that reaches a daemon's config file passes through one of these,
so a hostname with a newline or a comma can never become a directive.
"""

from __future__ import annotations

import ipaddress
import re

from router.errors import ConfigError

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)
_IFNAME = re.compile(r"^[a-z0-9-]{1,15}$")
# Router and port ids become file and namespace names: no dots, no slashes.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def is_dns_label(value: str) -> bool:
    """RFC 1123 host label: letters, digits, inner hyphens, 1-63 chars."""
    return bool(_LABEL.fullmatch(value))


def is_domain(value: str) -> bool:
    labels = value.split(".")
    return len(value) <= 253 and all(is_dns_label(label) for label in labels)


def check_id(what: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r}: ids are 1-128 letters, digits, '_' or '-'",
            kind=what.split()[0], object_id=value,
        )


def check_ifname(what: str, value: str) -> None:
    if not _IFNAME.fullmatch(value) or value == "lo":
        raise ConfigError(f"{what}: interface name {value!r} is not [a-z0-9-]{{1,15}}")


def check_mac(what: str, value: str, kind: str = "", object_id: str = "") -> str:
    """Returns the MAC in canonical lower case."""
    if not _MAC.fullmatch(value):
        raise ConfigError(f"{what}: MAC {value!r} is malformed", kind, object_id)
    if int(value[:2], 16) & 1:
        raise ConfigError(f"{what}: MAC {value} is a multicast address", kind, object_id)
    return value.lower()


def parse_ipv4(what: str, value: str, kind: str = "", object_id: str = "") -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an IPv4 address", kind, object_id) from None


def parse_ipv4_network(
    what: str, value: str, kind: str = "", object_id: str = ""
) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an IPv4 network", kind, object_id) from None


def parse_ipv4_interface(what: str, value: str) -> ipaddress.IPv4Interface:
    if "/" not in value:
        raise ConfigError(f"{what}: address {value!r} needs a prefix length (a.b.c.d/n)")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an IPv4 address/prefix") from None


def check_mtu(what: str, mtu: int) -> None:
    if mtu and not 576 <= mtu <= 9216:
        raise ConfigError(f"{what}: MTU {mtu} is outside 576..9216")
