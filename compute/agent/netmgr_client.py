"""The compute agent's client of netmgr, and what netmgr's errors mean to its callers.

Every call names the metadata it carries: the caller's (their bearer token,
so netmgr decides what they may use) or the admin's acting as a tenant (for
cleanup, which must work even when the caller's token is gone). A failed
call becomes a DomainError about the field of the compute request that led
to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import grpc
from cloudnet.netmgr.v1 import hosts_pb2, hosts_pb2_grpc
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import keypair_pb2_grpc as krpc
from cloudnet.netmgr.v1 import netmgr_pb2 as npb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as nrpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from common.channels import make_channel
from common.grpc_errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from common.tls import ROLE_NETMGR, TlsFiles

TENANT_HEADER = "x-cloudnet-tenant"
Metadata: TypeAlias = Sequence[tuple[str, str]]


def netmgr_error(e: grpc.RpcError, field: str, what: str) -> DomainError:
    """netmgr refused a call made for request field `field` (naming a `what`)."""
    code = e.code()
    detail = e.details()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(detail)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return InvalidArgument.one(field, f"unknown {what}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidArgument.one(field, f"netmgr: {detail}")
    return FailedPrecondition(f"netmgr: {code.name}: {detail}")


def _blamed(e: grpc.RpcError, own_fields: Mapping[str, str]) -> str:
    """The request field behind the first port field netmgr's BadRequest names."""
    if e.code() != grpc.StatusCode.INVALID_ARGUMENT or not own_fields:
        return ""
    status = rpc_status.from_call(e)
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for v in bad.field_violations:
                for port_field, request_field in own_fields.items():
                    if v.field == port_field or v.field.startswith((f"{port_field}[",
                                                                    f"{port_field}.")):
                        return request_field
    return ""


class Netmgr:
    """netmgr stubs on one channel."""

    def __init__(self, target: str, admin_token: str, *, tls: TlsFiles | None = None,
                 policy: str = "pick_first") -> None:
        """``target``: one address, a comma list or a DNS name of netmgr
        replicas (common.channels); ``tls`` None: plaintext."""
        self.channel = make_channel(
            target, tls=tls, role=ROLE_NETMGR, policy=policy,
            retry_services=[npb.DESCRIPTOR.services_by_name[s]
                            for s in ("TenantService", "NetworkService", "PortService")]
            + [hosts_pb2.DESCRIPTOR.services_by_name["HostService"]])
        self.admin_token = admin_token
        self.tenants = nrpc.TenantServiceStub(self.channel)
        self.networks = nrpc.NetworkServiceStub(self.channel)
        self.ports = nrpc.PortServiceStub(self.channel)
        self.hosts = hosts_pb2_grpc.HostServiceStub(self.channel)
        self.key_pairs = krpc.KeyPairServiceStub(self.channel)

    def admin_as(self, tenant_id: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.admin_token}"), (TENANT_HEADER, tenant_id)]

    def close(self) -> None:
        self.channel.close()

    def whoami(self, md: Metadata) -> str:
        """The caller's tenant ("" for the admin not acting as a tenant)."""
        try:
            r = self.tenants.WhoAmI(npb.WhoAmIRequest(), metadata=md, timeout=10)
        except grpc.RpcError as e:
            raise netmgr_error(e, "authorization", "token") from e
        return str(r.tenant_id)

    def get_network(self, md: Metadata, network_id: str, field: str) -> npb.Network:
        try:
            net: npb.Network = self.networks.GetNetwork(npb.GetNetworkRequest(id=network_id),
                                                        metadata=md, timeout=10)
            return net
        except grpc.RpcError as e:
            raise netmgr_error(e, field, "network") from e

    def get_key_pair(self, md: Metadata, key_pair_id: str, field: str) -> kpb.KeyPair:
        try:
            kp: kpb.KeyPair = self.key_pairs.GetKeyPair(kpb.GetKeyPairRequest(id=key_pair_id),
                                                        metadata=md, timeout=10)
            return kp
        except grpc.RpcError as e:
            raise netmgr_error(e, field, "key pair") from e

    def create_port(self, md: Metadata, port: npb.Port, field: str,
                    hostname_field: str, own_fields: Mapping[str, str] | None = None) -> npb.Port:
        """`hostname_field`: the request field blamed when the port's DNS name is
        taken; `own_fields`: port field -> the request field it came from
        (blamed when netmgr names it)."""
        try:
            made: npb.Port = self.ports.CreatePort(npb.CreatePortRequest(port=port), metadata=md,
                                                   timeout=30)
            return made
        except grpc.RpcError as e:
            blamed = _blamed(e, own_fields or {})
            if blamed:
                field = blamed
            elif e.code() == grpc.StatusCode.ALREADY_EXISTS and "hostname" in (e.details() or ""):
                field = hostname_field
            raise netmgr_error(e, field, "network") from e

    def delete_port(self, tenant_id: str, port_id: str) -> None:
        """As the admin acting as `tenant_id`; a port already gone is fine."""
        try:
            self.ports.DeletePort(npb.DeletePortRequest(id=port_id),
                                  metadata=self.admin_as(tenant_id), timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise

    def register_host(self, host: hosts_pb2.Host) -> hosts_pb2.Host:
        md = [("authorization", f"Bearer {self.admin_token}")]
        registered: hosts_pb2.Host = self.hosts.RegisterHost(
            hosts_pb2.RegisterHostRequest(host=host), metadata=md, timeout=10)
        return registered
