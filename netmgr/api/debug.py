"""DebugService: a tenant's router diagnostics, proxied to the router's agent.

Every call first resolves the router in the caller's tenant (another
tenant's router is NOT_FOUND, exactly like an unknown one), then forwards the
request to the agent of the router's host (``ServerConfig.agents``) with the
router ID it resolved, so a caller can never reach another router. The
agent's status (INVALID_ARGUMENT with the field, ...) is passed through.

The server interceptors only wrap unary calls, so the streaming calls
(Capture, Trace) authenticate here with the same functions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.router.v1 import diag_pb2 as dpb
from cloudnet.router.v1 import diag_pb2_grpc

from common.grpc_errors import DomainError, FailedPrecondition, abort
from netmgr.api.auth import _caller, access_for, authenticate, authorize, current_caller
from netmgr.explain import flows as explain_mod
from netmgr.store.facade import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
# (router id, host, backend) -> the channel to the agent running that router.
RouterChannel = Callable[[str, str, str], grpc.Channel]
SERVICE_NAME = debug_pb2.DESCRIPTOR.services_by_name["DebugService"].full_name
_PREFIX = f"/{SERVICE_NAME}/"
PROXY_TIMEOUT = 60.0


def _passthrough(context: grpc.ServicerContext, e: grpc.RpcError) -> None:
    """Abort with the agent's status (and its details, e.g. BadRequest)."""
    code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.INTERNAL
    details = e.details() if callable(getattr(e, "details", None)) else ""
    trailers = e.trailing_metadata() if callable(getattr(e, "trailing_metadata", None)) else None
    if code == grpc.StatusCode.UNAVAILABLE:
        code, details = grpc.StatusCode.UNAVAILABLE, "the router's agent cannot be reached"
    if trailers:
        context.set_trailing_metadata(
            [(k, v) for k, v in trailers if k == "grpc-status-details-bin"])
    context.abort(code, details or code.name)


class DebugServicer(debug_pb2_grpc.DebugServiceServicer):
    def __init__(self, store: Store, agents: dict[str, str], admin_token: str,
                 router_channel: RouterChannel | None = None) -> None:
        self._store = store
        self._agents = agents
        # The reconciler's resolver: reaches VM routers' own agents too.
        self._router_channel = router_channel
        self._admin_token = admin_token
        self._stubs: dict[str, diag_pb2_grpc.RouterDiagnosticsStub] = {}
        self._lock = threading.Lock()

    def _stub(self, host: str) -> diag_pb2_grpc.RouterDiagnosticsStub:
        with self._lock:
            stub = self._stubs.get(host)
            if stub is None:
                target = self._agents.get(host)
                if not target:
                    raise FailedPrecondition(f"no router agent is configured for host {host!r}")
                stub = self._stubs[host] = diag_pb2_grpc.RouterDiagnosticsStub(
                    grpc.insecure_channel(target))
            return stub

    def _resolve(self, router_id: str) -> tuple[diag_pb2_grpc.RouterDiagnosticsStub, str]:
        tenant = current_caller().require_tenant()
        router = self._store.get_router(tenant, router_id)
        if self._router_channel is None:
            return self._stub(router.host), router.id
        try:
            channel = self._router_channel(router.id, router.host, router.backend)
        except LookupError as e:
            raise FailedPrecondition(str(e)) from e
        return diag_pb2_grpc.RouterDiagnosticsStub(channel), router.id

    # ---- unary (auth and error mapping by the server's interceptors) --------

    def Show(self, request: dpb.ShowRequest, context: grpc.ServicerContext) -> dpb.ShowResponse:
        stub, rid = self._resolve(request.router_id)
        req = dpb.ShowRequest()
        req.CopyFrom(request)
        req.router_id = rid
        try:
            return stub.Show(req, timeout=PROXY_TIMEOUT)  # type: ignore[no-any-return]
        except grpc.RpcError as e:
            _passthrough(context, e)
            raise

    def Probe(self, request: dpb.ProbeRequest, context: grpc.ServicerContext
              ) -> dpb.ProbeResult:
        stub, rid = self._resolve(request.router_id)
        req = dpb.ProbeRequest()
        req.CopyFrom(request)
        req.router_id = rid
        try:
            return stub.Probe(req, timeout=PROXY_TIMEOUT + 60)  # type: ignore[no-any-return]
        except grpc.RpcError as e:
            _passthrough(context, e)
            raise

    def Explain(self, request: debug_pb2.ExplainRequest, context: grpc.ServicerContext
                ) -> debug_pb2.ExplainResponse:
        return explain_mod.explain(self._store, current_caller().require_tenant(), request)

    # ---- streams -------------------------------------------------------------

    def _authenticated_stream(self, context: grpc.ServicerContext, method: str,
                              body: Callable[[], Iterator[T]]) -> Iterator[T]:
        try:
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            caller = authenticate(metadata, self._admin_token, self._store)
            authorize(caller, access_for(_PREFIX + method))
        except DomainError as e:
            abort(context, e)
            return
        reset = _caller.set(caller)
        try:
            yield from body()
        except DomainError as e:
            abort(context, e)
        finally:
            _caller.reset(reset)

    def _proxy_stream(self, context: grpc.ServicerContext, call: Any) -> Iterator[Any]:
        context.add_callback(call.cancel)  # the caller went away: stop the agent's work
        try:
            yield from call
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED and not context.is_active():
                return
            _passthrough(context, e)

    def Capture(self, request: dpb.CaptureRequest, context: grpc.ServicerContext
                ) -> Iterator[dpb.CaptureChunk]:
        def body() -> Iterator[dpb.CaptureChunk]:
            stub, rid = self._resolve(request.router_id)
            req = dpb.CaptureRequest()
            req.CopyFrom(request)
            req.router_id = rid
            yield from self._proxy_stream(context, stub.Capture(req))

        return self._authenticated_stream(context, "Capture", body)

    def Trace(self, request: dpb.TraceRequest, context: grpc.ServicerContext
              ) -> Iterator[dpb.TraceEvent]:
        def body() -> Iterator[dpb.TraceEvent]:
            stub, rid = self._resolve(request.router_id)
            req = dpb.TraceRequest()
            req.CopyFrom(request)
            req.router_id = rid
            yield from self._proxy_stream(context, stub.Trace(req))

        return self._authenticated_stream(context, "Trace", body)


def add_to_server(store: Store, agents: dict[str, str], admin_token: str,
                  server: grpc.Server, router_channel: RouterChannel | None = None) -> str:
    debug_pb2_grpc.add_DebugServiceServicer_to_server(
        DebugServicer(store, agents, admin_token, router_channel), server)
    return SERVICE_NAME


