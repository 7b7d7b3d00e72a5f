"""What every diagnostic needs: request errors naming the field, the router's
config and interfaces, and running tools inside the router's namespace."""

from __future__ import annotations

import ipaddress
import math
import re
import subprocess

from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import diag_pb2 as pb

from common.grpc_errors import quote
from router.lib.proc import in_netns


class DiagError(Exception):
    """A request the agent refuses: INVALID_ARGUMENT naming ``field``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DiagNotFound(Exception):
    """NOT_FOUND (an unknown router)."""


class DiagBusy(Exception):
    """RESOURCE_EXHAUSTED: too many diagnostics at once (they hold agent threads)."""


class DiagUnavailable(Exception):
    """FAILED_PRECONDITION: the router is not in a state to be diagnosed."""


# One DNS label (a name's labels are checked one by one: 1-63 characters each).
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def check_ipv4(field: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise DiagError(field, f"not an IPv4 address: {quote(value)}") from None


def check_unicast_ipv4(field: str, value: str) -> str:
    """A destination a probe can send to: not multicast, the limited
    broadcast, 0.0.0.0/8 or the reserved 240/4 (the kernel refuses those or
    they reach no one). A router network's own broadcast address is checked
    against its config (``check_not_broadcast``)."""
    ip = ipaddress.IPv4Address(check_ipv4(field, value))
    if ip.is_multicast:
        raise DiagError(field, f"{ip} is a multicast address")
    if ip == ipaddress.IPv4Address("255.255.255.255") or ip.is_reserved:
        raise DiagError(field, f"{ip} is a broadcast or reserved address")
    if ip in ipaddress.IPv4Network("0.0.0.0/8"):
        raise DiagError(field, f"{ip} is not a destination (0.0.0.0/8)")
    return str(ip)


def check_not_broadcast(field: str, ip: str, cfg: apb.RouterConfig) -> str:
    """``ip`` is not the broadcast address of a network the router is on."""
    addr = ipaddress.IPv4Address(ip)
    for iface in cfg.interfaces:
        for a in iface.addresses:
            try:
                net = ipaddress.IPv4Interface(a).network
            except ValueError:
                continue
            if net.prefixlen < 31 and addr == net.broadcast_address:
                raise DiagError(field, f"{ip} is the broadcast address of {net} "
                                       f"(interface {iface.name})")
    return ip


def check_ipv4_or_cidr(field: str, value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise DiagError(field, f"not an IPv4 address or CIDR: {quote(value)}") from None
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def check_dns_name(field: str, value: str) -> str:
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if not value or len(value) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise DiagError(field, f"not a DNS name (labels of 1-63 letters, digits, '-' or '_', "
                               f"253 characters at most): {quote(value)}")
    return value


def check_mac(field: str, value: str) -> str:
    """A unicast MAC a probe may send from: not multicast or broadcast, not
    all zeros."""
    mac = value.lower().replace("-", ":")
    if not _MAC.fullmatch(mac):
        raise DiagError(field, f"not a MAC address: {quote(value)}")
    if int(mac[:2], 16) & 1:
        raise DiagError(field, f"{mac} is a multicast or broadcast MAC address")
    if mac == "00:00:00:00:00:00":
        raise DiagError(field, "the all-zero MAC address cannot send")
    return mac


def check_limit(field: str, value: float, default: float, maximum: float) -> float:
    if not math.isfinite(value):
        raise DiagError(field, f"must be a finite number (got {value})")
    if value < 0:
        raise DiagError(field, f"must not be negative (got {value:g})")
    if value > maximum:
        raise DiagError(field, f"at most {maximum:g} (got {value:g})")
    return value or default


def guest_interface(cfg: apb.RouterConfig, network_id: str, field: str) -> apb.Interface:
    for iface in cfg.interfaces:
        if iface.role == apb.INTERFACE_ROLE_GUEST and iface.network_id == network_id:
            return iface
    if not network_id:
        raise DiagError(field, "a network ID is required")
    raise DiagError(field, f"the router has no interface on network {quote(network_id)}")


def public_interface(cfg: apb.RouterConfig, field: str) -> apb.Interface:
    for iface in cfg.interfaces:
        if iface.role == apb.INTERFACE_ROLE_PUBLIC:
            return iface
    raise DiagError(field, "the router has no public interface")


def resolve_interface(cfg: apb.RouterConfig, ref: pb.InterfaceRef, field: str) -> apb.Interface:
    if ref.public and ref.network_id:
        raise DiagError(field, "name a network or the public interface, not both")
    if ref.public:
        return public_interface(cfg, f"{field}.public")
    return guest_interface(cfg, ref.network_id, f"{field}.network_id")


def guest_network(cfg: apb.RouterConfig, network_id: str, field: str) -> apb.GuestNetwork:
    for net in cfg.guest_networks:
        if net.network_id == network_id:
            return net
    if not network_id:
        raise DiagError(field, "a network ID is required")
    raise DiagError(field, f"the router has no network {quote(network_id)}")


def run_in_router(netns: str, argv: list[str], timeout: float = 15) -> str:
    """stdout of argv run in the router's namespace; raises on failure."""
    proc = subprocess.run(in_netns(netns, argv), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return proc.stdout


def object_of_comment(comment: str) -> tuple[str, str]:
    """The API object a rule belongs to, from its comment.

    ``cn:<kind>:<id>`` (or ``cn:<kind>``) comments are the contract; the
    foundation's rules are recognised by their text so that older tables map
    too."""
    if comment == "cn:fw-default-drop":
        return "firewall-default", "drop"
    if comment.startswith("cn:"):
        _, _, rest = comment.partition(":")
        kind, _, ident = rest.partition(":")
        return kind, ident
    if comment == "dropped by policy":
        return "firewall-default", "drop"
    if comment.startswith("source nat "):
        return "snat", comment[len("source nat "):]
    if comment == "guest egress":
        return "firewall-default", "egress-allow"
    return "", ""
