"""``cloudnet`` CLI: the command implementations and their output."""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, TypeAlias, TypeVar

from cloudnet.netmgr.v1 import netmgr_pb2

from netmgr.cli.client import Client, WaitError, enum_label
from netmgr.cli.output import format_detail, format_list, to_dict, to_json
from netmgr.cli.requests import (
    UsageError,
    build_network_create,
    build_network_update,
    build_port_create,
    build_port_update,
    build_zone_update,
)


class CommandFailed(Exception):
    """A command reached the API but the outcome is a failure (exit status 1)."""


# How a command module adds its sub-commands to the parser (main.build_parser):
# ``group(name, help)`` adds ``cloudnet NAME`` and returns its sub-parsers,
# ``leaf(subparsers, name, command, help)`` adds ``cloudnet GROUP NAME`` running
# ``command`` and returns its parser for the arguments.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Command: TypeAlias = "Callable[[Context, argparse.Namespace], int]"
Group: TypeAlias = "Callable[[str, str], Subparsers]"
Leaf: TypeAlias = "Callable[[Subparsers, str, Command, str], argparse.ArgumentParser]"


@dataclass(frozen=True)
class Settings:
    server: str
    token: str | None
    tenant: str | None
    output: str
    timeout: float
    # The CA that vouches for netmgr (None: the system's roots).
    ca_file: str | None = None
    # Plaintext gRPC (only when asked for).
    insecure: bool = False
    policy: str = "pick_first"
    # The CLI's own certificate and key, for the compute agents (they require
    # a client certificate of the cloud's CA): None without one.
    cert_file: str | None = None
    key_file: str | None = None


class Progress:
    """A one-line spinner on a TTY stream; silent otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self._spin = itertools.cycle("|/-\\")
        self._width = 0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{next(self._spin)} {text}"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


@dataclass(frozen=True)
class Context:
    client: Client
    settings: Settings
    out: TextIO
    err: TextIO

    @property
    def json(self) -> bool:
        return self.settings.output == "json"

    def show(self, msg: Any, extra: Sequence[tuple[str, str]] = ()) -> None:
        if self.json:
            self.print(to_json(msg))
        else:
            self.print(format_detail(msg, extra))

    def show_list(self, kind: str, items: list[Any]) -> None:
        if self.json:
            self.print(to_json(items))
        else:
            self.print(format_list(kind, items, with_tenant=self.across_tenants))

    @functools.cached_property
    def across_tenants(self) -> bool:
        """The admin's token without --tenant: lists hold every tenant's objects."""
        if self.settings.tenant:
            return False
        return bool(self.client.tenants.WhoAmI(netmgr_pb2.WhoAmIRequest()).admin)

    def deleted(self, kind: str, obj_id: str) -> None:
        if self.json:
            self.print(to_json({"id": obj_id, "deleted": True}))
        else:
            self.print(f"Deleted {kind} {obj_id}")

    def print(self, text: str) -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(text + "\n")


def router_progress(progress: Progress, what: str) -> Callable[[Any, float], None]:
    def on_poll(r: Any, elapsed: float) -> None:
        progress.update(
            f"waiting for {what}: {enum_label(netmgr_pb2.RouterState, r.state)}, generation "
            f"{r.applied_generation}/{r.desired_generation} ({elapsed:.0f}s)"
        )

    return on_poll


def port_progress(progress: Progress, what: str) -> Callable[[Any, float], None]:
    def on_poll(p: Any, elapsed: float) -> None:
        progress.update(
            f"waiting for {what}: {enum_label(netmgr_pb2.ObjectState, p.state)} ({elapsed:.0f}s)"
        )

    return on_poll


T = TypeVar("T")


def wait_with_progress(ctx: Context, fn: Callable[[Progress], T]) -> T:
    """``fn(progress)`` (a Client.wait_* call), its failure shown as a CommandFailed."""
    progress = Progress(ctx.err)
    try:
        return fn(progress)
    except WaitError as e:
        progress.done()
        if e.last is not None:
            ctx.show(e.last)
        raise CommandFailed(str(e)) from None
    finally:
        progress.done()


class StatefulObject(Protocol):
    """An API object that the router applies: PENDING, then ACTIVE or ERROR."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> netmgr_pb2.ObjectState.ValueType: ...
    @property
    def error(self) -> str: ...


ObjectT = TypeVar("ObjectT", bound=StatefulObject)
RequestT = TypeVar("RequestT")

SETTLE_TIMEOUT = 60.0


def wait_settled(ctx: Context, get: Callable[[RequestT], ObjectT], request: RequestT,
                 obj: ObjectT, wait: bool) -> ObjectT:
    """With ``wait``, poll ``get(request)`` until ``obj`` is ACTIVE (returned) or
    ERROR (shown, then CommandFailed); without, ``obj`` as it is."""
    if not wait:
        return obj
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while obj.state not in (netmgr_pb2.OBJECT_STATE_ACTIVE, netmgr_pb2.OBJECT_STATE_ERROR):
        if time.monotonic() > deadline:
            raise CommandFailed(f"{obj.id} still {netmgr_pb2.ObjectState.Name(obj.state)} "
                                f"after {SETTLE_TIMEOUT:.0f} s")
        time.sleep(0.1)
        obj = get(request)
    if obj.state == netmgr_pb2.OBJECT_STATE_ERROR:
        ctx.show(obj)
        raise CommandFailed(f"{obj.id} is in ERROR: {obj.error}")
    return obj


# ----------------------------------------------------------- commands


def cmd_tenant_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.tenants.CreateTenant(netmgr_pb2.CreateTenantRequest(name=args.name)))
    return 0


