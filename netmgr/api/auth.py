"""Bearer-token authentication and the per-method access policy.

``authorization: Bearer <secret>`` on every call. The admin token comes from
the server config; tenant tokens (``cn_...``) are looked up by the SHA-256 of
the secret. The interceptor resolves the caller once per call and makes it
available to the servicers through ``current_caller()`` (a context variable
set on the worker thread that runs the call).
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import enum
import hmac
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from common.grpc_errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    wrap_unary_handler,
)
from netmgr.model.core import Token
from netmgr.model.validation import check_id

TENANT_HEADER = "x-cloudnet-tenant"
_API = "/cloudnet.netmgr.v1."


class Access(enum.Enum):
    PUBLIC = "public"  # no token (health, reflection)
    ANY = "any"  # admin or tenant token
    ADMIN = "admin"
    TENANT = "tenant"  # a tenant's objects: tenant token, or admin acting as a tenant
    # A list of a tenant's objects: as TENANT, and the admin not acting as a
    # tenant lists every tenant's (each object names its tenant).
    TENANT_LIST = "tenant-list"


# Methods not listed here need the admin token (deny by default).
POLICY: dict[str, Access] = {
    f"{_API}TenantService/WhoAmI": Access.ANY,
    f"{_API}ZoneService/GetZone": Access.ANY,
    f"{_API}QuotaService/GetQuotas": Access.ANY,
    f"{_API}EventService/": Access.ANY,
    **{f"{_API}{svc}/": Access.TENANT
       for svc in ("NetworkService", "PortService", "RouterService", "DebugService",
                   "PublicIpService", "StaticNatService", "PortForwardService",
                   "FirewallService", "LoadBalancerService", "RouterVmService",
                   "EdgeCounterService",
                   "VpcService", "NetworkAclService", "StaticRouteService",
                   "PrivateGatewayService", "VpnService", "KeyPairService",
                   "SecurityGroupService", "DnsRecordService", "RouterRedundancyService")},
}
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


# Calls that change nothing: all a read-only token may make, and not audited.
READ_PREFIXES = ("Get", "List", "Watch", "WhoAmI", "Explain")
READ_SERVICES = (f"{_API}DebugService/",)  # diagnostics (probes, captures) change nothing


def is_mutating(method: str) -> bool:
    """A call that may change something (every one not named as a read)."""
    if not method.startswith(_API) or method.startswith(READ_SERVICES):
        return False
    return not method[method.rfind("/") + 1:].startswith(READ_PREFIXES)


def access_for(method: str) -> Access:
    if method.startswith(PUBLIC_PREFIXES):
        return Access.PUBLIC
    if method in POLICY:
        return POLICY[method]
    service = method[: method.rfind("/") + 1]
    access = POLICY.get(service, Access.ADMIN)
    if access is Access.TENANT and method[len(service):].startswith("List"):
        return Access.TENANT_LIST
    return access


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    admin: bool
    # The tenant whose objects this call sees ("" for the admin not acting as one).
    tenant_id: str = ""
    token_id: str = ""
    read_only: bool = False

    def require_tenant(self) -> str:
        if not self.tenant_id:
            raise InvalidArgument.one(
                TENANT_HEADER, f"the admin must name a tenant in {TENANT_HEADER} metadata")
        return self.tenant_id

    def list_scope(self) -> str | None:
        """Whose objects a List call shows: the caller's tenant, or None (every
        tenant's) for the admin not acting as a tenant."""
        if self.tenant_id:
            return self.tenant_id
        if self.admin:
            return None
        return self.require_tenant()


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "cloudnet_caller", default=None)


def current_caller() -> Caller:
    caller = _caller.get()
    if caller is None:  # only without the interceptor, a programming error
        raise Unauthenticated("no authenticated caller")
    return caller


class TokenLookup(Protocol):
    def token_for_secret(self, secret: str) -> Token | None: ...


@dataclasses.dataclass
class CallRecord:
    """Filled by the auth interceptor for an interceptor outside it (the
    audit log): who the caller turned out to be."""

    caller: Caller | None = None


call_record: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "cloudnet_call_record", default=None)


def authenticate(metadata: dict[str, str], admin_token: str, tokens: TokenLookup,
                 now: dt.datetime | None = None) -> Caller:
    header = metadata.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    secret = secret.strip()
    acting_as = metadata.get(TENANT_HEADER, "")
    if admin_token and hmac.compare_digest(secret.encode(), admin_token.encode()):
        admin = Caller(admin=True, tenant_id=check_id(acting_as, TENANT_HEADER) if acting_as
                       else "")
        record = call_record.get()
        if record is not None:
            record.caller = admin
        return admin
    token = tokens.token_for_secret(secret)
    if token is None:
        raise Unauthenticated("invalid token")
    if token.expires_at is not None and token.expires_at <= (now or dt.datetime.now(dt.UTC)):
        raise Unauthenticated("the token has expired")
    caller = Caller(admin=False, tenant_id=token.tenant_id, token_id=token.id,
                    read_only=token.read_only)
    record = call_record.get()
    if record is not None:
        record.caller = caller
    if acting_as and check_id(acting_as, TENANT_HEADER) != token.tenant_id:
        raise PermissionDenied(f"a tenant token cannot act as another tenant ({TENANT_HEADER})")
    return caller


def authorize(caller: Caller, access: Access, method: str = "") -> None:
    if caller.read_only and is_mutating(method):
        raise PermissionDenied("a read-only token may only make Get, List and Watch calls")
    if access is Access.ADMIN and not caller.admin:
        raise PermissionDenied("this call needs the admin token")
    if access is Access.TENANT or (access is Access.TENANT_LIST and not caller.admin):
        caller.require_tenant()


# grpc ships no type stubs: to mypy grpc.ServerInterceptor is Any (ignore[misc]).
class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Authenticates and authorises every call before the servicer runs.

    Runs inside ``ErrorMappingInterceptor``, which turns its errors into
    UNAUTHENTICATED / PERMISSION_DENIED / INVALID_ARGUMENT.
    """

    def __init__(self, admin_token: str, tokens: TokenLookup) -> None:
        self._admin_token = admin_token
        self._tokens = tokens

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        access = access_for(method)
        handler = continuation(handler_call_details)
        if access is Access.PUBLIC:
            return handler
        metadata = {k: v for k, v in handler_call_details.invocation_metadata
                    if isinstance(v, str)}

        def wrap(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
                caller = authenticate(metadata, self._admin_token, self._tokens)
                authorize(caller, access, method)
                reset = _caller.set(caller)
                try:
                    return behaviour(request, context)
                finally:
                    _caller.reset(reset)

            return authenticated

        return wrap_unary_handler(handler, wrap)
