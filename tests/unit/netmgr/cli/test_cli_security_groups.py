"""``cloudnet sg ...`` and the ports' security options against the real
netmgr API server."""

from __future__ import annotations

import pytest

from tests.lib.cli_runner import Cli


@pytest.fixture
def tok(c: Cli) -> str:
    t = c.json(c.admin, "tenant", "create", "acme")
    return str(c.json(c.admin, "token", "create", t["id"], "--name", "ci")["secret"])


def test_sg_create_rules_list_show_delete(c: Cli, tok: str) -> None:
    web = c.json(tok, "sg", "create", "web", "--description", "web servers")
    default = next(g for g in c.json(tok, "sg", "list") if g["name"] == "default")
    http = c.json(tok, "sg", "rule-add", web["id"], "--direction", "ingress", "--protocol",
                  "tcp", "--port", "8000-8080", "--remote-cidr", "192.0.2.0/24")
    assert (http["port_min"], http["port_max"], http["remote_cidr"]) == (8000, 8080,
                                                                         "192.0.2.0/24")
    ping = c.json(tok, "sg", "rule-add", web["id"], "--direction", "ingress", "--protocol",
                  "icmp", "--icmp-type", "8", "--remote-group", default["id"])
    assert (ping["icmp_type"], ping["icmp_code"], ping["remote_group_id"]) == (
        8, -1, default["id"])
    rows = [line.split() for line in c.ok(tok, "sg", "list").splitlines()]
    assert rows[0] == ["ID", "NAME", "RULES", "PORTS", "DESCRIPTION"]
    assert [web["id"], "web", "2", "0", "web", "servers"] in rows
    assert [r["id"] for r in c.json(tok, "sg", "show", web["id"])["rules"]] == [
        http["id"], ping["id"]]
    err = c.fails(tok, "sg", "rule-add", web["id"], "--direction", "ingress", "--protocol",
                  "tcp", "--port", "9-8")
    assert "rule.port_max" in err
    err = c.fails(tok, "sg", "rule-add", web["id"], "--direction", "ingress", "--remote-cidr",
                  "10.0.0.0/33")
    assert "rule.remote_cidr" in err
    assert c.ok(tok, "sg", "rule-delete", http["id"]).strip() == (
        f"Deleted security group rule {http['id']}")
    c.ok(tok, "sg", "rule-delete", ping["id"])
    assert c.ok(tok, "sg", "delete", web["id"]).strip() == f"Deleted security group {web['id']}"
    assert [g["name"] for g in c.json(tok, "sg", "list")] == ["default"]


def test_port_security_options(c: Cli, tok: str) -> None:
    web = c.json(tok, "sg", "create", "web")
    net = c.json(tok, "network", "create", "web", "--cidr", "10.20.0.0/24")
    port = c.json(tok, "port", "create", net["id"], "--security-group", web["id"],
                  "--allowed-address-pair", "10.20.0.200",
                  "--allowed-address-pair", "10.20.0.208/29,02:00:00:00:00:09")
    assert port["security_group_ids"] == [web["id"]]
    assert port["port_security"] is True
    assert port["allowed_address_pairs"] == [
        {"ip": "10.20.0.200", "mac": ""}, {"ip": "10.20.0.208/29", "mac": "02:00:00:00:00:09"}]
    err = c.fails(tok, "port", "update", port["id"], "--no-port-security")
    assert "port.security_group_ids" in err
    port = c.json(tok, "port", "update", port["id"], "--no-port-security", "--default-group",
                  "--clear-allowed-address-pairs")
    assert port.get("port_security", False) is False
    assert port.get("security_group_ids", []) == []
    port = c.json(tok, "port", "update", port["id"], "--port-security")
    assert port["port_security"] is True


def test_admin_creates_a_shared_network(c: Cli, tok: str) -> None:
    provider = c.json(c.admin, "tenant", "create", "provider")
    acme = c.json(tok, "whoami")["tenant_id"]
    net = c.json(c.admin, "--tenant", provider["id"], "network", "create", "basic", "--cidr",
                 "172.20.0.0/16", "--provider-vlan", "3000", "--shared-tenant", acme)
    assert (net["shared"], net["provider_vlan"], net["shared_tenant_ids"]) == (
        True, 3000, [acme])
    port = c.json(tok, "port", "create", net["id"])
    assert port["network_id"] == net["id"]
    err = c.fails(c.admin, "--tenant", provider["id"], "network", "create", "x", "--cidr",
                  "172.21.0.0/16", "--provider-vlan", "150")
    assert "network.provider_vlan" in err


def test_admin_changes_a_shared_networks_tenants(c: Cli, tok: str) -> None:
    provider = c.json(c.admin, "tenant", "create", "provider2")
    other = c.json(c.admin, "tenant", "create", "other")
    acme = c.json(tok, "whoami")["tenant_id"]
    net = c.json(c.admin, "--tenant", provider["id"], "network", "create", "basic2", "--cidr",
                 "172.22.0.0/16", "--provider-vlan", "3002", "--shared-tenant", other["id"])
    assert c.fails(tok, "port", "create", net["id"])
    net = c.json(c.admin, "--tenant", provider["id"], "network", "update", net["id"],
                 "--shared-tenant", other["id"], "--shared-tenant", acme)
    assert net["shared_tenant_ids"] == [other["id"], acme]
    c.json(tok, "port", "create", net["id"])
    err = c.fails(c.admin, "--tenant", provider["id"], "network", "update", net["id"],
                  "--shared-tenant", other["id"])
    assert "1 port(s)" in err
    net = c.json(c.admin, "--tenant", provider["id"], "network", "update", net["id"],
                 "--all-tenants")
    assert net.get("shared_tenant_ids", []) == []
    rc, _, err = c.run(c.admin, "--tenant", provider["id"], "network", "update", net["id"],
                       "--all-tenants", "--shared-tenant", acme)
    assert rc == 2
    assert "--all-tenants" in err
