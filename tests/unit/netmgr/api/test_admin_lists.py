"""The admin lists across tenants: every List RPC of a tenant service, called
with the admin token and no tenant, returns every tenant's objects, each
naming its tenant (``tenant_id``), and pages through them all; a tenant still
sees only its own, and the admin acting as a tenant only that tenant's."""

from __future__ import annotations

from typing import Any

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2 as vnb
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from netmgr.api.auth import Access, access_for
from tests.lib.grpc_methods import invoke, methods
from tests.lib.netmgr_cloud import ADMIN, Cloud

NETMGR = (pb, epb, vpb, vnb)
ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)
BY_NAME = {m.name: m for m in methods(*NETMGR)}
# Lists of a tenant's objects (the admin-only ListTenants/ListTokens/ListHosts
# list across tenants already).
TENANT_LISTS = sorted(n for n, m in BY_NAME.items() if n.startswith("List") and access_for(
    f"/{m.containing_service.full_name}/{n}") is not Access.ADMIN)
# Lists scoped to a parent object: the request names it.
PARENT = {"ListNetworkAcls": "vpc_id", "ListAclRules": "acl_id",
          "ListStaticRoutes": "vpc_id", "ListPrivateGateways": "vpc_id"}


def call(cloud: Cloud, md: Any, rpc: str, **fields: Any) -> Any:
    method: MethodDescriptor = BY_NAME[rpc]
    request: Message = GetMessageClass(method.input_type)(**fields)
    return invoke(cloud.channel, method, request, md)


def items(reply: Message) -> list[Any]:
    (field,) = [f for f in reply.DESCRIPTOR.fields if f.message_type is not None
                and f.is_repeated]
    return list(getattr(reply, field.name))


def build(cloud: Cloud, name: str, octet: int) -> dict[str, Any]:
    """A tenant with one object of every kind a List RPC returns."""
    tenant = call(cloud, ADMIN_MD, "CreateTenant", name=name)
    md = (*ADMIN_MD, ("x-cloudnet-tenant", tenant.id))

    def c(rpc: str, **fields: Any) -> Any:
        return call(cloud, md, rpc, **fields)

    net = c("CreateNetwork", network=pb.Network(name="web", cidr=f"10.{octet}.0.0/24"))
    port = c("CreatePort", port=pb.Port(network_id=net.id, hostname="vm1"))
    port2 = c("CreatePort", port=pb.Port(network_id=net.id, hostname="vm2"))
    ip = c("AllocatePublicIp", network_id=net.id)
    ip2 = c("AllocatePublicIp", network_id=net.id)
    c("CreateStaticNat", static_nat=epb.StaticNat(public_ip_id=ip2.id, port_id=port2.id))
    c("CreatePortForward", port_forward=epb.PortForward(
        public_ip_id=ip.id, protocol="tcp", public_port=22, port_id=port.id, private_port=22))
    c("CreateFirewallRule", firewall_rule=epb.FirewallRule(
        direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=ip.id, protocol="tcp", port=22,
        cidrs=["0.0.0.0/0"]))
    c("CreateLoadBalancer", load_balancer=epb.LoadBalancer(
        public_ip_id=ip.id, public_port=80, protocol="tcp", private_port=8080,
        members=[epb.LoadBalancerMember(port_id=port.id)]))
    vpc = c("CreateVpc", vpc=vpb.Vpc(name="shop", cidr=f"10.{octet + 100}.0.0/16"))
    c("CreateNetwork", network=pb.Network(name="tier", cidr=f"10.{octet + 100}.1.0/24",
                                          vpc_id=vpc.id))
    acl = c("CreateNetworkAcl", network_acl=vpb.NetworkAcl(vpc_id=vpc.id, name="rules"))
    c("CreateAclRule", rule=vpb.AclRule(acl_id=acl.id, number=100,
                                        action=vpb.ACL_ACTION_ALLOW,
                                        direction=vpb.ACL_DIRECTION_INGRESS, protocol="all"))
    c("CreateStaticRoute", static_route=vpb.StaticRoute(
        vpc_id=vpc.id, cidr="172.16.0.0/12", next_hop=f"10.{octet + 100}.1.50"))
    c("CreatePrivateGateway", private_gateway=vpb.PrivateGateway(
        vpc_id=vpc.id, vlan_id=2000 + octet, address=f"192.168.{octet}.2/24",
        gateway=f"192.168.{octet}.1"))
    gw = c("CreateVpnGateway", vpn_gateway=vnb.VpnGateway(network_id=net.id))
    cgw = c("CreateCustomerGateway", customer_gateway=vnb.CustomerGateway(
        name="site", peer_address=f"192.0.2.{octet}", peer_cidrs=["172.16.1.0/24"],
        psk="0123456789abcdef-Key", ike_version=vnb.IKE_VERSION_2,
        ike_proposals=["aes256-sha256-modp2048"], esp_proposals=["aes256-sha256"]))
    c("CreateVpnConnection", vpn_connection=vnb.VpnConnection(
        vpn_gateway_id=gw.id, customer_gateway_id=cgw.id))
    return dict(tenant=tenant, md=md, net=net, vpc=vpc, acl=acl)


