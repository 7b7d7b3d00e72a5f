"""``cloudnet``: the command-line client of the cloudnet network manager.

Examples::

    cloudnet --token $ADMIN tenant create acme
    cloudnet --token $ADMIN token create t-1234 --name ci
    export CLOUDNET_TOKEN=<secret>
    cloudnet network create web --cidr 10.1.0.0/24 --wait
    cloudnet port create <network id> --hostname vm1 --wait
    cloudnet -o json port list --network <network id>

Exit status: 0 on success, 1 when the API (or the connection to it) fails,
2 on usage errors.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2
from google.protobuf import field_mask_pb2

from netmgr.cli_client import (
    DEFAULT_SERVER,
    Client,
    PaginationError,
    WaitError,
    enum_label,
    format_rpc_error,
)
from netmgr.cli_format import format_detail, format_list, to_json

PROG = "cloudnet"
DEFAULT_TIMEOUT = 30.0
DEFAULT_WAIT_TIMEOUT = 120.0
DEFAULT_TOKEN_FILE = "~/.config/cloudnet/token"


class UsageError(Exception):
    """A usage problem found after argument parsing (exit status 2)."""


class CommandFailed(Exception):
    """A command reached the API but the outcome is a failure (exit status 1)."""


# ------------------------------------------------------------ settings


@dataclass
class Settings:
    server: str
    token: str | None
    tenant: str | None
    output: str
    timeout: float


def resolve_settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Global options from flags, then the environment, then defaults."""
    env = dict(os.environ) if env is None else env
    server = args.server or env.get("CLOUDNET_SERVER") or DEFAULT_SERVER
    tenant = args.tenant or env.get("CLOUDNET_TENANT") or None
    token = args.token or env.get("CLOUDNET_TOKEN") or None
    if not token:
        token = _read_token_file(env)
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    return Settings(server, token, tenant, args.output or "table", timeout)


