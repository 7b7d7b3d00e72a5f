"""DNS records of a tenant network or VPC, served by its router's dnsmasq.

A record's name lies inside its network's (or VPC's) domain (given relative
to it, or absolute); a PTR names an address of the network (or VPC). A VPC's
records are served to every tier; all the records a router serves share one
namespace, so the store checks a record against all of them. A CNAME is alone at its
name: no other record, no port, not the router's own name. The checks of one
record are here (pure); the store checks a record against the network's
others and its ports in the write transaction.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from common.grpc_errors import InvalidArgument, Violation
from netmgr.model.core import Status, WithStatus
from netmgr.model.field_rules import show

RECORD_TYPES = ("A", "AAAA", "CNAME", "TXT", "SRV", "PTR")
MAX_RECORDS_PER_NETWORK = 256
ROUTER_NAME = "router"  # router.<domain>: the router's own (dnsmasq.conf)
DATA_SERVER = "data-server"  # data-server.<domain>: the router's metadata server
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# Quoted in dnsmasq's txt-record: no quote, backslash or control character.
TXT_RE = re.compile(r"[A-Za-z0-9 ._:/@=+,;-]{1,255}")


@dataclasses.dataclass(frozen=True, slots=True)
class DnsRecordSpec:
    network_id: str
    name: str
    type: str
    value: str
    vpc_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class DnsRecord(WithStatus):
    status: Status
    network_id: str
    # Absolute, no trailing dot; PTR: <reversed address>.in-addr.arpa.
    name: str
    type: str
    value: str
    vpc_id: str = ""  # a VPC's record (network_id is then "")


def _dns_name(value: str) -> str | None:
    """``value`` lower-cased without its trailing dot, if it is a DNS name."""
    name = value.lower().removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(x) for x in name.split(".")):
        return None
    return name


def absolute_name(name: str, domain: str) -> str | None:
    """The record name inside ``domain``: relative names are completed;
    an absolute one (a trailing dot, or ending in the domain) must be in it."""
    domain = domain.lower()
    plain = _dns_name(name)
    if plain is None:
        return None
    if name.endswith(".") or plain == domain or plain.endswith("." + domain):
        return plain if plain == domain or plain.endswith("." + domain) else None
    full = f"{plain}.{domain}"
    return full if len(full) <= 253 else None


def check_record(spec: DnsRecordSpec, domain: str, cidr: str,
                 prefix: str = "dns_record") -> tuple[str, str, str]:
    """(absolute name, type, value) of a record of a network with ``domain``
    and ``cidr``, every problem naming its field."""
    v: list[Violation] = []
    kind = spec.type.upper()
    if kind not in RECORD_TYPES:
        raise InvalidArgument.one(f"{prefix}.type",
                                  f"{show(spec.type)}: one of {', '.join(RECORD_TYPES)}")
    name = ""
    if kind == "PTR":
        try:
            ip = ipaddress.IPv4Address(spec.name.removesuffix(".in-addr.arpa"))
            if ip not in ipaddress.IPv4Network(cidr):
                v.append(Violation(f"{prefix}.name", f"{ip} is not an address of {cidr}"))
            name = ip.reverse_pointer
        except ValueError:
            v.append(Violation(f"{prefix}.name", f"{show(spec.name)}: a PTR names an IPv4 "
                                                 "address of the network"))
    elif not domain:
        v.append(Violation(f"{prefix}.network_id", "the network has no DNS domain"))
    else:
        full = absolute_name(spec.name, domain)
        if full is None:
            v.append(Violation(f"{prefix}.name", f"{show(spec.name)}: not a DNS name inside "
                                                 f"{domain}"))
        else:
            name = full
            if name in (f"{ROUTER_NAME}.{domain.lower()}", f"{DATA_SERVER}.{domain.lower()}"):
                v.append(Violation(f"{prefix}.name", f"{name} is the router's own name"))
            if kind == "CNAME" and name == domain.lower():
                v.append(Violation(f"{prefix}.name", "a CNAME cannot be at the domain itself"))
    value, problem = _value(kind, spec.value, domain)
    if problem:
        v.append(Violation(f"{prefix}.value", problem))
    if v:
        raise InvalidArgument(v)
    return name, kind, value


def _value(kind: str, value: str, domain: str) -> tuple[str, str | None]:
    if kind == "A":
        try:
            return str(ipaddress.IPv4Address(value)), None
        except ValueError:
            return "", f"{show(value)}: an A record holds an IPv4 address"
    if kind == "AAAA":
        try:
            return str(ipaddress.IPv6Address(value)), None
        except ValueError:
            return "", f"{show(value)}: an AAAA record holds an IPv6 address"
    if kind == "TXT":
        if not TXT_RE.fullmatch(value):
            return "", f"{show(value)}: 1-255 of A-Z a-z 0-9, space and . _ : / @ = + , ; -"
        return value, None
    if kind == "SRV":
        parts = value.split()
        if len(parts) != 4 or not all(p.isdigit() and int(p) <= 65535 for p in parts[:3]):
            return "", f"{show(value)}: '<priority> <weight> <port> <target>', numbers 0-65535"
        target = _target(parts[3], domain)
        if target is None:
            return "", f"{show(parts[3])}: the target is not a DNS name"
        return " ".join([*(str(int(p)) for p in parts[:3]), target]), None
    target = _target(value, domain)  # CNAME, PTR
    if target is None:
        return "", f"{show(value)}: not a DNS name"
    return target, None


def _target(value: str, domain: str) -> str | None:
    """A target name: absolute as given, or completed with the domain."""
    plain = _dns_name(value)
    if plain is None:
        return None
    if value.endswith(".") or not domain or plain.endswith("." + domain.lower()) \
            or plain == domain.lower():
        return plain
    return f"{plain}.{domain.lower()}"
