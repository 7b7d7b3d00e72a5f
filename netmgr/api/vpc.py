"""gRPC servicers of VPCs: thin, like ``netmgr.api.core``. Tiers are created
through NetworkService.CreateNetwork with ``vpc_id`` set."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import vpc_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as rpc
from google.protobuf import timestamp_pb2

from common.grpc_errors import PermissionDenied
from netmgr.api.auth import current_caller
from netmgr.api.convert import OBJECT_STATES
from netmgr.api.core import Ctx, RouterHooks, _Base, _list_scope, _tenant
from netmgr.model import vpc as mv
from netmgr.model.paging import page_request
from netmgr.model.validation import check_id, resolve_update_mask
from netmgr.model.validation_vpc import AclRuleSpec, VpcSpec
from netmgr.store.facade import Store

VPC_UPDATABLE = frozenset({"name", "redundant"})
# Kind of the ACL rule counters the agent reports (router.services.nftables.acl).
COUNTER_KIND = "aclrule"


def _ts(when: object) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)  # type: ignore[arg-type]
    return ts


def vpc_to_pb(v: mv.Vpc) -> pb.Vpc:
    ts = _ts(v.created_at)
    return pb.Vpc(id=v.id, tenant_id=v.tenant_id, name=v.name, cidr=v.cidr, domain=v.domain,
                  router_id=v.router_id, source_nat_ip=v.source_nat_ip,
                  tier_ids=list(v.tier_ids), create_time=ts)


# mypy sees neither grpc stubs nor the generated ones: the servicer bases are Any (ignore[misc]).
class VpcServicer(_Base, rpc.VpcServiceServicer):
    def CreateVpc(self, request: pb.CreateVpcRequest, context: Ctx) -> pb.Vpc:
        tenant = _tenant()
        spec = VpcSpec(name=request.vpc.name, cidr=request.vpc.cidr, domain=request.vpc.domain)
        if request.vpc.redundant:  # refused before anything is created
            self._store.redundancy.check_redundant("", self._store.default_host, "vpc.redundant",
                                                   self._store.default_backend)
        vpc = self._store.create_vpc(tenant, spec)
        if request.vpc.redundant:
            self._store.redundancy.set_redundancy(tenant, "", vpc.id, True)
        self._notify(vpc.router_id)
        return self._out(vpc)

    def _out(self, vpc: mv.Vpc) -> pb.Vpc:
        out = vpc_to_pb(vpc)
        out.redundant = self._store.redundancy.get(vpc.router_id) is not None
        return out

    def GetVpc(self, request: pb.GetVpcRequest, context: Ctx) -> pb.Vpc:
        return self._out(self._store.get_vpc(_tenant(), request.id))

    def ListVpcs(self, request: pb.ListVpcsRequest, context: Ctx) -> pb.ListVpcsResponse:
        page = self._store.list_vpcs(_list_scope(), page_request(request.page_size,
                                                             request.page_token))
        return pb.ListVpcsResponse(vpcs=[self._out(v) for v in page.items],
                                   next_page_token=page.next_page_token)

    def UpdateVpc(self, request: pb.UpdateVpcRequest, context: Ctx) -> pb.Vpc:
        tenant = _tenant()
        vpc_id = check_id(request.vpc.id, "vpc.id")
        present = [f for f in ("name", "redundant") if getattr(request.vpc, f)]
        paths = resolve_update_mask(request.update_mask.paths, VPC_UPDATABLE, present)
        name = request.vpc.name if "name" in paths else None
        if "redundant" in paths:
            # Either way, every tier's gateway with it (one router, one sync
            # group); the instance that ran on stays master (leases and
            # connections kept: netmgr.store.redundancy).
            router_id, _ = self._store.redundancy.set_redundancy(
                tenant, "", vpc_id, request.vpc.redundant)
            self._notify(router_id)
        vpc = (self._store.update_vpc(tenant, vpc_id, name) if name is not None
               else self._store.get_vpc(tenant, vpc_id))
        return self._out(vpc)

    def DeleteVpc(self, request: pb.DeleteVpcRequest, context: Ctx) -> pb.DeleteVpcResponse:
        gone = self._store.delete_vpc(_tenant(), request.id)
        self._notify(gone.router_id)  # the reconciler removes the router
        return pb.DeleteVpcResponse()


ACTIONS = {pb.ACL_ACTION_ALLOW: mv.ALLOW, pb.ACL_ACTION_DENY: mv.DENY}
DIRECTIONS = {pb.ACL_DIRECTION_INGRESS: mv.INGRESS, pb.ACL_DIRECTION_EGRESS: mv.EGRESS}


def acl_to_pb(a: mv.NetworkAcl) -> pb.NetworkAcl:
    return pb.NetworkAcl(id=a.id, vpc_id=a.vpc_id, name=a.name, description=a.description,
                         builtin=a.builtin, network_ids=list(a.network_ids),
                         create_time=_ts(a.created_at), tenant_id=a.tenant_id)


def rule_to_pb(r: mv.AclRule) -> pb.AclRule:
    return pb.AclRule(
        id=r.id, tenant_id=r.tenant_id, acl_id=r.acl_id, number=r.number,
        action={v: k for k, v in ACTIONS.items()}[r.action],
        direction={v: k for k, v in DIRECTIONS.items()}[r.direction],
        protocol=r.protocol, port=r.port, port_end=r.port_end, icmp_type=r.icmp_type,
        icmp_code=r.icmp_code, cidrs=list(r.cidrs), state=OBJECT_STATES[r.state],
        error=r.error, create_time=_ts(r.created_at))


def rule_spec(msg: pb.AclRule) -> AclRuleSpec:
    # Unknown enum values become "" and are refused by the checks, naming the field.
    return AclRuleSpec(number=msg.number, action=ACTIONS.get(msg.action, ""),
                       direction=DIRECTIONS.get(msg.direction, ""), protocol=msg.protocol,
                       port=msg.port, port_end=msg.port_end, icmp_type=msg.icmp_type,
                       icmp_code=msg.icmp_code, cidrs=tuple(msg.cidrs))


class NetworkAclServicer(_Base, rpc.NetworkAclServiceServicer):
    def CreateNetworkAcl(self, request: pb.CreateNetworkAclRequest,
                         context: Ctx) -> pb.NetworkAcl:
        a = request.network_acl
        return acl_to_pb(self._store.create_network_acl(_tenant(), a.vpc_id, a.name,
                                                        a.description))

    def GetNetworkAcl(self, request: pb.GetNetworkAclRequest, context: Ctx) -> pb.NetworkAcl:
        return acl_to_pb(self._store.get_network_acl(_tenant(), request.id))

    def ListNetworkAcls(self, request: pb.ListNetworkAclsRequest,
                        context: Ctx) -> pb.ListNetworkAclsResponse:
        acls = self._store.list_network_acls(_list_scope(), request.vpc_id)
        return pb.ListNetworkAclsResponse(network_acls=[acl_to_pb(a) for a in acls])

    def DeleteNetworkAcl(self, request: pb.DeleteNetworkAclRequest,
                         context: Ctx) -> pb.DeleteNetworkAclResponse:
        self._store.delete_network_acl(_tenant(), request.id)
        return pb.DeleteNetworkAclResponse()

    def CreateAclRule(self, request: pb.CreateAclRuleRequest, context: Ctx) -> pb.AclRule:
        rule, router_id = self._store.create_acl_rule(_tenant(), request.rule.acl_id,
                                                      rule_spec(request.rule))
        self._notify(router_id)
        return rule_to_pb(rule)

    def GetAclRule(self, request: pb.GetAclRuleRequest, context: Ctx) -> pb.AclRule:
        return rule_to_pb(self._store.get_acl_rule(_tenant(), request.id))

    def ListAclRules(self, request: pb.ListAclRulesRequest,
                     context: Ctx) -> pb.ListAclRulesResponse:
        rules = self._store.list_acl_rules(_list_scope(), request.acl_id)
        return pb.ListAclRulesResponse(rules=[rule_to_pb(r) for r in rules])

    def UpdateAclRule(self, request: pb.UpdateAclRuleRequest, context: Ctx) -> pb.AclRule:
        rule, router_id = self._store.update_acl_rule(_tenant(), request.rule.id,
                                                      rule_spec(request.rule))
        self._notify(router_id)
        return rule_to_pb(rule)

    def DeleteAclRule(self, request: pb.DeleteAclRuleRequest,
                      context: Ctx) -> pb.DeleteAclRuleResponse:
        self._notify(self._store.delete_acl_rule(_tenant(), request.id))
        return pb.DeleteAclRuleResponse()

    def ReplaceNetworkAcl(self, request: pb.ReplaceNetworkAclRequest,
                          context: Ctx) -> pb.ReplaceNetworkAclResponse:
        router_id = self._store.replace_network_acl(_tenant(), request.network_id,
                                                    request.acl_id)
        self._notify(router_id)
        return pb.ReplaceNetworkAclResponse(network_id=request.network_id,
                                            acl_id=request.acl_id)

    def GetAclCounters(self, request: pb.GetAclCountersRequest,
                       context: Ctx) -> pb.GetAclCountersResponse:
        router_id, rules = self._store.acl_counter_targets(_tenant(), request.acl_id)
        counted = self._hooks.rule_counters(router_id, [(COUNTER_KIND, r.id) for r in rules])
        return pb.GetAclCountersResponse(counters=[
            pb.AclRuleCounter(rule_id=r.id, number=r.number,
                              packets=counted[(COUNTER_KIND, r.id)][0],
                              bytes=counted[(COUNTER_KIND, r.id)][1]) for r in rules])


def route_to_pb(r: mv.StaticRoute) -> pb.StaticRoute:
    return pb.StaticRoute(id=r.id, tenant_id=r.tenant_id, vpc_id=r.vpc_id, cidr=r.cidr,
                          next_hop=r.next_hop,
                          via_id=r.via_id, state=OBJECT_STATES[r.state], error=r.error,
                          create_time=_ts(r.created_at))


def gateway_to_pb(g: mv.PrivateGateway) -> pb.PrivateGateway:
    return pb.PrivateGateway(id=g.id, tenant_id=g.tenant_id, vpc_id=g.vpc_id, vlan_id=g.vlan_id,
                             address=g.address,
                             gateway=g.gateway, acl_id=g.acl_id, state=OBJECT_STATES[g.state],
                             error=g.error, create_time=_ts(g.created_at))


class StaticRouteServicer(_Base, rpc.StaticRouteServiceServicer):
    def CreateStaticRoute(self, request: pb.CreateStaticRouteRequest,
                          context: Ctx) -> pb.StaticRoute:
        r = request.static_route
        route = self._store.create_static_route(_tenant(), r.vpc_id, r.cidr, r.next_hop)
        self._notify(self._store.get_vpc(route.tenant_id, route.vpc_id).router_id)
        return route_to_pb(route)

    def GetStaticRoute(self, request: pb.GetStaticRouteRequest, context: Ctx) -> pb.StaticRoute:
        return route_to_pb(self._store.get_static_route(_tenant(), request.id))

    def ListStaticRoutes(self, request: pb.ListStaticRoutesRequest,
                         context: Ctx) -> pb.ListStaticRoutesResponse:
        routes = self._store.list_static_routes(_list_scope(), request.vpc_id)
        return pb.ListStaticRoutesResponse(static_routes=[route_to_pb(r) for r in routes])

    def DeleteStaticRoute(self, request: pb.DeleteStaticRouteRequest,
                          context: Ctx) -> pb.DeleteStaticRouteResponse:
        self._notify(self._store.delete_static_route(_tenant(), request.id))
        return pb.DeleteStaticRouteResponse()


class PrivateGatewayServicer(_Base, rpc.PrivateGatewayServiceServicer):
    def CreatePrivateGateway(self, request: pb.CreatePrivateGatewayRequest,
                             context: Ctx) -> pb.PrivateGateway:
        g = request.private_gateway
        tenant = _tenant()
        if g.vlan_id and not current_caller().admin:
            # A named VLAN is a wire of the provider's: only the admin picks one.
            raise PermissionDenied(
                "private_gateway.vlan_id: only the admin names a private gateway's VLAN; leave "
                "it 0 to get one from the zone's private gateway range")
        gw = self._store.create_private_gateway(tenant, g.vpc_id, g.vlan_id, g.address,
                                                g.gateway, g.acl_id)
        self._notify(self._store.get_vpc(gw.tenant_id, gw.vpc_id).router_id)
        return gateway_to_pb(gw)

    def GetPrivateGateway(self, request: pb.GetPrivateGatewayRequest,
                          context: Ctx) -> pb.PrivateGateway:
        return gateway_to_pb(self._store.get_private_gateway(_tenant(), request.id))

    def ListPrivateGateways(self, request: pb.ListPrivateGatewaysRequest,
                            context: Ctx) -> pb.ListPrivateGatewaysResponse:
        gws = self._store.list_private_gateways(_list_scope(), request.vpc_id)
        return pb.ListPrivateGatewaysResponse(private_gateways=[gateway_to_pb(g) for g in gws])

    def DeletePrivateGateway(self, request: pb.DeletePrivateGatewayRequest,
                             context: Ctx) -> pb.DeletePrivateGatewayResponse:
        self._notify(self._store.delete_private_gateway(_tenant(), request.id))
        return pb.DeletePrivateGatewayResponse()


def add_to_server(store: Store, hooks: RouterHooks, server: grpc.Server) -> tuple[str, ...]:
    """Register the VPC services; returns their full names (health, reflection)."""
    rpc.add_VpcServiceServicer_to_server(VpcServicer(store, hooks), server)
    rpc.add_NetworkAclServiceServicer_to_server(NetworkAclServicer(store, hooks), server)
    rpc.add_StaticRouteServiceServicer_to_server(StaticRouteServicer(store, hooks), server)
    rpc.add_PrivateGatewayServiceServicer_to_server(PrivateGatewayServicer(store, hooks), server)
    return SERVICES


SERVICES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name
                 for name in ("VpcService", "NetworkAclService", "StaticRouteService",
                              "PrivateGatewayService"))
