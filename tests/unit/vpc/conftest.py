"""A real netmgr server (tests/unit/netmgr/conftest.py) plus the VPC stubs."""

from __future__ import annotations

from typing import Any

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc

from tests.unit.netmgr.conftest import Api, Cloud, cloud, make_cloud  # noqa: F401, F811


class VpcApi:
    """A tenant's VPC stubs next to its core ``Api``."""

    def __init__(self, c: Cloud, api: Api) -> None:
        self.api = api
        self.md = api.metadata
        self.vpcs = vrpc.VpcServiceStub(c.channel)
        self.acls = vrpc.NetworkAclServiceStub(c.channel)
        self.routes = vrpc.StaticRouteServiceStub(c.channel)
        self.gateways = vrpc.PrivateGatewayServiceStub(c.channel)

    def __getattr__(self, name: str) -> Any:
        for stub in (self.vpcs, self.acls, self.routes, self.gateways):
            method = getattr(stub, name, None)
            if method is not None:
                return lambda req, m=method: m(req, metadata=self.md, timeout=30)
        return getattr(self.api, name)

    def vpc(self, name: str = "vpc1", cidr: str = "10.0.0.0/16", **kw: Any) -> vpb.Vpc:
        return self.CreateVpc(vpb.CreateVpcRequest(vpc=vpb.Vpc(name=name, cidr=cidr, **kw)))

    def tier(self, vpc_id: str, name: str, cidr: str, **kw: Any) -> pb.Network:
        return self.CreateNetwork(pb.CreateNetworkRequest(
            network=pb.Network(name=name, cidr=cidr, vpc_id=vpc_id, **kw)))


@pytest.fixture
def acme_vpc(cloud: Cloud) -> tuple[Cloud, VpcApi]:  # noqa: F811
    _, api = cloud.new_tenant("acme")
    return cloud, VpcApi(cloud, api)
