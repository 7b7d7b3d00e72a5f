"""``cloudnet`` CLI: parsed arguments -> API requests (pure, unit-tested).

Update requests carry an ``update_mask`` of exactly the options given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cloudnet.netmgr.v1 import netmgr_pb2, routing_pb2
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb
from google.protobuf import field_mask_pb2


class UsageError(Exception):
    """A usage problem found after argument parsing (exit status 2)."""


def _split_list(values: Sequence[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated values; None when the option was not given."""
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def field_mask(paths: Sequence[str]) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def parse_port_range(text: str, what: str) -> tuple[int, int]:
    """"80" -> (80, 0); "7000-7010" -> (7000, 7010). ``what`` names the option."""
    lo, sep, hi = text.partition("-")
    try:
        return int(lo), int(hi) if sep else 0
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a port or a range like 7000-7010") from None


ZONE_FIELDS = (
    ("public_cidr", "public_cidr"),
    ("public_gateway", "public_gateway"),
    ("pool_start", "public_pool_start"),
    ("pool_end", "public_pool_end"),
    ("vlan_min", "vlan_min"),
    ("vlan_max", "vlan_max"),
    ("domain_suffix", "domain_suffix"),
    ("pg_vlan_min", "private_gateway_vlan_min"),
    ("pg_vlan_max", "private_gateway_vlan_max"),
)


def build_zone_update(args: argparse.Namespace) -> netmgr_pb2.UpdateZoneRequest:
    """UpdateZoneRequest with an update_mask of exactly the given options."""
    zone = netmgr_pb2.Zone()
    paths = []
    for attr, field in ZONE_FIELDS:
        value = getattr(args, attr)
        if value is not None:
            setattr(zone, field, value)
            paths.append(field)
    dns = _split_list(args.upstream_dns)
    if dns is not None:
        zone.upstream_dns.extend(dns)
        paths.append("upstream_dns")
    if args.reserved_vlans is not None:
        zone.reserved_vlans.extend(args.reserved_vlans)
        paths.append("reserved_vlans")
    if not paths:
        raise UsageError("zone update: give at least one field to change (see --help)")
    return netmgr_pb2.UpdateZoneRequest(zone=zone, update_mask=field_mask(paths))


IPV6_MODES = {"slaac": routing_pb2.IPV6_MODE_SLAAC,
              "dhcpv6-stateless": routing_pb2.IPV6_MODE_DHCPV6_STATELESS,
              "dhcpv6-stateful": routing_pb2.IPV6_MODE_DHCPV6_STATEFUL}


def build_network_create(args: argparse.Namespace) -> netmgr_pb2.CreateNetworkRequest:
    net = netmgr_pb2.Network(name=args.name, cidr=args.cidr)
    if args.cidr == "" and not args.routed:
        raise UsageError("--cidr is required (unless --routed)")
    net.routed = bool(args.routed)
    if args.ipv6_mode:
        net.ipv6_mode = IPV6_MODES[args.ipv6_mode]
    if args.ipv6_cidr:
        net.ipv6_cidr = args.ipv6_cidr
    if args.gateway is not None:
        net.gateway = args.gateway
    if args.domain is not None:
        net.domain = args.domain
    net.dns_servers.extend(_split_list(args.dns) or [])
    net.domain_search.extend(_split_list(args.domain_search) or [])
    if args.mtu is not None:
        net.mtu = args.mtu
    if args.lease_seconds is not None:
        net.lease_seconds = args.lease_seconds
    net.redundant = args.redundant
    if getattr(args, "provider_vlan", None) is not None:
        net.shared = True
        net.provider_vlan = args.provider_vlan
        net.shared_tenant_ids.extend(args.shared_tenant or [])
    elif getattr(args, "shared_tenant", None):
        raise UsageError("--shared-tenant: a shared network needs --provider-vlan")
    return netmgr_pb2.CreateNetworkRequest(network=net)


def build_network_update(args: argparse.Namespace) -> netmgr_pb2.UpdateNetworkRequest:
    net = netmgr_pb2.Network(id=args.id)
    paths = []
    if args.name is not None:
        net.name = args.name
        paths.append("name")
    dns = _split_list(args.dns)
    if dns is not None or args.no_dns:
        if dns and args.no_dns:
            raise UsageError("network update: --dns and --no-dns exclude each other")
        net.dns_servers.extend(dns or [])
        paths.append("dns_servers")
    search = _split_list(args.domain_search)
    if search is not None or args.no_domain_search:
        if search and args.no_domain_search:
            raise UsageError(
                "network update: --domain-search and --no-domain-search exclude each other"
            )
        net.domain_search.extend(search or [])
        paths.append("domain_search")
    if args.mtu is not None:
        net.mtu = args.mtu
        paths.append("mtu")
    if args.lease_seconds is not None:
        net.lease_seconds = args.lease_seconds
        paths.append("lease_seconds")
    if args.shared_tenant or args.all_tenants:
        if args.shared_tenant and args.all_tenants:
            raise UsageError("network update: --shared-tenant and --all-tenants exclude each other")
        net.shared_tenant_ids.extend(args.shared_tenant or [])
        paths.append("shared_tenant_ids")
    if not paths:
        raise UsageError("network update: give at least one field to change (see --help)")
    return netmgr_pb2.UpdateNetworkRequest(network=net, update_mask=field_mask(paths))