def _read_token_file(env: dict[str, str]) -> str:
    named = env.get("CLOUDNET_TOKEN_FILE")
    path = Path(named or DEFAULT_TOKEN_FILE).expanduser()
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if named:
            raise UsageError(f"token file {path} (CLOUDNET_TOKEN_FILE) does not exist") from None
        raise UsageError(
            f"no API token: pass --token, set CLOUDNET_TOKEN or CLOUDNET_TOKEN_FILE, or write it "
            f"to {DEFAULT_TOKEN_FILE}"
        ) from None
    except OSError as e:
        raise UsageError(f"cannot read token file {path}: {e.strerror or e}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


# ------------------------------------------------------ argument types


def _uint(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid non-negative integer: {text!r}") from None
    if value < 0 or value > 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _uint(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _split_list(values: Sequence[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated values; None when the option was not given."""
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


# ------------------------------------------------- request building


def _mask(paths: Sequence[str]) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


ZONE_FIELDS = (
    ("public_cidr", "public_cidr"),
    ("public_gateway", "public_gateway"),
    ("pool_start", "public_pool_start"),
    ("pool_end", "public_pool_end"),
    ("vlan_min", "vlan_min"),
    ("vlan_max", "vlan_max"),
    ("domain_suffix", "domain_suffix"),
)


def build_zone_update(args: argparse.Namespace) -> Any:
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
    if not paths:
        raise UsageError("zone update: give at least one field to change (see --help)")
    return netmgr_pb2.UpdateZoneRequest(zone=zone, update_mask=_mask(paths))


def build_network_create(args: argparse.Namespace) -> Any:
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
    return netmgr_pb2.CreateNetworkRequest(network=net)


def build_network_update(args: argparse.Namespace) -> Any:
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
    return netmgr_pb2.UpdateNetworkRequest(network=net, update_mask=_mask(paths))


PORT_FIELDS = ("name", "ip", "mac", "hostname", "device_id")


def build_port_create(args: argparse.Namespace) -> Any:
    port = netmgr_pb2.Port(network_id=args.network_id)
    for field in PORT_FIELDS:
        value = getattr(args, field)
        if value is not None:
            setattr(port, field, value)
    return netmgr_pb2.CreatePortRequest(port=port)


def build_port_update(args: argparse.Namespace) -> Any:
    port = netmgr_pb2.Port(id=args.id)
    paths = []
    for field in ("name", "hostname", "device_id"):
        value = getattr(args, field)
        if value is not None:
            setattr(port, field, value)
            paths.append(field)
    if not paths:
        raise UsageError("port update: give at least one field to change (see --help)")
    return netmgr_pb2.UpdatePortRequest(port=port, update_mask=_mask(paths))


# ------------------------------------------------------------- output


class Progress:
    """A one-line spinner on a TTY stream; silent otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self._spin = itertools.cycle("|/-\\")
        self._width = 0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{next(self._spin)} {text}"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


@dataclass
class Context:
    client: Client
    settings: Settings
    out: TextIO
    err: TextIO

    @property
    def json(self) -> bool:
        return self.settings.output == "json"

    def show(self, msg: Any, extra: Sequence[tuple[str, str]] = ()) -> None:
        if self.json:
            self.print(to_json(msg))
        else:
            self.print(format_detail(msg, extra))

    def show_list(self, kind: str, items: list[Any]) -> None:
        self.print(to_json(items) if self.json else format_list(kind, items))

    def deleted(self, kind: str, obj_id: str) -> None:
        if self.json:
            self.print(to_json({"id": obj_id, "deleted": True}))
        else:
            self.print(f"Deleted {kind} {obj_id}")

    def print(self, text: str) -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(text + "\n")


def _router_progress(progress: Progress, what: str) -> Callable[[Any, float], None]:
    def on_poll(r: Any, elapsed: float) -> None:
        progress.update(
            f"waiting for {what}: {enum_label(netmgr_pb2.RouterState, r.state)}, generation "
            f"{r.applied_generation}/{r.desired_generation} ({elapsed:.0f}s)"
        )

    return on_poll


def _port_progress(progress: Progress, what: str) -> Callable[[Any, float], None]:
    def on_poll(p: Any, elapsed: float) -> None:
        progress.update(
            f"waiting for {what}: {enum_label(netmgr_pb2.ObjectState, p.state)} ({elapsed:.0f}s)"
        )

    return on_poll


def _wait(ctx: Context, fn: Callable[[Progress], Any]) -> Any:
    progress = Progress(ctx.err)
    try:
        return fn(progress)
    except WaitError as e:
        progress.done()
        if e.last is not None:
            ctx.show(e.last)
        raise CommandFailed(str(e)) from None
    finally:
        progress.done()


# ----------------------------------------------------------- commands


def cmd_tenant_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.tenants.CreateTenant(netmgr_pb2.CreateTenantRequest(name=args.name)))
    return 0


def cmd_tenant_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.tenants.ListTenants, netmgr_pb2.ListTenantsRequest(), "tenants", args.limit
    )
    ctx.show_list("Tenant", items)
    return 0


def cmd_tenant_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.tenants.GetTenant(netmgr_pb2.GetTenantRequest(id=args.id)))
    return 0


def cmd_tenant_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.tenants.DeleteTenant(netmgr_pb2.DeleteTenantRequest(id=args.id))
    ctx.deleted("tenant", args.id)
    return 0


def cmd_token_create(ctx: Context, args: argparse.Namespace) -> int:
    resp = ctx.client.tenants.CreateToken(
        netmgr_pb2.CreateTokenRequest(tenant_id=args.tenant_id, name=args.name or "")
    )
    if ctx.json:
        ctx.print(to_json(resp))
    else:
        ctx.print(format_detail(resp.token, extra=[("secret", resp.secret)]))
    ctx.note("Save the secret now: it is not shown again.")
    return 0


def cmd_token_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.tenants.ListTokens,
        netmgr_pb2.ListTokensRequest(tenant_id=args.tenant_id),
        "tokens",
        args.limit,
    )
    ctx.show_list("Token", items)
    return 0


def cmd_token_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.tenants.DeleteToken(netmgr_pb2.DeleteTokenRequest(id=args.id))
    ctx.deleted("token", args.id)
    return 0


def cmd_whoami(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.tenants.WhoAmI(netmgr_pb2.WhoAmIRequest()))
    return 0


def cmd_zone_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.zones.GetZone(netmgr_pb2.GetZoneRequest()))
    return 0


