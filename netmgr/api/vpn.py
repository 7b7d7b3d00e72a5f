"""gRPC servicer of the site-to-site VPN (``VpnService``) and its conversions."""

from __future__ import annotations

from typing import Any

import grpc
from cloudnet.netmgr.v1 import vpn_pb2 as pb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as rpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.api.convert import OBJECT_STATES
from netmgr.api.core import Ctx, RouterHooks, _Base, _list_scope, _tenant
from netmgr.model import vpn as mv
from netmgr.model.paging import page_request
from netmgr.model.validation_vpn import CustomerGatewaySpec
from netmgr.store.facade import Store

IKE_VERSIONS = {pb.IKE_VERSION_UNSPECIFIED: 2, pb.IKE_VERSION_1: 1, pb.IKE_VERSION_2: 2}


def _ts(when: Any) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def gateway_to_pb(g: mv.VpnGateway) -> pb.VpnGateway:
    return pb.VpnGateway(id=g.id, tenant_id=g.tenant_id, network_id=g.network_id,
                         vpc_id=g.vpc_id, public_ip=g.public_ip, local_cidrs=list(g.local_cidrs),
                         state=OBJECT_STATES[g.state], error=g.error, generation=g.generation,
                         create_time=_ts(g.created_at))


def customer_gateway_spec(m: pb.CustomerGateway) -> CustomerGatewaySpec:
    return CustomerGatewaySpec(
        name=m.name, peer_address=m.peer_address, peer_cidrs=tuple(m.peer_cidrs), psk=m.psk,
        ike_version=IKE_VERSIONS.get(m.ike_version, 0), ike_proposals=tuple(m.ike_proposals),
        esp_proposals=tuple(m.esp_proposals), ike_lifetime=m.ike_lifetime_seconds,
        esp_lifetime=m.esp_lifetime_seconds, dpd_delay=m.dpd_delay_seconds,
        dpd_timeout=m.dpd_timeout_seconds, force_encap=m.force_encapsulation)


def customer_gateway_to_pb(c: mv.CustomerGateway) -> pb.CustomerGateway:
    # The pre-shared key is never returned.
    return pb.CustomerGateway(
        id=c.id, tenant_id=c.tenant_id, name=c.name, peer_address=c.peer_address,
        peer_cidrs=list(c.peer_cidrs),
        ike_version=pb.IKE_VERSION_1 if c.ike_version == 1 else pb.IKE_VERSION_2,
        ike_proposals=list(c.ike_proposals), esp_proposals=list(c.esp_proposals),
        ike_lifetime_seconds=c.ike_lifetime, esp_lifetime_seconds=c.esp_lifetime,
        dpd_delay_seconds=c.dpd_delay, dpd_timeout_seconds=c.dpd_timeout,
        force_encapsulation=c.force_encap, create_time=_ts(c.created_at))


def tunnel_status(sa: dict[str, Any]) -> pb.VpnTunnelStatus:
    """The router's VpnConnectionStatus (stored as a dict) as the API shows it."""
    if not sa:
        return pb.VpnTunnelStatus()
    out = pb.VpnTunnelStatus(
        ike_state=sa.get("ike_state", ""), established_seconds=int(sa.get("established_seconds",
                                                                           0)),
        bytes_in=int(sa.get("bytes_in", 0)), bytes_out=int(sa.get("bytes_out", 0)),
        last_error=sa.get("last_error", ""), backend=sa.get("backend", ""))
    for ch in sa.get("children", []):
        out.child_sas.append(json_format.ParseDict(
            {k: v for k, v in ch.items() if k in pb.VpnChildSa.DESCRIPTOR.fields_by_name},
            pb.VpnChildSa()))
    if sa.get("update_time"):
        out.update_time.FromJsonString(sa["update_time"])
    return out


def connection_to_pb(c: mv.VpnConnection) -> pb.VpnConnection:
    return pb.VpnConnection(
        id=c.id, tenant_id=c.tenant_id, vpn_gateway_id=c.vpn_gateway_id,
        customer_gateway_id=c.customer_gateway_id, passive=c.passive, network_id=c.network_id,
        vpc_id=c.vpc_id,
        state=OBJECT_STATES[c.state], error=c.error, generation=c.generation,
        status=tunnel_status(c.sa_status), create_time=_ts(c.created_at))


