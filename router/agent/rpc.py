"""The agent's errors onto the one error family of every cloudnet server
(``common.grpc_errors``): the agent's servers install ``interceptor()``, so
RouterAgent, RouterEdge and RouterDiagnostics map errors in one place.

    RequestError                    INVALID_ARGUMENT
    DiagError                       INVALID_ARGUMENT with a BadRequest detail naming the field
    RouterNotFound, DiagNotFound    NOT_FOUND
    DiagBusy                        RESOURCE_EXHAUSTED
    DiagUnavailable, FencedPush     FAILED_PRECONDITION
    anything else                   INTERNAL with the exception's type and message (netmgr,
                                    the agent's one caller, shows it to the operator), logged
                                    with its traceback
"""

from __future__ import annotations

import grpc

from common.grpc_errors import (
    DomainError,
    ErrorMappingInterceptor,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from router.diag.common import DiagBusy, DiagError, DiagNotFound, DiagUnavailable
from router.errors import FencedPush, RequestError, RouterNotFound


class BadRequest(DomainError):
    """A request the agent refuses as a whole (no single field to name)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Busy(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def translate(e: Exception) -> DomainError | None:
    """The agent's exception ``e`` as a DomainError; None for a bug."""
    if isinstance(e, DiagError):
        return InvalidArgument.one(e.field, e.reason)
    if isinstance(e, RequestError):
        return BadRequest(str(e))
    if isinstance(e, RouterNotFound | DiagNotFound):
        return NotFound(str(e))
    if isinstance(e, DiagBusy):
        return Busy(str(e))
    if isinstance(e, DiagUnavailable | FencedPush):
        return FailedPrecondition(str(e))
    return None


def interceptor() -> ErrorMappingInterceptor:
    return ErrorMappingInterceptor(translate, expose_internal=True)