def cmd_zone_update(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.zones.UpdateZone(build_zone_update(args)))
    return 0


def cmd_network_create(ctx: Context, args: argparse.Namespace) -> int:
    net = ctx.client.networks.CreateNetwork(build_network_create(args))
    if args.wait:
        _wait(
            ctx,
            lambda p: ctx.client.wait_network_router(
                net.id, args.wait_timeout, on_poll=_router_progress(p, f"router of {net.id}")
            ),
        )
        net = ctx.client.networks.GetNetwork(netmgr_pb2.GetNetworkRequest(id=net.id))
    ctx.show(net)
    return 0


def cmd_network_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.networks.ListNetworks, netmgr_pb2.ListNetworksRequest(), "networks", args.limit
    )
    ctx.show_list("Network", items)
    return 0


def cmd_network_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.networks.GetNetwork(netmgr_pb2.GetNetworkRequest(id=args.id)))
    return 0


def cmd_network_update(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.networks.UpdateNetwork(build_network_update(args)))
    return 0


def cmd_network_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.networks.DeleteNetwork(netmgr_pb2.DeleteNetworkRequest(id=args.id, force=args.force))
    ctx.deleted("network", args.id)
    return 0


def cmd_port_create(ctx: Context, args: argparse.Namespace) -> int:
    port = ctx.client.ports.CreatePort(build_port_create(args))
    if args.wait:
        port = _wait(
            ctx,
            lambda p: ctx.client.wait_port(
                port.id, args.wait_timeout, on_poll=_port_progress(p, f"port {port.id}")
            ),
        )
    ctx.show(port)
    if port.state == netmgr_pb2.OBJECT_STATE_ERROR and args.wait:
        raise CommandFailed(f"port {port.id} is in state ERROR: {port.error or 'no reason given'}")
    return 0


def cmd_port_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.ports.ListPorts,
        netmgr_pb2.ListPortsRequest(network_id=args.network or ""),
        "ports",
        args.limit,
    )
    ctx.show_list("Port", items)
    return 0


def cmd_port_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.ports.GetPort(netmgr_pb2.GetPortRequest(id=args.id)))
    return 0


def cmd_port_update(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.ports.UpdatePort(build_port_update(args)))
    return 0


def cmd_port_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.ports.DeletePort(netmgr_pb2.DeletePortRequest(id=args.id))
    ctx.deleted("port", args.id)
    return 0


def cmd_router_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.routers.ListRouters, netmgr_pb2.ListRoutersRequest(), "routers", args.limit
    )
    ctx.show_list("Router", items)
    return 0


def cmd_router_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.routers.GetRouter(netmgr_pb2.GetRouterRequest(id=args.id)))
    return 0


def cmd_router_restart(ctx: Context, args: argparse.Namespace) -> int:
    router = ctx.client.routers.RestartRouter(netmgr_pb2.RestartRouterRequest(id=args.id))
    if args.wait:
        router = _wait(
            ctx,
            lambda p: ctx.client.wait_router(
                args.id,
                args.wait_timeout,
                on_poll=_router_progress(p, f"router {args.id}"),
                min_generation=router.desired_generation,
            ),
        )
    ctx.show(router)
    return 0


# ------------------------------------------------------------- parser


