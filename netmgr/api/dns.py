"""DnsRecordService: DNS records of a tenant's networks and VPCs, served by their routers."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import dns_pb2 as pb
from cloudnet.netmgr.v1 import dns_pb2_grpc as rpc

from netmgr.api.auth import current_caller
from netmgr.api.convert import status_fields
from netmgr.api.core import RouterHooks, _Base
from netmgr.model.dns import DnsRecord, DnsRecordSpec
from netmgr.model.paging import page_request
from netmgr.store.facade import Store

SERVICES = ("cloudnet.netmgr.v1.DnsRecordService",)


def dns_record_to_pb(r: DnsRecord) -> pb.DnsRecord:
    return pb.DnsRecord(**status_fields(r.status, pb.DnsRecord), network_id=r.network_id,
                        vpc_id=r.vpc_id, name=r.name, type=r.type, value=r.value)


class DnsRecordServicer(_Base, rpc.DnsRecordServiceServicer):
    def CreateDnsRecord(self, request: pb.CreateDnsRecordRequest,
                        context: grpc.ServicerContext) -> pb.DnsRecord:
        r = request.dns_record
        record = self._store.dns.create_dns_record(
            current_caller().require_tenant(),
            DnsRecordSpec(network_id=r.network_id, vpc_id=r.vpc_id, name=r.name, type=r.type,
                          value=r.value))
        self._notify(self._store.dns.router_of(record.status.id))
        return dns_record_to_pb(record)

    def GetDnsRecord(self, request: pb.GetDnsRecordRequest,
                     context: grpc.ServicerContext) -> pb.DnsRecord:
        return dns_record_to_pb(self._store.dns.get_dns_record(
            current_caller().require_tenant(), request.id))

    def ListDnsRecords(self, request: pb.ListDnsRecordsRequest,
                       context: grpc.ServicerContext) -> pb.ListDnsRecordsResponse:
        page = self._store.dns.list_dns_records(
            current_caller().require_tenant(),
            page_request(request.page_size, request.page_token), network_id=request.network_id,
            vpc_id=request.vpc_id)
        return pb.ListDnsRecordsResponse(dns_records=[dns_record_to_pb(r) for r in page.items],
                                         next_page_token=page.next_page_token)

    def DeleteDnsRecord(self, request: pb.DeleteDnsRecordRequest,
                        context: grpc.ServicerContext) -> pb.DeleteDnsRecordResponse:
        self._notify(self._store.dns.delete_dns_record(current_caller().require_tenant(),
                                                       request.id))
        return pb.DeleteDnsRecordResponse()


def add_to_server(store: Store, hooks: RouterHooks, server: grpc.Server) -> tuple[str, ...]:
    rpc.add_DnsRecordServiceServicer_to_server(DnsRecordServicer(store, hooks), server)
    return SERVICES
