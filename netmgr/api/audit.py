"""The audit log of the API: every mutating call is an event (who: token
and tenant; what: method and object; result: status code), refused ones too.

``AuditInterceptor`` runs inside the error mapping and outside the auth
interceptor, so it sees every outcome (an auth refusal, a bad request, a
servicer's error, success) and, through ``auth.call_record``, who the
caller turned out to be. Calls whose caller was never identified (no token,
an unknown or expired one) are not recorded: anyone could fill the log
with them; they are logged by the error mapping like every refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.grpc_errors import DomainError, ResourceExhausted, wrap_unary_handler
from netmgr.api.auth import Caller, CallRecord, call_record, is_mutating
from netmgr.model import events as me
from netmgr.store.call_events import PendingEvent, pending_event

log = logging.getLogger(__name__)
# Liveness reports (an agent's periodic heartbeat) change no one's objects:
# a host's state change is an event of its own, a heartbeat is not.
UNAUDITED_PREFIXES = ("Heartbeat",)


def is_audited(method: str) -> bool:
    return is_mutating(method) and not method[method.rfind("/") + 1:].startswith(
        UNAUDITED_PREFIXES)


class EventRecorder(Protocol):
    def record(self, kind: str, *, tenant_id: str, token_id: str, method: str,
               object_id: str, code: str, detail: str = "") -> None: ...

    def wake(self) -> None:
        """An event was committed with a call's own change: wake the watchers."""


def _own_id(msg: Message) -> str:
    for fd, value in msg.ListFields():
        if fd.name == "id" and isinstance(value, str):
            return value
    return ""


def object_id(request: Message, response: Message | None) -> str:
    """The object a call acted on: the request's ``id``, else the response's
    (a create), else the ``id`` of the one message either wraps
    (``UpdateNetworkRequest.network``, ``CreateTokenResponse.token``)."""
    for msg in (request, response):
        if msg is not None and (found := _own_id(msg)):
            return found
    for msg in (response, request):
        if msg is None:
            continue
        for fd, value in msg.ListFields():
            if (fd.type == FieldDescriptor.TYPE_MESSAGE
                    and not fd.is_repeated
                    and (found := _own_id(value))):
                return found
    return ""


def _request_tenant(request: Message) -> str:
    for fd, value in request.ListFields():
        if fd.name == "tenant_id" and isinstance(value, str):
            return value
    return ""


def _who(caller: Caller, request: Message) -> tuple[str, str]:
    """(tenant ID, token ID) an event of this caller names."""
    tenant = caller.tenant_id or (_request_tenant(request) if caller.admin else "")
    return tenant, me.ADMIN_TOKEN_ID if caller.admin else caller.token_id


def _code(e: Exception, context: grpc.ServicerContext) -> str:
    if isinstance(e, DomainError):
        return str(e.code.name)
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return str(code.name)
    return "INTERNAL"


class AuditInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    def __init__(self, events: EventRecorder) -> None:
        self._events = events

    def _record(self, method: str, caller: Caller, request: Message,
                response: Message | None, code: str, error: Exception | None) -> None:
        quota = isinstance(error, ResourceExhausted) and error.field.startswith("quota.")
        tenant, token = _who(caller, request)
        try:
            self._events.record(
                me.KIND_QUOTA_REFUSED if quota else me.KIND_API_CALL,
                tenant_id=tenant, token_id=token,
                method=method, object_id=object_id(request, response), code=code,
                detail=error.message if isinstance(error, DomainError) else "")
        except Exception:  # the call's outcome stands; the log says what was lost
            log.exception("audit event of %s (%s) not recorded", method, code)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        handler = continuation(handler_call_details)
        if not is_audited(method):
            return handler

        def wrap(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def audited(request: Any, context: grpc.ServicerContext) -> Any:
                record = CallRecord()
                reset = call_record.set(record)
                # A success is recorded in the call's own write transaction
                # when it can be (netmgr.store.call_events); else below.
                pending = PendingEvent(
                    method, _own_id(request),
                    lambda: _who(record.caller, request) if record.caller is not None else None)
                try:
                    with pending_event(pending):
                        response = behaviour(request, context)
                except Exception as e:
                    if record.caller is not None:
                        self._record(method, record.caller, request, None, _code(e, context), e)
                    raise
                finally:
                    call_record.reset(reset)
                if pending.committed:
                    self._events.wake()
                elif record.caller is not None:
                    self._record(method, record.caller, request, response, "OK", None)
                return response

            return audited

        return wrap_unary_handler(handler, wrap)
