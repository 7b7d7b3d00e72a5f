"""ListRouterStatus never waits for a router's apply (router/published_status.py):
a router being applied is reported as its last completed change, never an
older generation (netmgr would mark the router's objects PENDING again).
Fake services stand for the daemons (the runtime's own logic)."""

from __future__ import annotations

import os
import threading

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router import runtime
from router.agent import registry as registry_module
from router.agent.registry import RouterRegistry
from router.agent.server import RouterAgentServicer
from router.services.base import NO_CAPABILITIES, Capabilities, Context, Rendered, RouterPaths

ROUTER = "0" * 31 + "1"
# Generous: reached only when the listing waited for the apply (the failure).
DEADLOCK_GUARD_S = 30.0


class Gate:
    """A daemon whose apply of one generation holds (the router's lock held
    with it) until the test lets it go."""

    name = "gate"
    capabilities: Capabilities = NO_CAPABILITIES

    def __init__(self) -> None:
        self.hold_generation = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.released_in_time = False

    def verify(self, cfg: pb.RouterConfig) -> None:
        pass

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return {"generation": str(cfg.generation)}

    def check(self, ctx: Context, rendered: Rendered) -> None:
        pass

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        if cfg.generation == self.hold_generation:
            self.entered.set()
            self.released_in_time = self.release.wait(DEADLOCK_GUARD_S)

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        return pb.ServiceStatus(name=self.name, healthy=True, detail=f"runs {cfg.generation}")

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        pass


class NoFabric:
    def setup(self) -> None:
        pass


@pytest.fixture
def agent(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> tuple[RouterAgentServicer, Gate]:
    from router.services.base import KnownHost

    gate = Gate()
    monkeypatch.setattr(runtime, "ensure_netns", lambda name: None)
    monkeypatch.setattr(runtime, "remove_netns", lambda name: None)
    monkeypatch.setattr(registry_module, "router_services", lambda host: [gate])
    registry = RouterRegistry(str(tmp_path), f"u{os.getpid()}x",
                              fabric=NoFabric(), host=KnownHost())  # type: ignore[arg-type]
    registry.health_max_age = 15.0  # as the agent runs with a health pass
    return RouterAgentServicer(registry), gate


def config(generation: int) -> pb.RouterConfig:
    return pb.RouterConfig(router_id=ROUTER, generation=generation, guest_networks=[
        pb.GuestNetwork(network_id="n1", cidr="10.0.0.0/24",
                        hosts=[pb.DhcpHost(port_id=f"p{generation}", hostname="vm")])])


def listed(servicer: RouterAgentServicer) -> dict[str, pb.RouterStatus]:
    reply = servicer.ListRouterStatus(pb.ListRouterStatusRequest(), None)
    return {s.router_id: s for s in reply.routers}


def listed_while_locked(servicer: RouterAgentServicer) -> dict[str, pb.RouterStatus]:
    """The listing, made while a change holds the router's lock."""
    rt = servicer.registry.runtime(ROUTER, create=False)
    out: list[dict[str, pb.RouterStatus]] = []
    with rt.lock:
        lister = threading.Thread(target=lambda: out.append(listed(servicer)))
        lister.start()
        lister.join(DEADLOCK_GUARD_S)
        waited = lister.is_alive()
    lister.join()
    assert not waited, "the listing waited for the router's lock"
    return out[0]


def test_a_router_mid_apply_is_listed_at_once_as_its_last_completed_generation(
        agent: tuple[RouterAgentServicer, Gate]) -> None:
    servicer, gate = agent
    for generation in (1, 2):
        servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(generation)), None)
    gate.hold_generation = 3
    pusher = threading.Thread(target=servicer.ApplyConfig,
                              args=(pb.ApplyConfigRequest(config=config(3)), None))
    pusher.start()
    assert gate.entered.wait(DEADLOCK_GUARD_S)
    try:
        during = listed(servicer)  # the apply of 3 holds the router's lock meanwhile
    finally:
        gate.release.set()
        pusher.join()
    assert gate.released_in_time, "the listing waited for the router's apply"
    status = during[ROUTER]
    assert status.applied_generation == 2
    assert {(o.kind, o.id) for o in status.objects} == {("network", "n1"), ("port", "p2")}
    # The daemons as last observed (by the push of 2), not dropped.
    assert [(s.name, s.detail) for s in status.services] == [("gate", "runs 2")]
    after = listed(servicer)[ROUTER]
    assert after.applied_generation == 3
    assert [(s.name, s.detail) for s in after.services] == [("gate", "runs 3")]


def test_a_rejected_config_and_a_delete_are_what_a_busy_listing_reports(
        agent: tuple[RouterAgentServicer, Gate]) -> None:
    servicer, gate = agent
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(1)), None)
    bad = config(2)
    bad.guest_networks[0].cidr = ""

    def refuse(cfg: pb.RouterConfig) -> None:
        if not cfg.guest_networks[0].cidr:
            from router.errors import ConfigError
            raise ConfigError("network n1: no CIDR", "network", "n1")

    gate.verify = refuse  # type: ignore[method-assign]
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=bad), None)
    status = listed_while_locked(servicer)[ROUTER]
    assert (status.applied_generation, status.rejected_generation) == (1, 2)
    assert "no CIDR" in status.last_error
    rt = servicer.registry.runtime(ROUTER, create=False)
    servicer.DeleteRouter(pb.DeleteRouterRequest(router_id=ROUTER), None)
    with rt.lock:  # a runtime someone still holds, deleted: nothing to report
        assert rt.published.read() is None
