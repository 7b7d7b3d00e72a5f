"""``cloudnet vpc|tier|acl|route|private-gateway`` end to end against the real
API server (SQLite store), in-process."""

from __future__ import annotations

from typing import Any

import pytest

from netmgr.model.vpc import DEFAULT_DENY_ID
from tests.lib.cli_runner import Cli


@pytest.fixture
def cli(c: Cli) -> tuple[Cli, str]:
    """The runner and a tenant it acts on (as admin, with --tenant)."""
    return c, c.json(c.admin, "tenant", "create", "acme")["id"]


def test_vpc_tier_acl_route_and_gateway_commands(cli: tuple[Cli, str]) -> None:
    c, tenant = cli

    def j(*argv: str) -> Any:
        return c.json(c.admin, *argv, tenant=tenant)

    vpc = j("vpc", "create", "shop", "--cidr", "10.20.0.0/16")
    assert vpc["cidr"] == "10.20.0.0/16"
    assert vpc["source_nat_ip"]
    acl = j("acl", "create", vpc["id"], "db-rules")
    web = j("tier", "create", vpc["id"], "web", "--cidr", "10.20.1.0/24")
    db = j("tier", "create", vpc["id"], "db", "--cidr", "10.20.2.0/24", "--acl", acl["id"])
    assert db["acl_id"] == acl["id"]
    assert web["vpc_id"] == vpc["id"]
    r1 = j("acl", "rule-create", acl["id"], "--number", "200", "--action", "allow",
           "--direction", "ingress", "--protocol", "all")
    j("acl", "rule-create", acl["id"], "--number", "100", "--action", "deny",
      "--direction", "ingress", "--protocol", "tcp", "--ports", "80-81",
      "--cidr", "10.20.1.0/24")
    rules = j("acl", "rules", acl["id"])
    assert [(r["number"], r["action"]) for r in rules] == [
        (100, "ACL_ACTION_DENY"), (200, "ACL_ACTION_ALLOW")]
    table = c.ok(c.admin, "acl", "rules", acl["id"], tenant=tenant)
    assert "80-81" in table
    assert "10.20.1.0/24" in table
    moved = j("acl", "rule-update", r1["id"], "--number", "50", "--action", "allow",
              "--direction", "ingress", "--protocol", "icmp", "--icmp-type", "8")
    assert moved["number"] == 50
    assert moved["icmp_type"] == 8
    j("acl", "replace", db["id"], DEFAULT_DENY_ID)
    assert j("vpc", "show", vpc["id"])["tier_ids"] == [web["id"], db["id"]]
    names = [a["name"] for a in j("acl", "list", vpc["id"])]
    assert names == ["default_allow", "default_deny", "db-rules"]
    route = j("route", "create", vpc["id"], "--cidr", "172.16.0.0/12", "--next-hop",
              "10.20.1.50")
    assert route["via_id"] == web["id"]
    pg = j("private-gateway", "create", vpc["id"], "--vlan", "2000", "--address",
           "192.168.50.2/24", "--gateway", "192.168.50.1")
    assert [g["id"] for g in j("private-gateway", "list", vpc["id"])] == [pg["id"]]
    # A bad rule: the CLI fails with the API's field-named error.
    rc, _, err = c.run(c.admin, "acl", "rule-create", acl["id"], "--number", "300",
                       "--action", "deny", "--direction", "egress", "--protocol", "sctpish",
                       tenant=tenant)
    assert rc == 1
    assert "rule.protocol" in err
    for argv in (("route", "delete", route["id"]), ("private-gateway", "delete", pg["id"]),
                 ("acl", "rule-delete", r1["id"]), ("network", "delete", web["id"]),
                 ("network", "delete", db["id"]), ("acl", "delete", acl["id"]),
                 ("vpc", "delete", vpc["id"])):
        c.ok(c.admin, *argv, tenant=tenant)
    assert j("vpc", "list") == []