PORT_FIELDS = ("name", "ip", "mac", "hostname", "device_id")
MAX_USER_DATA = 32 * 1024


def read_file_bytes(path: str, option: str, limit: int) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"{option}: {e}") from None
    if len(data) > limit:
        raise UsageError(f"{option}: more than {limit} bytes")
    return data


def parse_labels(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label: {item[:40]!r} is not KEY=VALUE")
        out[key] = value
    return out


def parse_dhcp_option(item: str) -> netmgr_pb2.DhcpOption:
    """``ntp-server=10.0.0.5 10.0.0.6``, ``42=10.0.0.5``, ``224:string=hello``."""
    key, sep, values = item.partition("=")
    if not sep or not key or not values.split():
        raise UsageError(f"--dhcp-option: {item[:40]!r} is not OPTION=VALUE[ VALUE...]")
    number, _, type_ = key.partition(":")
    option = netmgr_pb2.DhcpOption(type=type_, values=values.split())
    if number.isdigit():
        option.number = int(number)
    else:
        option.name = number
    return option


def add_port_metadata(port: netmgr_pb2.Port, args: argparse.Namespace) -> list[str]:
    """Sets the metadata options given on the command line; returns their paths."""
    paths = []
    if getattr(args, "user_data_file", None) is not None:
        port.user_data = read_file_bytes(args.user_data_file, "--user-data-file",
                                         MAX_USER_DATA)
        paths.append("user_data")
    labels = getattr(args, "label", None)
    if labels or getattr(args, "clear_labels", False):
        port.labels.update(parse_labels(labels or []))
        paths.append("labels")
    options = getattr(args, "dhcp_option", None)
    if options or getattr(args, "clear_dhcp_options", False):
        port.dhcp_options.extend(parse_dhcp_option(o) for o in options or [])
        paths.append("dhcp_options")
    if getattr(args, "metadata_tokens", None) is not None:
        port.metadata_tokens = args.metadata_tokens
        paths.append("metadata_tokens")
    if getattr(args, "key_pair", None) is not None:
        port.ssh_key_pair_id = args.key_pair
        paths.append("ssh_key_pair_id")
    elif getattr(args, "no_key_pair", False):
        paths.append("ssh_key_pair_id")
    return paths



def add_port_security(port: netmgr_pb2.Port, args: argparse.Namespace) -> list[str]:
    """Sets the security options given on the command line; returns their paths."""
    paths = []
    if getattr(args, "security_group", None) or getattr(args, "default_group", False):
        port.security_group_ids.extend(args.security_group or [])
        paths.append("security_group_ids")
    pairs = getattr(args, "allowed_address_pair", None)
    if pairs or getattr(args, "clear_allowed_address_pairs", False):
        for item in pairs or []:
            ip, _, mac = item.partition(",")
            port.allowed_address_pairs.append(sgpb.AllowedAddressPair(ip=ip, mac=mac))
        paths.append("allowed_address_pairs")
    if getattr(args, "no_port_security", False) and getattr(args, "port_security", False):
        raise UsageError("--port-security and --no-port-security contradict each other")
    if getattr(args, "no_port_security", False):
        port.port_security = False
        paths.append("port_security")
    elif getattr(args, "port_security", False):
        port.port_security = True
        paths.append("port_security")
    return paths


def build_port_create(args: argparse.Namespace) -> netmgr_pb2.CreatePortRequest:
    port = netmgr_pb2.Port(network_id=args.network_id)
    for field in PORT_FIELDS:
        value = getattr(args, field)
        if value is not None:
            setattr(port, field, value)
    add_port_metadata(port, args)
    add_port_security(port, args)
    return netmgr_pb2.CreatePortRequest(port=port)


def build_port_update(args: argparse.Namespace) -> netmgr_pb2.UpdatePortRequest:
    port = netmgr_pb2.Port(id=args.id)
    paths = []
    for field in ("name", "hostname", "device_id"):
        value = getattr(args, field)
        if value is not None:
            setattr(port, field, value)
            paths.append(field)
    paths += add_port_metadata(port, args)
    paths += add_port_security(port, args)
    if not paths:
        raise UsageError("port update: give at least one field to change (see --help)")
    return netmgr_pb2.UpdatePortRequest(port=port, update_mask=field_mask(paths))