def _add_globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options; on sub-commands they default to SUPPRESS so that
    ``cloudnet network list -o json`` and ``cloudnet -o json network list``
    both work without the sub-command overwriting the top-level value."""

    def d(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    g = parser.add_argument_group("global options")
    g.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=d(None),
        help=f"netmgr API address (env CLOUDNET_SERVER; default {DEFAULT_SERVER})",
    )
    g.add_argument(
        "--token",
        default=d(None),
        help="API token (env CLOUDNET_TOKEN, else the file named by CLOUDNET_TOKEN_FILE, "
        f"else {DEFAULT_TOKEN_FILE})",
    )
    g.add_argument(
        "--tenant",
        metavar="TENANT_ID",
        default=d(None),
        help="act on this tenant's objects with the admin token (env CLOUDNET_TENANT)",
    )
    g.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=d("table"),
        help="output format (default table)",
    )
    g.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=d(None),
        help=f"per-call timeout (default {DEFAULT_TIMEOUT:g})",
    )


def _add_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=_positive_int, help="show at most this many")


def _add_wait(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"wait until {what}")
    p.add_argument(
        "--wait-timeout",
        type=_positive_float,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up waiting after this long (default {DEFAULT_WAIT_TIMEOUT:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line client of the cloudnet network manager.",
        epilog="Exit status: 0 success, 1 API or connection error, 2 usage error.",
    )
    _add_globals(parser, top=True)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def group(name: str, help: str) -> Any:
        p = groups.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def leaf(subs: Any, name: str, func: Callable[..., int], help: str) -> Any:
        p = subs.add_parser(name, help=help, description=help)
        _add_globals(p, top=False)
        p.set_defaults(func=func)
        return p

    # tenants
    s = group("tenant", "manage tenants (admin)")
    p = leaf(s, "create", cmd_tenant_create, "create a tenant")
    p.add_argument("name", metavar="NAME")
    p = leaf(s, "list", cmd_tenant_list, "list tenants")
    _add_limit(p)
    p = leaf(s, "show", cmd_tenant_show, "show a tenant")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "delete", cmd_tenant_delete, "delete a tenant (it must own no networks)")
    p.add_argument("id", metavar="ID")

    # tokens
    s = group("token", "manage API tokens of a tenant (admin)")
    p = leaf(s, "create", cmd_token_create, "create a token; prints its secret once")
    p.add_argument("tenant_id", metavar="TENANT_ID")
    p.add_argument("--name", help="a label for the token")
    p = leaf(s, "list", cmd_token_list, "list a tenant's tokens")
    p.add_argument("tenant_id", metavar="TENANT_ID")
    _add_limit(p)
    p = leaf(s, "delete", cmd_token_delete, "revoke a token")
    p.add_argument("id", metavar="ID")

    # whoami
    p = groups.add_parser("whoami", help="show who the token belongs to")
    _add_globals(p, top=False)
    p.set_defaults(func=cmd_whoami, action=None)

    # zone
    s = group("zone", "show or change the zone (public pool, VLANs, upstream DNS)")
    leaf(s, "show", cmd_zone_show, "show the zone")
    p = leaf(s, "update", cmd_zone_update, "change the zone (admin); only given fields change")
    p.add_argument("--public-cidr", metavar="CIDR")
    p.add_argument("--public-gateway", metavar="IP")
    p.add_argument("--pool-start", metavar="IP", help="first address of the public pool")
    p.add_argument("--pool-end", metavar="IP", help="last address of the public pool")
    p.add_argument("--vlan-min", type=_uint, metavar="N")
    p.add_argument("--vlan-max", type=_uint, metavar="N")
    p.add_argument(
        "--upstream-dns",
        nargs="*",
        action="extend",
        metavar="IP",
        help="resolvers the routers forward to (replaces the list; none clears it)",
    )
    p.add_argument("--domain-suffix", metavar="SUFFIX")

    # networks
    s = group("network", "manage isolated networks")
    p = leaf(s, "create", cmd_network_create, "create a network (and its router)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cidr", required=True, help="IPv4 CIDR, /16 to /29")
    p.add_argument("--gateway", metavar="IP", help="router address (default: first host)")
    p.add_argument("--domain", help="DNS domain of the guests")
    p.add_argument("--dns", action="append", metavar="IP", help="DNS server for DHCP (repeat)")
    p.add_argument("--domain-search", action="append", metavar="DOMAIN", help="(repeat)")
    p.add_argument("--mtu", type=_uint, help="MTU handed out by DHCP (0: not sent)")
    p.add_argument("--lease-seconds", type=_uint, metavar="N", help="DHCP lease time")
    _add_wait(p, "the network's router is ACTIVE")
    p = leaf(s, "list", cmd_network_list, "list networks")
    _add_limit(p)
    p = leaf(s, "show", cmd_network_show, "show a network")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "update", cmd_network_update, "change a network; only given fields change")
    p.add_argument("id", metavar="ID")
    p.add_argument("--name")
    p.add_argument("--dns", action="append", metavar="IP", help="replaces the list (repeat)")
    p.add_argument("--no-dns", action="store_true", help="clear the DNS servers")
    p.add_argument("--domain-search", action="append", metavar="DOMAIN", help="(repeat)")
    p.add_argument("--no-domain-search", action="store_true", help="clear the search list")
    p.add_argument("--mtu", type=_uint)
    p.add_argument("--lease-seconds", type=_uint, metavar="N")
    p = leaf(s, "delete", cmd_network_delete, "delete a network")
    p.add_argument("id", metavar="ID")
    p.add_argument("--force", action="store_true", help="delete its ports with it")

    # ports
    s = group("port", "manage ports (guest NICs)")
    p = leaf(s, "create", cmd_port_create, "create a port on a network")
    p.add_argument("network_id", metavar="NETWORK_ID")
    p.add_argument("--name")
    p.add_argument("--ip", help="fixed IP (default: allocated)")
    p.add_argument("--mac", help="fixed MAC (default: allocated)")
    p.add_argument("--hostname", help="DNS label of the guest")
    p.add_argument("--device-id", help="owner reference, e.g. a VM ID")
    _add_wait(p, "the port is ACTIVE or ERROR")
    p = leaf(s, "list", cmd_port_list, "list ports")
    p.add_argument("--network", metavar="NETWORK_ID", help="only this network's ports")
    _add_limit(p)
    p = leaf(s, "show", cmd_port_show, "show a port")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "update", cmd_port_update, "change a port; only given fields change")
    p.add_argument("id", metavar="ID")
    p.add_argument("--name")
    p.add_argument("--hostname")
    p.add_argument("--device-id")
    p = leaf(s, "delete", cmd_port_delete, "delete a port")
    p.add_argument("id", metavar="ID")

    # routers
    s = group("router", "inspect and restart virtual routers")
    p = leaf(s, "list", cmd_router_list, "list routers")
    _add_limit(p)
    p = leaf(s, "show", cmd_router_show, "show a router")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "restart", cmd_router_restart, "rebuild a router's runtime (leases are kept)")
    p.add_argument("id", metavar="ID")
    _add_wait(p, "the router is ACTIVE again")
    return parser


# --------------------------------------------------------------- main


def _error(stream: TextIO, message: str) -> None:
    stream.write(f"{PROG}: error: {' '.join(message.split())}\n")
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (2) and --help (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)

    try:
        settings = resolve_settings(args)
    except UsageError as e:
        _error(err, str(e))
        return 2

    client = Client(settings.server, settings.token, settings.tenant, timeout=settings.timeout)
    ctx = Context(client, settings, out, err)
    try:
        rc: int = args.func(ctx, args)
        out.flush()
        return rc
    except grpc.RpcError as e:
        _error(err, format_rpc_error(e, settings.server))
        return 1
    except UsageError as e:
        _error(err, str(e))
        return 2
    except (CommandFailed, PaginationError) as e:
        _error(err, str(e))
        return 1
    except KeyboardInterrupt:
        err.write("\n")
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped to head): not an error worth a traceback
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        except (OSError, ValueError):
            pass
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
