"""The gRPC servicers: thin. Each call is: who is calling (``auth``), proto to
validation input (``convert``), one store call (one transaction), hooks after
the commit, model to proto. Errors are DomainErrors, mapped to status codes
by ``common.grpc_errors.ErrorMappingInterceptor``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc

from common.grpc_errors import FailedPrecondition, PermissionDenied
from netmgr.api import convert, passwords
from netmgr.api.auth import current_caller
from netmgr.api.convert_redundancy import add_instances
from netmgr.model import edge as me
from netmgr.model.core import Port
from netmgr.model.paging import page_request
from netmgr.model.validation import check_id
from netmgr.store.facade import Store

log = logging.getLogger(__name__)

Ctx: TypeAlias = grpc.ServicerContext


# (kind, id) of an edge rule, e.g. ("portforward", "<id>").
EdgeRef: TypeAlias = tuple[str, str]
# The edge rules the reconciler can send to a router as a delta.
# A port: its guest metadata changed (nothing else the router sees).
EdgeRule: TypeAlias = me.StaticNat | me.PortForward | me.FirewallRule | Port
# A VM router's serial console from an offset: (data, next offset, compute host).
ConsoleChunk: TypeAlias = tuple[bytes, int, str]


class RouterHooks(Protocol):
    """What the API asks of the reconciler (``netmgr.reconcile.reconciler.Reconciler``
    in the server; ``NullHooks`` without one). Changes are told always after
    they committed, in model terms; the reconciler alone speaks to agents."""

    def notify(self, router_id: str) -> None:
        """The router's model changed: bring the router to it."""
        ...

    def restart(self, router_id: str) -> None:
        """Tear the router's runtime down (keeping leases) and rebuild it."""
        ...

    def edge_changed(self, router_id: str, generation: int, removed: Sequence[EdgeRef],
                     added: Sequence[EdgeRule]) -> None:
        """What an edge change at `generation` removed and added or replaced (the
        committed objects); told before the change's ``notify``."""
        ...

    def rule_counters(self, router_id: str,
                      refs: Sequence[EdgeRef]) -> Mapping[EdgeRef, tuple[int, int]]:
        """(packets, bytes) per rule, from the router; FailedPrecondition when
        the router cannot be asked."""
        ...

    def router_channel(self, router_id: str, host: str, backend: str) -> grpc.Channel:
        """A channel to the agent running the router (its host's, or its VM's
        own); LookupError when there is none (yet)."""
        ...

    def router_console(self, router_id: str, offset: int) -> ConsoleChunk:
        """A VM router's serial console; FailedPrecondition when there is none."""
        ...


class NullHooks:
    """No reconciler: changes are only stored; nothing reaches a router."""

    def notify(self, router_id: str) -> None:
        pass

    def restart(self, router_id: str) -> None:
        pass

    def edge_changed(self, router_id: str, generation: int, removed: Sequence[EdgeRef],
                     added: Sequence[EdgeRule]) -> None:
        pass

    def rule_counters(self, router_id: str,
                      refs: Sequence[EdgeRef]) -> Mapping[EdgeRef, tuple[int, int]]:
        raise FailedPrecondition("no reconciler: the router's counters cannot be read")

    def router_channel(self, router_id: str, host: str, backend: str) -> grpc.Channel:
        raise LookupError("no reconciler: the router's agent cannot be reached")

    def router_console(self, router_id: str, offset: int) -> ConsoleChunk:
        raise FailedPrecondition(f"router {router_id}: no reconciler: it has no console")


class _Base:
    def __init__(self, store: Store, hooks: RouterHooks) -> None:
        self._store = store
        self._hooks = hooks

    def _notify(self, *router_ids: str) -> None:
        # The change is committed: a failing hook must not turn it into an
        # error for the caller (the reconciler's resync catches up anyway).
        for router_id in router_ids:
            try:
                self._hooks.notify(router_id)
            except Exception:
                log.exception("notify(%s) failed", router_id)


def _tenant() -> str:
    return current_caller().require_tenant()


def _list_scope() -> str | None:
    """Whose objects a List shows: the caller's tenant's, or (None) every
    tenant's for the admin not acting as a tenant."""
    return current_caller().list_scope()


