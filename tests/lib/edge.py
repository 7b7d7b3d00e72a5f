"""The edge API on a tenant of the all-in-one cloud (stubs, waits on rule states),
and Site: one tenant network whose router serves every test of a module."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from tests.lib.allinone import Tenant


class Edge:
    """The edge stubs on a tenant's channel, and waits on rule states."""

    def __init__(self, t: Tenant) -> None:
        self.t = t
        ch = t.api.channel
        self.ips = erpc.PublicIpServiceStub(ch)
        self.nats = erpc.StaticNatServiceStub(ch)
        self.forwards = erpc.PortForwardServiceStub(ch)
        self.firewall = erpc.FirewallServiceStub(ch)
        self.lbs = erpc.LoadBalancerServiceStub(ch)

    def call(self, method, request, timeout: float = 30):
        return self.t.api.call(method, request, timeout)

    def public_ip(self, network_id: str) -> epb.PublicIp:
        return self.call(self.ips.AllocatePublicIp,
                         epb.AllocatePublicIpRequest(network_id=network_id))

    def forward(self, **fields) -> epb.PortForward:
        return self.call(self.forwards.CreatePortForward,
                         epb.CreatePortForwardRequest(port_forward=epb.PortForward(**fields)))

    def static_nat(self, public_ip_id: str, port_id: str) -> epb.StaticNat:
        return self.call(self.nats.CreateStaticNat, epb.CreateStaticNatRequest(
            static_nat=epb.StaticNat(public_ip_id=public_ip_id, port_id=port_id)))

    def rule(self, **fields) -> epb.FirewallRule:
        return self.call(self.firewall.CreateFirewallRule,
                         epb.CreateFirewallRuleRequest(firewall_rule=epb.FirewallRule(**fields)))

    def wait_active(self, get, request, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            obj = self.call(get, request)
            if obj.state == pb.OBJECT_STATE_ACTIVE:
                return obj
            if obj.state == pb.OBJECT_STATE_ERROR or time.monotonic() > deadline:
                raise AssertionError(f"{type(obj).__name__} {obj.id}: "
                                     f"{pb.ObjectState.Name(obj.state)} {obj.error}")
            time.sleep(0.05)

    def wait_router(self, router_id: str) -> None:
        self.t.api.wait_router_active(router_id)


class Site:
    """One tenant network whose router serves every test of a module.

    A router VM boots in 30-60 s under TCG, so each module boots one (not
    one per test); the namespace backend runs the same code. A test makes
    its own ports and guests (new addresses: a port is never deleted and
    its address reused by another MAC within the module) and its own public
    IPs and rules; ``reset`` (after each test) deletes every rule, load
    balancer and VPN object, releases the test's public IPs, deletes the
    test's other networks and sets the egress policy back, so the next test
    starts from a network as new.
    """

    def __init__(self, cloud, cidr: str, **fields: Any) -> None:
        self.t = Tenant(cloud, f"t{uuid.uuid4().hex[:8]}")
        self.net = self.t.network(**{"name": "edge", **fields, "cidr": cidr})
        self.t.api.wait_router_active(self.net.router_id)
        self.keep_ips: set[str] = set()
        self._names = itertools.count()

    def ports(self, n: int):
        """n new ports on the network, each with a guest that holds its lease."""
        ports = [self.t.port(self.net.id, hostname=f"vm{next(self._names)}") for _ in range(n)]
        self.t.api.wait_router_active(self.net.router_id)
        guests = [self.t.guest(self.net, p) for p in ports]
        for g in guests:
            g.dhcp()
        return ports, guests

    def reset(self) -> None:
        e, api, net_id = Edge(self.t), self.t.api, self.net.id
        rules = ((e.lbs.ListLoadBalancers, epb.ListLoadBalancersRequest, "load_balancers",
                  e.lbs.DeleteLoadBalancer, epb.DeleteLoadBalancerRequest),
                 (e.forwards.ListPortForwards, epb.ListPortForwardsRequest, "port_forwards",
                  e.forwards.DeletePortForward, epb.DeletePortForwardRequest),
                 (e.nats.ListStaticNats, epb.ListStaticNatsRequest, "static_nats",
                  e.nats.DeleteStaticNat, epb.DeleteStaticNatRequest),
                 (e.firewall.ListFirewallRules, epb.ListFirewallRulesRequest, "firewall_rules",
                  e.firewall.DeleteFirewallRule, epb.DeleteFirewallRuleRequest))
        for list_rpc, list_request, field, delete_rpc, delete_request in rules:
            for obj in getattr(e.call(list_rpc, list_request(network_id=net_id)), field):
                e.call(delete_rpc, delete_request(id=obj.id))
        e.call(e.firewall.SetEgressPolicy, epb.SetEgressPolicyRequest(policy=epb.EgressPolicy(
            network_id=net_id, default_action=epb.EGRESS_ACTION_ALLOW)))
        vpn = vrpc.VpnServiceStub(api.channel)
        for c in e.call(vpn.ListVpnConnections, vpb.ListVpnConnectionsRequest()).vpn_connections:
            e.call(vpn.DeleteVpnConnection, vpb.DeleteVpnConnectionRequest(id=c.id))
        for g in e.call(vpn.ListVpnGateways, vpb.ListVpnGatewaysRequest()).vpn_gateways:
            e.call(vpn.DeleteVpnGateway, vpb.DeleteVpnGatewayRequest(id=g.id))
        for cg in e.call(vpn.ListCustomerGateways,
                         vpb.ListCustomerGatewaysRequest()).customer_gateways:
            e.call(vpn.DeleteCustomerGateway, vpb.DeleteCustomerGatewayRequest(id=cg.id))
        for ip in e.call(e.ips.ListPublicIps, epb.ListPublicIpsRequest(
                network_id=net_id)).public_ips:
            if not ip.source_nat and ip.id not in self.keep_ips:
                e.call(e.ips.ReleasePublicIp, epb.ReleasePublicIpRequest(id=ip.id))
        for n in api.call(api.networks.ListNetworks, pb.ListNetworksRequest()).networks:
            if n.id != net_id:
                api.call(api.networks.DeleteNetwork, pb.DeleteNetworkRequest(id=n.id, force=True))
        api.wait_router_active(self.net.router_id)


def setup_net(site: Site, n: int):
    """The module's network (one router for every test) with n new ports and guests."""
    ports, guests = site.ports(n)
    return site.t, site.net, ports, guests
