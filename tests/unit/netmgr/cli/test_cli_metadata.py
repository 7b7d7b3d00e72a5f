"""``cloudnet keypair ...``, the ports' metadata options and
``port reset-password`` against the real netmgr API server."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tests.lib.cli_runner import Cli


@pytest.fixture
def tok(c: Cli) -> str:
    t = c.json(c.admin, "tenant", "create", "acme")
    return str(c.json(c.admin, "token", "create", t["id"], "--name", "ci")["secret"])


def test_keypair_import_list_show_delete(c: Cli, tok: str, tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
                                 check=True, capture_output=True, text=True).stdout.split()[1]
    kp = c.json(tok, "keypair", "import", "laptop", "--public-key-file", f"{key}.pub")
    assert (kp["name"], kp["fingerprint"], kp["key_type"]) == ("laptop", fingerprint,
                                                              "ssh-ed25519")
    rows = [line.split() for line in c.ok(tok, "keypair", "list").splitlines()]
    assert rows[0] == ["ID", "NAME", "TYPE", "FINGERPRINT"]
    assert rows[1] == [kp["id"], "laptop", "ssh-ed25519", fingerprint]
    assert c.json(tok, "keypair", "show", kp["id"])["public_key"] == kp["public_key"]

    (tmp_path / "bad.pub").write_text("ssh-rsa AAAA\n")
    err = c.fails(tok, "keypair", "import", "bad", "--public-key-file", str(tmp_path / "bad.pub"))
    assert "key_pair.public_key" in err
    assert c.ok(tok, "keypair", "delete", kp["id"]).strip() == f"Deleted key pair {kp['id']}"
    assert c.json(tok, "keypair", "list") == []


def test_port_user_data_labels_key_pair_and_password(c: Cli, tok: str, tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kp = c.json(tok, "keypair", "import", "k", "--public-key-file", f"{key}.pub")
    net = c.json(tok, "network", "create", "web", "--cidr", "10.20.0.0/24")
    init = tmp_path / "init.yaml"
    init.write_bytes(b"#cloud-config\nruncmd: [touch /marker]\n")
    port = c.json(tok, "port", "create", net["id"], "--user-data-file", str(init),
                  "--label", "role=web", "--key-pair", kp["id"])
    assert base64.b64decode(port["user_data"]) == init.read_bytes()
    assert (port["labels"], port["ssh_key_pair_id"]) == ({"role": "web"}, kp["id"])

    init.write_bytes(b"#!/bin/sh\necho new\n")
    port = c.json(tok, "port", "update", port["id"], "--user-data-file", str(init),
                  "--no-key-pair", "--clear-labels")
    assert base64.b64decode(port["user_data"]) == b"#!/bin/sh\necho new\n"
    assert port["ssh_key_pair_id"] == ""
    assert port["labels"] == {}

    big = tmp_path / "big"
    big.write_bytes(b"x" * (32 * 1024 + 1))
    rc, _, err = c.run(tok, "port", "update", port["id"], "--user-data-file", str(big))
    assert rc == 2
    assert "more than 32768 bytes" in err
    # No router agent behind this API server: nothing to hold the password,
    # so none is made (the flow with an agent: tests/integration/metadata).
    rc, out, err = c.run(tok, "port", "reset-password", port["id"])
    assert (rc, out) == (1, "")
    assert "FAILED_PRECONDITION" in err


def test_port_dhcp_options_from_the_command_line(c: Cli, tok: str) -> None:
    net = c.json(tok, "network", "create", "web", "--cidr", "10.0.0.0/24")
    port = c.json(tok, "port", "create", net["id"],
                  "--dhcp-option", "ntp-server=10.0.0.5 10.0.0.6",
                  "--dhcp-option", "classless-static-route=10.9.0.0/16,10.0.0.1",
                  "--dhcp-option", "224:string=hello")
    got = [(o.get("name", ""), o.get("number", 0), o["values"]) for o in port["dhcp_options"]]
    assert got == [("ntp-server", 42, ["10.0.0.5", "10.0.0.6"]),
                   ("classless-static-route", 121, ["10.9.0.0/16,10.0.0.1"]),
                   ("", 224, ["hello"])]
    rc, _, err = c.run(tok, "port", "update", port["id"], "--dhcp-option", "ntp-server=nope")
    assert rc == 1
    assert "port.dhcp_options[0].values[0]" in err
    rc, _, err = c.run(tok, "port", "update", port["id"], "--dhcp-option", "ntp-server")
    assert rc == 2
    port = c.json(tok, "port", "update", port["id"], "--clear-dhcp-options")
    assert port.get("dhcp_options", []) == []


def test_dns_records_from_the_command_line(c: Cli, tok: str) -> None:
    net = c.json(tok, "network", "create", "web", "--cidr", "10.0.0.0/24")
    rec = c.json(tok, "dns", "create", net["id"], "www", "A", "10.0.0.50")
    assert (rec["name"], rec["type"], rec["value"]) == (f"www.{net['domain']}", "A", "10.0.0.50")
    rows = [line.split() for line in c.ok(tok, "dns", "list", "--network", net["id"]).splitlines()]
    assert rows[0] == ["ID", "NAME", "TYPE", "VALUE", "STATE"]
    assert rows[1][:4] == [rec["id"], rec["name"], "A", "10.0.0.50"]
    err = c.fails(tok, "dns", "create", net["id"], "www.example.com.", "A", "10.0.0.5")
    assert "dns_record.name" in err
    assert c.ok(tok, "dns", "delete", rec["id"]).strip() == f"Deleted DNS record {rec['id']}"


def test_a_vpcs_dns_records_from_the_command_line(c: Cli, tok: str) -> None:
    vpc = c.json(tok, "vpc", "create", "shop", "--cidr", "10.20.0.0/16")
    tier = c.json(tok, "tier", "create", vpc["id"], "web", "--cidr", "10.20.1.0/24")
    rec = c.json(tok, "dns", "create", "--vpc", vpc["id"], "www", "A", "10.20.1.50")
    assert (rec["vpc_id"], rec["name"]) == (vpc["id"], f"www.{vpc['domain']}")
    assert rec.get("network_id", "") == ""
    mine = c.json(tok, "dns", "create", tier["id"], "db", "A", "10.20.1.51")
    assert [r["id"] for r in c.json(tok, "dns", "list", "--vpc", vpc["id"])] == [rec["id"]]
    assert [r["id"] for r in c.json(tok, "dns", "list", "--network", tier["id"])] == [mine["id"]]
    for argv in (("--vpc", vpc["id"], tier["id"]), ()):  # both, neither
        err = c.fails(tok, "dns", "create", *argv, "x", "A", "10.20.1.5")
        assert "dns_record.network_id" in err