# mypy sees neither grpc stubs nor the generated ones: the servicer bases are Any (ignore[misc]).
class TenantServicer(_Base, rpc.TenantServiceServicer):
    def CreateTenant(self, request: pb.CreateTenantRequest, context: Ctx) -> pb.Tenant:
        return convert.tenant_to_pb(self._store.create_tenant(request.name))

    def GetTenant(self, request: pb.GetTenantRequest, context: Ctx) -> pb.Tenant:
        return convert.tenant_to_pb(self._store.get_tenant(request.id))

    def ListTenants(self, request: pb.ListTenantsRequest, context: Ctx) -> pb.ListTenantsResponse:
        page = self._store.list_tenants(page_request(request.page_size, request.page_token))
        return pb.ListTenantsResponse(tenants=[convert.tenant_to_pb(t) for t in page.items],
                                      next_page_token=page.next_page_token)

    def DeleteTenant(self, request: pb.DeleteTenantRequest,
                     context: Ctx) -> pb.DeleteTenantResponse:
        self._store.delete_tenant(request.id)
        return pb.DeleteTenantResponse()

    def CreateToken(self, request: pb.CreateTokenRequest, context: Ctx) -> pb.CreateTokenResponse:
        token, secret = self._store.create_token(request.tenant_id, request.name,
                                                 ttl_seconds=request.ttl_seconds,
                                                 read_only=request.read_only)
        return pb.CreateTokenResponse(token=convert.token_to_pb(token), secret=secret)

    def ListTokens(self, request: pb.ListTokensRequest, context: Ctx) -> pb.ListTokensResponse:
        page = self._store.list_tokens(request.tenant_id,
                                       page_request(request.page_size, request.page_token))
        return pb.ListTokensResponse(tokens=[convert.token_to_pb(t) for t in page.items],
                                     next_page_token=page.next_page_token)

    def DeleteToken(self, request: pb.DeleteTokenRequest, context: Ctx) -> pb.DeleteTokenResponse:
        self._store.delete_token(request.id)
        return pb.DeleteTokenResponse()

    def WhoAmI(self, request: pb.WhoAmIRequest, context: Ctx) -> pb.WhoAmIResponse:
        caller = current_caller()
        return pb.WhoAmIResponse(admin=caller.admin, tenant_id=caller.tenant_id,
                                 token_id=caller.token_id)


class ZoneServicer(_Base, rpc.ZoneServiceServicer):
    def GetZone(self, request: pb.GetZoneRequest, context: Ctx) -> pb.Zone:
        return convert.zone_to_pb(self._store.get_zone())

    def UpdateZone(self, request: pb.UpdateZoneRequest, context: Ctx) -> pb.Zone:
        changes = convert.zone_changes(request.zone, request.update_mask.paths)
        zone, bumped = self._store.update_zone(changes)
        self._notify(*bumped)
        return convert.zone_to_pb(zone)


class NetworkServicer(_Base, rpc.NetworkServiceServicer):
    def CreateNetwork(self, request: pb.CreateNetworkRequest, context: Ctx) -> pb.Network:
        if request.network.shared and not current_caller().admin:
            raise PermissionDenied("network.shared: only the admin creates shared networks")
        tenant, redundant = _tenant(), request.network.redundant
        spec = convert.network_spec(request.network)
        if redundant:  # refused before anything is created
            self._store.redundancy.check_redundant(spec.vpc_id, self._store.default_host,
                                                   backend=self._store.default_backend)
        network = self._store.create_network(tenant, spec)
        if redundant:
            self._store.redundancy.set_redundancy(tenant, network.id, "", True)
        self._notify(network.router_id)
        return self._redundant(convert.network_to_pb(network))

    def _redundant(self, out: pb.Network) -> pb.Network:
        out.redundant = self._store.redundancy.get(out.router_id) is not None
        return out

    def GetNetwork(self, request: pb.GetNetworkRequest, context: Ctx) -> pb.Network:
        return self._redundant(convert.network_to_pb(
            self._store.get_network(_tenant(), request.id)))

    def ListNetworks(self, request: pb.ListNetworksRequest,
                     context: Ctx) -> pb.ListNetworksResponse:
        page = self._store.list_networks(_list_scope(),
                                         page_request(request.page_size, request.page_token))
        return pb.ListNetworksResponse(networks=[convert.network_to_pb(n) for n in page.items],
                                       next_page_token=page.next_page_token)

    def UpdateNetwork(self, request: pb.UpdateNetworkRequest, context: Ctx) -> pb.Network:
        tenant = _tenant()
        network_id = check_id(request.network.id, "network.id")
        paths = list(request.update_mask.paths)
        if "shared_tenant_ids" in paths and not current_caller().admin:
            raise PermissionDenied("network.shared_tenant_ids: only the admin changes who "
                                   "may use a shared network")
        # Switching redundancy either way keeps leases and connections
        # (the instance that ran on stays master: netmgr.store.redundancy).
        if "redundant" in paths:
            paths.remove("redundant")
            self._store.redundancy.set_redundancy(tenant, network_id, "",
                                                  request.network.redundant)
            if not paths:
                network = self._store.get_network(tenant, network_id)
                self._notify(network.router_id)
                return self._redundant(convert.network_to_pb(network))
        upd = convert.network_update(request.network, paths)
        network = self._store.update_network(tenant, network_id, upd)
        self._notify(network.router_id)
        return self._redundant(convert.network_to_pb(network))

    def DeleteNetwork(self, request: pb.DeleteNetworkRequest,
                      context: Ctx) -> pb.DeleteNetworkResponse:
        gone = self._store.delete_network(_tenant(), request.id, force=request.force)
        self._notify(gone.router_id)  # the reconciler removes the router
        return pb.DeleteNetworkResponse()


