"""Output shapes of the CLI: ``-o json`` prints an object for every command
that shows one thing (``debug show`` too: the router's answer, its list under
the kind's name), and a detail table puts each element of a repeated object
field (a load balancer's members) on a line of its own.

``debug show`` runs through netmgr to a router agent, both in-process: the
agent holds a router whose config is set (nothing runs in a unit test) and a
dnsmasq lease file to read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cloudnet.router.v1 import agent_pb2 as apb

from router.agent.registry import RouterRegistry
from router.agent.server import create_server as agent_server
from tests.lib.cli_runner import Cli
from tests.lib.netmgr_cloud import ADMIN, Cloud, RecordingHooks, start_cloud


def test_lb_show_puts_each_member_on_its_own_line(c: Cli) -> None:
    tenant = c.json(c.admin, "tenant", "create", "acme")["id"]

    def j(*argv: str) -> dict:
        return c.json(c.admin, *argv, tenant=tenant)

    net = j("network", "create", "web", "--cidr", "10.20.0.0/24")
    ports = [j("port", "create", net["id"], "--hostname", f"vm{i}") for i in (1, 2, 3)]
    ip = j("publicip", "allocate", "--network", net["id"])
    lb = j("lb", "create", "--public-ip", ip["id"], "--port", "80", "--protocol", "tcp",
           "--private-port", "8080", *(a for p in ports for a in ("--member", p["id"])))
    out = c.ok(c.admin, "lb", "show", lb["id"], tenant=tenant)
    rows = [line for line in out.splitlines() if line.startswith("members")]
    assert len(rows) == 3, out
    for row, port in zip(rows, ports, strict=True):
        assert port["id"] in row
        assert port["ip"] in row
        assert sum(p["id"] in row for p in ports) == 1
    # JSON is the message as it is: one list of member objects.
    assert [m["port_id"] for m in j("lb", "show", lb["id"])["members"]] == \
        [p["id"] for p in ports]


class _NoFabric:
    def setup(self) -> None: ...
    def plug(self, *a: object, **kw: object) -> None: ...
    def unplug(self, port: str) -> None: ...
    def ports(self) -> set[str]:
        return set()


class _AgentHooks(RecordingHooks):
    """netmgr's hooks with its routers on one in-process agent."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.channel = grpc.insecure_channel(target)

    def router_channel(self, router_id: str, host: str, backend: str) -> grpc.Channel:
        return self.channel


@pytest.fixture
def debug_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                ) -> Iterator[tuple[Cli, str, str]]:
    registry = RouterRegistry(str(tmp_path / "agent"), fabric=_NoFabric())
    server, port = agent_server("127.0.0.1:0", registry)
    hooks = _AgentHooks(f"127.0.0.1:{port}")
    cloud: Cloud = start_cloud(tmp_path / "netmgr.db", hooks=hooks)
    c = Cli(cloud.target, capsys, admin=ADMIN)
    tenant = c.json(ADMIN, "tenant", "create", "acme")["id"]
    net = c.json(ADMIN, "network", "create", "web", "--cidr", "10.20.0.0/24", tenant=tenant)
    rt = registry.runtime(net["router_id"])
    rt.config = apb.RouterConfig(
        router_id=net["router_id"], generation=1,
        guest_networks=[apb.GuestNetwork(network_id=net["id"], interface="g-web",
                                         cidr=net["cidr"], gateway=net["gateway"])])
    os.makedirs(os.path.dirname(rt.ctx.paths.dhcp_leases), exist_ok=True)
    with open(rt.ctx.paths.dhcp_leases, "w") as f:
        f.write("1900000000 02:aa:00:00:00:11 10.20.0.11 vm1 *\n"
                "1900000000 02:aa:00:00:00:12 10.20.0.12 * *\n")
    yield c, tenant, net["router_id"]
    cloud.stop()
    hooks.channel.close()
    server.stop(0)


def test_debug_show_json_is_an_object(debug_world: tuple[Cli, str, str]) -> None:
    c, tenant, router_id = debug_world
    shown = c.json(ADMIN, "debug", "show", router_id, "leases", tenant=tenant)
    assert isinstance(shown, dict), shown
    assert [(x["ip"], x["hostname"]) for x in shown["leases"]] == [
        ("10.20.0.11", "vm1"), ("10.20.0.12", "")]
    table = c.ok(ADMIN, "debug", "show", router_id, "leases", tenant=tenant)
    assert table.splitlines()[0].split() == ["MAC", "IP", "HOSTNAME", "EXPIRES", "NETWORK"]
    assert "10.20.0.11" in table
    # An empty answer is an object too, with its (empty) list.
    assert c.json(ADMIN, "debug", "show", router_id, "lb-members", tenant=tenant) == \
        {"lb_members": []}


def test_the_admins_lists_show_every_tenant_with_a_tenant_column(c: Cli) -> None:
    tenants = {name: c.json(c.admin, "tenant", "create", name)["id"] for name in ("acme", "bolt")}
    nets = {}
    for i, (name, tid) in enumerate(sorted(tenants.items())):
        nets[name] = c.json(c.admin, "network", "create", "web", "--cidr", f"10.{i}.0.0/24",
                            tenant=tid)
        c.json(c.admin, "publicip", "allocate", "--network", nets[name]["id"], tenant=tid)
    secret = c.json(c.admin, "token", "create", tenants["acme"])["secret"]
    for what in ("network", "router", "publicip"):
        rows = [line.split() for line in c.ok(c.admin, what, "list").splitlines()]
        assert rows[0][:2] == ["ID", "TENANT"], (what, rows[0])
        assert {r[1] for r in rows[1:]} == set(tenants.values()), what
        listed = c.json(c.admin, what, "list")
        assert {x["tenant_id"] for x in listed} == set(tenants.values()), what
        # Scoped to one tenant (acting as it, or its own token): its objects, no column.
        for out in (c.ok(c.admin, what, "list", tenant=tenants["acme"]),
                    c.ok(secret, what, "list")):
            rows = [line.split() for line in out.splitlines()]
            assert "TENANT" not in rows[0], (what, rows[0])
            ids = {x["id"] for x in c.json(secret, what, "list")}
            assert {r[0] for r in rows[1:]} == ids
