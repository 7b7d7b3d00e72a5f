"""Tiers and rules under parallel clients: distinct VLANs and router MACs,
non-overlapping CIDRs, unique rule numbers, no generation lost."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb

from netmgr.reconcile.configbuild.router import build_router_config
from tests.lib.parallel import run_in_parallel

THREADS = 8


def test_parallel_tiers_get_distinct_vlans_and_router_macs(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")

    # Two tiers per client, 14 in all: the most a VPC holds (exactly reached
    # under concurrency, never passed).
    def create(i: int) -> list[pb.Network]:
        return [api.tier(vpc.id, f"t{i}-{n}", f"10.0.{i * 4 + n}.0/24") for n in range(2)]

    tiers = run_in_parallel(create, 7)
    total = 7 * 2
    assert len({t.vlan_id for t in tiers}) == total
    cfg = build_router_config(cloud.store.router_snapshot(vpc.router_id))
    macs = [i.mac for i in cfg.interfaces]
    assert len(macs) == len(set(macs)) == total + 1  # every tier's own, and pub0
    router = api.GetRouter(pb.GetRouterRequest(id=vpc.router_id))
    assert router.desired_generation == 1 + total


def test_parallel_overlapping_tiers_and_equal_rule_numbers_one_wins(acme_vpc):
    cloud, api = acme_vpc
    vpc = api.vpc("v", "10.0.0.0/16")
    acl = api.CreateNetworkAcl(vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="l")))

    def tier(i: int) -> list[str]:
        try:
            api.tier(vpc.id, f"t{i}", "10.0.7.0/24")
            return ["ok"]
        except grpc.RpcError as e:
            return [e.code().name]

    def rule(i: int) -> list[str]:
        try:
            api.CreateAclRule(vpb.CreateAclRuleRequest(rule=vpb.AclRule(
                acl_id=acl.id, number=10, action=vpb.ACL_ACTION_ALLOW,
                direction=vpb.ACL_DIRECTION_INGRESS, protocol="all")))
            return ["ok"]
        except grpc.RpcError as e:
            return [e.code().name]

    assert sorted(run_in_parallel(tier, THREADS)) == ["INVALID_ARGUMENT"] * (THREADS - 1) + ["ok"]
    assert sorted(run_in_parallel(rule, THREADS)) == ["INVALID_ARGUMENT"] * (THREADS - 1) + ["ok"]
    assert cloud.sql("SELECT count(*) FROM acl_rules")[0][0] == 1
