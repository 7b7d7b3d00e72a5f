"""``cloudnet quota`` against the real server: the admin sets a default and
an override, the tenant sees its usage, a refusal names the quota."""

from __future__ import annotations

from tests.lib.cli_runner import Cli


def test_quota_set_show_and_refusal(c: Cli) -> None:
    tid = c.json(c.admin, "tenant", "create", "acme")["id"]
    tok = c.json(c.admin, "token", "create", tid)["secret"]
    c.ok(c.admin, "quota", "set", "networks", "5")
    c.ok(c.admin, "quota", "set", "networks", "1", "--tenant", tid)
    c.json(tok, "network", "create", "web", "--cidr", "10.20.0.0/24")
    err = c.fails(tok, "network", "create", "db", "--cidr", "10.21.0.0/24")
    assert "RESOURCE_EXHAUSTED" in err
    assert "quota.networks" in err
    mine = {q["resource"]: q for q in c.json(tok, "quota", "show")["quotas"]}
    assert (mine["networks"]["limit"], mine["networks"]["used"]) == ("1", "1")
    rows = [line.split() for line in c.ok(c.admin, "quota", "show", "--tenant", tid)
            .splitlines()]
    assert ["networks", "1*", "1"] in rows
    c.ok(c.admin, "quota", "set", "networks", "--reset", "--tenant", tid)
    mine = {q["resource"]: q for q in c.json(tok, "quota", "show")["quotas"]}
    assert mine["networks"]["limit"] == "5"
    assert "PERMISSION_DENIED" in c.fails(tok, "quota", "set", "networks", "9")
