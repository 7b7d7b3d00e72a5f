"""``cloudnet event list`` and read-only / expiring tokens from the CLI,
against the real server."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lib.cli_runner import Cli


def test_event_list_shows_what_was_done(c: Cli) -> None:
    tid = c.json(c.admin, "tenant", "create", "acme")["id"]
    tok = c.json(c.admin, "token", "create", tid)["secret"]
    net = c.json(tok, "network", "create", "web", "--cidr", "10.20.0.0/24")
    c.fails(tok, "network", "create", "bad", "--cidr", "10.20.0.0/33")
    lines = c.ok(tok, "event", "list").splitlines()
    assert lines[0].split()[:3] == ["SEQ", "TIME", "KIND"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[2], r[5]) for r in rows][-2:] == [
        ("api.call", "NetworkService/CreateNetwork"),
        ("api.call", "NetworkService/CreateNetwork"),
    ]
    assert rows[-2][6:] == [net["id"], "OK"]
    assert "INVALID_ARGUMENT" in lines[-1]
    assert "network.cidr" in lines[-1]
    only = c.json(c.admin, "event", "list", "--object", net["id"])
    assert only["method"].endswith("CreateNetwork")  # one event: one JSON object
    assert c.ok(tok, "event", "list", "--kind", "quota.refused").splitlines()[1:] == []


def test_read_only_token_from_the_cli(c: Cli) -> None:
    tid = c.json(c.admin, "tenant", "create", "acme")["id"]
    made = c.json(c.admin, "token", "create", tid, "--read-only", "--ttl", "3600")
    assert made["token"]["read_only"] is True
    assert "expire_time" in made["token"]
    ro = made["secret"]
    assert c.ok(ro, "network", "list").splitlines()[1:] == []
    assert "PERMISSION_DENIED" in c.fails(ro, "network", "create", "w", "--cidr", "10.1.0.0/24")
    c.json(c.admin, "token", "create", tid, "--name", "plain")
    rows = [line.split() for line in c.ok(c.admin, "token", "list", tid).splitlines()]
    assert rows[0][-2:] == ["EXPIRES", "SCOPE"]
    scopes = {r[0]: r[-2:] for r in rows[1:]}
    assert scopes[made["token"]["id"]][1] == "read-only"
    assert scopes[made["token"]["id"]][0].endswith("Z")  # its expiry time
    assert sorted(v[1] for v in scopes.values()) == ["all", "read-only"]
    assert ["never", "all"] in scopes.values()


def test_event_list_follow_prints_new_events(c: Cli, server: str) -> None:
    tid = c.json(c.admin, "tenant", "create", "acme")["id"]
    tok = c.json(c.admin, "token", "create", tid)["secret"]
    env = {**os.environ, "CLOUDNET_SERVER": server, "CLOUDNET_TOKEN": tok, "CLOUDNET_INSECURE": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    follower = subprocess.Popen([sys.executable, "-m", "netmgr.cli.main", "event", "list",
                                 "--follow"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert follower.stdout is not None
        header = follower.stdout.readline()
        assert header.split()[:2] == ["SEQ", "TIME"]
        # The past (the admin's CreateToken for this tenant) is listed first;
        # what comes after arrives through the watch.
        assert "TenantService/CreateToken" in follower.stdout.readline()
        c.json(tok, "network", "create", "web", "--cidr", "10.20.0.0/24")
        seen = ""
        while "CreateNetwork" not in seen:
            seen = follower.stdout.readline()
            assert seen, "the follower ended"
        assert seen.split()[2] == "api.call"
    finally:
        follower.terminate()
        follower.wait(timeout=30)
