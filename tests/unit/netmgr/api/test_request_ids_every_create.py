"""Every create-style call of the API (Create*, Allocate*, Import* in
proto/cloudnet/netmgr/v1) is idempotent with its x-request-id: a retry
returns the same object and makes nothing more. The table of requests below
must name every such call: a new create without a row here, or without a
way to replay it, fails ``test_every_create_in_the_protos_is_covered``."""

from __future__ import annotations

import importlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import dns_pb2 as dpb
from cloudnet.netmgr.v1 import dns_pb2_grpc as drpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import keypair_pb2_grpc as krpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb
from cloudnet.netmgr.v1 import security_group_pb2_grpc as sgrpc
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc
from cloudnet.netmgr.v1 import vpn_pb2 as vnpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vnrpc
from google.protobuf import descriptor_pool
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import create_engine, inspect

from netmgr.api.request_ids import has_replay, is_create
from tests.lib.netmgr_cloud import ADMIN, Cloud, rpc_error

PROTO_DIR = Path(__file__).resolve().parents[4] / "proto" / "cloudnet" / "netmgr" / "v1"
# Rows a retry may add: the audit log and the request records themselves.
UNCOUNTED = {"events", "create_requests", "alembic_version"}

Build = Callable[[dict[str, Any]], Any]


def _stub(cloud: Cloud, method: str) -> Any:
    for mod in (rpc, erpc, vrpc, vnrpc, drpc, krpc, sgrpc):
        for name in dir(mod):
            if name.endswith("Stub"):
                fn = getattr(getattr(mod, name)(cloud.channel), method, None)
                if fn is not None:
                    return fn
    raise AssertionError(f"no stub has {method}")


# method -> (as admin?, request built from the world's objects)
RECIPES: dict[str, tuple[bool, Build]] = {
    "CreateTenant": (True, lambda w: pb.CreateTenantRequest(name="t2")),
    "CreateToken": (True, lambda w: pb.CreateTokenRequest(tenant_id=w["tenant"].id, name="t2")),
    "CreateNetwork": (False, lambda w: pb.CreateNetworkRequest(
        network=pb.Network(name="n", cidr="10.9.0.0/24"))),
    "CreatePort": (False, lambda w: pb.CreatePortRequest(port=pb.Port(network_id=w["net"].id))),
    "AllocatePublicIp": (False, lambda w: epb.AllocatePublicIpRequest(network_id=w["net"].id)),
    "CreateStaticNat": (False, lambda w: epb.CreateStaticNatRequest(static_nat=epb.StaticNat(
        public_ip_id=w["ip_nat"].id, port_id=w["p1"].id))),
    "CreatePortForward": (False, lambda w: epb.CreatePortForwardRequest(
        port_forward=epb.PortForward(public_ip_id=w["ip_fwd"].id, protocol="tcp",
                                     public_port=80, port_id=w["p1"].id, private_port=8080))),
    "CreateFirewallRule": (False, lambda w: epb.CreateFirewallRuleRequest(
        firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                       public_ip_id=w["ip_fwd"].id, protocol="tcp", port=22,
                                       cidrs=["192.0.2.0/24"]))),
    "CreateLoadBalancer": (False, lambda w: epb.CreateLoadBalancerRequest(
        load_balancer=epb.LoadBalancer(public_ip_id=w["ip_fwd"].id, public_port=443,
                                       protocol="tcp", private_port=8443,
                                       members=[epb.LoadBalancerMember(port_id=w["p1"].id)]))),
    "CreateVpc": (False, lambda w: vpb.CreateVpcRequest(vpc=vpb.Vpc(name="v2",
                                                                    cidr="10.20.0.0/16"))),
    "CreateNetworkAcl": (False, lambda w: vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=w["vpc"].id, name="acl2"))),
    "CreateAclRule": (False, lambda w: vpb.CreateAclRuleRequest(rule=vpb.AclRule(
        acl_id=w["acl"].id, number=100, action=vpb.ACL_ACTION_ALLOW,
        direction=vpb.ACL_DIRECTION_INGRESS, protocol="tcp", port=80))),
    "CreateStaticRoute": (False, lambda w: vpb.CreateStaticRouteRequest(
        static_route=vpb.StaticRoute(vpc_id=w["vpc"].id, cidr="172.16.0.0/12",
                                     next_hop="10.0.1.5"))),
    "CreatePrivateGateway": (False, lambda w: vpb.CreatePrivateGatewayRequest(
        private_gateway=vpb.PrivateGateway(vpc_id=w["vpc"].id, address="192.168.50.2/24",
                                           gateway="192.168.50.1"))),
    "CreateVpnGateway": (False, lambda w: vnpb.CreateVpnGatewayRequest(
        vpn_gateway=vnpb.VpnGateway(network_id=w["net2"].id))),
    "CreateCustomerGateway": (False, lambda w: vnpb.CreateCustomerGatewayRequest(
        customer_gateway=vnpb.CustomerGateway(
            name="site-b", peer_address="192.0.2.3", peer_cidrs=["172.17.0.0/24"],
            psk="0123456789abcdef-Key", ike_version=vnpb.IKE_VERSION_2))),
    "CreateVpnConnection": (False, lambda w: vnpb.CreateVpnConnectionRequest(
        vpn_connection=vnpb.VpnConnection(vpn_gateway_id=w["vgw"].id,
                                          customer_gateway_id=w["cgw"].id))),
    "CreateSecurityGroup": (False, lambda w: sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(name="web"))),
    "CreateSecurityGroupRule": (False, lambda w: sgpb.CreateSecurityGroupRuleRequest(
        rule=sgpb.SecurityGroupRule(security_group_id=w["sg"].id, direction="ingress",
                                    protocol="tcp", port_min=80, port_max=80))),
    "CreateDnsRecord": (False, lambda w: dpb.CreateDnsRecordRequest(dns_record=dpb.DnsRecord(
        network_id=w["net"].id, name="www", type="a", value="10.1.0.50"))),
    "ImportKeyPair": (False, lambda w: kpb.ImportKeyPairRequest(
        key_pair=kpb.KeyPair(name="k", public_key=w["public_key"]))),
}


