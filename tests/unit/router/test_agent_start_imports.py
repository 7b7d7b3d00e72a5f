"""The agent's start imports only what serving needs: a router VM under TCG
pays seconds for every large module imported before the agent answers
health (images/router/README.md, "Boot time under TCG")."""

from __future__ import annotations

import json
import subprocess
import sys

# Imported by a probe or a tool when used, never by the start.
NOT_AT_START = ("scapy", "matplotlib")

_START = """
import json, sys, tempfile
from router import appliance, auth  # what main() imports in appliance mode
from router.agent import Agent, create_server

class Fabric:
    def setup(self): pass

agent = Agent(tempfile.mkdtemp(), fabric=Fabric())
server, port = create_server("127.0.0.1:0", agent)  # diagnostics and edge services too
server.stop(None)
if sys.argv[1:] == ["probe"]:
    from router.diag import probes
    probes._import_scapy()  # what a ping does first
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _top_modules(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _START, *args], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_agent_start_does_not_import_scapy() -> None:
    loaded = _top_modules()
    assert "grpc" in loaded and "router" in loaded  # the server did start
    assert not loaded & set(NOT_AT_START)


def test_a_probe_imports_scapy_when_used() -> None:
    assert "scapy" in _top_modules("probe")
