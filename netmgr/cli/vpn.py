"""``cloudnet vpn ...``: site-to-site IPsec VPN.

    cloudnet vpn gateway create --vpc VPC | --network NET   # on the router's public address
    cloudnet vpn gateway show|delete GW_ID
    cloudnet vpn customer-gateway create site-a --peer 192.0.2.2 \\
        --peer-cidr 172.16.1.0/24 --peer-cidr 172.16.2.0/24 --psk-file key.txt \\
        [--ike-version 1|2] [--ike-proposal aes256gcm16-prfsha384-ecp384 ...] \\
        [--esp-proposal aes256gcm16-ecp384 ...] [--ike-lifetime S] [--esp-lifetime S] \\
        [--dpd-delay S] [--dpd-timeout S] [--force-encap]
    cloudnet vpn customer-gateway list|delete
    cloudnet vpn connection create --gateway GW_ID --customer-gateway CGW_ID [--passive] --wait
    cloudnet vpn connection list|show|delete|reset

The pre-shared key is read from a file (``-``: standard input), never from
the command line (where ``ps`` would show it).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from netmgr.cli.commands import (
    Command,
    CommandFailed,
    Context,
    Group,
    Leaf,
    Subparsers,
    wait_settled,
)
from netmgr.cli.output import COLUMNS, column
from netmgr.cli.requests import UsageError


def _children(c: Any) -> str:
    return " ".join(f"{ch.name}:{ch.state}" for ch in c.status.child_sas)


COLUMNS.update({
    "VpnGateway": [("ID", column("id")), ("VPC", column("vpc_id")),
                   ("NETWORK", column("network_id")),
                   ("PUBLIC IP", column("public_ip")), ("LOCAL CIDRS", column("local_cidrs")),
                   ("STATE", column("state"))],
    "CustomerGateway": [("ID", column("id")), ("NAME", column("name")),
                        ("PEER", column("peer_address")),
                        ("PEER CIDRS", column("peer_cidrs")), ("IKE", column("ike_version")),
                        ("IKE PROPOSALS", column("ike_proposals"))],
    "VpnConnection": [("ID", column("id")), ("GATEWAY", column("vpn_gateway_id")),
                      ("CUSTOMER GATEWAY", column("customer_gateway_id")),
                      ("PASSIVE", column("passive")), ("STATE", column("state")),
                      ("IKE SA", lambda c: c.status.ike_state),
                      ("CHILD SAS", _children),
                      ("BYTES IN/OUT", lambda c: f"{c.status.bytes_in}/{c.status.bytes_out}"),
                      ("LAST ERROR", lambda c: c.status.last_error or c.error)],
})


def read_psk(path: str) -> str:
    try:
        if path == "-":
            text = sys.stdin.readline()
        else:
            with open(path) as f:
                text = f.readline()
    except OSError as e:
        raise UsageError(f"--psk-file: {e}") from None
    return text.rstrip("\r\n")


def cmd_gw_create(ctx: Context, args: argparse.Namespace) -> int:
    vpn = ctx.client.vpn
    gw = vpn.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(vpc_id=args.vpc or "", network_id=args.network or "")))
    ctx.show(wait_settled(ctx, vpn.GetVpnGateway, vpb.GetVpnGatewayRequest(id=gw.id), gw,
                          args.wait))
    return 0


def cmd_gw_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.vpn.GetVpnGateway(vpb.GetVpnGatewayRequest(id=args.id)))
    return 0


def cmd_gw_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("VpnGateway", ctx.client.list_all(
        ctx.client.vpn.ListVpnGateways, vpb.ListVpnGatewaysRequest(), "vpn_gateways", args.limit))
    return 0


def cmd_gw_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.vpn.DeleteVpnGateway(vpb.DeleteVpnGatewayRequest(id=args.id))
    ctx.deleted("VPN gateway", args.id)
    return 0


def build_customer_gateway(args: argparse.Namespace) -> vpb.CustomerGateway:
    versions = {None: vpb.IKE_VERSION_UNSPECIFIED, 1: vpb.IKE_VERSION_1, 2: vpb.IKE_VERSION_2}
    if args.ike_version not in versions:
        raise UsageError("--ike-version: 1 or 2")
    return vpb.CustomerGateway(
        name=args.name, peer_address=args.peer, peer_cidrs=args.peer_cidr or [],
        psk=read_psk(args.psk_file), ike_version=versions[args.ike_version],
        ike_proposals=args.ike_proposal or [], esp_proposals=args.esp_proposal or [],
        ike_lifetime_seconds=args.ike_lifetime or 0, esp_lifetime_seconds=args.esp_lifetime or 0,
        dpd_delay_seconds=args.dpd_delay or 0, dpd_timeout_seconds=args.dpd_timeout or 0,
        force_encapsulation=args.force_encap)


def cmd_cgw_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.vpn.CreateCustomerGateway(vpb.CreateCustomerGatewayRequest(
        customer_gateway=build_customer_gateway(args))))
    return 0


def cmd_cgw_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.vpn.GetCustomerGateway(vpb.GetCustomerGatewayRequest(id=args.id)))
    return 0


def cmd_cgw_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("CustomerGateway", ctx.client.list_all(
        ctx.client.vpn.ListCustomerGateways, vpb.ListCustomerGatewaysRequest(), "customer_gateways",
        args.limit))
    return 0


def cmd_cgw_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.vpn.DeleteCustomerGateway(vpb.DeleteCustomerGatewayRequest(id=args.id))
    ctx.deleted("customer gateway", args.id)
    return 0


def _wait_established(ctx: Context, vpn: vrpc.VpnServiceStub, conn: vpb.VpnConnection,
                      timeout: float) -> vpb.VpnConnection:
    deadline = time.monotonic() + timeout
    while conn.status.ike_state != "ESTABLISHED":
        if time.monotonic() > deadline:
            why = conn.status.ike_state or "no state yet"
            if conn.status.last_error:
                why += f": {conn.status.last_error}"
            raise CommandFailed(f"{conn.id}: tunnel not established after {timeout:.0f} s "
                                f"({why})")
        time.sleep(0.5)
        conn = vpn.GetVpnConnection(vpb.GetVpnConnectionRequest(id=conn.id))
    return conn


def cmd_conn_create(ctx: Context, args: argparse.Namespace) -> int:
    vpn = ctx.client.vpn
    conn = vpn.CreateVpnConnection(vpb.CreateVpnConnectionRequest(
        vpn_connection=vpb.VpnConnection(vpn_gateway_id=args.gateway,
                                         customer_gateway_id=args.customer_gateway,
                                         passive=args.passive)))
    conn = wait_settled(ctx, vpn.GetVpnConnection, vpb.GetVpnConnectionRequest(id=conn.id),
                        conn, args.wait or bool(args.wait_established))
    if args.wait_established:
        conn = _wait_established(ctx, vpn, conn, args.wait_established)
    ctx.show(conn)
    return 0


def cmd_conn_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("VpnConnection", ctx.client.list_all(
        ctx.client.vpn.ListVpnConnections,
        vpb.ListVpnConnectionsRequest(vpn_gateway_id=args.gateway or ""), "vpn_connections",
        args.limit))
    return 0


def cmd_conn_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.vpn.GetVpnConnection(vpb.GetVpnConnectionRequest(id=args.id)))
    return 0


def cmd_conn_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.vpn.DeleteVpnConnection(vpb.DeleteVpnConnectionRequest(id=args.id))
    ctx.deleted("VPN connection", args.id)
    return 0


def cmd_conn_reset(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.vpn.ResetVpnConnection(vpb.ResetVpnConnectionRequest(id=args.id)))
    return 0


def add_commands(group: Group, leaf: Leaf) -> None:
    vpn = group("vpn", "site-to-site IPsec VPN (strongSwan in the router)")

    def obj(name: str, help: str) -> Subparsers:
        p = vpn.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION")

    def by_id(s: Subparsers, name: str, func: Command, help: str) -> None:
        leaf(s, name, func, help).add_argument("id", metavar="ID")

    def listing(s: Subparsers, func: Command, what: str) -> argparse.ArgumentParser:
        p = leaf(s, "list", func, f"list {what}")
        p.add_argument("--limit", type=int, metavar="N", help="at most N")
        return p

    s = obj("gateway", "VPN gateways (one per router, on its public address)")
    p = leaf(s, "create", cmd_gw_create, "create a VPN gateway on a VPC's router (or an "
             "isolated network's)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--vpc", metavar="VPC_ID")
    where.add_argument("--network", metavar="NETWORK_ID", help="an isolated network")
    p.add_argument("--wait", action="store_true", help="until ACTIVE or ERROR")
    listing(s, cmd_gw_list, "VPN gateways")
    by_id(s, "show", cmd_gw_show, "show a VPN gateway")
    by_id(s, "delete", cmd_gw_delete, "delete a VPN gateway and its connections")

    s = obj("customer-gateway", "remote sites: peer address, networks, key, proposals")
    p = leaf(s, "create", cmd_cgw_create, "create a customer gateway")
    p.add_argument("name")
    p.add_argument("--peer", required=True, metavar="IP", help="the peer's public address")
    p.add_argument("--peer-cidr", action="append", metavar="CIDR", help="repeat for several")
    p.add_argument("--psk-file", required=True, metavar="FILE",
                   help="file whose first line is the pre-shared key ('-': stdin)")
    p.add_argument("--ike-version", type=int, metavar="1|2", help="default 2")
    p.add_argument("--ike-proposal", action="append", metavar="PROPOSAL",
                   help="e.g. aes256gcm16-prfsha384-ecp384 (repeat)")
    p.add_argument("--esp-proposal", action="append", metavar="PROPOSAL",
                   help="e.g. aes256gcm16-ecp384 (repeat)")
    p.add_argument("--ike-lifetime", type=int, metavar="SECONDS")
    p.add_argument("--esp-lifetime", type=int, metavar="SECONDS")
    p.add_argument("--dpd-delay", type=int, metavar="SECONDS", help="default 10")
    p.add_argument("--dpd-timeout", type=int, metavar="SECONDS", help="IKEv1")
    p.add_argument("--force-encap", action="store_true", help="always ESP in UDP 4500")
    listing(s, cmd_cgw_list, "customer gateways")
    by_id(s, "show", cmd_cgw_show, "show a customer gateway")
    by_id(s, "delete", cmd_cgw_delete, "delete a customer gateway")

    s = obj("connection", "connections between a VPN gateway and a customer gateway")
    p = leaf(s, "create", cmd_conn_create, "create a connection")
    p.add_argument("--gateway", required=True, metavar="VPN_GATEWAY_ID")
    p.add_argument("--customer-gateway", required=True, metavar="CUSTOMER_GATEWAY_ID")
    p.add_argument("--passive", action="store_true", help="wait for the peer to initiate")
    p.add_argument("--wait", action="store_true", help="until ACTIVE or ERROR")
    p.add_argument("--wait-established", type=float, metavar="SECONDS",
                   help="then until the tunnel is established")
    p = listing(s, cmd_conn_list, "connections (with SA state)")
    p.add_argument("--gateway", metavar="VPN_GATEWAY_ID", help="only this gateway's")
    by_id(s, "show", cmd_conn_show, "show a connection and its SAs")
    by_id(s, "delete", cmd_conn_delete, "delete a connection (its tunnel goes down)")
    by_id(s, "reset", cmd_conn_reset, "tear the SAs down and establish them again")
