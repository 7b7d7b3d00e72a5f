"""A small synchronous client for the cloudnet network manager API.

Used by the ``cloudnet`` CLI, and importable by tests, demos and scripts::

    from netmgr.cli.client import Client

    with Client("127.0.0.1:7070", token, tenant="t-123") as c:
        net = c.networks.CreateNetwork(
            netmgr_pb2.CreateNetworkRequest(
                network=netmgr_pb2.Network(name="a", cidr="10.0.0.0/24")
            )
        )
        for port in c.list_all(c.ports.ListPorts, netmgr_pb2.ListPortsRequest(), "ports"):
            ...
        c.wait_router(net.router_id, timeout=60)

Every call made through the stubs carries ``authorization: Bearer <token>``
and, when a tenant is given, ``x-cloudnet-tenant: <tenant>`` (the admin token
needs it for tenant-scoped calls). A default per-call timeout is applied to
calls that do not pass their own.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from cloudnet.netmgr.v1 import (
    debug_pb2_grpc,
    dns_pb2_grpc,
    edge_pb2,
    edge_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    hosts_pb2,
    keypair_pb2,
    keypair_pb2_grpc,
    netmgr_pb2,
    netmgr_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    redundancy_pb2_grpc,
    router_vm_pb2,
    router_vm_pb2_grpc,
    security_group_pb2_grpc,
    vpc_pb2,
    vpc_pb2_grpc,
    vpn_pb2,
    vpn_pb2_grpc,
)
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from common.channels import make_channel
from common.tls import TlsFiles

DEFAULT_SERVER = "127.0.0.1:7070"
TENANT_METADATA_KEY = "x-cloudnet-tenant"

__all__ = [
    "DEFAULT_SERVER",
    "TENANT_METADATA_KEY",
    "Client",
    "PaginationError",
    "WaitError",
    "bad_request_violations",
    "enum_label",
    "format_rpc_error",
    "paginate",
]


# grpc ships no type information: its base classes are Any to mypy.
class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]  # grpc has no type stubs
):
    pass


class _MetadataInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Adds fixed metadata (auth, tenant) and a default timeout to every unary call."""

    def __init__(self, metadata: Sequence[tuple[str, str]], timeout: float | None) -> None:
        self._metadata = tuple(metadata)
        self._timeout = timeout

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        present = {k for k, _ in metadata}
        metadata.extend((k, v) for k, v in self._metadata if k not in present)
        timeout = client_call_details.timeout
        if timeout is None:
            timeout = self._timeout
        details = _CallDetails(
            client_call_details.method,
            timeout,
            metadata,
            client_call_details.credentials,
            getattr(client_call_details, "wait_for_ready", None),
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


# Every netmgr API service: their reads are retried on another replica.
API_SERVICES = [svc for module in (netmgr_pb2, edge_pb2, vpc_pb2, vpn_pb2, keypair_pb2,
                                   quota_pb2, events_pb2, hosts_pb2, router_vm_pb2)
                for svc in module.DESCRIPTOR.services_by_name.values()]


class WaitError(Exception):
    """A --wait ended without the object reaching the wanted state."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class PaginationError(RuntimeError):
    """The server's page tokens do not make progress."""


class Client:
    """Stubs of all netmgr services on one channel, with auth metadata attached.

    Attributes: one generated ``*ServiceStub`` per service (``tenants``,
    ``networks``, ``port_forwards``, ``vpcs``, ``vpn``, ``debug``...),
    ``channel`` (the intercepted channel), ``server``.
    """

    def __init__(
        self,
        server: str,
        token: str | None,
        tenant: str | None = None,
        *,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        tls: TlsFiles | None = None,
        policy: str = "pick_first",
    ) -> None:
        """``server``: one address, a comma list or a DNS name
        (common.channels); ``tls`` None: plaintext."""
        self.server = server
        self.token = token
        self.tenant = tenant
        self.timeout = timeout
        self._raw_channel = channel if channel is not None else make_channel(
            server, tls=tls, policy=policy, retry_services=API_SERVICES)
        self._owns_channel = channel is None
        self.channel = grpc.intercept_channel(
            self._raw_channel, _MetadataInterceptor(self.metadata(), timeout)
        )
        ch = self.channel
        # Annotated: the stubs' constructors are overloaded on the channel's
        # type (sync or asyncio), which mypy cannot tell from an untyped grpc.
        self.tenants: netmgr_pb2_grpc.TenantServiceStub = netmgr_pb2_grpc.TenantServiceStub(ch)
        self.zones: netmgr_pb2_grpc.ZoneServiceStub = netmgr_pb2_grpc.ZoneServiceStub(ch)
        self.networks: netmgr_pb2_grpc.NetworkServiceStub = netmgr_pb2_grpc.NetworkServiceStub(ch)
        self.ports: netmgr_pb2_grpc.PortServiceStub = netmgr_pb2_grpc.PortServiceStub(ch)
        self.routers: netmgr_pb2_grpc.RouterServiceStub = netmgr_pb2_grpc.RouterServiceStub(ch)
        self.public_ips: edge_pb2_grpc.PublicIpServiceStub = edge_pb2_grpc.PublicIpServiceStub(ch)
        self.static_nats: edge_pb2_grpc.StaticNatServiceStub = (
            edge_pb2_grpc.StaticNatServiceStub(ch))
        self.port_forwards: edge_pb2_grpc.PortForwardServiceStub = (
            edge_pb2_grpc.PortForwardServiceStub(ch))
        self.firewall: edge_pb2_grpc.FirewallServiceStub = edge_pb2_grpc.FirewallServiceStub(ch)
        self.load_balancers: edge_pb2_grpc.LoadBalancerServiceStub = (
            edge_pb2_grpc.LoadBalancerServiceStub(ch))
        self.edge_counters: edge_pb2_grpc.EdgeCounterServiceStub = (
            edge_pb2_grpc.EdgeCounterServiceStub(ch))
        self.vpcs: vpc_pb2_grpc.VpcServiceStub = vpc_pb2_grpc.VpcServiceStub(ch)
        self.network_acls: vpc_pb2_grpc.NetworkAclServiceStub = (
            vpc_pb2_grpc.NetworkAclServiceStub(ch))
        self.static_routes: vpc_pb2_grpc.StaticRouteServiceStub = (
            vpc_pb2_grpc.StaticRouteServiceStub(ch))
        self.private_gateways: vpc_pb2_grpc.PrivateGatewayServiceStub = (
            vpc_pb2_grpc.PrivateGatewayServiceStub(ch))
        self.vpn: vpn_pb2_grpc.VpnServiceStub = vpn_pb2_grpc.VpnServiceStub(ch)
        self.debug: debug_pb2_grpc.DebugServiceStub = debug_pb2_grpc.DebugServiceStub(ch)
        self.router_vms: router_vm_pb2_grpc.RouterVmServiceStub = (
            router_vm_pb2_grpc.RouterVmServiceStub(ch))
        self.key_pairs: keypair_pb2_grpc.KeyPairServiceStub = (
            keypair_pb2_grpc.KeyPairServiceStub(ch))
        self.quotas: quota_pb2_grpc.QuotaServiceStub = quota_pb2_grpc.QuotaServiceStub(ch)
        self.events: events_pb2_grpc.EventServiceStub = events_pb2_grpc.EventServiceStub(ch)
        self.security_groups: security_group_pb2_grpc.SecurityGroupServiceStub = (
            security_group_pb2_grpc.SecurityGroupServiceStub(ch))
        self.dns: dns_pb2_grpc.DnsRecordServiceStub = dns_pb2_grpc.DnsRecordServiceStub(ch)
        self.redundancy: redundancy_pb2_grpc.RouterRedundancyServiceStub = (
            redundancy_pb2_grpc.RouterRedundancyServiceStub(ch))

    def metadata(self) -> list[tuple[str, str]]:
        """The metadata sent with every call."""
        md: list[tuple[str, str]] = []
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        if self.tenant:
            md.append((TENANT_METADATA_KEY, self.tenant))
        return md

    def close(self) -> None:
        if self._owns_channel:
            self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ helpers

    def list_all(
        self,
        method: Callable[..., Any],
        request: Any,
        field: str,
        limit: int | None = None,
        page_size: int = 0,
    ) -> list[Any]:
        """All items of a paginated List call (see :func:`paginate`)."""
        return list(paginate(method, request, field, limit=limit, page_size=page_size))

    def wait_router(
        self,
        router_id: str,
        timeout: float = 120.0,
        interval: float = 0.5,
        on_poll: Callable[[Any, float], None] | None = None,
        min_generation: int = 0,
    ) -> Any:
        """Poll GetRouter until applied_generation >= desired_generation (and
        >= min_generation) and the state is ACTIVE. Returns the router; raises
        WaitError on timeout."""

        def done(r: Any) -> bool:
            return bool(
                r.state == netmgr_pb2.ROUTER_STATE_ACTIVE
                and r.applied_generation >= r.desired_generation
                and r.applied_generation >= min_generation
            )

        return _poll(
            lambda: self.routers.GetRouter(netmgr_pb2.GetRouterRequest(id=router_id)),
            done,
            timeout,
            interval,
            on_poll,
            lambda r: (
                f"router {router_id} not ready after {timeout:g}s: state "
                f"{enum_label(netmgr_pb2.RouterState, r.state)}, generation "
                f"{r.applied_generation}/{r.desired_generation}"
                + (f", last error: {r.last_error}" if r.last_error else "")
            ),
        )

    def wait_port(
        self,
        port_id: str,
        timeout: float = 120.0,
        interval: float = 0.5,
        on_poll: Callable[[Any, float], None] | None = None,
    ) -> Any:
        """Poll GetPort until the port's state is ACTIVE or ERROR. Returns the
        port (check its state); raises WaitError on timeout."""
        return _poll(
            lambda: self.ports.GetPort(netmgr_pb2.GetPortRequest(id=port_id)),
            lambda p: p.state in (netmgr_pb2.OBJECT_STATE_ACTIVE, netmgr_pb2.OBJECT_STATE_ERROR),
            timeout,
            interval,
            on_poll,
            lambda p: (
                f"port {port_id} not ready after {timeout:g}s: state "
                f"{enum_label(netmgr_pb2.ObjectState, p.state)}"
            ),
        )

    def wait_network_router(
        self,
        network_id: str,
        timeout: float = 120.0,
        interval: float = 0.5,
        on_poll: Callable[[Any, float], None] | None = None,
    ) -> Any:
        """Wait for the router of a network (its router_id may be assigned
        late) to become ACTIVE. Returns the router."""
        start = time.monotonic()
        net = self.networks.GetNetwork(netmgr_pb2.GetNetworkRequest(id=network_id))
        while not net.router_id:
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                raise WaitError(f"network {network_id} has no router after {timeout:g}s", net)
            time.sleep(interval)
            net = self.networks.GetNetwork(netmgr_pb2.GetNetworkRequest(id=network_id))
        remaining = max(0.0, timeout - (time.monotonic() - start))
        return self.wait_router(net.router_id, remaining, interval, on_poll)


def _poll(
    get: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float,
    interval: float,
    on_poll: Callable[[Any, float], None] | None,
    describe: Callable[[Any], str],
) -> Any:
    start = time.monotonic()
    delay = interval
    while True:
        obj = get()
        elapsed = time.monotonic() - start
        if on_poll is not None:
            on_poll(obj, elapsed)
        if done(obj):
            return obj
        if elapsed >= timeout:
            raise WaitError(describe(obj), obj)
        time.sleep(min(delay, max(0.0, timeout - elapsed)))
        delay = min(delay * 1.5, 2.0)


def paginate(
    method: Callable[..., Any],
    request: Any,
    field: str,
    limit: int | None = None,
    page_size: int = 0,
) -> Iterator[Any]:
    """Yield the items of ``field`` over every page of a List call, following
    ``next_page_token`` until it is empty (or ``limit`` items were yielded)."""
    req = type(request)()
    req.CopyFrom(request)
    seen: set[str] = set()
    count = 0
    while True:
        if limit is not None:
            want = limit - count
            if want <= 0:
                return
            req.page_size = min(want, page_size) if page_size else want
        elif page_size:
            req.page_size = page_size
        resp = method(req)
        for item in getattr(resp, field):
            yield item
            count += 1
            if limit is not None and count >= limit:
                return
        token = resp.next_page_token
        if not token:
            return
        if token in seen:  # a server bug would otherwise loop forever
            raise PaginationError(f"the server repeated page token {token!r}")
        seen.add(token)
        req.page_token = token


# --------------------------------------------------------------- errors


def enum_label(enum_type: Any, value: int) -> str:
    """ROUTER_STATE_ACTIVE -> ACTIVE (the enum's upper-snake name is the prefix).

    ``enum_type`` is a generated enum (``netmgr_pb2.RouterState``) or its
    EnumDescriptor."""
    desc = getattr(enum_type, "DESCRIPTOR", enum_type)
    v = desc.values_by_number.get(value)
    if v is None:
        return str(value)
    name = str(v.name)
    prefix = _upper_snake(desc.name) + "_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _upper_snake(camel: str) -> str:
    out = []
    for i, ch in enumerate(camel):
        if ch.isupper() and i and not camel[i - 1].isupper():
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


def bad_request_violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of the google.rpc.BadRequest details of an error."""
    try:
        status = rpc_status.from_call(err)
    except (ValueError, AttributeError, TypeError):
        return []
    if status is None:
        return []
    out: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out.extend((v.field, v.description) for v in br.field_violations)
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def format_rpc_error(err: grpc.RpcError, server: str | None = None) -> str:
    """One line describing an RPC error: ``<CODE>: <message>``.

    INVALID_ARGUMENT errors list each field violation as ``field: description``
    (joined with ``; ``); an unreachable server is named by its address.
    """
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = (details_fn() if callable(details_fn) else None) or ""
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    message = _one_line(str(details))
    where = server or "the server"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = bad_request_violations(err)
        if violations:
            message = "; ".join(
                _one_line(f"{f}: {d}") if f else _one_line(d) for f, d in violations
            )
    elif code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the cloudnet server at {where}" + (
            f" ({message})" if message else ""
        )
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"no answer from the cloudnet server at {where} in time" + (
            f" ({message})" if message and message != "Deadline Exceeded" else ""
        )
    return f"{name}: {message}" if message else name
