"""DebugService: a tenant's router diagnostics, proxied to the router's agent.

Every call first resolves the router in the caller's tenant (another
tenant's router is NOT_FOUND, exactly like an unknown one), then forwards the
request to the agent running the router (through the reconciler's channel:
its host's agent, or a VM router's own) with the router ID it resolved, so a
caller can never reach another router. The
agent's status (INVALID_ARGUMENT with the field, ...) is passed through.

The server interceptors only wrap unary calls, so the streaming calls
(Capture, Trace) authenticate here with the same functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from cloudnet.netmgr.v1 import debug_pb2, debug_pb2_grpc
from cloudnet.router.v1 import diag_pb2 as dpb
from cloudnet.router.v1 import diag_pb2_grpc

from common.grpc_errors import (
    MAX_MESSAGE,
    DomainError,
    FailedPrecondition,
    abort,
    clip,
    one_line,
)
from netmgr.api.auth import _caller, access_for, authenticate, authorize, current_caller
from netmgr.api.core import RouterHooks
from netmgr.explain import flows as explain_mod
from netmgr.store.facade import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE_NAME: str = debug_pb2.DESCRIPTOR.services_by_name["DebugService"].full_name
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
    context.abort(code, clip(one_line(details), MAX_MESSAGE) or code.name)


# mypy sees neither grpc stubs nor the generated ones: the servicer bases are Any (ignore[misc]).
class DebugServicer(debug_pb2_grpc.DebugServiceServicer):
    def __init__(self, store: Store, hooks: RouterHooks, admin_token: str) -> None:
        self._store = store
        # The reconciler's channels: a host's agent, or a VM router's own.
        self._hooks = hooks
        self._admin_token = admin_token

    def _resolve(self, router_id: str) -> tuple[diag_pb2_grpc.RouterDiagnosticsStub, str]:
        tenant = current_caller().require_tenant()
        router = self._store.get_router(tenant, router_id)
        try:
            channel = self._hooks.router_channel(router.id, router.host, router.backend)
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
            shown: dpb.ShowResponse = stub.Show(req, timeout=PROXY_TIMEOUT)
            return shown
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
            result: dpb.ProbeResult = stub.Probe(req, timeout=PROXY_TIMEOUT + 60)
            return result
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


def add_to_server(store: Store, hooks: RouterHooks, admin_token: str,
                  server: grpc.Server) -> str:
    debug_pb2_grpc.add_DebugServiceServicer_to_server(
        DebugServicer(store, hooks, admin_token), server)
    return SERVICE_NAME


