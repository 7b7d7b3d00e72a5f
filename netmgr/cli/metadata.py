"""What a guest learns from its router: SSH key pairs, the port options
that feed the metadata service, and its network's DNS records.

    cloudnet keypair import mykey --public-key-file ~/.ssh/id_ed25519.pub
    cloudnet keypair list|show|delete
    cloudnet port create NET --user-data-file init.yaml --key-pair KP_ID --label role=web
    cloudnet port update PORT --user-data-file init.yaml   # '-' reads standard input
    cloudnet port update PORT --no-key-pair --clear-labels
    cloudnet port reset-password PORT   # prints the new password, once
    cloudnet dns create NETWORK NAME TYPE VALUE   # e.g. www A 10.0.0.50
    cloudnet dns list [--network NETWORK] | show ID | delete ID
"""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import dns_pb2 as dpb
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import netmgr_pb2

from netmgr.cli.commands import Context, Group, Leaf, Subparsers
from netmgr.cli.output import COLUMNS, column
from netmgr.cli.requests import UsageError, read_file_bytes

COLUMNS.update({
    "DnsRecord": [("ID", column("id")), ("NAME", column("name")), ("TYPE", column("type")),
                  ("VALUE", column("value")), ("STATE", column("state"))],
    "KeyPair": [("ID", column("id")), ("NAME", column("name")), ("TYPE", column("key_type")),
                ("FINGERPRINT", column("fingerprint"))],
})


def add_port_options(p: argparse.ArgumentParser, update: bool, dhcp: bool = True) -> None:
    """The guest metadata options; ``dhcp``: with per-port DHCP options (a
    port's, not a VM's)."""
    p.add_argument("--user-data-file", metavar="FILE",
                   help="user data for the guest (at most 32 KiB; '-': standard input)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="a label shown in the guest's metadata (repeatable)"
                   + ("; replaces all labels" if update else ""))
    p.add_argument("--key-pair", metavar="KEY_PAIR_ID",
                   help="the SSH key pair whose public key the guest gets")
    p.add_argument("--metadata-tokens", choices=("optional", "required"),
                   help="IMDSv2: whether the guest's metadata requests need a session token")
    if dhcp:
        p.add_argument("--dhcp-option", action="append", metavar="OPTION=VALUE[ VALUE...]",
                       help="a DHCP option for this port's guest only: OPTION is a name "
                       "(ntp-server, classless-static-route, ...), a number, or NUMBER:TYPE; "
                       "values separated by spaces (repeatable"
                       + ("; replaces all options)" if update else ")"))
    if update:
        p.add_argument("--clear-dhcp-options", action="store_true",
                       help="remove every DHCP option of the port")
        p.add_argument("--clear-labels", action="store_true", help="remove every label")
        p.add_argument("--no-key-pair", action="store_true", help="remove the key pair")


def cmd_keypair_import(ctx: Context, args: argparse.Namespace) -> int:
    key = read_file_bytes(args.public_key_file, "--public-key-file", 16 * 1024)
    try:
        text = key.decode().strip()
    except UnicodeDecodeError:
        raise UsageError("--public-key-file: not text") from None
    ctx.show(ctx.client.key_pairs.ImportKeyPair(kpb.ImportKeyPairRequest(
        key_pair=kpb.KeyPair(name=args.name, public_key=text))))
    return 0


def cmd_keypair_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("KeyPair", ctx.client.list_all(
        ctx.client.key_pairs.ListKeyPairs, kpb.ListKeyPairsRequest(), "key_pairs", args.limit))
    return 0


def cmd_keypair_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.key_pairs.GetKeyPair(kpb.GetKeyPairRequest(id=args.id)))
    return 0


def cmd_keypair_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.key_pairs.DeleteKeyPair(kpb.DeleteKeyPairRequest(id=args.id))
    ctx.deleted("key pair", args.id)
    return 0


def cmd_port_reset_password(ctx: Context, args: argparse.Namespace) -> int:
    reply = ctx.client.ports.ResetPortPassword(netmgr_pb2.ResetPortPasswordRequest(id=args.id))
    # Shown once: only the router's agent holds it, until the guest has fetched it.
    if ctx.json:
        ctx.show(reply)
    else:
        ctx.print(reply.password)
    return 0


def cmd_dns_create(ctx: Context, args: argparse.Namespace) -> int:
    # NETWORK or --vpc: netmgr says so (dns_record.network_id) when it is both or neither.
    ctx.show(ctx.client.dns.CreateDnsRecord(dpb.CreateDnsRecordRequest(dns_record=dpb.DnsRecord(
        network_id=args.network_id or "", vpc_id=args.vpc or "", name=args.name,
        type=args.type, value=args.value))))
    return 0


def cmd_dns_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("DnsRecord", ctx.client.list_all(
        ctx.client.dns.ListDnsRecords, dpb.ListDnsRecordsRequest(
            network_id=args.network or "", vpc_id=args.vpc or ""),
        "dns_records", args.limit))
    return 0


def cmd_dns_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.dns.GetDnsRecord(dpb.GetDnsRecordRequest(id=args.id)))
    return 0


def cmd_dns_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.dns.DeleteDnsRecord(dpb.DeleteDnsRecordRequest(id=args.id))
    ctx.deleted("DNS record", args.id)
    return 0


def add_port_commands(s: Subparsers, leaf: Leaf) -> None:
    p = leaf(s, "reset-password", cmd_port_reset_password,
             "generate a new password for the port's guest (printed once; the guest "
             "fetches it once from its router)")
    p.add_argument("id", metavar="ID")


def add_commands(group: Group, leaf: Leaf) -> None:
    s = group("keypair", "SSH public keys handed to guests by their router")
    p = leaf(s, "import", cmd_keypair_import, "import an OpenSSH public key")
    p.add_argument("name")
    p.add_argument("--public-key-file", required=True, metavar="FILE",
                   help="e.g. ~/.ssh/id_ed25519.pub ('-': standard input)")
    p = leaf(s, "list", cmd_keypair_list, "list key pairs")
    p.add_argument("--limit", type=int, metavar="N", help="at most N")
    p = leaf(s, "show", cmd_keypair_show, "show a key pair")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "delete", cmd_keypair_delete, "delete a key pair no port uses")
    p.add_argument("id", metavar="ID")

    s = group("dns", "DNS records of a network or a VPC, served by its router")
    p = leaf(s, "create", cmd_dns_create, "add a record (A, AAAA, CNAME, TXT, SRV, PTR)")
    p.add_argument("network_id", metavar="NETWORK", nargs="?",
                   help="the network's record (or give --vpc)")
    p.add_argument("--vpc", metavar="VPC", help="the VPC's record, served to every tier")
    p.add_argument("name", help="relative to the network's (VPC's) domain, or absolute inside "
                   "it; PTR: an address of the network (VPC)")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("value", help="SRV: '<priority> <weight> <port> <target>'")
    p = leaf(s, "list", cmd_dns_list, "list records")
    p.add_argument("--network", metavar="NETWORK", help="only this network's")
    p.add_argument("--vpc", metavar="VPC", help="only this VPC's own")
    p.add_argument("--limit", type=int, metavar="N", help="at most N")
    p = leaf(s, "show", cmd_dns_show, "show a record")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "delete", cmd_dns_delete, "delete a record")
    p.add_argument("id", metavar="ID")
