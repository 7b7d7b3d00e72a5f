"""The runtime drives services through their contract only (router/services/base.py):
phases in the list's order, removal in reverse, optional capabilities as
declared. Fake services, no namespace (no root)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router import runtime
from router.runtime import RouterRuntime
from router.services.base import (
    NO_CAPABILITIES,
    Capabilities,
    Context,
    Rendered,
    RouterPaths,
    Service,
)


class Fake:
    """A service that records every call into a shared log."""

    def __init__(self, name: str, calls: list[tuple[str, str]], serving: bool = True) -> None:
        self.name = name
        self.calls = calls
        self.serving = serving
        self.healthy = True
        self.capabilities: Capabilities = NO_CAPABILITIES

    def verify(self, cfg: pb.RouterConfig) -> None:
        self.calls.append(("verify", self.name))

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        # Only the routes matter to this service: other changes leave it alone.
        return {"file": f"{paths.state_dir} {[r.destination for r in cfg.routes]}"}

    def check(self, ctx: Context, rendered: Rendered) -> None:
        self.calls.append(("check", self.name))

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        self.calls.append(("apply", self.name))

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        return pb.ServiceStatus(name=self.name, healthy=self.healthy)

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        self.calls.append(("remove", f"{self.name} keep_leases={keep_leases}"))


class Extra(Fake):
    """A fake declaring every optional capability but edge rules."""

    def __init__(self, name: str, calls: list[tuple[str, str]], serving: bool = True) -> None:
        super().__init__(name, calls, serving)
        self.capabilities = Capabilities(conditional=self, tends=self, status_extras=self)

    def serves(self, cfg: pb.RouterConfig) -> bool:
        return self.serving

    def tend(self, ctx: Context, cfg: pb.RouterConfig) -> list[str]:
        self.calls.append(("tend", self.name))
        return []

    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        status.lb_members.add(load_balancer_id=self.name)


@pytest.fixture
def calls() -> Calls:
    return []


Make = Callable[..., RouterRuntime]
Calls = list[tuple[str, str]]


@pytest.fixture
def make(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Make:
    """A runtime of the given services (no namespace is made or removed)."""
    monkeypatch.setattr(runtime, "ensure_netns", lambda name: None)
    monkeypatch.setattr(runtime, "remove_netns", lambda name: None)

    def build(*services: Service) -> RouterRuntime:
        ctx = Context(router_id="r1", netns="cn-test-r1", state_dir=f"{tmp_path}/r1",
                      fabric=None)  # type: ignore[arg-type]  # the fakes plug nothing
        return RouterRuntime(ctx, services)

    return build


def config(generation: int, *routes: str) -> pb.RouterConfig:
    return pb.RouterConfig(router_id="r1", generation=generation,
                           routes=[pb.Route(destination=r) for r in routes])


def test_phases_run_in_list_order_and_an_unchanged_service_is_left_alone(
        make: Make, calls: Calls) -> None:
    rt = make(Fake("a", calls), Fake("b", calls))
    assert rt.apply(config(1)).applied_generation == 1
    assert calls == [("verify", "a"), ("verify", "b"), ("check", "a"), ("check", "b"),
                     ("apply", "a"), ("apply", "b")]
    calls.clear()
    assert rt.apply(config(2)).applied_generation == 2  # renders the same
    assert calls == [("verify", "a"), ("verify", "b")]
    assert rt.service_applies == {"a": 1, "b": 1}
    rt.apply(config(3, "10.0.0.0/8"))
    assert rt.service_applies == {"a": 2, "b": 2}


def test_delete_removes_in_the_reverse_order_with_one_signature(make: Make, calls: Calls) -> None:
    rt = make(Fake("a", calls), Fake("b", calls), Extra("c", calls))
    rt.apply(config(1))
    calls.clear()
    rt.delete(keep_leases=True)
    assert calls == [("remove", "c keep_leases=True"), ("remove", "b keep_leases=True"),
                     ("remove", "a keep_leases=True")]
    assert rt.config is None


def test_declared_capabilities_shape_the_status_and_the_health_pass(
        make: Make, calls: Calls) -> None:
    idle = Extra("idle", calls, serving=False)
    rt = make(Fake("a", calls), Extra("busy", calls), idle)
    status = rt.apply(config(1))
    assert [s.name for s in status.services] == ["a", "busy"]  # idle: not serving
    assert [m.load_balancer_id for m in status.lb_members] == ["busy", "idle"]
    calls.clear()
    assert rt.repair() == []
    assert calls == [("tend", "busy"), ("tend", "idle")]
    calls.clear()
    idle.healthy = False
    assert rt.repair() == ["idle"]
    assert ("apply", "idle") in calls
    assert ("tend", "busy") not in calls


def test_without_an_edge_rules_service_a_delta_is_stale(make: Make, calls: Calls) -> None:
    rt = make(Fake("a", calls))
    rt.apply(config(1))
    reply = rt.apply_edge_delta(epb.EdgeDelta(router_id="r1", base_generation=1, generation=2))
    assert reply.stale
    assert reply.applied_generation == 1
    assert rt.edge_counters(set()) == []


def test_config_pb_holds_no_secret_and_a_restored_config_awaits_them(
        make: Make, calls: Calls) -> None:
    import os
    import stat

    from cloudnet.router.v1 import vpn_pb2

    psk = "in-memory-only.0123456789"
    cfg = config(4, "10.9.0.0/16")
    cfg.vpn_connections.append(vpn_pb2.VpnConnection(id="c1", psk=psk))
    rt = make(Fake("a", calls))
    status = rt.apply(cfg)
    assert status.applied_generation == 4
    assert not status.awaiting_secrets
    assert rt.config is not None
    assert rt.config.vpn_connections[0].psk == psk  # held in memory
    path = rt.ctx.paths.config
    with open(path, "rb") as f:
        assert psk.encode() not in f.read()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(rt.ctx.state_dir).st_mode) & 0o066 == 0
    # An agent restart: the config comes back from disk, without its key.
    again = make(Fake("a", calls))
    restored = again.restore()
    assert restored is not None
    assert restored.applied_generation == 4
    assert restored.awaiting_secrets
    assert again.config is not None
    assert again.config.vpn_connections[0].psk == ""
    # netmgr's push at the same generation hands the key back.
    assert not again.apply(cfg).awaiting_secrets
    assert again.config.vpn_connections[0].psk == psk
