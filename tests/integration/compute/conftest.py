"""Compute integration tests: shared host services (OVS, libvirt) started once."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


@pytest.fixture(scope="session")
def host_services():
    """Start ovsdb-server/ovs-vswitchd/libvirtd/virtlogd (scripts/host-services.sh).

    They are the host's shared daemons: started if missing, left running."""
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "host-services.sh"), "start"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode:
        pytest.fail(f"host services: {proc.stdout}{proc.stderr}")


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:5]
