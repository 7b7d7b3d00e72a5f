"""The edge API's stubs on a tenant's channel of the unit tests' netmgr, and
the row counts of the edge tables (a refused call changes none)."""

from __future__ import annotations

from typing import Any

from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc

from tests.lib.netmgr_cloud import Api, Cloud

TABLES = ("public_ips", "static_nats", "port_forwards", "firewall_rules", "load_balancers")


class Edge:
    def __init__(self, c: Cloud, api: Api) -> None:
        self.md = api.metadata
        ch = c.channel
        self.stubs = [erpc.PublicIpServiceStub(ch), erpc.StaticNatServiceStub(ch),
                      erpc.PortForwardServiceStub(ch), erpc.FirewallServiceStub(ch),
                      erpc.LoadBalancerServiceStub(ch)]

    def __getattr__(self, name: str) -> Any:
        for stub in self.stubs:
            method = getattr(stub, name, None)
            if method is not None:
                return lambda req, m=method: m(req, metadata=self.md, timeout=30)
        raise AttributeError(name)


def counts(c: Cloud) -> dict[str, int]:
    return {t: c.sql(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}
