"""``cloudnet network create --redundant``, ``cloudnet router redundancy`` and
``cloudnet router failover`` against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netmgr.server import ServerConfig, create_server
from tests.lib.cli_runner import Cli

ADMIN = "redundancy-admin"


def start(tmp_path: Path, agents: dict[str, str]) -> Iterator[str]:
    config = ServerConfig(listen="127.0.0.1:0", db_url=f"sqlite:///{tmp_path}/db.sqlite",
                          admin_token=ADMIN, agents=agents)
    server, port = create_server(config)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def one_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    for addr in start(tmp_path, {"local": "unix:///nonexistent/a.sock"}):
        yield Cli(addr, capsys, admin=ADMIN)


@pytest.fixture
def two_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    for addr in start(tmp_path, {"local": "unix:///nonexistent/a.sock",
                                 "host-b": "unix:///nonexistent/b.sock"}):
        yield Cli(addr, capsys, admin=ADMIN)


def tenant_token(c: Cli) -> str:
    t = c.json(c.admin, "tenant", "create", "acme")
    return str(c.json(c.admin, "token", "create", t["id"], "--name", "t")["secret"])


def test_one_host_refuses_redundancy_and_failover_names_why(one_host: Cli) -> None:
    c = one_host
    token = tenant_token(c)
    err = c.fails(token, "network", "create", "web", "--cidr", "10.0.0.0/24", "--redundant")
    assert "FAILED_PRECONDITION" in err or "one router host" in err
    assert "one router host (local)" in err
    assert c.json(token, "network", "list") == []
    net = c.json(token, "network", "create", "web", "--cidr", "10.0.0.0/24")
    err = c.fails(token, "router", "failover", net["id"])
    assert "is not redundant" in err


def test_redundant_network_instances_and_failover(two_hosts: Cli) -> None:
    c = two_hosts
    token = tenant_token(c)
    net = c.json(token, "network", "create", "web", "--cidr", "10.0.0.0/24", "--redundant")
    assert net["redundant"] is True
    router = c.json(token, "router", "show", net["router_id"])
    assert [(i["host"], i["priority"]) for i in router["instances"]] == [
        ("local", 200), ("host-b", 100)]
    moved = c.json(token, "router", "failover", net["id"])
    assert [i["priority"] for i in moved["instances"]] == [100, 200]
    shown = c.json(token, "router", "redundancy", net["id"])
    assert shown["redundant"] is True
    assert "failover requested" in shown["events"][-1]
    assert c.json(token, "router", "redundancy", net["id"], "off")["redundant"] is False


def test_a_redundant_vpc_on_create_and_switched_by_update(two_hosts: Cli) -> None:
    c = two_hosts
    token = tenant_token(c)
    vpc = c.json(token, "vpc", "create", "shop", "--cidr", "10.30.0.0/16", "--redundant")
    assert vpc["redundant"] is True
    tier = c.json(token, "tier", "create", vpc["id"], "web", "--cidr", "10.30.1.0/24")
    router = c.json(token, "router", "show", vpc["router_id"])
    assert [(i["host"], i["priority"]) for i in router["instances"]] == [
        ("local", 200), ("host-b", 100)]
    # A tier's router is its VPC's: not switched by the tier's ID.
    err = c.fails(token, "router", "redundancy", tier["id"], "off")
    assert "use vpc_id" in err
    assert c.json(token, "vpc", "update", vpc["id"], "--redundant", "off").get(
        "redundant", False) is False
    assert c.json(token, "router", "show", vpc["router_id"]).get("instances", []) == []
    assert c.json(token, "vpc", "show", vpc["id"]).get("redundant", False) is False
    assert c.json(token, "vpc", "update", vpc["id"], "--redundant", "on")["redundant"] is True
    assert c.json(token, "vpc", "show", vpc["id"])["redundant"] is True
    assert [v.get("redundant", False) for v in c.json(token, "vpc", "list")] == [True]


def test_one_host_refuses_a_redundant_vpc_before_creating_it(one_host: Cli) -> None:
    c = one_host
    token = tenant_token(c)
    err = c.fails(token, "vpc", "create", "shop", "--cidr", "10.30.0.0/16", "--redundant")
    assert "vpc.redundant" in err
    assert "one router host (local)" in err
    assert c.json(token, "vpc", "list") == []
    vpc = c.json(token, "vpc", "create", "shop", "--cidr", "10.30.0.0/16")
    err = c.fails(token, "vpc", "update", vpc["id"], "--redundant", "on")
    assert "one router host" in err
    assert c.json(token, "vpc", "show", vpc["id"]).get("redundant", False) is False
