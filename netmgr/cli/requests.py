"""``cloudnet`` CLI: parsed arguments -> API requests (pure, unit-tested).

Update requests carry an ``update_mask`` of exactly the options given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cloudnet.netmgr.v1 import netmgr_pb2
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


def build_network_create(args: argparse.Namespace) -> netmgr_pb2.CreateNetworkRequest:
    net = netmgr_pb2.Network(name=args.name, cidr=args.cidr)
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
    if getattr(args, "key_pair", None) is not None:
        port.ssh_key_pair_id = args.key_pair
        paths.append("ssh_key_pair_id")
    elif getattr(args, "no_key_pair", False):
        paths.append("ssh_key_pair_id")
    return paths



def build_port_create(args: argparse.Namespace) -> netmgr_pb2.CreatePortRequest:
    port = netmgr_pb2.Port(network_id=args.network_id)
    for field in PORT_FIELDS:
        value = getattr(args, field)
        if value is not None:
            setattr(port, field, value)
    add_port_metadata(port, args)
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
    if not paths:
        raise UsageError("port update: give at least one field to change (see --help)")
    return netmgr_pb2.UpdatePortRequest(port=port, update_mask=field_mask(paths))
