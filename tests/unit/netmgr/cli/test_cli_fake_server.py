"""The CLI against an in-process fake netmgr: metadata, pagination, waiting,
error details as a real grpc server sends them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from netmgr.cli import main as cli
from netmgr.cli.client import Client, PaginationError, paginate

ADMIN = "admin-secret"  # the tokens the fake server (conftest) accepts
TENANT_TOKEN = "tenant-secret"


def run(addr: str, *argv: str, token: str = TENANT_TOKEN) -> list[str]:
    return ["--server", addr, "--token", token, *argv]


def test_client_attaches_auth_and_tenant_metadata(fake_server: tuple[str, Any]) -> None:
    addr, fake = fake_server
    with Client(addr, ADMIN, tenant="t-7") as c:
        assert c.tenants.WhoAmI(pb.WhoAmIRequest()).admin
    _, _, md = fake.calls[-1]
    assert md["authorization"] == f"Bearer {ADMIN}"
    assert md["x-cloudnet-tenant"] == "t-7"
    with Client(addr, TENANT_TOKEN) as c:
        assert c.tenants.WhoAmI(pb.WhoAmIRequest()).tenant_id == "t-1"
    assert "x-cloudnet-tenant" not in fake.calls[-1][2]


def test_tenant_from_env_is_sent(
    fake_server: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    addr, fake = fake_server
    monkeypatch.setenv("CLOUDNET_SERVER", addr)
    monkeypatch.setenv("CLOUDNET_TOKEN", ADMIN)
    monkeypatch.setenv("CLOUDNET_TENANT", "t-42")
    assert cli.main(["whoami"]) == 0
    assert fake.calls[-1][2]["x-cloudnet-tenant"] == "t-42"
    assert ["admin", "yes"] in [line.split() for line in capsys.readouterr().out.splitlines()]


def test_lists_follow_page_tokens(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, fake = fake_server
    for i in range(5):
        assert cli.main(run(addr, "network", "create", f"n{i}", "--cidr", f"10.{i}.0.0/24")) == 0
    capsys.readouterr()
    assert cli.main(run(addr, "-o", "json", "network", "list")) == 0
    nets = json.loads(capsys.readouterr().out)
    assert [n["name"] for n in nets] == [f"n{i}" for i in range(5)]
    assert len(fake.requests("ListNetworks")) == 3  # pages of 2

    assert cli.main(run(addr, "network", "list", "--limit", "3")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "CIDR"]
    assert [line.split()[1] for line in lines[1:]] == ["n0", "n1", "n2"]


def test_paginate_refuses_a_repeated_token() -> None:
    def method(req: pb.ListPortsRequest) -> pb.ListPortsResponse:
        return pb.ListPortsResponse(ports=[pb.Port(id="p")], next_page_token="same")

    with pytest.raises(PaginationError, match="repeated page token"):
        list(paginate(method, pb.ListPortsRequest(), "ports"))
    assert len(list(paginate(method, pb.ListPortsRequest(), "ports", limit=2))) == 2


def test_port_list_filters_by_network(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, fake = fake_server
    cli.main(run(addr, "network", "create", "a", "--cidr", "10.0.0.0/24"))
    cli.main(run(addr, "port", "create", "net-1", "--hostname", "vm1"))
    capsys.readouterr()
    assert cli.main(run(addr, "port", "list", "--network", "net-1")) == 0
    assert fake.requests("ListPorts")[-1].network_id == "net-1"
    assert "vm1" in capsys.readouterr().out


def test_invalid_argument_from_a_real_grpc_server(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _ = fake_server
    assert cli.main(run(addr, "network", "create", "x", "--cidr", "10.0.0.0/33")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "cloudnet: error: INVALID_ARGUMENT: network.cidr: prefix length must be 16 to 29\n"
    )


def test_not_found_and_unauthenticated(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _ = fake_server
    assert cli.main(run(addr, "network", "show", "net-404")) == 1
    assert capsys.readouterr().err == "cloudnet: error: NOT_FOUND: id: network net-404 not found\n"
    assert cli.main(run(addr, "whoami", token="wrong")) == 1
    assert capsys.readouterr().err.startswith("cloudnet: error: UNAUTHENTICATED: ")


def test_update_sends_the_mask(fake_server: tuple[str, Any]) -> None:
    addr, fake = fake_server
    assert (
        cli.main(run(addr, "network", "update", "net-1", "--mtu", "1400", "--dns", "1.1.1.1")) == 0
    )
    req = fake.requests("UpdateNetwork")[-1]
    assert sorted(req.update_mask.paths) == ["dns_servers", "mtu"]
    assert cli.main(run(addr, "zone", "update", "--vlan-max", "200", token=ADMIN)) == 0
    assert list(fake.requests("UpdateZone")[-1].update_mask.paths) == ["vlan_max"]


def test_network_create_wait_polls_the_router(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, fake = fake_server
    assert cli.main(run(addr, "network", "create", "w", "--cidr", "10.9.0.0/24", "--wait")) == 0
    assert len(fake.requests("GetRouter")) == 3  # applied 1/3, 2/3, 3/3
    assert fake.routers["r-1"].state == pb.ROUTER_STATE_ACTIVE
    out = capsys.readouterr().out
    assert ["router_id", "r-1"] in [line.split() for line in out.splitlines()]


def test_port_create_wait(fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    addr, _fake = fake_server
    cli.main(run(addr, "network", "create", "a", "--cidr", "10.0.0.0/24"))
    capsys.readouterr()
    assert cli.main(run(addr, "-o", "json", "port", "create", "net-1", "--wait")) == 0
    port = json.loads(capsys.readouterr().out)
    assert port["state"] == "OBJECT_STATE_ACTIVE"


def test_wait_timeout_fails_with_the_last_state(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, fake = fake_server
    fake.port_polls_to_active = 10**6
    cli.main(run(addr, "network", "create", "a", "--cidr", "10.0.0.0/24"))
    capsys.readouterr()
    argv = run(addr, "port", "create", "net-1", "--wait", "--wait-timeout", "0.3")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("cloudnet: error: port p-1 not ready after 0.3s: state PENDING")


def test_router_restart_wait(
    fake_server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _fake = fake_server
    cli.main(run(addr, "network", "create", "a", "--cidr", "10.0.0.0/24", "--wait"))
    capsys.readouterr()
    assert cli.main(run(addr, "-o", "json", "router", "restart", "r-1", "--wait")) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["state"] == "ROUTER_STATE_ACTIVE"
    assert r["applied_generation"] == r["desired_generation"] == "4"


def test_progress_only_on_a_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain = io.StringIO()
    p = cli.Progress(plain)
    p.update("waiting")
    p.done()
    assert plain.getvalue() == ""

    tty = Tty()
    p = cli.Progress(tty)
    p.update("waiting for router r-1: PROVISIONING")
    p.update("waiting")
    p.done()
    text = tty.getvalue()
    assert "\rwaiting" not in text
    assert "| waiting for router r-1" in text
    assert text.endswith("\r")
    assert "\n" not in text
