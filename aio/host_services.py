"""Start the shared host daemons (OVS, libvirt) through scripts/host-services.sh."""

from __future__ import annotations

import os
import subprocess

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "host-services.sh")


class HostServicesError(RuntimeError):
    pass


def ensure_running(timeout: float = 120) -> None:
    """ovsdb-server, ovs-vswitchd, virtlogd and libvirtd running (idempotent).

    They are the host's shared daemons: started when missing, left running."""
    proc = subprocess.run(["bash", SCRIPT, "start"], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode:
        raise HostServicesError(f"{SCRIPT} start failed: {proc.stdout}{proc.stderr}".strip())
