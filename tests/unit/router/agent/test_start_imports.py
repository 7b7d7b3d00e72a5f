"""The agent's start imports only what serving needs and forks nothing: a
router VM under TCG pays seconds for every large module imported, and tens
of milliseconds for every process started, before the agent answers health
(images/router/README.md, "Boot time under TCG")."""

from __future__ import annotations

import json
import subprocess
import sys

# Imported by a probe or a tool when used, never by the start.
NOT_AT_START = ("scapy", "matplotlib", "pyroute2")

_START = """
import json, subprocess, sys, tempfile
forks = []
_popen = subprocess.Popen.__init__
def spy(self, args, *a, **k):
    forks.append(str(args))
    return _popen(self, args, *a, **k)
subprocess.Popen.__init__ = spy
from router.agent import appliance
from router.agent import auth  # what main() imports in appliance mode
from router.agent.registry import RouterRegistry
from router.agent.server import create_server

class Fabric:
    def setup(self): pass

registry = RouterRegistry(tempfile.mkdtemp(), fabric=Fabric())
registry.start()
server, port = create_server("127.0.0.1:0", registry)  # diagnostics and edge services too
server.stop(None)
if sys.argv[1:] == ["probe"]:
    from router.diag import probes
    probes._import_scapy()  # what a ping does first
if sys.argv[1:] == ["fork"]:
    subprocess.run(["true"])  # what the spy must see
print(json.dumps({"modules": sorted({m.split(".")[0] for m in sys.modules}), "forks": forks}))
"""


def _start(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _START, *args], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return dict(json.loads(out.splitlines()[-1]))


def test_agent_start_does_not_import_scapy_nor_fork() -> None:
    started = _start()
    loaded = set(started["modules"])
    assert "grpc" in loaded
    assert "router" in loaded
    assert not loaded & set(NOT_AT_START)
    # e.g. ctypes.util.find_library forks ldconfig
    assert started["forks"] == []


def test_a_probe_imports_scapy_when_used_and_forks_are_seen() -> None:
    assert "scapy" in _start("probe")["modules"]
    assert _start("fork")["forks"] == ["['true']"]
