"""Client-supplied request IDs on create calls (``netmgr.store.requests``).

A create call may carry gRPC metadata ``x-request-id``: 1 to 64 characters
(letters, digits, ``.``, ``_``, ``:``, ``-``), unique per tenant for a day.
Metadata rather than a field, so every create call of every service takes
it the same way, and a client library can add it to every create and keep
it on its retries without knowing each message.

``RequestIdInterceptor`` does it for every create-style call of the API
(``Create*``, ``Allocate*``, ``Import*``: each makes one object), in one
place: it opens the call's create request around the servicer, so the
store's write path records the ID with the object in the same transaction
(or finds it there, ``Replayed``), and answers a replay with the object the
first try made, read by the service's own ``Get<Object>`` call (the one
whose request is ``{id}`` and whose answer is the create's). A create whose
answer no Get rebuilds has its own replay here (``_CUSTOM``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from common.grpc_errors import (
    AlreadyExists,
    DomainError,
    InvalidArgument,
    quote,
    wrap_unary_handler,
)
from netmgr.api.auth import current_caller
from netmgr.api.security_groups import rule_to_pb
from netmgr.store.facade import Store
from netmgr.store.requests import Replayed, create_request, recorded

METADATA_KEY = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
API_PACKAGE = "cloudnet.netmgr.v1"
# Calls that make one object each (and so are made idempotent by a request ID).
CREATE_PREFIXES = ("Create", "Allocate", "Import")


def is_create(method_name: str) -> bool:
    return method_name.startswith(CREATE_PREFIXES)


def request_id(context: Any) -> str:
    """The call's request ID ("" when it has none); INVALID_ARGUMENT naming it if malformed."""
    values = [v for k, v in (context.invocation_metadata() or ()) if k == METADATA_KEY]
    if not values:
        return ""
    value = values[-1]
    if not isinstance(value, str) or not _VALID.fullmatch(value) or len(values) > 1:
        raise InvalidArgument.one(
            METADATA_KEY, "one value of 1 to 64 letters, digits, '.', '_', ':' or '-', got "
            f"{quote(str(value))}" + (f" ({len(values)} values)" if len(values) > 1 else ""))
    return value


def _method(path: str) -> MethodDescriptor | None:
    """``/pkg.Service/Method`` in the protobuf descriptor pool (None: not one of ours)."""
    service, _, name = path.lstrip("/").rpartition("/")
    if not service.startswith(API_PACKAGE + "."):
        return None
    try:
        return descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return None


def get_method_for(create: MethodDescriptor) -> MethodDescriptor | None:
    """The service's ``Get<Object>`` that answers with what ``create`` answers,
    taking ``{id}`` (None: there is none)."""
    out = create.output_type
    for m in create.containing_service.methods:
        if (m.name == f"Get{out.name}" and m.output_type is out
                and [f.name for f in m.input_type.fields] == ["id"]):
            return m
    return None


# store, tenant, object id -> the create's answer, for the creates no Get
# rebuilds (CreateToken's secret is shown once: the retry is told the token's
# ID instead).
Replay = Callable[[Store, str, str], Message]


def _token_replay(store: Store, tenant: str, object_id: str) -> Message:
    raise AlreadyExists(METADATA_KEY, f"this request ID already created token {object_id}; "
                        "its secret is shown only once (delete the token and create another)")


_CUSTOM: dict[str, Replay] = {
    "CreateToken": _token_replay,
    "CreateSecurityGroupRule": lambda store, tenant, object_id: rule_to_pb(
        store.security_groups.get_rule(tenant, object_id)),
}


def has_replay(create: MethodDescriptor) -> bool:
    return create.name in _CUSTOM or get_method_for(create) is not None


class RequestIdInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Makes every create-style call idempotent with its ``x-request-id``.

    Runs innermost (the caller is known, the request checked), so the replay's
    Get call is the servicer's own, with the same caller."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._services: list[grpc.GenericRpcHandler] = []

    def watch(self, server: grpc.Server) -> None:
        """Keep the services added to ``server`` from now on: a replay calls
        their Get methods (a sync interceptor's continuation finds only the
        call's own method)."""
        add = server.add_generic_rpc_handlers

        def recording(handlers: Any) -> None:
            self._services.extend(handlers)
            add(handlers)

        server.add_generic_rpc_handlers = recording

    def _handler(self, path: str, metadata: Any) -> grpc.RpcMethodHandler:
        for service in self._services:
            handler = service.service(_Details(path, metadata))
            if handler is not None:
                return handler
        raise AssertionError(f"{path} is not served")

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        path: str = handler_call_details.method
        handler = continuation(handler_call_details)
        create = _method(path)
        if create is None or not is_create(create.name):
            return handler
        name = create.name

        def replay(object_id: str, tenant: str, context: grpc.ServicerContext) -> Any:
            custom = _CUSTOM.get(name)
            if custom is not None:
                return custom(self._store, tenant, object_id)
            get = get_method_for(create)
            if get is None:  # a create without a Get: the unit test names it
                raise AssertionError(f"{name}: no Get{create.output_type.name} to replay with")
            get_handler = self._handler(f"/{get.containing_service.full_name}/{get.name}",
                                        handler_call_details.invocation_metadata)
            # The class is only known at run time (every Get takes an id).
            request_class: Any = message_factory.GetMessageClass(get.input_type)
            request = request_class(id=object_id)
            return get_handler.unary_unary(request, context)

        def wrap(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def once(request: Any, context: grpc.ServicerContext) -> Any:
                rid = request_id(context)
                if not rid:
                    return behaviour(request, context)
                tenant = current_caller().tenant_id
                with create_request(tenant, rid, name):
                    try:
                        return behaviour(request, context)
                    except Replayed as r:
                        return replay(r.object_id, tenant, context)
                    except DomainError:
                        # A retry racing the first try may be refused by its own
                        # checks (the first one's object now conflicts with it):
                        # answer as the first one did if it committed.
                        object_id = self._store.db.read(
                            lambda s: recorded(s, tenant, rid, name))
                        if object_id is None:
                            raise
                        return replay(object_id, tenant, context)

            return once

        return wrap_unary_handler(handler, wrap)


class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]  # grpc has no type stubs
    def __init__(self, method: str, invocation_metadata: Any) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata
