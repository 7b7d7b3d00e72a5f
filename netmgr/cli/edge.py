"""``cloudnet publicip|staticnat|portforward|firewall|lb ...``: the edge services.

    cloudnet publicip allocate --network NET
    cloudnet portforward create --public-ip IP_ID --protocol tcp --public-port 80 \\
        --port PORT_ID --private-port 8080 [--source 192.0.2.0/24] --wait
    cloudnet portforward create ... --public-port 7000-7010 --private-port 9000-9010
    cloudnet staticnat create --public-ip IP_ID --port PORT_ID
    cloudnet firewall create ingress --public-ip IP_ID --protocol tcp --ports 22 --cidr 0/0
    cloudnet firewall create egress --network NET --protocol icmp --icmp-type 8
    cloudnet firewall egress-policy NET deny
    cloudnet lb create --public-ip IP_ID --port 80 --protocol http --private-port 8080 \\
        --member PORT_ID[:WEIGHT[:PORT]] --algorithm leastconn --sticky cookie \\
        --check http --check-path /health --check-interval 1000
    cloudnet lb update LB_ID --member ... (replaces settings and members)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cloudnet.netmgr.v1 import edge_pb2 as epb
from google.protobuf.message import Message

from netmgr.cli import edge_update
from netmgr.cli.commands import Command, Context, Group, Leaf, Subparsers, wait_settled
from netmgr.cli.output import COLUMNS, column, format_port_range
from netmgr.cli.requests import UsageError, parse_port_range


def _members(lb: Any) -> str:
    return " ".join(f"{m.ip or m.port_id[:8]}:{m.private_port}"
                    + (f"({m.health})" if m.health else "") for m in lb.members)


COLUMNS.update({
    "PublicIp": [("ID", column("id")), ("IP", column("ip")), ("NETWORK", column("network_id")),
                 ("SOURCE NAT", column("source_nat")), ("STATE", column("state"))],
    "StaticNat": [("ID", column("id")), ("PUBLIC IP", column("public_ip")),
                  ("PRIVATE IP", column("private_ip")), ("PORT", column("port_id")),
                  ("STATE", column("state")), ("ERROR", column("error"))],
    "PortForward": [("ID", column("id")), ("PUBLIC IP", column("public_ip")),
                    ("PROTO", column("protocol")),
                    ("PUBLIC",
                     lambda m: format_port_range(m, "public_port", "public_port_end")),
                    ("PRIVATE IP", column("private_ip")),
                    ("PRIVATE",
                     lambda m: format_port_range(m, "private_port", "private_port_end")),
                    ("SOURCES", column("source_cidrs")), ("STATE", column("state")),
                    ("ERROR", column("error"))],
    "FirewallRule": [("ID", column("id")), ("DIRECTION", column("direction")),
                     ("PUBLIC IP", column("public_ip")), ("NETWORK", column("network_id")),
                     ("PROTO", column("protocol")),
                     ("PORTS", lambda m: format_port_range(m, "port", "port_end")),
                     ("CIDRS", column("cidrs")), ("STATE", column("state")),
                     ("ERROR", column("error"))],
    "LoadBalancer": [("ID", column("id")), ("NAME", column("name")),
                     ("PUBLIC IP", column("public_ip")), ("PORT", column("public_port")),
                     ("PROTO", column("protocol")), ("ALGORITHM", column("algorithm")),
                     ("MEMBERS", _members), ("STATE", column("state")),
                     ("ERROR", column("error"))],
})


def _list(ctx: Context, method: Callable[..., Any], request: Message, field: str, kind: str,
          args: argparse.Namespace) -> int:
    ctx.show_list(kind, ctx.client.list_all(method, request, field, args.limit))
    return 0


# ------------------------------------------------------------- public IPs


def cmd_ip_allocate(ctx: Context, args: argparse.Namespace) -> int:
    ips = ctx.client.public_ips
    ip = ips.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=args.network or ""))
    ctx.show(wait_settled(ctx, ips.GetPublicIp, epb.GetPublicIpRequest(id=ip.id), ip,
                          args.wait and bool(args.network)))
    return 0


def cmd_ip_list(ctx: Context, args: argparse.Namespace) -> int:
    return _list(ctx, ctx.client.public_ips.ListPublicIps,
                 epb.ListPublicIpsRequest(network_id=args.network or ""), "public_ips",
                 "PublicIp", args)


def cmd_ip_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.public_ips.GetPublicIp(epb.GetPublicIpRequest(id=args.id)))
    return 0


def cmd_ip_associate(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.public_ips.AssociatePublicIp(
        epb.AssociatePublicIpRequest(id=args.id, network_id=args.network or "")))
    return 0


def cmd_ip_release(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.public_ips.ReleasePublicIp(epb.ReleasePublicIpRequest(id=args.id))
    ctx.deleted("public IP", args.id)
    return 0


# ------------------------------------------------------------- static NAT


def cmd_nat_create(ctx: Context, args: argparse.Namespace) -> int:
    nats = ctx.client.static_nats
    n = nats.CreateStaticNat(epb.CreateStaticNatRequest(
        static_nat=epb.StaticNat(public_ip_id=args.public_ip, port_id=args.port)))
    ctx.show(wait_settled(ctx, nats.GetStaticNat, epb.GetStaticNatRequest(id=n.id), n, args.wait))
    return 0


def cmd_nat_list(ctx: Context, args: argparse.Namespace) -> int:
    return _list(ctx, ctx.client.static_nats.ListStaticNats,
                 epb.ListStaticNatsRequest(network_id=args.network or ""), "static_nats",
                 "StaticNat", args)


def cmd_nat_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.static_nats.GetStaticNat(epb.GetStaticNatRequest(id=args.id)))
    return 0


def cmd_nat_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.static_nats.DeleteStaticNat(epb.DeleteStaticNatRequest(id=args.id))
    ctx.deleted("static NAT", args.id)
    return 0


# ---------------------------------------------------------- port forwards


def build_port_forward(args: argparse.Namespace) -> epb.PortForward:
    pub, pub_end = parse_port_range(args.public_port, "--public-port")
    priv, priv_end = parse_port_range(args.private_port or args.public_port, "--private-port")
    return epb.PortForward(public_ip_id=args.public_ip, protocol=args.protocol,
                           public_port=pub, public_port_end=pub_end, port_id=args.port,
                           private_port=priv, private_port_end=priv_end,
                           source_cidrs=args.source or [])


def cmd_pf_create(ctx: Context, args: argparse.Namespace) -> int:
    pfs = ctx.client.port_forwards
    f = pfs.CreatePortForward(epb.CreatePortForwardRequest(port_forward=build_port_forward(args)))
    ctx.show(wait_settled(ctx, pfs.GetPortForward, epb.GetPortForwardRequest(id=f.id), f,
                          args.wait))
    return 0


def cmd_pf_list(ctx: Context, args: argparse.Namespace) -> int:
    return _list(ctx, ctx.client.port_forwards.ListPortForwards,
                 epb.ListPortForwardsRequest(network_id=args.network or ""), "port_forwards",
                 "PortForward", args)


def cmd_pf_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.port_forwards.GetPortForward(epb.GetPortForwardRequest(id=args.id)))
    return 0


def cmd_pf_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.port_forwards.DeletePortForward(epb.DeletePortForwardRequest(id=args.id))
    ctx.deleted("port forward", args.id)
    return 0


# ---------------------------------------------------------------- firewall


def build_firewall_rule(args: argparse.Namespace) -> epb.FirewallRule:
    port, port_end = parse_port_range(args.ports, "--ports") if args.ports else (0, 0)
    if args.direction == "ingress":
        if not args.public_ip and not args.network:
            raise UsageError("an ingress rule needs --public-ip, or --network (a routed or "
                             "dual-stack network's guests, by their own addresses)")
        direction = epb.FIREWALL_DIRECTION_INGRESS
    else:
        if not args.network:
            raise UsageError("an egress rule needs --network")
        direction = epb.FIREWALL_DIRECTION_EGRESS
    return epb.FirewallRule(direction=direction, public_ip_id=args.public_ip or "",
                            network_id=args.network or "", protocol=args.protocol,
                            port=port, port_end=port_end, icmp_type=args.icmp_type,
                            icmp_code=args.icmp_code, cidrs=args.cidr or [])


def cmd_fw_create(ctx: Context, args: argparse.Namespace) -> int:
    fw = ctx.client.firewall
    r = fw.CreateFirewallRule(epb.CreateFirewallRuleRequest(
        firewall_rule=build_firewall_rule(args)))
    ctx.show(wait_settled(ctx, fw.GetFirewallRule, epb.GetFirewallRuleRequest(id=r.id), r,
                          args.wait))
    return 0


def cmd_fw_list(ctx: Context, args: argparse.Namespace) -> int:
    return _list(ctx, ctx.client.firewall.ListFirewallRules,
                 epb.ListFirewallRulesRequest(network_id=args.network or ""), "firewall_rules",
                 "FirewallRule", args)


def cmd_fw_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.firewall.GetFirewallRule(epb.GetFirewallRuleRequest(id=args.id)))
    return 0


def cmd_fw_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.firewall.DeleteFirewallRule(epb.DeleteFirewallRuleRequest(id=args.id))
    ctx.deleted("firewall rule", args.id)
    return 0


def cmd_fw_policy(ctx: Context, args: argparse.Namespace) -> int:
    fw = ctx.client.firewall
    if args.action is None:
        ctx.show(fw.GetEgressPolicy(epb.GetEgressPolicyRequest(network_id=args.network)))
        return 0
    action = epb.EGRESS_ACTION_DENY if args.action == "deny" else epb.EGRESS_ACTION_ALLOW
    ctx.show(fw.SetEgressPolicy(epb.SetEgressPolicyRequest(
        policy=epb.EgressPolicy(network_id=args.network, default_action=action))))
    return 0


# ---------------------------------------------------------- load balancers


def parse_member(text: str) -> epb.LoadBalancerMember:
    """PORT_ID[:WEIGHT[:PRIVATE_PORT]]"""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise UsageError(f"--member {text!r}: expected PORT_ID[:WEIGHT[:PRIVATE_PORT]]")
    try:
        nums = [int(p) if p else 0 for p in parts[1:]] + [0, 0]
    except ValueError:
        raise UsageError(f"--member {text!r}: weight and port are numbers") from None
    return epb.LoadBalancerMember(port_id=parts[0], weight=nums[0], private_port=nums[1])


def build_load_balancer(args: argparse.Namespace) -> epb.LoadBalancer:
    return epb.LoadBalancer(
        id=getattr(args, "id", "") or "", public_ip_id=getattr(args, "public_ip", "") or "",
        public_port=getattr(args, "port", 0) or 0, protocol=args.protocol,
        algorithm=args.algorithm or "", private_port=args.private_port or 0,
        members=[parse_member(m) for m in args.member or []], stickiness=args.sticky or "",
        health_check=epb.LoadBalancerHealthCheck(
            type=args.check or "", path=args.check_path or "",
            expect_status=args.check_status or 0, interval_ms=args.check_interval or 0,
            rise=args.rise or 0, fall=args.fall or 0),
        source_cidrs=args.source or [], name=args.name or "")


def cmd_lb_create(ctx: Context, args: argparse.Namespace) -> int:
    lbs = ctx.client.load_balancers
    lb = lbs.CreateLoadBalancer(epb.CreateLoadBalancerRequest(
        load_balancer=build_load_balancer(args)))
    ctx.show(wait_settled(ctx, lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id), lb,
                          args.wait))
    return 0


def cmd_lb_update(ctx: Context, args: argparse.Namespace) -> int:
    lbs = ctx.client.load_balancers
    lb = lbs.UpdateLoadBalancer(epb.UpdateLoadBalancerRequest(
        load_balancer=build_load_balancer(args)))
    ctx.show(wait_settled(ctx, lbs.GetLoadBalancer, epb.GetLoadBalancerRequest(id=lb.id), lb,
                          args.wait))
    return 0


def cmd_lb_list(ctx: Context, args: argparse.Namespace) -> int:
    return _list(ctx, ctx.client.load_balancers.ListLoadBalancers,
                 epb.ListLoadBalancersRequest(network_id=args.network or ""), "load_balancers",
                 "LoadBalancer", args)


def cmd_lb_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.load_balancers.GetLoadBalancer(epb.GetLoadBalancerRequest(id=args.id)))
    return 0


def cmd_lb_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.load_balancers.DeleteLoadBalancer(epb.DeleteLoadBalancerRequest(id=args.id))
    ctx.deleted("load balancer", args.id)
    return 0


# ------------------------------------------------------------------ parser


def add_commands(group: Group, leaf: Leaf) -> None:
    def wait(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true", help="until ACTIVE or ERROR")

    def listing(s: Subparsers, func: Command, what: str) -> None:
        p = leaf(s, "list", func, f"list {what}")
        p.add_argument("--network", metavar="NETWORK_ID", help="only this network's")
        p.add_argument("--limit", type=int, metavar="N", help="at most N")

    def by_id(s: Subparsers, name: str, func: Command, help: str) -> None:
        leaf(s, name, func, help).add_argument("id", metavar="ID")

    s = group("publicip", "allocate and associate public IPs")
    p = leaf(s, "allocate", cmd_ip_allocate, "allocate a public IP from the zone's pool")
    p.add_argument("--network", metavar="NETWORK_ID", help="associate it to this network")
    wait(p)
    listing(s, cmd_ip_list, "public IPs")
    by_id(s, "show", cmd_ip_show, "show a public IP")
    p = leaf(s, "associate", cmd_ip_associate, "associate to a network (none: disassociate)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--network", metavar="NETWORK_ID")
    by_id(s, "release", cmd_ip_release, "return a public IP to the pool")

    s = group("staticnat", "1:1 NAT between a public IP and a port")
    p = leaf(s, "create", cmd_nat_create, "create a static NAT")
    p.add_argument("--public-ip", required=True, metavar="PUBLIC_IP_ID")
    p.add_argument("--port", required=True, metavar="PORT_ID")
    wait(p)
    listing(s, cmd_nat_list, "static NATs")
    by_id(s, "show", cmd_nat_show, "show a static NAT")
    by_id(s, "delete", cmd_nat_delete, "delete a static NAT")
    edge_update.add_counters(s, leaf, ("staticnat",))

    s = group("portforward", "forward public ports to a port")
    p = leaf(s, "create", cmd_pf_create, "create a port forward")
    p.add_argument("--public-ip", required=True, metavar="PUBLIC_IP_ID")
    p.add_argument("--protocol", required=True, help="tcp or udp")
    p.add_argument("--public-port", required=True, metavar="PORT[-END]")
    p.add_argument("--port", required=True, metavar="PORT_ID")
    p.add_argument("--private-port", metavar="PORT[-END]", help="default: the public ports")
    p.add_argument("--source", action="append", metavar="CIDR", help="allowed sources (repeat)")
    wait(p)
    listing(s, cmd_pf_list, "port forwards")
    by_id(s, "show", cmd_pf_show, "show a port forward")
    by_id(s, "delete", cmd_pf_delete, "delete a port forward")
    edge_update.add_update(s, leaf, "portforward")

    s = group("firewall", "ingress rules per public IP, egress rules per network")
    p = leaf(s, "create", cmd_fw_create, "create a firewall rule")
    p.add_argument("direction", choices=("ingress", "egress"))
    p.add_argument("--public-ip", metavar="PUBLIC_IP_ID", help="ingress: the address")
    p.add_argument("--network", metavar="NETWORK_ID",
                   help="egress: the network; ingress: a routed or dual-stack network's guests")
    p.add_argument("--protocol", required=True, help="tcp, udp, icmp or all")
    p.add_argument("--ports", metavar="PORT[-END]", help="tcp/udp (default: all)")
    p.add_argument("--icmp-type", type=int, default=-1, help="icmp (-1: any)")
    p.add_argument("--icmp-code", type=int, default=-1, help="icmp (-1: any)")
    p.add_argument("--cidr", action="append", metavar="CIDR",
                   help="ingress: sources; egress: destinations (repeat; default any)")
    wait(p)
    listing(s, cmd_fw_list, "firewall rules")
    by_id(s, "show", cmd_fw_show, "show a firewall rule")
    by_id(s, "delete", cmd_fw_delete, "delete a firewall rule")
    edge_update.add_update(s, leaf, "firewall")
    p = leaf(s, "egress-policy", cmd_fw_policy, "show or set a network's default egress")
    p.add_argument("network", metavar="NETWORK_ID")
    p.add_argument("action", nargs="?", choices=("allow", "deny"))

    s = group("lb", "load balancers (HAProxy in the router)")

    def lb_settings(p: argparse.ArgumentParser) -> None:
        p.add_argument("--protocol", required=True, help="tcp or http")
        p.add_argument("--private-port", type=int, help="members' port (default: --port)")
        p.add_argument("--member", action="append", metavar="PORT_ID[:WEIGHT[:PORT]]")
        p.add_argument("--algorithm", help="roundrobin (default), leastconn or source")
        p.add_argument("--sticky", help="none, source or cookie (http)")
        p.add_argument("--check", help="tcp (default), http or none")
        p.add_argument("--check-path", help="http check path (default /)")
        p.add_argument("--check-status", type=int, help="expected http status")
        p.add_argument("--check-interval", type=int, metavar="MS")
        p.add_argument("--rise", type=int)
        p.add_argument("--fall", type=int)
        p.add_argument("--source", action="append", metavar="CIDR", help="allowed clients")
        p.add_argument("--name")
        wait(p)

    p = leaf(s, "create", cmd_lb_create, "create a load balancer")
    p.add_argument("--public-ip", required=True, metavar="PUBLIC_IP_ID")
    p.add_argument("--port", required=True, type=int, help="public port")
    lb_settings(p)
    p = leaf(s, "update", cmd_lb_update, "replace a load balancer's settings and members")
    p.add_argument("id", metavar="ID")
    lb_settings(p)
    listing(s, cmd_lb_list, "load balancers")
    by_id(s, "show", cmd_lb_show, "show a load balancer (with member health)")
    by_id(s, "delete", cmd_lb_delete, "delete a load balancer")
    edge_update.add_counters(s, leaf, ("loadbalancer",))
