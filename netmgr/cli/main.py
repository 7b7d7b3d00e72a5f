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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from common.channels import POLICIES, AddressError, grpc_target
from common.tls import TlsFiles
from netmgr.cli import config as cli_config
from netmgr.cli import debug as cli_debug
from netmgr.cli import edge as cli_edge
from netmgr.cli import events as cli_events
from netmgr.cli import hosts as cli_hosts
from netmgr.cli import metadata as cli_metadata
from netmgr.cli import quota as cli_quota
from netmgr.cli import redundancy as cli_redundancy
from netmgr.cli import router_console as cli_router_console
from netmgr.cli import security_groups as cli_sg
from netmgr.cli import vm as cli_vm
from netmgr.cli import vpc as cli_vpc
from netmgr.cli import vpn as cli_vpn
from netmgr.cli.client import DEFAULT_SERVER, Client, PaginationError, format_rpc_error
from netmgr.cli.commands import (
    Command,
    CommandFailed,
    Context,
    Progress,
    Settings,
    Subparsers,
    cmd_network_create,
    cmd_network_delete,
    cmd_network_list,
    cmd_network_show,
    cmd_network_update,
    cmd_port_create,
    cmd_port_delete,
    cmd_port_list,
    cmd_port_show,
    cmd_port_update,
    cmd_router_list,
    cmd_router_restart,
    cmd_router_show,
    cmd_tenant_create,
    cmd_tenant_delete,
    cmd_tenant_list,
    cmd_tenant_show,
    cmd_token_create,
    cmd_token_delete,
    cmd_token_list,
    cmd_whoami,
    cmd_zone_show,
    cmd_zone_update,
)
from netmgr.cli.requests import (
    UsageError,
    build_network_create,
    build_network_update,
    build_port_create,
    build_port_update,
    build_zone_update,
)

__all__ = [
    "CommandFailed",
    "Progress",
    "Settings",
    "UsageError",
    "build_network_create",
    "build_network_update",
    "build_parser",
    "build_port_create",
    "build_port_update",
    "build_zone_update",
    "main",
    "resolve_settings",
]

PROG = "cloudnet"
DEFAULT_TIMEOUT = 30.0
DEFAULT_WAIT_TIMEOUT = 120.0
DEFAULT_TOKEN_FILE = "~/.config/cloudnet/token"


# ------------------------------------------------------------ settings