def creates_in_protos() -> list[Any]:
    """Every create-style method of netmgr's API, read from the .proto files."""
    for path in sorted(PROTO_DIR.glob("*.proto")):
        importlib.import_module(f"cloudnet.netmgr.v1.{path.stem}_pb2")
    pool = descriptor_pool.Default()
    found = []
    for path in sorted(PROTO_DIR.glob("*.proto")):
        for service in pool.FindFileByName(f"cloudnet/netmgr/v1/{path.name}") \
                .services_by_name.values():
            found += [m for m in service.methods if is_create(m.name)]
    return found


def test_every_create_in_the_protos_is_covered() -> None:
    creates = creates_in_protos()
    assert len(creates) >= len(RECIPES) > 15  # the walk found the protos
    missing = sorted(m.name for m in creates if m.name not in RECIPES)
    assert not missing, f"creates with no request-ID test: {missing}"
    no_replay = sorted(m.name for m in creates if not has_replay(m))
    assert not no_replay, f"creates whose retry cannot be answered: {no_replay}"


def counts(cloud: Cloud) -> dict[str, int]:
    engine = create_engine(cloud.db_url)
    try:
        tables = [t for t in inspect(engine).get_table_names() if t not in UNCOUNTED]
    finally:
        engine.dispose()
    return {t: cloud.sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


@pytest.fixture
def world(cloud: Cloud, tmp_path: Path) -> dict[str, Any]:
    tenant, api = cloud.new_tenant("acme")
    md = api.metadata
    cloud.admin.UpdateZone(pb.UpdateZoneRequest(
        zone=pb.Zone(private_gateway_vlan_min=2000, private_gateway_vlan_max=2010),
        update_mask=FieldMask(paths=["private_gateway_vlan_min", "private_gateway_vlan_max"])))

    def call(method: str, req: Any) -> Any:
        return _stub(cloud, method)(req, metadata=md, timeout=30)

    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                        cidr="10.1.0.0/24")))
    net2 = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="b",
                                                                         cidr="10.2.0.0/24")))
    p1 = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, hostname="vm1")))
    ip_nat = call("AllocatePublicIp", epb.AllocatePublicIpRequest(network_id=net.id))
    ip_fwd = call("AllocatePublicIp", epb.AllocatePublicIpRequest(network_id=net.id))
    vpc = call("CreateVpc", vpb.CreateVpcRequest(vpc=vpb.Vpc(name="v", cidr="10.0.0.0/16")))
    api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="web", cidr="10.0.1.0/24", vpc_id=vpc.id)))
    acl = call("CreateNetworkAcl", vpb.CreateNetworkAclRequest(
        network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="acl")))
    vgw = call("CreateVpnGateway", vnpb.CreateVpnGatewayRequest(
        vpn_gateway=vnpb.VpnGateway(network_id=net.id)))
    cgw = call("CreateCustomerGateway", vnpb.CreateCustomerGatewayRequest(
        customer_gateway=vnpb.CustomerGateway(
            name="site-a", peer_address="192.0.2.2", peer_cidrs=["172.16.1.0/24"],
            psk="0123456789abcdef-Key", ike_version=vnpb.IKE_VERSION_2)))
    sg = call("CreateSecurityGroup", sgpb.CreateSecurityGroupRequest(
        security_group=sgpb.SecurityGroup(name="base")))
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return dict(tenant=tenant, md=md, net=net, net2=net2, p1=p1, ip_nat=ip_nat, ip_fwd=ip_fwd,
                vpc=vpc, acl=acl, vgw=vgw, cgw=cgw, sg=sg,
                public_key=Path(f"{key}.pub").read_text().strip())


def _id(answer: Any) -> str:
    return answer.token.id if isinstance(answer, pb.CreateTokenResponse) else answer.id


def test_a_retried_create_returns_the_same_object_and_makes_one(
        cloud: Cloud, world: dict[str, Any]) -> None:
    wrong = {}
    for method, (admin, build) in RECIPES.items():
        md = (("authorization", f"Bearer {ADMIN}"),) if admin else world["md"]
        call = _stub(cloud, method)
        request = build(world)
        rid = (("x-request-id", f"rid-{method}"),)
        first = call(request, metadata=md + rid, timeout=30)
        made = counts(cloud)
        if method == "CreateToken":
            # The secret is shown once: the retry is told which token it made.
            err = rpc_error(lambda c=call, r=request, m=md + rid: c(r, metadata=m, timeout=30))
            if err.code() != grpc.StatusCode.ALREADY_EXISTS or _id(first) not in err.details():
                wrong[method] = f"retry answered {err.code()}: {err.details()}"
        else:
            again = call(request, metadata=md + rid, timeout=30)
            if again != first:
                wrong[method] = f"retry answered {again} after {first}"
        if counts(cloud) != made:
            wrong[method] = f"retry made rows: {made} -> {counts(cloud)}"
    assert not wrong, wrong