def cmd_tenant_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.tenants.ListTenants, netmgr_pb2.ListTenantsRequest(), "tenants", args.limit
    )
    ctx.show_list("Tenant", items)
    return 0


def cmd_tenant_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.tenants.GetTenant(netmgr_pb2.GetTenantRequest(id=args.id)))
    return 0


def cmd_tenant_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.tenants.DeleteTenant(netmgr_pb2.DeleteTenantRequest(id=args.id))
    ctx.deleted("tenant", args.id)
    return 0


def cmd_token_create(ctx: Context, args: argparse.Namespace) -> int:
    # With --secret-file the secret goes to a new 0600 file, made before the
    # token (never over an existing file, no token when it cannot be made),
    # and is shown nowhere.
    fd = _new_private_file(args.secret_file) if args.secret_file else None
    try:
        resp = ctx.client.tenants.CreateToken(
            netmgr_pb2.CreateTokenRequest(tenant_id=args.tenant_id, name=args.name or "",
                                          ttl_seconds=args.ttl or 0, read_only=args.read_only)
        )
    except BaseException:
        if fd is not None:
            os.close(fd)
            os.unlink(args.secret_file)
        raise
    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(resp.secret + "\n")
        if ctx.json:
            ctx.print(to_json({"token": to_dict(resp.token), "secret_file": args.secret_file}))
        else:
            ctx.print(format_detail(resp.token, extra=[("secret file", args.secret_file)]))
    elif ctx.json:
        ctx.print(to_json(resp))
    else:
        ctx.print(format_detail(resp.token, extra=[("secret", resp.secret)]))
        ctx.note("Save the secret now: it is not shown again.")
    return 0


def _new_private_file(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"--secret-file {path[:80]}: exists (it is never overwritten)"
                         ) from None
    except OSError as e:
        raise UsageError(f"--secret-file {path[:80]}: {e.strerror}") from None


def cmd_token_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.tenants.ListTokens,
        netmgr_pb2.ListTokensRequest(tenant_id=args.tenant_id),
        "tokens",
        args.limit,
    )
    ctx.show_list("Token", items)
    return 0


def cmd_token_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.tenants.DeleteToken(netmgr_pb2.DeleteTokenRequest(id=args.id))
    ctx.deleted("token", args.id)
    return 0


def cmd_whoami(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.tenants.WhoAmI(netmgr_pb2.WhoAmIRequest()))
    return 0


def cmd_zone_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.zones.GetZone(netmgr_pb2.GetZoneRequest()))
    return 0


def cmd_zone_update(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.zones.UpdateZone(build_zone_update(args)))
    return 0


def cmd_network_create(ctx: Context, args: argparse.Namespace) -> int:
    net = ctx.client.networks.CreateNetwork(build_network_create(args))
    if args.wait:
        wait_with_progress(
            ctx,
            lambda p: ctx.client.wait_network_router(
                net.id, args.wait_timeout, on_poll=router_progress(p, f"router of {net.id}")
            ),
        )
        net = ctx.client.networks.GetNetwork(netmgr_pb2.GetNetworkRequest(id=net.id))
    ctx.show(net)
    return 0


def cmd_network_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.networks.ListNetworks, netmgr_pb2.ListNetworksRequest(), "networks", args.limit
    )
    ctx.show_list("Network", items)
    return 0


def cmd_network_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.networks.GetNetwork(netmgr_pb2.GetNetworkRequest(id=args.id)))
    return 0


def cmd_network_update(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.networks.UpdateNetwork(build_network_update(args)))
    return 0


def cmd_network_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.networks.DeleteNetwork(netmgr_pb2.DeleteNetworkRequest(id=args.id, force=args.force))
    ctx.deleted("network", args.id)
    return 0


def cmd_port_create(ctx: Context, args: argparse.Namespace) -> int:
    port = ctx.client.ports.CreatePort(build_port_create(args))
    if args.wait:
        port = wait_with_progress(
            ctx,
            lambda p: ctx.client.wait_port(
                port.id, args.wait_timeout, on_poll=port_progress(p, f"port {port.id}")
            ),
        )
    ctx.show(port)
    if port.state == netmgr_pb2.OBJECT_STATE_ERROR and args.wait:
        raise CommandFailed(f"port {port.id} is in state ERROR: {port.error or 'no reason given'}")
    return 0


def cmd_port_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.ports.ListPorts,
        netmgr_pb2.ListPortsRequest(network_id=args.network or ""),
        "ports",
        args.limit,
    )
    ctx.show_list("Port", items)
    return 0


def cmd_port_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.ports.GetPort(netmgr_pb2.GetPortRequest(id=args.id)))
    return 0


def cmd_port_update(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.ports.UpdatePort(build_port_update(args)))
    return 0


def cmd_port_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.ports.DeletePort(netmgr_pb2.DeletePortRequest(id=args.id))
    ctx.deleted("port", args.id)
    return 0


def cmd_router_list(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.client.list_all(
        ctx.client.routers.ListRouters, netmgr_pb2.ListRoutersRequest(), "routers", args.limit
    )
    ctx.show_list("Router", items)
    return 0


def cmd_router_show(ctx: Context, args: argparse.Namespace) -> int:
    ctx.show(ctx.client.routers.GetRouter(netmgr_pb2.GetRouterRequest(id=args.id)))
    return 0


def cmd_router_restart(ctx: Context, args: argparse.Namespace) -> int:
    router = ctx.client.routers.RestartRouter(netmgr_pb2.RestartRouterRequest(id=args.id))
    if args.wait:
        router = wait_with_progress(
            ctx,
            lambda p: ctx.client.wait_router(
                args.id,
                args.wait_timeout,
                on_poll=router_progress(p, f"router {args.id}"),
                min_generation=router.desired_generation,
            ),
        )
    ctx.show(router)
    return 0
