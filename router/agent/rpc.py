"""The agent's one mapping of errors to gRPC status codes, for every servicer
(RouterAgent, RouterEdge, RouterDiagnostics).

    RequestError, DiagError         INVALID_ARGUMENT (DiagError with a BadRequest
                                    detail naming the field)
    RouterNotFound, DiagNotFound    NOT_FOUND
    DiagBusy                        RESOURCE_EXHAUSTED
    DiagUnavailable                 FAILED_PRECONDITION
    anything else                   INTERNAL, logged with its traceback
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from common.grpc_errors import MAX_MESSAGE, MAX_REASON, clip, one_line
from router.diag.common import DiagBusy, DiagError, DiagNotFound, DiagUnavailable
from router.errors import RequestError, RouterNotFound

log = logging.getLogger(__name__)

S = TypeVar("S")
Q = TypeVar("Q")
T = TypeVar("T")

CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (RouterNotFound, grpc.StatusCode.NOT_FOUND),
    (DiagNotFound, grpc.StatusCode.NOT_FOUND),
    (DiagBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DiagUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
)


def abort(context: grpc.ServicerContext, e: Exception, method: str) -> None:
    """End the call with the status ``e`` maps to (context.abort raises)."""
    if isinstance(e, DiagError):
        detail = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=e.field, description=clip(one_line(e.reason), MAX_REASON))])
        packed = any_pb2.Any()
        packed.Pack(detail)
        context.abort_with_status(rpc_status.to_status(status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message=_short(str(e)), details=[packed])))
    for kind, code in CODES:
        if isinstance(e, kind):
            context.abort(code, _short(str(e)))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, _short(f"{type(e).__name__}: {e}"))


def _short(message: str) -> str:
    """A status goes in trailing metadata, which clients cap (8 KiB)."""
    return clip(one_line(message), MAX_MESSAGE)


def unary(method: Callable[[S, Q, grpc.ServicerContext], T],
          ) -> Callable[[S, Q, grpc.ServicerContext], T]:
    """A unary servicer method whose errors are mapped by ``abort``."""

    @functools.wraps(method)
    def wrapper(self: S, request: Q, context: grpc.ServicerContext) -> T:
        try:
            return method(self, request, context)
        except Exception as e:
            abort(context, e, method.__name__)
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


def stream(method: Callable[[S, Q, grpc.ServicerContext], Iterator[T]],
           ) -> Callable[[S, Q, grpc.ServicerContext], Iterator[T]]:
    """A response-streaming servicer method whose errors are mapped by ``abort``."""

    @functools.wraps(method)
    def wrapper(self: S, request: Q, context: grpc.ServicerContext) -> Iterator[T]:
        try:
            yield from method(self, request, context)
        except Exception as e:
            abort(context, e, method.__name__)

    return wrapper
