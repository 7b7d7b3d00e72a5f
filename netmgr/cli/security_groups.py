"""Security groups, their rules, and a port's security options.

    cloudnet sg create web --description "web servers"
    cloudnet sg list | show SG | delete SG
    cloudnet sg rule add SG --direction ingress --protocol tcp --port 80 --remote-cidr 0.0.0.0/0
    cloudnet sg rule add SG --direction ingress --protocol icmp --icmp-type 8 --remote-group SG2
    cloudnet sg rule delete RULE
    cloudnet port create NET --security-group SG --allowed-address-pair 10.0.0.200
    cloudnet port update PORT --no-port-security
"""

from __future__ import annotations

import argparse

from cloudnet.netmgr.v1 import security_group_pb2 as sgpb

from netmgr.cli.commands import Context, Group, Leaf
from netmgr.cli.output import COLUMNS, column
from netmgr.cli.requests import UsageError


def _rules(msg: sgpb.SecurityGroup) -> str:
    return str(len(msg.rules))


COLUMNS.update({
    "SecurityGroup": [("ID", column("id")), ("NAME", column("name")),
                      ("RULES", _rules), ("PORTS", column("port_count")),
                      ("DESCRIPTION", column("description"))],
    "SecurityGroupRule": [("ID", column("id")), ("DIRECTION", column("direction")),
                          ("ETHERTYPE", column("ethertype")), ("PROTOCOL", column("protocol")),
                          ("PORTS", lambda r: f"{r.port_min}-{r.port_max}" if r.port_min else ""),
                          ("REMOTE", lambda r: r.remote_cidr or r.remote_group_id or "any")],
})


def add_port_options(p: argparse.ArgumentParser, update: bool) -> None:
    p.add_argument("--security-group", action="append", metavar="SG_ID",
                   help="a security group filtering the port (repeatable; none: the "
                   "tenant's default group)" + ("; replaces the port's groups" if update else ""))
    p.add_argument("--allowed-address-pair", action="append", metavar="IP[,MAC]",
                   help="an extra address (or CIDR) the guest may send from (repeatable)"
                   + ("; replaces the port's pairs" if update else ""))
    p.add_argument("--no-port-security", action="store_true",
                   help="no port security and no security groups on the port")
    if update:
        p.add_argument("--port-security", action="store_true", help="turn port security on")
        p.add_argument("--default-group", action="store_true",
                       help="name no group (the default group filters the port)")
        p.add_argument("--clear-allowed-address-pairs", action="store_true",
                       help="remove every allowed address pair")


def cmd_sg_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.security_groups.CreateSecurityGroup(sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(name=args.name, description=args.description or ""))))
    return 0


def cmd_sg_list(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show_list("SecurityGroup", ctx.client.list_all(
        ctx.client.security_groups.ListSecurityGroups, sgpb.ListSecurityGroupsRequest(),
        "security_groups", args.limit))
    return 0


def cmd_sg_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.security_groups.GetSecurityGroup(sgpb.GetSecurityGroupRequest(
        id=args.id)))
    return 0


def cmd_sg_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.security_groups.DeleteSecurityGroup(sgpb.DeleteSecurityGroupRequest(id=args.id))
    ctx.deleted("security group", args.id)
    return 0


def build_rule(args: argparse.Namespace) -> sgpb.CreateSecurityGroupRuleRequest:
    port_min, port_max = 0, 0
    if args.port:
        first, _, last = args.port.partition("-")
        try:
            port_min, port_max = int(first), int(last or first)
        except ValueError:
            raise UsageError("--port: a port or a range (80, 8000-8080)") from None
    return sgpb.CreateSecurityGroupRuleRequest(rule=sgpb.SecurityGroupRule(
        security_group_id=args.security_group_id, direction=args.direction,
        ethertype=args.ethertype, protocol=args.protocol, port_min=port_min, port_max=port_max,
        icmp_type=args.icmp_type, icmp_code=args.icmp_code, remote_cidr=args.remote_cidr or "",
        remote_group_id=args.remote_group or "", description=args.description or ""))


def cmd_sg_rule_add(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.security_groups.CreateSecurityGroupRule(build_rule(args)))
    return 0


def cmd_sg_rule_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.security_groups.DeleteSecurityGroupRule(
        sgpb.DeleteSecurityGroupRuleRequest(id=args.id))
    ctx.deleted("security group rule", args.id)
    return 0


def add_commands(group: Group, leaf: Leaf) -> None:
    s = group("sg", "security groups: stateful allow rules on ports")
    p = leaf(s, "create", cmd_sg_create, "create a security group (with no rules)")
    p.add_argument("name")
    p.add_argument("--description")
    p = leaf(s, "list", cmd_sg_list, "list security groups (the default group among them)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N")
    p = leaf(s, "show", cmd_sg_show, "show a security group and its rules")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "delete", cmd_sg_delete, "delete a group no port and no rule uses")
    p.add_argument("id", metavar="ID")
    p = leaf(s, "rule-add", cmd_sg_rule_add, "add an allow rule to a group")
    p.add_argument("security_group_id", metavar="SG_ID")
    p.add_argument("--direction", required=True, choices=("ingress", "egress"))
    p.add_argument("--ethertype", default="ipv4", choices=("ipv4", "ipv6"))
    p.add_argument("--protocol", default="all",
                   help="tcp, udp, icmp, all (the default) or an IP protocol number")
    p.add_argument("--port", metavar="PORT[-PORT]", help="tcp/udp destination port(s)")
    p.add_argument("--icmp-type", type=int, default=-1, help="icmp type (-1: any)")
    p.add_argument("--icmp-code", type=int, default=-1, help="icmp code (-1: any)")
    p.add_argument("--remote-cidr", metavar="CIDR", help="the other end's addresses")
    p.add_argument("--remote-group", metavar="SG_ID", help="the other end: a group's members")
    p.add_argument("--description")
    p = leaf(s, "rule-delete", cmd_sg_rule_delete, "delete a rule")
    p.add_argument("id", metavar="ID")
