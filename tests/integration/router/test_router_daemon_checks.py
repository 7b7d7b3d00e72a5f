"""A daemon's config is checked by the daemon (``dnsmasq --test``,
``nginx -t``) when its text changes, not at every push: a port added to a
router changes its DHCP hosts files and metadata trees, not those configs.
A changed config is checked again, and a refused one is refused each time."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router.lib import proc
from tests.lib.routerlab import HOSTS, InProcessAgent, make_config

pytestmark = pytest.mark.integration


def config(router_id: str, generation: int, ports: list[str],
           tokens_for: tuple[str, ...] = ()) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, ports)
    for port in ports:
        mac, ip, host = HOSTS[port]
        cfg.guest_metadata.append(mpb.GuestMetadata(
            port_id=port, interface="g-net1", mac=mac, ip=ip, hostname=host,
            fqdn=f"{host}.tenant.test", availability_zone="zone1", network_id="net1",
            tokens_required=port in tokens_for))
    return cfg


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The daemons' checks run, by name (each still runs for real)."""
    seen: list[str] = []
    real: Callable[..., str] = proc.run

    def run(argv: list[str], *args: object, **kw: object) -> str:
        if "--test" in argv:
            seen.append("dnsmasq --test")
        elif argv[:2] == ["nginx", "-t"]:
            seen.append("nginx -t")
        return real(argv, *args, **kw)

    monkeypatch.setattr(proc, "run", run)
    return seen


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> pb.RouterStatus:
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == cfg.generation, status.last_error
    return status


def test_a_daemons_config_is_checked_when_its_text_changes(
        agent: InProcessAgent, checks: list[str]) -> None:
    router_id = uuid.uuid4().hex
    apply(agent, config(router_id, 1, ["p1"]))
    assert sorted(checks) == ["dnsmasq --test", "nginx -t"]

    checks.clear()
    apply(agent, config(router_id, 2, ["p1", "p2"]))  # hosts files and trees only
    apply(agent, config(router_id, 3, ["p1", "p2", "p3"]))
    assert checks == []

    # A guest that must use tokens: nginx's config names it.
    apply(agent, config(router_id, 4, ["p1", "p2", "p3"], tokens_for=("p3",)))
    assert checks == ["nginx -t"]
    # Its metadata is served from the new trees all along (nothing skipped).
    status = apply(agent, config(router_id, 5, ["p1", "p2"], tokens_for=("p3",)))
    assert {s.name: s.healthy for s in status.services}["metadata"] is True
