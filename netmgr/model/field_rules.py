"""Rules for single values a user types: each returns the problem, or None.

Pure and shared by the request checks in ``netmgr.model.validation``. None of them
lets a control character through (no newline may reach a router's files),
and problems quote values with ``show`` (a short prefix, repr()'d), so messages
stay on one line and short.
"""

from __future__ import annotations

import ipaddress
import re

from common.grpc_errors import quote

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TENANT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._:-]{0,64}")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")

MIN_PREFIX, MAX_PREFIX = 16, 29
MAX_DNS_SERVERS = 3
MAX_DOMAIN_SEARCH = 6
MTU_MIN, MTU_MAX = 576, 9000
DEFAULT_LEASE_SECONDS = 86400
LEASE_MIN, LEASE_MAX = 120, 31536000
MAX_FREE_TEXT = 64
FORBIDDEN_NETS = tuple(
    ipaddress.IPv4Network(n) for n in ("169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4")
)


def show(value: str) -> str:
    """Quote user input in a message: a short prefix, control characters escaped."""
    return quote(value)


def has_control_chars(value: str) -> bool:
    return not value.isprintable()


def name_problem(value: str) -> str | None:
    if not 1 <= len(value) <= 63:
        return "must be 1-63 characters"
    if not NAME_RE.fullmatch(value):
        return f"{show(value)} must start with a letter or digit and use only A-Z a-z 0-9 _ . -"
    return None


def free_text_problem(value: str) -> str | None:
    if len(value) > MAX_FREE_TEXT:
        return f"must be at most {MAX_FREE_TEXT} characters"
    if has_control_chars(value):
        return f"{show(value)} contains control characters"
    return None


def tenant_name_problem(value: str) -> str | None:
    if not 1 <= len(value) <= 63:
        return "must be 1-63 characters"
    if not TENANT_NAME_RE.fullmatch(value):
        return f"{show(value)} must start with a-z or 0-9 and use only a-z 0-9 -"
    return None


# Names a guest cannot take: router.<domain> is the router itself.
RESERVED_HOSTNAMES = frozenset({"router"})


def hostname_problem(value: str) -> str | None:
    """An RFC 1123 label: the guest's name in DNS and DHCP."""
    if not 1 <= len(value) <= 63:
        return "must be 1-63 characters"
    if not LABEL_RE.fullmatch(value):
        return f"{show(value)} is not a host name (A-Z a-z 0-9 -, no leading/trailing -)"
    if value.lower() in RESERVED_HOSTNAMES:
        return f"{show(value)} is reserved: router.<domain> is the router's own name"
    return None


def dns_name_problem(value: str) -> str | None:
    if not 1 <= len(value) <= 253:
        return "must be 1-253 characters"
    labels = value.split(".")
    if not all(len(lb) <= 63 and DNS_LABEL_RE.fullmatch(lb) for lb in labels):
        return f"{show(value)} is not a DNS name (labels of a-z 0-9 -, 1-63 characters)"
    return None


def ipv4_problem(value: str) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return f"{show(value)} is not an IPv4 address"
    return None


def unicast_ipv4_problem(value: str) -> str | None:
    if (p := ipv4_problem(value)) is not None:
        return p
    ip = ipaddress.IPv4Address(value)
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_reserved:
        return f"{value} is not a unicast address"
    return None


def mac_problem(value: str) -> str | None:
    if not MAC_RE.fullmatch(value):
        return f"{show(value)} is not a MAC address (xx:xx:xx:xx:xx:xx)"
    if int(value[:2], 16) & 1:
        return f"{value} is a multicast MAC address"
    if value == "00:00:00:00:00:00":
        return "the all-zero MAC address is not allowed"
    return None


def cidr_problem(value: str) -> str | None:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        if has_control_chars(value):
            return f"{show(value)} is not an IPv4 CIDR"
        return f"{show(value)} is not a valid IPv4 CIDR ({e})"
    if "/" not in value:
        return f"{show(value)} needs a prefix length (/{MIN_PREFIX} to /{MAX_PREFIX})"
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        return f"prefix /{net.prefixlen} is not between /{MIN_PREFIX} and /{MAX_PREFIX}"
    for bad in FORBIDDEN_NETS:
        if net.overlaps(bad):
            return f"{value} overlaps reserved range {bad}"
    return None


def gateway_problem(gateway: str, cidr: str) -> str | None:
    if (p := ipv4_problem(gateway)) is not None:
        return p
    net = ipaddress.IPv4Network(cidr)
    ip = ipaddress.IPv4Address(gateway)
    if ip not in net:
        return f"{gateway} is not inside {cidr}"
    if ip in (net.network_address, net.broadcast_address):
        return f"{gateway} is the network or broadcast address of {cidr}"
    return None


def mtu_problem(mtu: int) -> str | None:
    if mtu != 0 and not MTU_MIN <= mtu <= MTU_MAX:
        return f"{mtu} is not 0 (not sent) or {MTU_MIN}-{MTU_MAX}"
    return None


def lease_problem(lease: int) -> str | None:
    if lease != 0 and not LEASE_MIN <= lease <= LEASE_MAX:
        return f"{lease} is not 0 (default {DEFAULT_LEASE_SECONDS}) or {LEASE_MIN}-{LEASE_MAX}"
    return None


def device_id_problem(value: str) -> str | None:
    if not DEVICE_ID_RE.fullmatch(value):
        return f"{show(value)} must match [A-Za-z0-9._:-]{{0,64}}"
    return None


def requested_ip_problem(ip: str, cidr: str, gateway: str) -> str | None:
    """A requested port IP: inside the CIDR, not network/broadcast/gateway."""
    net = ipaddress.IPv4Network(cidr)
    addr = ipaddress.IPv4Address(ip)
    if addr not in net:
        return f"{ip} is not inside the network's CIDR {cidr}"
    if addr in (net.network_address, net.broadcast_address):
        return f"{ip} is the network or broadcast address of {cidr}"
    if ip == gateway:
        return f"{ip} is the network's gateway (the router)"
    return None
