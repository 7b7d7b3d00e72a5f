"""The all-in-one cloud of the e2e tests, plus edge API helpers and servers in guests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from tests.integration.e2e.conftest import (  # noqa: F401 (fixtures)
    Tenant,
    _backend_marks,
    cloud,
    make_tenant,
    skip_vm_variants,
)

EDGE_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """The edge suite runs on namespace routers only for now: on router VMs
    (TCG here) the churn, LB health-check and counter tests failed in the
    first full run (open work, see README "Router VMs"). Skipped before any
    fixture runs, so no VM cloud is booted for them."""
    skip_vm_variants(items, EDGE_DIR, "edge suite on router VMs: not yet passing (see README)")

__all__ = ["Edge", "cloud", "make_tenant"]


class Edge:
    """The edge stubs on a tenant's channel, and waits on rule states."""

    def __init__(self, t: Tenant) -> None:
        self.t = t
        ch = t.api.channel
        self.ips = erpc.PublicIpServiceStub(ch)
        self.nats = erpc.StaticNatServiceStub(ch)
        self.forwards = erpc.PortForwardServiceStub(ch)
        self.firewall = erpc.FirewallServiceStub(ch)
        self.lbs = erpc.LoadBalancerServiceStub(ch)

    def call(self, method, request, timeout: float = 30):
        return self.t.api.call(method, request, timeout)

    def public_ip(self, network_id: str) -> epb.PublicIp:
        return self.call(self.ips.AllocatePublicIp,
                         epb.AllocatePublicIpRequest(network_id=network_id))

    def forward(self, **fields) -> epb.PortForward:
        return self.call(self.forwards.CreatePortForward,
                         epb.CreatePortForwardRequest(port_forward=epb.PortForward(**fields)))

    def static_nat(self, public_ip_id: str, port_id: str) -> epb.StaticNat:
        return self.call(self.nats.CreateStaticNat, epb.CreateStaticNatRequest(
            static_nat=epb.StaticNat(public_ip_id=public_ip_id, port_id=port_id)))

    def rule(self, **fields) -> epb.FirewallRule:
        return self.call(self.firewall.CreateFirewallRule,
                         epb.CreateFirewallRuleRequest(firewall_rule=epb.FirewallRule(**fields)))

    def wait_active(self, get, request, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            obj = self.call(get, request)
            if obj.state == pb.OBJECT_STATE_ACTIVE:
                return obj
            if obj.state == pb.OBJECT_STATE_ERROR or time.monotonic() > deadline:
                raise AssertionError(f"{type(obj).__name__} {obj.id}: "
                                     f"{pb.ObjectState.Name(obj.state)} {obj.error}")
            time.sleep(0.05)

    def wait_router(self, router_id: str) -> None:
        self.t.api.wait_router_active(router_id)


@pytest.fixture
def edge_of():
    return Edge


def in_ns(ns: str, argv: list[str], timeout: float = 15, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)
