"""gRPC servicers of the edge services: thin, like ``netmgr.api.core``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from cloudnet.netmgr.v1 import edge_pb2 as pb
from cloudnet.netmgr.v1 import edge_pb2_grpc as rpc

from netmgr.api import convert_edge as conv
from netmgr.api.core import Ctx, EdgeRef, EdgeRule, RouterHooks, _Base, _list_scope, _tenant
from netmgr.model.edge import GUEST_INGRESS, FirewallRule, is_guest_ingress
from netmgr.model.paging import page_request
from netmgr.store.facade import Store

log = logging.getLogger(__name__)


class _EdgeBase(_Base):
    def _changed(self, router_id: str, generation: int, removed: Sequence[EdgeRef] = (),
                 added: Sequence[EdgeRule] = ()) -> None:
        """Tell the reconciler what changed at `generation` (it may send just
        that to the router), then notify as for any change."""
        try:
            self._hooks.edge_changed(router_id, generation, removed, added)
        except Exception:  # committed: the full push still carries it
            log.exception("edge_changed(%s) failed", router_id)
        self._notify(router_id)


# mypy sees neither grpc stubs nor the generated ones: the servicer bases are Any (ignore[misc]).
class PublicIpServicer(_Base, rpc.PublicIpServiceServicer):
    def AllocatePublicIp(self, request: pb.AllocatePublicIpRequest, context: Ctx) -> pb.PublicIp:
        ip, router_id = self._store.allocate_public_ip(_tenant(), request.network_id)
        if router_id:
            self._notify(router_id)
        return conv.public_ip_to_pb(ip)

    def GetPublicIp(self, request: pb.GetPublicIpRequest, context: Ctx) -> pb.PublicIp:
        return conv.public_ip_to_pb(self._store.get_public_ip(_tenant(), request.id))

    def ListPublicIps(self, request: pb.ListPublicIpsRequest,
                      context: Ctx) -> pb.ListPublicIpsResponse:
        page = self._store.list_public_ips(
            _list_scope(), page_request(request.page_size, request.page_token), request.network_id)
        return pb.ListPublicIpsResponse(public_ips=[conv.public_ip_to_pb(i) for i in page.items],
                                        next_page_token=page.next_page_token)

    def AssociatePublicIp(self, request: pb.AssociatePublicIpRequest,
                          context: Ctx) -> pb.PublicIp:
        ip, routers = self._store.associate_public_ip(_tenant(), request.id, request.network_id)
        self._notify(*routers)
        return conv.public_ip_to_pb(ip)

    def ReleasePublicIp(self, request: pb.ReleasePublicIpRequest,
                        context: Ctx) -> pb.ReleasePublicIpResponse:
        router_id = self._store.release_public_ip(_tenant(), request.id)
        if router_id:
            self._notify(router_id)
        return pb.ReleasePublicIpResponse()


class StaticNatServicer(_EdgeBase, rpc.StaticNatServiceServicer):
    def CreateStaticNat(self, request: pb.CreateStaticNatRequest, context: Ctx) -> pb.StaticNat:
        tenant, spec = _tenant(), conv.static_nat_spec(request.static_nat)
        n = self._store.create_static_nat(tenant, spec)
        self._changed(self._store.router_of_network(n.network_id), n.generation, added=[n])
        return conv.static_nat_to_pb(n)

    def GetStaticNat(self, request: pb.GetStaticNatRequest, context: Ctx) -> pb.StaticNat:
        return conv.static_nat_to_pb(self._store.get_static_nat(_tenant(), request.id))

    def ListStaticNats(self, request: pb.ListStaticNatsRequest,
                       context: Ctx) -> pb.ListStaticNatsResponse:
        page = self._store.list_static_nats(
            _list_scope(), page_request(request.page_size, request.page_token), request.network_id)
        return pb.ListStaticNatsResponse(
            static_nats=[conv.static_nat_to_pb(n) for n in page.items],
            next_page_token=page.next_page_token)

    def DeleteStaticNat(self, request: pb.DeleteStaticNatRequest,
                        context: Ctx) -> pb.DeleteStaticNatResponse:
        router_id, gen = self._store.delete_static_nat(_tenant(), request.id)
        self._changed(router_id, gen, removed=[("staticnat", request.id)])
        return pb.DeleteStaticNatResponse()


class PortForwardServicer(_EdgeBase, rpc.PortForwardServiceServicer):
    def CreatePortForward(self, request: pb.CreatePortForwardRequest,
                          context: Ctx) -> pb.PortForward:
        tenant, spec = _tenant(), conv.port_forward_spec(request.port_forward)
        f = self._store.create_port_forward(tenant, spec)
        self._changed(self._store.router_of_network(f.network_id), f.generation, added=[f])
        return conv.port_forward_to_pb(f)

    def GetPortForward(self, request: pb.GetPortForwardRequest, context: Ctx) -> pb.PortForward:
        return conv.port_forward_to_pb(self._store.get_port_forward(_tenant(), request.id))

    def ListPortForwards(self, request: pb.ListPortForwardsRequest,
                         context: Ctx) -> pb.ListPortForwardsResponse:
        page = self._store.list_port_forwards(
            _list_scope(), page_request(request.page_size, request.page_token), request.network_id)
        return pb.ListPortForwardsResponse(
            port_forwards=[conv.port_forward_to_pb(f) for f in page.items],
            next_page_token=page.next_page_token)

    def UpdatePortForward(self, request: pb.UpdatePortForwardRequest,
                          context: Ctx) -> pb.PortForward:
        tenant = _tenant()
        changes = conv.port_forward_changes(request.port_forward, request.update_mask.paths)
        before = self._store.get_port_forward(tenant, request.port_forward.id)
        f = self._store.update_port_forward(tenant, before.id, changes)
        if f.generation != before.generation:
            self._changed(self._store.router_of_network(f.network_id), f.generation,
                          removed=[("portforward", f.id)], added=[f])
        return conv.port_forward_to_pb(f)

    def DeletePortForward(self, request: pb.DeletePortForwardRequest,
                          context: Ctx) -> pb.DeletePortForwardResponse:
        router_id, gen = self._store.delete_port_forward(_tenant(), request.id)
        self._changed(router_id, gen, removed=[("portforward", request.id)])
        return pb.DeletePortForwardResponse()


class FirewallServicer(_EdgeBase, rpc.FirewallServiceServicer):
    def CreateFirewallRule(self, request: pb.CreateFirewallRuleRequest,
                           context: Ctx) -> pb.FirewallRule:
        tenant, spec = _tenant(), conv.firewall_rule_spec(request.firewall_rule)
        r = self._store.create_firewall_rule(tenant, spec)
        self._rule_changed(r, added=[r])
        return conv.firewall_rule_to_pb(r)

    def GetFirewallRule(self, request: pb.GetFirewallRuleRequest,
                        context: Ctx) -> pb.FirewallRule:
        return conv.firewall_rule_to_pb(self._store.get_firewall_rule(_tenant(), request.id))

    def ListFirewallRules(self, request: pb.ListFirewallRulesRequest,
                          context: Ctx) -> pb.ListFirewallRulesResponse:
        page = self._store.list_firewall_rules(
            _list_scope(), page_request(request.page_size, request.page_token), request.network_id)
        return pb.ListFirewallRulesResponse(
            firewall_rules=[conv.firewall_rule_to_pb(r) for r in page.items],
            next_page_token=page.next_page_token)

    def UpdateFirewallRule(self, request: pb.UpdateFirewallRuleRequest,
                           context: Ctx) -> pb.FirewallRule:
        tenant = _tenant()
        changes = conv.firewall_rule_changes(request.firewall_rule, request.update_mask.paths)
        before = self._store.get_firewall_rule(tenant, request.firewall_rule.id)
        r = self._store.update_firewall_rule(tenant, before.id, changes)
        if r.generation != before.generation:
            self._rule_changed(r, removed=[("firewall", r.id)], added=[r])
        return conv.firewall_rule_to_pb(r)

    def DeleteFirewallRule(self, request: pb.DeleteFirewallRuleRequest,
                           context: Ctx) -> pb.DeleteFirewallRuleResponse:
        tenant = _tenant()
        guest = is_guest_ingress(self._store.get_firewall_rule(tenant, request.id))
        router_id, gen = self._store.delete_firewall_rule(tenant, request.id)
        self._changed(router_id, gen, removed=[(GUEST_INGRESS if guest else "firewall",
                                                request.id)])
        return pb.DeleteFirewallRuleResponse()

    def _rule_changed(self, r: FirewallRule, removed: Sequence[EdgeRef] = (),
                      added: Sequence[EdgeRule] = ()) -> None:
        """Guest ingress rules (routed and IPv6 guests) go as edge deltas too,
        under a kind of their own (the agent rewrites their small chain)."""
        router_id = self._store.router_of_network(r.network_id)
        if is_guest_ingress(r):
            removed = [(GUEST_INGRESS, i) for _, i in removed]
        self._changed(router_id, r.generation, removed=removed, added=added)

    def GetEgressPolicy(self, request: pb.GetEgressPolicyRequest, context: Ctx) -> pb.EgressPolicy:
        return conv.egress_policy_to_pb(
            self._store.get_egress_policy(_tenant(), request.network_id))

    def SetEgressPolicy(self, request: pb.SetEgressPolicyRequest, context: Ctx) -> pb.EgressPolicy:
        tenant = _tenant()
        deny = conv.egress_default_deny(request.policy)
        policy, router_id = self._store.set_egress_policy(tenant, request.policy.network_id, deny)
        self._notify(router_id)
        return conv.egress_policy_to_pb(policy)


class LoadBalancerServicer(_Base, rpc.LoadBalancerServiceServicer):
    def CreateLoadBalancer(self, request: pb.CreateLoadBalancerRequest,
                           context: Ctx) -> pb.LoadBalancer:
        tenant, spec = _tenant(), conv.load_balancer_spec(request.load_balancer)
        lb = self._store.create_load_balancer(tenant, spec)
        self._notify(self._store.router_of_network(lb.network_id))
        return conv.load_balancer_to_pb(lb)

    def GetLoadBalancer(self, request: pb.GetLoadBalancerRequest,
                        context: Ctx) -> pb.LoadBalancer:
        return conv.load_balancer_to_pb(self._store.get_load_balancer(_tenant(), request.id))

    def ListLoadBalancers(self, request: pb.ListLoadBalancersRequest,
                          context: Ctx) -> pb.ListLoadBalancersResponse:
        page = self._store.list_load_balancers(
            _list_scope(), page_request(request.page_size, request.page_token), request.network_id)
        return pb.ListLoadBalancersResponse(
            load_balancers=[conv.load_balancer_to_pb(lb) for lb in page.items],
            next_page_token=page.next_page_token)

    def UpdateLoadBalancer(self, request: pb.UpdateLoadBalancerRequest,
                           context: Ctx) -> pb.LoadBalancer:
        tenant = _tenant()
        lb = self._store.update_load_balancer(tenant, request.load_balancer.id,
                                              conv.load_balancer_spec(request.load_balancer))
        self._notify(self._store.router_of_network(lb.network_id))
        return conv.load_balancer_to_pb(lb)

    def DeleteLoadBalancer(self, request: pb.DeleteLoadBalancerRequest,
                           context: Ctx) -> pb.DeleteLoadBalancerResponse:
        self._notify(self._store.delete_load_balancer(_tenant(), request.id))
        return pb.DeleteLoadBalancerResponse()


class EdgeCounterServicer(_Base, rpc.EdgeCounterServiceServicer):
    def GetEdgeCounters(self, request: pb.GetEdgeCountersRequest,
                        context: Ctx) -> pb.GetEdgeCountersResponse:
        router_id, kinds = self._store.edge_rule_kinds(_tenant(), request.network_id,
                                                       request.ids)
        counted = self._hooks.rule_counters(router_id, [(k, i) for i, k in kinds.items()])
        return pb.GetEdgeCountersResponse(counters=[
            conv.edge_counter_to_pb(k, i, p, b) for (k, i), (p, b) in sorted(counted.items())])


def add_to_server(store: Store, hooks: RouterHooks, server: grpc.Server) -> tuple[str, ...]:
    """Register the edge services; returns their full names (health, reflection)."""
    rpc.add_PublicIpServiceServicer_to_server(PublicIpServicer(store, hooks), server)
    rpc.add_StaticNatServiceServicer_to_server(StaticNatServicer(store, hooks), server)
    rpc.add_PortForwardServiceServicer_to_server(PortForwardServicer(store, hooks), server)
    rpc.add_FirewallServiceServicer_to_server(FirewallServicer(store, hooks), server)
    rpc.add_LoadBalancerServiceServicer_to_server(LoadBalancerServicer(store, hooks), server)
    rpc.add_EdgeCounterServiceServicer_to_server(EdgeCounterServicer(store, hooks), server)
    return SERVICES


SERVICES = tuple(
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("PublicIpService", "StaticNatService", "PortForwardService", "FirewallService",
                 "LoadBalancerService", "EdgeCounterService")
)
