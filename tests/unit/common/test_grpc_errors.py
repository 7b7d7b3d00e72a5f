"""The error-mapping interceptor keeps a status the servicer chose with
context.abort() (e.g. a proxied router agent's FAILED_PRECONDITION) and turns
only real bugs into INTERNAL; a server maps its own exception types with
``translate``, and streams are mapped like unary calls."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from common.grpc_errors import (
    DomainError,
    ErrorMappingInterceptor,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)


class Busy(Exception):
    """A server's own exception type, translated onto the family."""


def _translate(e: Exception) -> DomainError | None:
    return FailedPrecondition(f"busy: {e}") if isinstance(e, Busy) else None


def _aborts(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no probe port on a router VM")
    return b""


def _bug(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("secret internals")


def _domain(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise NotFound("router r1 not found")


def _own(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise Busy("two captures running")


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise InvalidArgument.one("limit", "must be positive")


def _stream_bug(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise RuntimeError("secret internals")


def _serve(interceptor: ErrorMappingInterceptor) -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn)
                for name, fn in (("Aborts", _aborts), ("Bug", _bug), ("Domain", _domain),
                                 ("Own", _own))}
    handlers.update({name: grpc.unary_stream_rpc_method_handler(fn)
                     for name, fn in (("Stream", _stream), ("StreamBug", _stream_bug))})
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0)


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    yield from _serve(ErrorMappingInterceptor())


@pytest.fixture
def agent_channel() -> Iterator[grpc.Channel]:
    """As an agent serves: its own errors translated, bugs named to its caller."""
    yield from _serve(ErrorMappingInterceptor(translate=_translate, expose_internal=True))


@pytest.mark.parametrize(("method", "code", "text"), [
    ("Aborts", grpc.StatusCode.FAILED_PRECONDITION, "no probe port on a router VM"),
    ("Bug", grpc.StatusCode.INTERNAL, "internal error (logged by the server)"),
    ("Domain", grpc.StatusCode.NOT_FOUND, "router r1 not found"),
    ("Own", grpc.StatusCode.INTERNAL, "internal error (logged by the server)"),
])
def test_status_of_each_kind_of_failure(channel, method, code, text):
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/t.T/{method}")(b"", timeout=10)
    assert err.value.code() == code
    assert err.value.details() == text


@pytest.mark.parametrize(("method", "code", "text"), [
    ("Aborts", grpc.StatusCode.FAILED_PRECONDITION, "no probe port on a router VM"),
    ("Bug", grpc.StatusCode.INTERNAL, "RuntimeError: secret internals"),
    ("Domain", grpc.StatusCode.NOT_FOUND, "router r1 not found"),
    ("Own", grpc.StatusCode.FAILED_PRECONDITION, "busy: two captures running"),
])
def test_an_agent_translates_its_own_errors_and_names_its_bugs(agent_channel, method, code,
                                                                text):
    with pytest.raises(grpc.RpcError) as err:
        agent_channel.unary_unary(f"/t.T/{method}")(b"", timeout=10)
    assert err.value.code() == code
    assert err.value.details() == text


@pytest.mark.parametrize(("method", "code", "text"), [
    ("Stream", grpc.StatusCode.INVALID_ARGUMENT, "limit: must be positive"),
    ("StreamBug", grpc.StatusCode.INTERNAL, "internal error (logged by the server)"),
])
def test_a_stream_fails_like_a_unary_call_after_what_it_sent(channel, method, code, text):
    got: list[bytes] = []
    with pytest.raises(grpc.RpcError) as err:
        got.extend(channel.unary_stream(f"/t.T/{method}")(b"", timeout=10))
    assert got == [b"first"]
    assert err.value.code() == code
    assert err.value.details() == text
