"""gRPC servicers of VPCs: thin, like ``netmgr.servicers``. Tiers are created
through NetworkService.CreateNetwork with ``vpc_id`` set."""

from __future__ import annotations

from cloudnet.netmgr.v1 import vpc_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as rpc
from google.protobuf import timestamp_pb2

from netmgr import model_vpc as mv
from netmgr.paging import page_request
from netmgr.servicers import Ctx, _Base, _tenant
from netmgr.validation import check_id, resolve_update_mask
from netmgr.validation_vpc import VpcSpec

VPC_UPDATABLE = frozenset({"name"})


def vpc_to_pb(v: mv.Vpc) -> pb.Vpc:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(v.created_at)
    return pb.Vpc(id=v.id, tenant_id=v.tenant_id, name=v.name, cidr=v.cidr, domain=v.domain,
                  router_id=v.router_id, source_nat_ip=v.source_nat_ip,
                  tier_ids=list(v.tier_ids), create_time=ts)


class VpcServicer(_Base, rpc.VpcServiceServicer):
    def CreateVpc(self, request: pb.CreateVpcRequest, context: Ctx) -> pb.Vpc:
        vpc = self._store.create_vpc(_tenant(), VpcSpec(
            name=request.vpc.name, cidr=request.vpc.cidr, domain=request.vpc.domain))
        self._notify(vpc.router_id)
        return vpc_to_pb(vpc)

    def GetVpc(self, request: pb.GetVpcRequest, context: Ctx) -> pb.Vpc:
        return vpc_to_pb(self._store.get_vpc(_tenant(), request.id))

    def ListVpcs(self, request: pb.ListVpcsRequest, context: Ctx) -> pb.ListVpcsResponse:
        page = self._store.list_vpcs(_tenant(), page_request(request.page_size,
                                                             request.page_token))
        return pb.ListVpcsResponse(vpcs=[vpc_to_pb(v) for v in page.items],
                                   next_page_token=page.next_page_token)

    def UpdateVpc(self, request: pb.UpdateVpcRequest, context: Ctx) -> pb.Vpc:
        tenant = _tenant()
        vpc_id = check_id(request.vpc.id, "vpc.id")
        present = ["name"] if request.vpc.name else []
        paths = resolve_update_mask(request.update_mask.paths, VPC_UPDATABLE, present)
        name = request.vpc.name if "name" in paths else None
        return vpc_to_pb(self._store.update_vpc(tenant, vpc_id, name))

    def DeleteVpc(self, request: pb.DeleteVpcRequest, context: Ctx) -> pb.DeleteVpcResponse:
        gone = self._store.delete_vpc(_tenant(), request.id)
        self._notify(gone.router_id)  # the reconciler removes the router
        return pb.DeleteVpcResponse()


def add_to_server(store: object, hooks: object, server: object) -> tuple[str, ...]:
    """Register the VPC services; returns their full names (health, reflection)."""
    rpc.add_VpcServiceServicer_to_server(VpcServicer(store, hooks), server)  # type: ignore[arg-type]
    return SERVICES


SERVICES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("VpcService",))
