"""The integration tests' guest web servers (tests/lib/guest_servers.py): a
server started again under the same name (a module's fixtures made again for
its other router backend) must not leave the first one running."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

from tests.lib.guest_servers import Web


class LocalGuest:
    """Runs the server command as a plain process (its listening is taken as
    given: the check under test is the bookkeeping, not HTTP)."""

    def popen(self, argv: list[str], **kw: object) -> subprocess.Popen:
        return subprocess.Popen(["sleep", "60"], **kw)  # type: ignore[call-overload]

    def run(self, argv: list[str]) -> SimpleNamespace:
        return SimpleNamespace(stdout="LISTEN 0 5 0.0.0.0:8080 0.0.0.0:*\n")


def test_a_server_started_again_under_its_name_stops_the_first() -> None:
    web = Web()
    guest = LocalGuest()
    web.start(guest, "web0")
    first = web.procs["web0"]
    web.start(guest, "web0")
    try:
        assert first.poll() is not None, "the first server still runs, no longer recorded"
        assert web.procs["web0"].poll() is None
    finally:
        web.close()
    assert first.poll() is not None
