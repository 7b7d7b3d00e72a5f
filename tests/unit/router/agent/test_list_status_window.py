"""A listing of every router (ListRouterStatus) computes a router's status
at most once a second while nothing changes (router/runtime.py
``LIST_STATUS_WINDOW_S``); an apply or a VRRP transition ends the window, so
a listing never reports an older generation or role. A fake service stands
for the daemons and counts what it is asked; the clock is the test's."""

from __future__ import annotations

import os

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router import runtime
from router.agent import registry as registry_module
from router.agent.registry import RouterRegistry
from router.agent.server import RouterAgentServicer
from router.services.base import Capabilities, Context, Rendered, RouterPaths

ROUTER = "0" * 31 + "2"


class Observed:
    """A daemon whose state is observed for every status (as BGP sessions
    and the VRRP role are): counts the observations."""

    name = "observed"

    def __init__(self) -> None:
        self.capabilities = Capabilities(status_extras=self)
        self.observations = 0

    def verify(self, cfg: pb.RouterConfig) -> None:
        pass

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return {"generation": str(cfg.generation)}

    def check(self, ctx: Context, rendered: Rendered) -> None:
        pass

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        pass

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        return pb.ServiceStatus(name=self.name, healthy=True)

    def add_status(self, ctx: Context, cfg: pb.RouterConfig, status: pb.RouterStatus) -> None:
        self.observations += 1
        if cfg.HasField("redundancy"):
            status.redundancy.state = ctx.role.state

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        pass


class NoFabric:
    def setup(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def agent(tmp_path: object, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[RouterAgentServicer, Observed, Clock]:
    from router.services.base import KnownHost

    observed = Observed()
    monkeypatch.setattr(runtime, "ensure_netns", lambda name: None)
    monkeypatch.setattr(runtime, "remove_netns", lambda name: None)
    monkeypatch.setattr(registry_module, "router_services", lambda host: [observed])
    registry = RouterRegistry(str(tmp_path), f"u{os.getpid()}w",
                              fabric=NoFabric(), host=KnownHost())  # type: ignore[arg-type]
    registry.health_max_age = 15.0
    servicer = RouterAgentServicer(registry)
    clock = Clock()
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(1)), None)
    registry.runtime(ROUTER, create=False).clock = clock
    return servicer, observed, clock


def config(generation: int, redundant: bool = False) -> pb.RouterConfig:
    cfg = pb.RouterConfig(router_id=ROUTER, generation=generation)
    if redundant:
        cfg.redundancy.priority = 100
    return cfg


def listed(servicer: RouterAgentServicer) -> pb.RouterStatus:
    reply = servicer.ListRouterStatus(pb.ListRouterStatusRequest(), None)
    (status,) = reply.routers
    return status


def test_listings_within_a_second_observe_the_daemons_once(
        agent: tuple[RouterAgentServicer, Observed, Clock]) -> None:
    servicer, observed, clock = agent
    first = listed(servicer)
    before = observed.observations
    clock.now += 0.5
    again = listed(servicer)
    assert observed.observations == before, "the second listing observed the daemons again"
    assert again == first
    clock.now += 0.6  # past the window
    listed(servicer)
    assert observed.observations == before + 1


def test_an_apply_ends_the_window(
        agent: tuple[RouterAgentServicer, Observed, Clock]) -> None:
    servicer, _, clock = agent
    assert listed(servicer).applied_generation == 1
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(2)), None)
    clock.now += 0.1
    assert listed(servicer).applied_generation == 2


def test_a_vrrp_transition_ends_the_window(
        agent: tuple[RouterAgentServicer, Observed, Clock]) -> None:
    servicer, _, clock = agent
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(2, redundant=True)), None)
    rt = servicer.registry.runtime(ROUTER, create=False)
    rt.vrrp_transition(lambda cfg: "BACKUP")
    assert listed(servicer).redundancy.state == "BACKUP"
    clock.now += 0.1
    rt.vrrp_transition(lambda cfg: "MASTER")
    clock.now += 0.1
    assert listed(servicer).redundancy.state == "MASTER"


def test_a_clock_that_went_back_ends_the_window(
        agent: tuple[RouterAgentServicer, Observed, Clock]) -> None:
    servicer, observed, clock = agent
    listed(servicer)
    before = observed.observations
    clock.now -= 5
    listed(servicer)
    assert observed.observations == before + 1
