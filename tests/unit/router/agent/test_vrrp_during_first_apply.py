"""keepalived, started by a router's first redundant apply, notifies its
first state (BACKUP) before that apply ends, and never again while it stays
BACKUP. The services that follow the role must hear of it all the same:
conntrackd's BACKUP transition asks the peer for a resync and then lifts the
failback gate; a notification dropped there left a replaced router VM
gated (never master again). Fake services stand for keepalived (it notifies
from inside its apply, as the agent's listener would) and conntrackd (it
records the states it is told)."""

from __future__ import annotations

import os

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from router import runtime
from router.agent import registry as registry_module
from router.agent.registry import RouterRegistry
from router.agent.server import RouterAgentServicer
from router.runtime import RouterRuntime
from router.services.base import Capabilities, Context, KnownHost, Rendered, RouterPaths

ROUTER = "0" * 31 + "3"


class _Service:
    name = ""

    def verify(self, cfg: pb.RouterConfig) -> None:
        pass

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return {"conf": str(cfg.HasField("redundancy"))}

    def check(self, ctx: Context, rendered: Rendered) -> None:
        pass

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        return pb.ServiceStatus(name=self.name, healthy=True)

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        pass


class Follower(_Service):
    """conntrackd: told every state the instance takes."""

    name = "follower"

    def __init__(self) -> None:
        self.capabilities = Capabilities(follows_role_at_once=self)
        self.told: list[str] = []

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        pass

    def role_changed(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        self.told.append(ctx.role.state)


class Notifier(_Service):
    """keepalived: its start notifies BACKUP while the apply is under way."""

    name = "notifier"

    def __init__(self) -> None:
        self.capabilities = Capabilities()
        self.registry: RouterRegistry | None = None
        self.answers: list[str] = []

    def runtime(self) -> RouterRuntime:
        assert self.registry is not None
        rt = self.registry.runtime(ROUTER, create=False)
        assert rt is not None
        return rt

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        if cfg.HasField("redundancy"):
            self.answers.append(self.runtime().vrrp_transition(lambda cfg: "BACKUP"))


class NoFabric:
    def setup(self) -> None:
        pass


def agent(tmp_path: object, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[RouterAgentServicer, Follower, Notifier]:
    follower, notifier = Follower(), Notifier()
    monkeypatch.setattr(runtime, "ensure_netns", lambda name: None)
    monkeypatch.setattr(runtime, "remove_netns", lambda name: None)
    monkeypatch.setattr(registry_module, "router_services", lambda host: [follower, notifier])
    notifier.registry = RouterRegistry(str(tmp_path), f"u{os.getpid()}v",
                                       fabric=NoFabric(), host=KnownHost())  # type: ignore[arg-type]
    return RouterAgentServicer(notifier.registry), follower, notifier


def config(generation: int, redundant: bool = False) -> pb.RouterConfig:
    cfg = pb.RouterConfig(router_id=ROUTER, generation=generation)
    if redundant:
        cfg.redundancy.priority = 200
    return cfg


@pytest.mark.parametrize("first", [True, False], ids=["a new router", "a router made redundant"])
def test_a_state_notified_during_the_apply_reaches_the_role_followers(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, first: bool) -> None:
    servicer, follower, notifier = agent(tmp_path, monkeypatch)
    if not first:
        servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(1)), None)
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(2, redundant=True)), None)
    assert notifier.answers == [""], "the notification came before the config was there"
    assert follower.told == ["BACKUP"]
    assert notifier.runtime().ctx.role.state == "BACKUP"
    # Replayed once: the next apply tells nobody again.
    servicer.ApplyConfig(pb.ApplyConfigRequest(config=config(3, redundant=True)), None)
    assert follower.told == ["BACKUP"]
