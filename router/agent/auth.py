"""Per-router bearer token between netmgr and a router agent it reaches over TCP.

A router appliance (VM) receives its token at boot (SMBIOS OEM string, see
images/router/README.md) and starts the agent with ``--auth-token-file``.
Every RPC must then carry the metadata ``authorization: Bearer <token>``;
anything else is UNAUTHENTICATED before it reaches a servicer. Only the gRPC
health service stays open (netmgr and the host wait on it while the VM boots;
it tells nothing about the router).

The agent on a host behind a unix socket (0600, root only) needs no token.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from collections.abc import Callable, Iterable
from typing import Any

import grpc

log = logging.getLogger(__name__)

HEADER = "authorization"
SCHEME = "Bearer "
# Methods callable without a token: health only.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
MIN_TOKEN_LEN = 16


class TokenError(Exception):
    """The token file is missing, empty, too short or readable by others."""


def read_token_file(path: str) -> str:
    """The token in `path` (surrounding whitespace stripped).

    Refuses a file that group or others may read: the token is the router's
    only credential.
    """
    try:
        st = os.stat(path)
        with open(path) as f:
            token = f.read().strip()
    except OSError as e:
        raise TokenError(f"token file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(f"token file {path}: mode {stat.S_IMODE(st.st_mode):04o}, want 0600")
    check_token(token, path)
    return token


def check_token(token: str, where: str = "token") -> None:
    if len(token) < MIN_TOKEN_LEN or any(c.isspace() or not c.isprintable() for c in token):
        raise TokenError(f"{where}: a token is at least {MIN_TOKEN_LEN} printable characters "
                         "without spaces")


def metadata(token: str) -> tuple[tuple[str, str]]:
    """Call metadata that authenticates to an agent holding `token`."""
    return ((HEADER, SCHEME + token),)


def _deny_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    kw: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Rejects every call without ``authorization: Bearer <token>`` (health excepted)."""

    def __init__(self, token: str, open_methods: Iterable[str] = OPEN_METHODS) -> None:
        check_token(token)
        self._expected = (SCHEME + token).encode()
        self._open = frozenset(open_methods)

    def allowed(self, method: str, invocation_metadata: Iterable[Any]) -> bool:
        if method in self._open:
            return True
        for item in invocation_metadata or ():
            key, value = item[0], item[1]
            if key == HEADER and isinstance(value, str):
                # Constant time: the comparison must not leak a prefix.
                return hmac.compare_digest(value.encode(), self._expected)
        return False

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or self.allowed(
            handler_call_details.method, handler_call_details.invocation_metadata
        ):
            return handler
        log.warning("unauthenticated call to %s refused", handler_call_details.method)
        return _deny_handler(handler)
