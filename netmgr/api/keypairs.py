"""KeyPairService: a tenant's SSH public keys, named by ports for their guests."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import keypair_pb2 as pb
from cloudnet.netmgr.v1 import keypair_pb2_grpc as rpc
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.api.auth import current_caller
from netmgr.model.metadata import KeyPair, KeyPairSpec
from netmgr.model.paging import page_request
from netmgr.store.facade import Store

SERVICES = ("cloudnet.netmgr.v1.KeyPairService",)


def key_pair_to_pb(k: KeyPair) -> pb.KeyPair:
    created = Timestamp()
    if k.created_at is not None:
        created.FromDatetime(k.created_at)
    return pb.KeyPair(id=k.id, tenant_id=k.tenant_id, name=k.name, public_key=k.public_key,
                      fingerprint=k.fingerprint, key_type=k.key_type, create_time=created)


class KeyPairServicer(rpc.KeyPairServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

    def ImportKeyPair(self, request: pb.ImportKeyPairRequest,
                      context: grpc.ServicerContext) -> pb.KeyPair:
        spec = KeyPairSpec(name=request.key_pair.name, public_key=request.key_pair.public_key)
        tenant = current_caller().require_tenant()
        return key_pair_to_pb(self._store.import_key_pair(tenant, spec))

    def GetKeyPair(self, request: pb.GetKeyPairRequest,
                   context: grpc.ServicerContext) -> pb.KeyPair:
        tenant = current_caller().require_tenant()
        return key_pair_to_pb(self._store.get_key_pair(tenant, request.id))

    def ListKeyPairs(self, request: pb.ListKeyPairsRequest,
                     context: grpc.ServicerContext) -> pb.ListKeyPairsResponse:
        tenant = current_caller().require_tenant()
        page = self._store.list_key_pairs(tenant, page_request(request.page_size,
                                                               request.page_token))
        return pb.ListKeyPairsResponse(key_pairs=[key_pair_to_pb(k) for k in page.items],
                                       next_page_token=page.next_page_token)

    def DeleteKeyPair(self, request: pb.DeleteKeyPairRequest,
                      context: grpc.ServicerContext) -> pb.DeleteKeyPairResponse:
        tenant = current_caller().require_tenant()
        self._store.delete_key_pair(tenant, request.id)
        return pb.DeleteKeyPairResponse()


def add_to_server(store: Store, server: grpc.Server) -> tuple[str, ...]:
    rpc.add_KeyPairServiceServicer_to_server(KeyPairServicer(store), server)
    return SERVICES
