"""The VM backend's settings and the router VMs' credentials (``vm_backend.tender``).

The agent's bearer token is HMAC-SHA256(router key, router ID / credential
generation); the router key is a 0600 file next to the admin token. The
store keeps only the generation and the token's SHA-256
(``netmgr.store.router_vms``): a copy of the database opens no router.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import os
import secrets
from typing import Any

import grpc


@dataclasses.dataclass
class RouterVmConfig:
    image: str = "router"
    vcpus: int = 1
    memory_mib: int = 512
    control_cidr: str = "10.250.0.0/16"
    # VLAN of the control segment on the fabric (outside the zone's range).
    control_vlan: int = 4001
    # Namespace holding netmgr's side of the control network ("" = this one).
    control_netns: str = ""
    agent_port: int = 50051
    key_file: str = "/var/lib/cloudnet/router-vm.key"
    run_dir: str = "/var/lib/cloudnet/run/ctl"
    # An active VM whose agent stays silent this long is replaced.
    grace_seconds: float = 30.0
    # A VM whose agent is not healthy this long after its definition is replaced.
    boot_timeout: float = 180.0
    interval: float = 1.0


def router_vm_config(settings: dict[str, Any]) -> RouterVmConfig:
    """RouterVmConfig from [router_vm] / --router-vm KEY=VALUE (strings converted)."""
    fields = {f.name: f for f in dataclasses.fields(RouterVmConfig)}
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in fields:
            raise ValueError(f"router_vm: unknown setting {key!r} "
                             f"(known: {', '.join(sorted(fields))})")
        kind = type(getattr(RouterVmConfig(), key))
        try:
            out[key] = kind(value)
        except ValueError:
            raise ValueError(f"router_vm.{key}: not a {kind.__name__}: {value!r}") from None
    return RouterVmConfig(**out)


def load_key(path: str) -> bytes:
    """netmgr's router key (made on first use, 0600)."""
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def derive_token(key: bytes, router_id: str, generation: int) -> str:
    mac = hmac.new(key, f"{router_id}/{generation}".encode(), hashlib.sha256).digest()
    return "rvm_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# grpc ships no type stubs: to mypy its base classes are Any (hence the ignores).
class _Details(collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                     "compression")), grpc.ClientCallDetails):  # type: ignore[misc]  # grpc has no type stubs
    pass


class BearerAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Adds `authorization: Bearer <token>` to every call on a channel."""

    def __init__(self, token: str) -> None:
        self._md = ("authorization", f"Bearer {token}")

    def _with_token(self, d: Any) -> _Details:
        return _Details(d.method, d.timeout, [*(d.metadata or ()), self._md], d.credentials,
                        d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(details), request)
