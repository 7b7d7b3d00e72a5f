"""Runs ``cloudnet`` in-process and captures its output (a helper of the CLI
tests; the fixtures that make one are in tests/unit/netmgr/cli/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netmgr.cli import main as cli


class Cli:
    """``cloudnet`` against one server; ``admin`` is that server's admin token."""

    def __init__(self, addr: str, capsys: pytest.CaptureFixture[str], admin: str) -> None:
        self.addr = addr
        self.capsys = capsys
        self.admin = admin

    def run(self, token: str, *argv: str, tenant: str | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        # The in-process servers of the CLI tests are plaintext, explicitly.
        args = ["--server", self.addr, "--token", token, "--insecure"]
        if tenant:
            args += ["--tenant", tenant]
        rc = cli.main([*args, *argv])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def ok(self, token: str, *argv: str, tenant: str | None = None) -> str:
        rc, out, err = self.run(token, *argv, tenant=tenant)
        assert rc == 0, err
        assert "error" not in err
        return out

    def json(self, token: str, *argv: str, tenant: str | None = None) -> Any:
        return json.loads(self.ok(token, "-o", "json", *argv, tenant=tenant))

    def fails(self, token: str, *argv: str, tenant: str | None = None) -> str:
        rc, out, err = self.run(token, *argv, tenant=tenant)
        assert rc == 1, (out, err)
        assert out == ""
        assert err.count("\n") == 1, err
        assert err.startswith("cloudnet: error: "), err
        assert "Traceback" not in err
        return err.strip()
