"""Domain errors of cloudnet's gRPC servers and their one mapping to gRPC status.

The code behind a servicer (netmgr's store, validation and auth; the compute
agent's VM logic; the router agent's runtime) raises these and knows nothing
of gRPC. ``ErrorMappingInterceptor`` turns them into status codes (with a
``google.rpc.BadRequest`` detail for invalid arguments) in one place per
server. A server whose code raises exceptions of its own maps them onto this
family with the interceptor's ``translate``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """One bad field: ``field`` is the request path (``network.cidr``)."""

    field: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", clip(one_line(self.field), MAX_REASON))
        object.__setattr__(self, "reason", clip(one_line(self.reason), MAX_REASON))

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


# A status travels in the response's trailing metadata, which a client caps
# (8 KiB by default): past it the client sees RESOURCE_EXHAUSTED and no field.
# Messages quote values through ``quote`` and are clipped to these lengths.
MAX_MESSAGE = 512
MAX_REASON = 200
MAX_VIOLATIONS = 10
QUOTE_LIMIT = 40


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """A value a client sent, for a message: repr() of at most ``limit``
    characters of it (control characters escaped), and its length if longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DomainError(Exception):
    """Base of the errors the API reports to its callers."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(clip(one_line(message), MAX_MESSAGE))

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Aborted(DomainError):
    """A write kept colliding with concurrent writers; the caller may retry."""

    code = grpc.StatusCode.ABORTED


class Unavailable(DomainError):
    """Not now (a guest slow to release a device...); the caller may repeat the call."""

    code = grpc.StatusCode.UNAVAILABLE


class _FieldError(DomainError):
    """An error about one named field; the message starts with the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class AlreadyExists(_FieldError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(_FieldError):
    """``field`` names what ran out (``network.cidr``, ``vm.memory_mib``)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[Violation]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(str(v) for v in self.violations))

    @classmethod
    def one(cls, field: str, reason: str) -> InvalidArgument:
        return cls([Violation(field, reason)])


def one_line(text: str) -> str:
    """Messages can quote user input: never let it add lines or control characters."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def to_rpc_status(err: DomainError) -> status_pb2.Status:
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    if isinstance(err, InvalidArgument):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.reason)
                for v in err.violations[:MAX_VIOLATIONS]
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def abort(context: grpc.ServicerContext, err: DomainError) -> None:
    context.abort_with_status(rpc_status.to_status(to_rpc_status(err)))


# ------------------------------------------------------------ interceptors


def wrap_unary_handler(
    handler: grpc.RpcMethodHandler | None,
    wrap: Callable[[Callable[[Any, grpc.ServicerContext], Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler | None:
    """Return ``handler`` with its unary-unary behaviour wrapped (others untouched).

    Shared by the server interceptors: a sync gRPC interceptor cannot see the
    call itself, only swap the handler, and the wrapped behaviour runs on the
    worker thread that serves the call (so context variables set there are
    visible to the servicer).
    """
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _aborted(context: grpc.ServicerContext) -> bool:
    """The servicer called context.abort(): gRPC raises a bare Exception after
    recording the status, which must stand (not become INTERNAL)."""
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


# A server's own exception types onto the family (None: not one of them).
Translate: TypeAlias = Callable[[Exception], DomainError | None]
Behaviour: TypeAlias = Callable[[Any, grpc.ServicerContext], Any]


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Map DomainError (from servicers, store or auth) to gRPC status codes,
    anything else to INTERNAL; for unary and server-streaming methods.

    ``translate`` maps the server's own exception types onto DomainError.
    ``expose_internal`` puts an unexpected exception's type and message in the
    INTERNAL status: for an agent, whose one caller (netmgr) shows it to the
    operator; a public API (netmgr's) tells its callers nothing internal.
    """

    def __init__(self, translate: Translate | None = None, expose_internal: bool = False) -> None:
        self._translate = translate
        self._expose_internal = expose_internal

    def _fail(self, method: str, context: grpc.ServicerContext, e: Exception) -> NoReturn:
        """Abort the call for `e` (called while `e` is being handled)."""
        if not isinstance(e, DomainError):
            if _aborted(context):
                raise e  # the servicer chose its status (a proxied agent's error)
            translated = self._translate(e) if self._translate is not None else None
            if translated is None:
                # A bug: log it whole here.
                log.exception("%s failed", method)
                detail = (clip(one_line(f"{type(e).__name__}: {e}"), MAX_MESSAGE)
                          if self._expose_internal
                          else "internal error (logged by the server)")
                context.abort(grpc.StatusCode.INTERNAL, detail)
                raise AssertionError("unreachable: abort raises")
            e = translated
        log.info("%s: %s %s", method, e.code.name, e.message)
        abort(context, e)
        raise AssertionError("unreachable: abort raises")

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = str(handler_call_details.method)
        handler = continuation(handler_call_details)

        def unary(behaviour: Behaviour) -> Callable[..., Any]:
            def mapped(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behaviour(request, context)
                except Exception as e:
                    self._fail(method, context, e)

            return mapped

        if handler is not None and handler.unary_stream is not None:
            behaviour: Behaviour = handler.unary_stream

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behaviour(request, context)
                except Exception as e:
                    self._fail(method, context, e)

            return grpc.unary_stream_rpc_method_handler(
                streamed,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return wrap_unary_handler(handler, unary)
