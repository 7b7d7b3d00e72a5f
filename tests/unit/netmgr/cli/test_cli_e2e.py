"""The CLI end to end against the real netmgr API server (SQLite store)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from netmgr.cli import main as cli
from netmgr.cli.client import Client, paginate
from tests.lib.cli_runner import Cli


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


@pytest.fixture
def tenant(c: Cli) -> tuple[str, str]:
    """(tenant id, tenant token secret) created through the CLI as admin."""
    t = c.json(c.admin, "tenant", "create", "acme")
    assert t["name"] == "acme"
    assert t["id"]
    tok = c.json(c.admin, "token", "create", t["id"], "--name", "ci")
    assert tok["secret"]
    assert tok["token"]["tenant_id"] == t["id"]
    return t["id"], tok["secret"]


def test_admin_manages_tenants_and_tokens(c: Cli, tenant: tuple[str, str]) -> None:
    tid, secret = tenant
    assert c.json(c.admin, "whoami")["admin"] is True
    rows = table(c.ok(c.admin, "tenant", "list"))
    assert rows[0] == ["ID", "NAME", "CREATED"]
    assert [tid, "acme"] == rows[1][:2]
    assert rows[1][2].endswith("Z")  # ISO timestamp
    assert c.json(c.admin, "tenant", "show", tid)["name"] == "acme"

    out = c.ok(c.admin, "token", "create", tid)  # table output shows the secret once
    new_secret = dict((r[0], r[-1]) for r in table(out)[1:])["secret"]
    assert new_secret
    assert new_secret != secret
    tokens = c.json(c.admin, "token", "list", tid)
    assert isinstance(tokens, list)
    assert len(tokens) == 2
    assert all("secret" not in t for t in tokens)
    other = next(t["id"] for t in tokens if t["name"] != "ci")
    assert c.ok(c.admin, "token", "delete", other).strip() == f"Deleted token {other}"
    c.fails(new_secret, "whoami")

    me = c.json(secret, "whoami")
    assert me["admin"] is False
    assert me["tenant_id"] == tid


def test_tenant_networks_and_ports(c: Cli, tenant: tuple[str, str]) -> None:
    tid, tok = tenant
    net = c.json(tok, "network", "create", "web", "--cidr", "10.20.0.0/24", "--dns", "1.1.1.1")
    assert net["cidr"] == "10.20.0.0/24"
    assert net["tenant_id"] == tid
    assert net["gateway"] == "10.20.0.1"
    assert net["dns_servers"] == ["1.1.1.1"]
    nid = net["id"]

    p1 = c.json(tok, "port", "create", nid, "--hostname", "vm1", "--name", "first")
    p2 = c.json(tok, "port", "create", nid, "--hostname", "vm2", "--ip", "10.20.0.50")
    assert p2["ip"] == "10.20.0.50"
    assert p1["ip"]
    assert p1["mac"]

    # table: a header, one aligned row per port, state without its prefix
    rows = table(c.ok(tok, "port", "list", "--network", nid))
    assert rows[0] == ["ID", "NAME", "NETWORK", "IP", "MAC", "HOSTNAME", "STATE"]
    by_id = {r[0]: r for r in rows[1:]}
    assert set(by_id) == {p1["id"], p2["id"]}
    assert by_id[p2["id"]][3] == "10.20.0.50"
    assert by_id[p2["id"]][5] == "vm2"
    assert all(not r[6].startswith("OBJECT_STATE") for r in rows[1:])
    widths = {len(line) - len(line.lstrip()) for line in c.ok(tok, "port", "list").splitlines()}
    assert widths == {0}

    # json: arrays that parse back
    ports = c.json(tok, "port", "list")
    assert sorted(p["hostname"] for p in ports) == ["vm1", "vm2"]
    nets = c.json(tok, "network", "list")
    assert [n["id"] for n in nets] == [nid]
    assert table(c.ok(tok, "network", "list"))[1][:3] == [nid, "web", "10.20.0.0/24"]
    assert c.json(tok, "port", "list", "--limit", "1").__len__() == 1

    # show / update
    upd = c.json(tok, "network", "update", nid, "--mtu", "1400", "--name", "web2")
    assert (upd["mtu"], upd["name"], upd["dns_servers"]) == (1400, "web2", ["1.1.1.1"])
    assert c.json(tok, "network", "show", nid)["mtu"] == 1400
    port = c.json(tok, "port", "update", p1["id"], "--device-id", "vm-0001")
    assert (port["device_id"], port["hostname"], port["name"]) == ("vm-0001", "vm1", "first")

    # the router of the network is visible
    routers = c.json(tok, "router", "list")
    assert [r["network_id"] for r in routers] == [nid]
    assert c.json(tok, "router", "show", net["router_id"])["id"] == net["router_id"]

    # the admin sees the tenant's objects with --tenant
    assert [n["id"] for n in c.json(c.admin, "network", "list", tenant=tid)] == [nid]

    # delete
    assert c.ok(tok, "port", "delete", p2["id"]).strip() == f"Deleted port {p2['id']}"
    err = c.fails(tok, "port", "show", p2["id"])
    assert err.startswith("cloudnet: error: NOT_FOUND: ")
    err = c.fails(tok, "network", "delete", nid)
    assert err.startswith("cloudnet: error: FAILED_PRECONDITION: ")
    assert c.json(tok, "network", "delete", nid, "--force") == {"id": nid, "deleted": True}
    assert c.json(tok, "port", "list") == []
    err = c.fails(c.admin, "tenant", "show", "00000000-0000-0000-0000-000000000000")
    assert "NOT_FOUND" in err


def test_pagination_against_the_server(server: str, c: Cli, tenant: tuple[str, str]) -> None:
    _tid, tok = tenant
    nid = c.json(tok, "network", "create", "pg", "--cidr", "10.30.0.0/24")["id"]
    with Client(server, tok) as client:
        for i in range(7):
            client.ports.CreatePort(
                pb.CreatePortRequest(port=pb.Port(network_id=nid, name=f"p{i}"))
            )
        pages = list(paginate(client.ports.ListPorts, pb.ListPortsRequest(), "ports", page_size=3))
    assert len(pages) == 7
    assert len({p.id for p in pages}) == 7
    assert len(c.json(tok, "port", "list")) == 7
    assert len(c.json(tok, "port", "list", "--limit", "4")) == 4


def test_bad_input_names_the_field(c: Cli, tenant: tuple[str, str]) -> None:
    _, tok = tenant
    err = c.fails(tok, "network", "create", "x", "--cidr", "10.0.0.0/33")
    assert err.startswith("cloudnet: error: INVALID_ARGUMENT: ")
    assert "network.cidr" in err
    nid = c.json(tok, "network", "create", "y", "--cidr", "10.40.0.0/24")["id"]
    err = c.fails(tok, "port", "create", nid, "--ip", "192.168.1.1")
    assert "port.ip" in err


def test_wrong_token_is_unauthenticated(c: Cli) -> None:
    err = c.fails("not-a-token", "network", "list")
    assert err.startswith("cloudnet: error: UNAUTHENTICATED")


def test_zone_show_and_update(c: Cli, tenant: tuple[str, str]) -> None:
    _, tok = tenant
    zone = c.json(c.admin, "zone", "show")
    rows = table(c.ok(c.admin, "zone", "show"))
    assert rows[0] == ["FIELD", "VALUE"]
    new = c.json(c.admin, "zone", "update", "--domain-suffix", "cloud.example")
    assert new["domain_suffix"] == "cloud.example"
    assert new["public_cidr"] == zone["public_cidr"]  # untouched: only the masked field changed
    err = c.fails(tok, "zone", "update", "--domain-suffix", "x.example")
    assert "PERMISSION_DENIED" in err


def test_unreachable_server(unused_addr: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--server", unused_addr, "--token", "any-token", "tenant", "list"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1
    assert unused_addr in err
    assert "UNAVAILABLE" in err


def test_a_token_secret_can_go_to_a_private_file_never_printed(
        c: Cli, tenant: tuple[str, str], tmp_path: Path) -> None:
    """``token create --secret-file``: the secret lands in a new 0600 file
    (usable as CLOUDNET_TOKEN_FILE) and no output shows it; an existing file
    is never overwritten (and no token is made then)."""
    tid, _ = tenant
    path = tmp_path / "acme.token"
    out = c.ok(c.admin, "token", "create", tid, "--secret-file", str(path))
    secret = path.read_text().strip()
    assert secret
    assert secret not in out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert c.json(secret, "whoami")["tenant_id"] == tid
    as_json = c.json(c.admin, "token", "create", tid, "--secret-file", str(tmp_path / "j"))
    assert "secret" not in as_json
    assert (tmp_path / "j").read_text().strip()
    before = len(c.json(c.admin, "token", "list", tid))
    rc, out, err = c.run(c.admin, "token", "create", tid, "--secret-file", str(path))
    assert (rc, out) == (2, "")
    assert err.startswith("cloudnet: error: --secret-file")
    assert "exists" in err
    assert path.read_text().strip() == secret
    assert len(c.json(c.admin, "token", "list", tid)) == before
