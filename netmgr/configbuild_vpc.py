"""The VPC part of a router's config (pure, like ``netmgr.configbuild``):
the VPC's ID (the router routes between its tiers)."""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb

from netmgr.model import RouterSnapshot


def add_vpc(config: pb.RouterConfig, snapshot: RouterSnapshot) -> None:
    assert snapshot.vpc is not None
    config.vpc_id = snapshot.vpc.vpc.id
