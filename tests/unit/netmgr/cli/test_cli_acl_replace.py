"""``cloudnet acl replace ID ACL --wait`` for a tier and for a private gateway
(the API takes either ID): the CLI waits for the VPC router and shows the
object it changed, against the real API server in-process. The router
"applies" each generation from a thread that plays the agent's report."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netmgr.model import core as model
from tests.lib.cli_runner import Cli
from tests.lib.netmgr_cloud import ADMIN, Cloud, start_cloud


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = start_cloud(tmp_path / "netmgr.db")
    yield c
    c.stop()


@pytest.fixture
def applying(cloud: Cloud) -> Iterator[None]:
    """Every router reports its desired generation applied, as an agent would."""
    stop = threading.Event()

    def agent() -> None:
        while not stop.wait(0.05):
            for r in cloud.store.list_routers_all():
                if r.applied_generation < r.desired_generation:
                    cloud.store.record_router_status(
                        r.id, applied_generation=r.desired_generation,
                        services=[model.ServiceHealth(name="nftables", healthy=True)],
                        last_error="", port_errors={}, reachable=True)

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def test_acl_replace_waits_for_a_tier_or_a_private_gateway(
        cloud: Cloud, applying: None, capsys: pytest.CaptureFixture[str]) -> None:
    c = Cli(cloud.target, capsys, admin=ADMIN)
    tenant = c.json(ADMIN, "tenant", "create", "acme")["id"]

    def j(*argv: str) -> Any:
        return c.json(ADMIN, *argv, tenant=tenant)

    vpc = j("vpc", "create", "shop", "--cidr", "10.20.0.0/16", "--wait")
    acl = j("acl", "create", vpc["id"], "gw-rules")
    tier = j("tier", "create", vpc["id"], "web", "--cidr", "10.20.1.0/24", "--wait")
    gw = j("private-gateway", "create", vpc["id"], "--vlan", "2000", "--address",
           "192.168.50.2/24", "--gateway", "192.168.50.1", "--wait")

    shown = j("acl", "replace", gw["id"], acl["id"], "--wait")
    assert shown["id"] == gw["id"]
    assert shown["acl_id"] == acl["id"]
    assert [g["acl_id"] for g in j("private-gateway", "list", vpc["id"])] == [acl["id"]]
    router = j("router", "show", vpc["router_id"])
    assert router["applied_generation"] == router["desired_generation"]

    shown = j("acl", "replace", tier["id"], acl["id"], "--wait")
    assert shown["id"] == tier["id"]
    assert shown["acl_id"] == acl["id"]

    # An ID that is neither: the API's NOT_FOUND, and nothing shown.
    err = c.fails(ADMIN, "acl", "replace", "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a", acl["id"],
                  tenant=tenant)
    assert "not found" in err
