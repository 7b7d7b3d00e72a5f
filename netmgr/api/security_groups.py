"""SecurityGroupService: a tenant's security groups and their rules."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from cloudnet.netmgr.v1 import security_group_pb2 as pb
from cloudnet.netmgr.v1 import security_group_pb2_grpc as rpc
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.api.auth import current_caller
from netmgr.model.paging import page_request
from netmgr.model.security_groups import RuleSpec, SecurityGroup, SecurityGroupRule
from netmgr.store.facade import Store

SERVICES = ("cloudnet.netmgr.v1.SecurityGroupService",)


def _ts(when: object) -> Timestamp:
    out = Timestamp()
    if when is not None:
        out.FromDatetime(when)  # type: ignore[arg-type]
    return out


def rule_to_pb(r: SecurityGroupRule) -> pb.SecurityGroupRule:
    s = r.spec
    return pb.SecurityGroupRule(
        id=r.id, security_group_id=r.security_group_id, direction=s.direction,
        ethertype=s.ethertype, protocol=s.protocol, port_min=s.port_min, port_max=s.port_max,
        icmp_type=s.icmp_type, icmp_code=s.icmp_code, remote_cidr=s.remote_cidr,
        remote_group_id=s.remote_group_id, description=s.description,
        create_time=_ts(r.created_at))


def group_to_pb(g: SecurityGroup) -> pb.SecurityGroup:
    return pb.SecurityGroup(id=g.id, tenant_id=g.tenant_id, name=g.name,
                            description=g.description, rules=[rule_to_pb(r) for r in g.rules],
                            port_count=g.port_count, create_time=_ts(g.created_at))


def rule_spec(msg: pb.SecurityGroupRule) -> RuleSpec:
    # An unset ICMP type/code (0 in proto3) reads as "any" unless the rule is icmp.
    icmp = (msg.protocol or "").lower() in ("icmp", "1", "58")
    return RuleSpec(
        direction=msg.direction, ethertype=msg.ethertype or "ipv4",
        protocol=msg.protocol or "all", port_min=msg.port_min, port_max=msg.port_max,
        icmp_type=msg.icmp_type if icmp or msg.icmp_type else -1,
        icmp_code=msg.icmp_code if icmp or msg.icmp_code else -1,
        remote_cidr=msg.remote_cidr, remote_group_id=msg.remote_group_id,
        description=msg.description)


class SecurityGroupServicer(rpc.SecurityGroupServiceServicer):
    """`changed` is told after every committed change of a group or rule
    (the hosts' filters follow)."""

    def __init__(self, store: Store, changed: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._changed = changed

    def CreateSecurityGroup(self, request: pb.CreateSecurityGroupRequest,
                            context: grpc.ServicerContext) -> pb.SecurityGroup:
        tenant = current_caller().require_tenant()
        g = request.security_group
        made = self._store.security_groups.create_group(tenant, g.name, g.description)
        self._changed()
        return group_to_pb(made)

    def GetSecurityGroup(self, request: pb.GetSecurityGroupRequest,
                         context: grpc.ServicerContext) -> pb.SecurityGroup:
        tenant = current_caller().require_tenant()
        return group_to_pb(self._store.security_groups.get_group(tenant, request.id))

    def ListSecurityGroups(self, request: pb.ListSecurityGroupsRequest,
                           context: grpc.ServicerContext) -> pb.ListSecurityGroupsResponse:
        tenant = current_caller().require_tenant()
        page = self._store.security_groups.list_groups(
            tenant, page_request(request.page_size, request.page_token))
        return pb.ListSecurityGroupsResponse(
            security_groups=[group_to_pb(g) for g in page.items],
            next_page_token=page.next_page_token)

    def DeleteSecurityGroup(self, request: pb.DeleteSecurityGroupRequest,
                            context: grpc.ServicerContext) -> pb.DeleteSecurityGroupResponse:
        tenant = current_caller().require_tenant()
        self._store.security_groups.delete_group(tenant, request.id)
        self._changed()
        return pb.DeleteSecurityGroupResponse()

    def CreateSecurityGroupRule(self, request: pb.CreateSecurityGroupRuleRequest,
                                context: grpc.ServicerContext) -> pb.SecurityGroupRule:
        tenant = current_caller().require_tenant()
        r = request.rule
        made = self._store.security_groups.create_rule(tenant, r.security_group_id,
                                                       rule_spec(r))
        self._changed()
        return rule_to_pb(made)

    def DeleteSecurityGroupRule(self, request: pb.DeleteSecurityGroupRuleRequest,
                                context: grpc.ServicerContext
                                ) -> pb.DeleteSecurityGroupRuleResponse:
        tenant = current_caller().require_tenant()
        self._store.security_groups.delete_rule(tenant, request.id)
        self._changed()
        return pb.DeleteSecurityGroupRuleResponse()


def add_to_server(store: Store, server: grpc.Server,
                  changed: Callable[[], None] = lambda: None) -> tuple[str, ...]:
    rpc.add_SecurityGroupServiceServicer_to_server(SecurityGroupServicer(store, changed), server)
    return SERVICES