def resolve_settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Global options from flags, then the environment, then defaults."""
    env = dict(os.environ) if env is None else env
    conf = cli_config.load(env)
    server = args.server or env.get("CLOUDNET_SERVER") or conf.server or DEFAULT_SERVER
    tenant = args.tenant or env.get("CLOUDNET_TENANT") or None
    token = args.token or env.get("CLOUDNET_TOKEN") or None
    if not token:
        token = _read_token_file(env, conf.token_file)
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    insecure = bool(getattr(args, "insecure", False) or env.get("CLOUDNET_INSECURE") == "1"
                    or conf.insecure)
    ca_file = getattr(args, "ca_file", None) or env.get("CLOUDNET_CA_FILE") or conf.ca_file
    policy = getattr(args, "lb_policy", None) or conf.policy or "pick_first"
    if policy not in POLICIES:
        raise UsageError(f"load-balancing policy {policy[:20]!r}: one of {', '.join(POLICIES)}")
    try:
        grpc_target(server)
    except AddressError as e:
        raise UsageError(f"--server: {e}") from None
    return Settings(server, token, tenant, args.output or "table", timeout,
                    ca_file=ca_file, insecure=insecure, policy=policy,
                    cert_file=env.get("CLOUDNET_CERT_FILE") or conf.cert_file,
                    key_file=env.get("CLOUDNET_KEY_FILE") or conf.key_file)


def _read_token_file(env: dict[str, str], configured: str | None = None) -> str:
    named = env.get("CLOUDNET_TOKEN_FILE") or configured
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
        help="netmgr API address: HOST:PORT, a comma list of IP:PORT, or a DNS name with "
        f"several records (env CLOUDNET_SERVER; else the config file's; default "
        f"{DEFAULT_SERVER})",
    )
    g.add_argument(
        "--ca-file",
        metavar="FILE",
        default=d(None),
        help="the CA that vouches for netmgr (env CLOUDNET_CA_FILE; default: the config "
        "file's, else the system's roots)",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        default=d(False),
        help="plaintext gRPC (env CLOUDNET_INSECURE=1): tokens travel in clear",
    )
    g.add_argument(
        "--lb-policy",
        choices=POLICIES,
        default=d(None),
        help="with several addresses: pick_first (default) or round_robin",
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

    def group(name: str, help: str) -> Subparsers:
        p = groups.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def leaf(subs: Subparsers, name: str, func: Command, help: str) -> argparse.ArgumentParser:
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
    p.add_argument("--ttl", type=_positive_int, metavar="SECONDS",
                   help="the token expires this long from now (default: never)")
    p.add_argument("--read-only", action="store_true",
                   help="the token may only read (Get, List, Watch calls)")
    p.add_argument("--secret-file", metavar="FILE",
                   help="write the secret to this new file (mode 0600; for "
                        "CLOUDNET_TOKEN_FILE) instead of printing it")
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
    p.add_argument("--pg-vlan-min", type=_uint, metavar="N",
                   help="first VLAN private gateways are allocated from (0 and 0: none)")
    p.add_argument("--pg-vlan-max", type=_uint, metavar="N",
                   help="last VLAN private gateways are allocated from")
    p.add_argument("--reserved-vlans", nargs="*", type=_uint, metavar="N",
                   help="VLANs the fabric keeps (provider segment, control network); "
                        "replaces the list")

    # networks
    s = group("network", "manage isolated networks")
    p = leaf(s, "create", cmd_network_create, "create a network (and its router)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cidr", default="",
                   help="IPv4 CIDR, /16 to /29 (required unless --routed: from the routed pool)")
    p.add_argument("--gateway", metavar="IP", help="router address (default: first host)")
    p.add_argument("--routed", action="store_true",
                   help="no source NAT: a CIDR of the zone's routed pool, announced by BGP")
    p.add_argument("--ipv6-mode", choices=("slaac", "dhcpv6-stateless", "dhcpv6-stateful"),
                   help="dual stack: a /64 from the zone's IPv6 pool (or --ipv6-cidr)")
    p.add_argument("--ipv6-cidr", metavar="PREFIX/64", help="the network's own /64")
    p.add_argument("--domain", help="DNS domain of the guests")
    p.add_argument("--dns", action="append", metavar="IP", help="DNS server for DHCP (repeat)")
    p.add_argument("--domain-search", action="append", metavar="DOMAIN", help="(repeat)")
    p.add_argument("--mtu", type=_uint, help="MTU handed out by DHCP (0: not sent)")
    p.add_argument("--lease-seconds", type=_uint, metavar="N", help="DHCP lease time")
    p.add_argument("--provider-vlan", type=_uint, metavar="VLAN",
                   help="admin: a shared network on this provider VLAN (security groups "
                   "mandatory on its ports)")
    p.add_argument("--shared-tenant", action="append", metavar="TENANT_ID",
                   help="admin: a tenant that may use the shared network (repeatable; "
                   "none: every tenant)")
    p.add_argument("--redundant", action="store_true",
                   help="two router instances on two hosts (docs/redundant-routers.md)")
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
    p.add_argument("--shared-tenant", action="append", metavar="TENANT_ID",
                   help="admin: a tenant that may use the shared network (repeat; replaces "
                   "the list; refused while a tenant left out has ports there)")
    p.add_argument("--all-tenants", action="store_true",
                   help="admin: open the shared network to every tenant")
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
    cli_metadata.add_port_options(p, update=False)
    cli_sg.add_port_options(p, update=False)
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
    cli_metadata.add_port_options(p, update=True)
    cli_sg.add_port_options(p, update=True)
    p = leaf(s, "delete", cmd_port_delete, "delete a port")
    p.add_argument("id", metavar="ID")
    cli_metadata.add_port_commands(s, leaf)  # port reset-password

    # routers
    s = group("router", "inspect and restart virtual routers")
    p = leaf(s, "list", cmd_router_list, "list routers")
    _add_limit(p)
    p = leaf(s, "show", cmd_router_show, "show a router")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "restart", cmd_router_restart, "rebuild a router's runtime (leases are kept)")
    p.add_argument("id", metavar="ID")
    _add_wait(p, "the router is ACTIVE again")
    cli_router_console.add_console(s, leaf)  # router console (VM backend)
    cli_redundancy.add_commands(s, leaf)  # router failover | redundancy

    cli_debug.add_commands(group, leaf)  # debug capture | probe | trace | show | explain
    cli_edge.add_commands(group, leaf)  # publicip | staticnat | portforward | firewall | lb
    cli_vm.add_commands(group, leaf)  # vm create | list | show | delete | console
    cli_vpn.add_commands(group, leaf)  # vpn gateway | customer-gateway | connection
    cli_vpc.add_commands(group, leaf)  # vpc | tier | acl | route | private-gateway
    cli_metadata.add_commands(group, leaf)  # keypair import | list | show | delete
    cli_hosts.add_commands(group, leaf)  # host list
    cli_quota.add_commands(group, leaf)  # quota show | set
    cli_events.add_commands(group, leaf)  # event list [--follow]
    cli_sg.add_commands(group, leaf)  # sg create | list | show | delete | rule-add | rule-delete
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

    tls = None if settings.insecure else TlsFiles(
        ca=Path(settings.ca_file) if settings.ca_file else None)
    try:
        client = Client(settings.server, settings.token, settings.tenant,
                        timeout=settings.timeout, tls=tls, policy=settings.policy)
    except OSError as e:
        _error(err, f"--ca-file: {e.strerror or e}: {e.filename}")
        return 2
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
