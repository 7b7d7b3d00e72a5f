"""QuotaService: a tenant's limits and usage; the admin sets defaults and
overrides (netmgr.store.quotas enforces them in every write)."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import quota_pb2 as pb
from cloudnet.netmgr.v1 import quota_pb2_grpc as rpc

from common.grpc_errors import PermissionDenied
from netmgr.api.auth import current_caller
from netmgr.model.quotas import Quota
from netmgr.store.facade import Store

SERVICES = ("cloudnet.netmgr.v1.QuotaService",)


def quotas_to_pb(tenant_id: str, quotas: list[Quota]) -> pb.Quotas:
    return pb.Quotas(tenant_id=tenant_id, quotas=[
        pb.Quota(resource=q.resource, limit=q.limit, used=q.used, overridden=q.overridden)
        for q in quotas])


class QuotaServicer(rpc.QuotaServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

    def _show(self, tenant_id: str) -> pb.Quotas:
        if not tenant_id:
            return quotas_to_pb("", self._store.quotas.default_quotas())
        return quotas_to_pb(tenant_id, self._store.quotas.quotas(tenant_id))

    def GetQuotas(self, request: pb.GetQuotasRequest,
                  context: grpc.ServicerContext) -> pb.Quotas:
        caller = current_caller()
        if not caller.admin:
            if request.tenant_id and request.tenant_id != caller.tenant_id:
                raise PermissionDenied("a tenant token sees only its own tenant's quotas")
            return self._show(caller.tenant_id)
        return self._show(request.tenant_id or caller.tenant_id)

    def SetQuota(self, request: pb.SetQuotaRequest,
                 context: grpc.ServicerContext) -> pb.Quotas:
        self._store.quotas.set_quota(request.tenant_id, request.resource,
                                     None if request.reset else request.limit)
        return self._show(request.tenant_id)


def add_to_server(store: Store, server: grpc.Server) -> tuple[str, ...]:
    rpc.add_QuotaServiceServicer_to_server(QuotaServicer(store), server)
    return SERVICES