class PortServicer(_Base, rpc.PortServiceServicer):
    def CreatePort(self, request: pb.CreatePortRequest, context: Ctx) -> pb.Port:
        tenant = _tenant()
        spec = convert.port_spec(request.port)
        port = self._store.create_port(tenant, spec)
        self._notify(port.router_id)
        return convert.port_to_pb(port)

    def _host_states(self, ports: list[pb.Port]) -> list[pb.Port]:
        if any(p.binding_host for p in ports):
            states = self._store.hosts.states()
            for p in ports:
                if p.binding_host:
                    p.binding_host_state = states.get(p.binding_host, "unknown")
        return ports

    def GetPort(self, request: pb.GetPortRequest, context: Ctx) -> pb.Port:
        return self._host_states([convert.port_to_pb(self._store.get_port(_tenant(),
                                                                          request.id))])[0]

    def ListPorts(self, request: pb.ListPortsRequest, context: Ctx) -> pb.ListPortsResponse:
        page = self._store.list_ports(_list_scope(),
                                      page_request(request.page_size, request.page_token),
                                      network_id=request.network_id)
        return pb.ListPortsResponse(ports=self._host_states(
                                        [convert.port_to_pb(p, with_user_data=False)
                                         for p in page.items]),
                                    next_page_token=page.next_page_token)

    def UpdatePort(self, request: pb.UpdatePortRequest, context: Ctx) -> pb.Port:
        tenant = _tenant()
        port_id = check_id(request.port.id, "port.id")
        upd = convert.port_update(request.port, request.update_mask.paths)
        before = self._store.get_port(tenant, port_id)
        port = self._store.update_port(tenant, port_id, upd)
        if port.generation != before.generation and _only_guest_metadata(before, port):
            # The router may take just this port's metadata (an edge delta).
            try:
                self._hooks.edge_changed(port.router_id, port.generation,
                                         [(me.GUEST_METADATA, port.id)], [port])
            except Exception:  # committed: the full push still carries it
                log.exception("edge_changed(%s) failed", port.router_id)
        # Also after a no-op update: a push of an unchanged generation is harmless.
        self._notify(port.router_id)
        return convert.port_to_pb(port)

    def DeletePort(self, request: pb.DeletePortRequest, context: Ctx) -> pb.DeletePortResponse:
        gone = self._store.delete_port(_tenant(), request.id)
        self._notify(gone.router_id)
        return pb.DeletePortResponse()

    def ResetPortPassword(self, request: pb.ResetPortPasswordRequest,
                          context: Ctx) -> pb.ResetPortPasswordResponse:
        tenant = _tenant()
        port = self._store.get_port(tenant, request.id)
        router = self._store.get_router(tenant, port.router_id)
        try:
            channel = self._hooks.router_channel(router.id, router.host, router.backend)
        except LookupError as e:
            raise FailedPrecondition(str(e)) from e
        password = passwords.generate_password()
        passwords.push_password(channel, router, port.id, password)
        return pb.ResetPortPasswordResponse(password=password)


# What a port's guest metadata holds and nothing else the router sees (a
# changed name is in no config); a change of anything else goes in full.
_METADATA_ONLY = frozenset({"user_data", "labels", "ssh_key_pair_id", "name"})
_BOOKKEEPING = frozenset({"status"})


def _only_guest_metadata(before: Port, after: Port) -> bool:
    changed = {f.name for f in dataclasses.fields(Port)
               if getattr(before, f.name) != getattr(after, f.name)} - _BOOKKEEPING
    return bool(changed) and changed <= _METADATA_ONLY


class RouterServicer(_Base, rpc.RouterServiceServicer):
    def GetRouter(self, request: pb.GetRouterRequest, context: Ctx) -> pb.Router:
        out = convert.router_to_pb(self._store.get_router(_tenant(), request.id))
        convert.fill_router_vms([out], self._store.router_vms_of)
        return add_instances(out, self._store.redundancy.get(out.id))

    def ListRouters(self, request: pb.ListRoutersRequest, context: Ctx) -> pb.ListRoutersResponse:
        page = self._store.list_routers(_list_scope(),
                                        page_request(request.page_size, request.page_token))
        routers = [convert.router_to_pb(r) for r in page.items]
        convert.fill_router_vms(routers, self._store.router_vms_of)
        redundant = self._store.redundancy.of_routers([r.id for r in routers])
        for r in routers:
            add_instances(r, redundant.get(r.id))
        return pb.ListRoutersResponse(routers=routers, next_page_token=page.next_page_token)

    def RestartRouter(self, request: pb.RestartRouterRequest, context: Ctx) -> pb.Router:
        router = self._store.restart_router(_tenant(), request.id)
        self._hooks.restart(router.id)
        return convert.router_to_pb(router)
