"""Probe ports (short-lived namespaces on a tenant segment) never outlive the agent."""

from __future__ import annotations

import pytest

from common.netns import netns_exists
from router.diag import probes

pytestmark = pytest.mark.integration


def test_stale_probe_ports_are_removed(agent):
    a = agent.agent
    port = probes.ProbePort(a.fabric, a.netns_prefix, 100, "02:00:00:00:00:99")
    port.__enter__()  # as if the agent died before leaving the probe
    try:
        assert netns_exists(port.netns)
        assert port.fabric_port in a.fabric.ports()
        assert probes.remove_stale_probe_ports(a.fabric, a.netns_prefix) == [port.netns]
        assert not netns_exists(port.netns)
        assert port.fabric_port not in a.fabric.ports()
    finally:
        port.close()