@pytest.fixture
def two(cloud: Cloud) -> tuple[dict[str, Any], dict[str, Any]]:
    return build(cloud, "acme", 1), build(cloud, "other", 2)


def parent_of(world: dict[str, Any], name: str) -> dict[str, str]:
    field = PARENT.get(name)
    if field is None:
        return {}
    return {field: world["acl"].id if field == "acl_id" else world["vpc"].id}


def test_every_tenant_list_is_covered() -> None:
    assert len(TENANT_LISTS) == 16, TENANT_LISTS


@pytest.mark.parametrize("name", TENANT_LISTS)
def test_the_admin_lists_every_tenants_objects_with_their_tenant(
        cloud: Cloud, two: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
    a, b = two
    tenants = {a["tenant"].id, b["tenant"].id}
    if name in PARENT:
        # One parent's children, whoever's the parent is: its tenant shown.
        for w in (a, b):
            got = items(call(cloud, ADMIN_MD, name, **parent_of(w, name)))
            mine = [x for x in got if not getattr(x, "builtin", False)]
            assert mine, name
            assert {x.tenant_id for x in mine} == {w["tenant"].id}, name
        return
    everything = items(call(cloud, ADMIN_MD, name))
    assert {x.tenant_id for x in everything} == tenants, name
    # As each tenant, and as the admin acting as it: that tenant's only.
    for w in (a, b):
        own = items(call(cloud, w["md"], name))
        assert own, name
        assert {x.tenant_id for x in own} == {w["tenant"].id}, name
    assert sorted(x.id for x in everything) == sorted(
        x.id for w in (a, b) for x in items(call(cloud, w["md"], name)))
    # Pages of one object each go through both tenants' objects, each once.
    paged, token = [], ""
    if "page_size" in BY_NAME[name].input_type.fields_by_name:
        while True:
            reply = call(cloud, ADMIN_MD, name, page_size=1, page_token=token)
            paged += [x.id for x in items(reply)]
            token = reply.next_page_token
            if not token:
                break
        assert paged == [x.id for x in everything]


def test_a_tenant_token_still_sees_only_its_own(
        cloud: Cloud, two: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = two
    secret = call(cloud, ADMIN_MD, "CreateToken", tenant_id=a["tenant"].id, name="t").secret
    md = (("authorization", f"Bearer {secret}"),)
    for name in TENANT_LISTS:
        if name in PARENT:
            continue
        assert {x.tenant_id for x in items(call(cloud, md, name))} == {a["tenant"].id}, name
    # Another tenant's VPC is still not found.
    from tests.lib.netmgr_cloud import rpc_error

    err = rpc_error(lambda: call(cloud, md, "ListNetworkAcls", vpc_id=b["vpc"].id))
    assert err.code().name == "NOT_FOUND"