# mypy sees neither grpc stubs nor the generated ones: the servicer bases are Any (ignore[misc]).
class VpnServicer(_Base, rpc.VpnServiceServicer):
    def __init__(self, store: Store, hooks: RouterHooks) -> None:
        super().__init__(store, hooks)
        self._vpn = store.vpn

    # gateways
    def CreateVpnGateway(self, request: pb.CreateVpnGatewayRequest, context: Ctx) -> pb.VpnGateway:
        g = request.vpn_gateway
        return gateway_to_pb(self._vpn.create_gateway(_tenant(), g.vpc_id, g.network_id))

    def GetVpnGateway(self, request: pb.GetVpnGatewayRequest, context: Ctx) -> pb.VpnGateway:
        return gateway_to_pb(self._vpn.get_gateway(_tenant(), request.id))

    def ListVpnGateways(self, request: pb.ListVpnGatewaysRequest,
                        context: Ctx) -> pb.ListVpnGatewaysResponse:
        page = self._vpn.list_gateways(_list_scope(), page_request(request.page_size,
                                                               request.page_token))
        return pb.ListVpnGatewaysResponse(vpn_gateways=[gateway_to_pb(g) for g in page.items],
                                          next_page_token=page.next_page_token)

    def DeleteVpnGateway(self, request: pb.DeleteVpnGatewayRequest,
                         context: Ctx) -> pb.DeleteVpnGatewayResponse:
        router_id = self._vpn.delete_gateway(_tenant(), request.id)
        if router_id:
            self._notify(router_id)
        return pb.DeleteVpnGatewayResponse()

    # customer gateways
    def CreateCustomerGateway(self, request: pb.CreateCustomerGatewayRequest,
                              context: Ctx) -> pb.CustomerGateway:
        return customer_gateway_to_pb(self._vpn.create_customer_gateway(
            _tenant(), customer_gateway_spec(request.customer_gateway)))

    def GetCustomerGateway(self, request: pb.GetCustomerGatewayRequest,
                           context: Ctx) -> pb.CustomerGateway:
        return customer_gateway_to_pb(self._vpn.get_customer_gateway(_tenant(), request.id))

    def ListCustomerGateways(self, request: pb.ListCustomerGatewaysRequest,
                             context: Ctx) -> pb.ListCustomerGatewaysResponse:
        page = self._vpn.list_customer_gateways(
            _list_scope(), page_request(request.page_size, request.page_token))
        return pb.ListCustomerGatewaysResponse(
            customer_gateways=[customer_gateway_to_pb(c) for c in page.items],
            next_page_token=page.next_page_token)

    def DeleteCustomerGateway(self, request: pb.DeleteCustomerGatewayRequest,
                              context: Ctx) -> pb.DeleteCustomerGatewayResponse:
        self._vpn.delete_customer_gateway(_tenant(), request.id)
        return pb.DeleteCustomerGatewayResponse()

    # connections
    def CreateVpnConnection(self, request: pb.CreateVpnConnectionRequest,
                            context: Ctx) -> pb.VpnConnection:
        m = request.vpn_connection
        c = self._vpn.create_connection(_tenant(), m.vpn_gateway_id, m.customer_gateway_id,
                                        m.passive)
        self._notify(self._vpn.router_of_connection(c))
        return connection_to_pb(c)

    def GetVpnConnection(self, request: pb.GetVpnConnectionRequest,
                         context: Ctx) -> pb.VpnConnection:
        return connection_to_pb(self._vpn.get_connection(_tenant(), request.id))

    def ListVpnConnections(self, request: pb.ListVpnConnectionsRequest,
                           context: Ctx) -> pb.ListVpnConnectionsResponse:
        page = self._vpn.list_connections(
            _list_scope(), page_request(request.page_size, request.page_token),
            request.vpn_gateway_id)
        return pb.ListVpnConnectionsResponse(
            vpn_connections=[connection_to_pb(c) for c in page.items],
            next_page_token=page.next_page_token)

    def DeleteVpnConnection(self, request: pb.DeleteVpnConnectionRequest,
                            context: Ctx) -> pb.DeleteVpnConnectionResponse:
        self._notify(self._vpn.delete_connection(_tenant(), request.id))
        return pb.DeleteVpnConnectionResponse()

    def ResetVpnConnection(self, request: pb.ResetVpnConnectionRequest,
                           context: Ctx) -> pb.VpnConnection:
        c, router_id = self._vpn.reset_connection(_tenant(), request.id)
        self._notify(router_id)
        return connection_to_pb(c)


SERVICES = (pb.DESCRIPTOR.services_by_name["VpnService"].full_name,)


def add_to_server(store: Store, hooks: RouterHooks, server: grpc.Server) -> tuple[str, ...]:
    rpc.add_VpnServiceServicer_to_server(VpnServicer(store, hooks), server)
    return SERVICES
