"""The error-mapping interceptor keeps a status the servicer chose with
context.abort() (e.g. a proxied router agent's FAILED_PRECONDITION) and turns
only real bugs into INTERNAL."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from common.grpc_errors import ErrorMappingInterceptor, NotFound


def _aborts(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no probe port on a router VM")
    return b""


def _bug(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("secret internals")


def _domain(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise NotFound("router r1 not found")


@pytest.fixture
def channel():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[ErrorMappingInterceptor()])
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn)
                for name, fn in (("Aborts", _aborts), ("Bug", _bug), ("Domain", _domain))}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0)


@pytest.mark.parametrize(("method", "code", "text"), [
    ("Aborts", grpc.StatusCode.FAILED_PRECONDITION, "no probe port on a router VM"),
    ("Bug", grpc.StatusCode.INTERNAL, "internal error (logged by the server)"),
    ("Domain", grpc.StatusCode.NOT_FOUND, "router r1 not found"),
])
def test_status_of_each_kind_of_failure(channel, method, code, text):
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/t.T/{method}")(b"", timeout=10)
    assert err.value.code() == code
    assert err.value.details() == text
