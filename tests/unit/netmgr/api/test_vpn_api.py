"""The VPN API on a real netmgr server (no routers): validation naming the
field with nothing created, tenant isolation, conflicts, the PSK never
returned, the router config built from the model (one the router accepts),
and the SA state the router reports."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import vpn_pb2 as rvpb

from netmgr.reconcile.agent_report import record_report
from netmgr.reconcile.configbuild.router import build_router_config
from router.services import strongswan
from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error

TABLES = ("vpn_gateways", "customer_gateways", "vpn_connections")
PSK = "0123456789abcdef-Key"


class Vpn:
    def __init__(self, c: Cloud, api: Api) -> None:
        self.stub, self.md = vrpc.VpnServiceStub(c.channel), api.metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.stub, name)
        return lambda req: method(req, metadata=self.md, timeout=30)


def counts(c: Cloud) -> dict[str, int]:
    return {t: c.sql(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def cgw(**kw: Any) -> vpb.CreateCustomerGatewayRequest:
    f: dict[str, Any] = dict(name="site-a", peer_address="192.0.2.2",
                             peer_cidrs=["172.16.1.0/24", "172.16.2.0/24"], psk=PSK,
                             ike_version=vpb.IKE_VERSION_2,
                             ike_proposals=["aes256gcm16-prfsha384-ecp384",
                                            "aes256-sha256-modp2048",
                                            "aes128gcm16-prfsha256-curve25519"],
                             esp_proposals=["aes256gcm16-ecp384", "aes256-sha256"])
    f.update(kw)
    return vpb.CreateCustomerGatewayRequest(customer_gateway=vpb.CustomerGateway(**f))


@pytest.fixture
def world(cloud: Cloud) -> dict[str, Any]:
    _, api = cloud.new_tenant("acme")
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="a",
                                                                        cidr="10.1.0.0/24")))
    v = Vpn(cloud, api)
    gw = v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=net.id)))
    _, oapi = cloud.new_tenant("other")
    return dict(v=v, api=api, net=net, gw=gw, ov=Vpn(cloud, oapi))


def test_bad_customer_gateways_name_the_field_and_create_nothing(
        cloud: Cloud, world: dict[str, Any]) -> None:
    v = world["v"]
    before = counts(cloud)
    invalid = [
        (dict(psk="short-key"), "customer_gateway.psk"),
        (dict(psk="0123456789abcdef\nleftid=%any"), "customer_gateway.psk"),
        (dict(psk='0123456789abcdef"quote'), "customer_gateway.psk"),
        (dict(psk="0123456789abcdef #comment"), "customer_gateway.psk"),
        (dict(peer_address="192.0.2.300"), "customer_gateway.peer_address"),
        (dict(peer_address="vpn.example.com"), "customer_gateway.peer_address"),
        (dict(peer_address="224.0.0.1"), "customer_gateway.peer_address"),
        (dict(peer_cidrs=[]), "customer_gateway.peer_cidrs"),
        (dict(peer_cidrs=["172.16.1.1/24"]), "customer_gateway.peer_cidrs[0]"),
        (dict(peer_cidrs=["172.16.0.0/16", "172.16.1.0/24"]), "customer_gateway.peer_cidrs"),
        (dict(ike_proposals=["3des-md5-modp1024"]), "customer_gateway.ike_proposals[0]"),
        (dict(ike_proposals=["aes256gcm16-ecp384"]), "customer_gateway.ike_proposals[0]"),
        (dict(ike_proposals=["aes256-sha256"]), "customer_gateway.ike_proposals[0]"),
        (dict(esp_proposals=["aes256-prfsha256"]), "customer_gateway.esp_proposals[0]"),
        (dict(esp_proposals=["aes256gcm16-sha256"]), "customer_gateway.esp_proposals[0]"),
        (dict(ike_lifetime_seconds=100), "customer_gateway.ike_lifetime_seconds"),
        (dict(dpd_delay_seconds=4000), "customer_gateway.dpd_delay_seconds"),
        (dict(name="bad name"), "customer_gateway.name"),
    ]
    for fields, field in invalid:
        err = rpc_error(lambda f=fields: v.CreateCustomerGateway(cgw(**f)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in bad_fields(err), (fields, bad_fields(err))
        assert PSK not in (err.details() or "")
    assert counts(cloud) == before


def test_connection_lifecycle_config_and_status(cloud: Cloud, world: dict[str, Any]) -> None:
    v, net, gw = world["v"], world["net"], world["gw"]
    assert gw.public_ip
    assert list(gw.local_cidrs) == ["10.1.0.0/24"]
    c = v.CreateCustomerGateway(cgw(ike_version=vpb.IKE_VERSION_1))
    assert c.psk == ""
    assert list(c.peer_cidrs) == ["172.16.1.0/24", "172.16.2.0/24"]
    assert c.dpd_delay_seconds == 10  # the default
    conn = v.CreateVpnConnection(vpb.CreateVpnConnectionRequest(vpn_connection=vpb.VpnConnection(
        vpn_gateway_id=gw.id, customer_gateway_id=c.id)))
    assert conn.state == pb.OBJECT_STATE_PENDING
    assert conn.network_id == net.id
    # A resync's reports read which routers have connections in one go.
    other = world["api"].CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="b", cidr="10.2.0.0/24")))
    assert cloud.store.vpn.routers_with_connections([net.router_id, other.router_id]) == {
        net.router_id}
    # The router config carries it, with the key (only there).
    cfg = build_router_config(cloud.store.router_snapshot(net.router_id))
    [rc] = cfg.vpn_connections
    assert (rc.id, rc.local_address, rc.peer_address, rc.psk, rc.ike_version) == (
        conn.id, gw.public_ip, "192.0.2.2", PSK, 1)
    assert list(rc.local_cidrs) == ["10.1.0.0/24"]
    assert len(rc.peer_cidrs) == 2
    strongswan.verify(cfg)  # what the API accepts, the router accepts
    # A second connection to the same peer from this gateway: a conflict.
    err = rpc_error(lambda: v.CreateVpnConnection(vpb.CreateVpnConnectionRequest(
        vpn_connection=vpb.VpnConnection(vpn_gateway_id=gw.id, customer_gateway_id=c.id))))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    # The customer gateway is in use.
    err = rpc_error(lambda: v.DeleteCustomerGateway(vpb.DeleteCustomerGatewayRequest(id=c.id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The router's report becomes the connection's status.
    status = apb.RouterStatus(router_id=net.router_id, vpn_connections=[
        rvpb.VpnConnectionStatus(connection_id=conn.id, ike_state="ESTABLISHED", bytes_in=840,
                                 bytes_out=840, backend="libipsec", children=[
                                     rvpb.VpnChildSaStatus(name="n0", state="INSTALLED",
                                                           bytes_in=420, remote_ts=[
                                                               "172.16.1.0/24"])])])
    record_report(cloud.store, cloud.store.vpn, net.router_id, status)
    got = v.GetVpnConnection(vpb.GetVpnConnectionRequest(id=conn.id))
    assert got.status.ike_state == "ESTABLISHED"
    assert got.status.bytes_in == 840
    assert got.status.child_sas[0].remote_ts == ["172.16.1.0/24"]
    assert got.status.update_time.seconds > 0
    # Reset: a new serial in the router config (the router reloads it).
    gen = got.generation
    reset = v.ResetVpnConnection(vpb.ResetVpnConnectionRequest(id=conn.id))
    assert reset.generation > gen
    assert build_router_config(cloud.store.router_snapshot(
        net.router_id)).vpn_connections[0].reset_serial == 1
    # Another tenant sees nothing.
    ov = world["ov"]
    for call in (lambda: ov.GetVpnConnection(vpb.GetVpnConnectionRequest(id=conn.id)),
                 lambda: ov.GetVpnGateway(vpb.GetVpnGatewayRequest(id=gw.id)),
                 lambda: ov.GetCustomerGateway(vpb.GetCustomerGatewayRequest(id=c.id))):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND
    assert not ov.ListVpnConnections(vpb.ListVpnConnectionsRequest()).vpn_connections
    # Deleting the gateway takes its connections along.
    v.DeleteVpnGateway(vpb.DeleteVpnGatewayRequest(id=gw.id))
    assert counts(cloud)["vpn_connections"] == 0
    assert not build_router_config(cloud.store.router_snapshot(net.router_id)).vpn_connections
    v.DeleteCustomerGateway(vpb.DeleteCustomerGatewayRequest(id=c.id))


def test_peer_cidrs_overlapping_the_gateway_networks_are_refused(
        cloud: Cloud, world: dict[str, Any]) -> None:
    v, gw = world["v"], world["gw"]
    c = v.CreateCustomerGateway(cgw(peer_cidrs=["10.1.0.128/25", "172.16.9.0/24"]))
    before = counts(cloud)
    err = rpc_error(lambda: v.CreateVpnConnection(vpb.CreateVpnConnectionRequest(
        vpn_connection=vpb.VpnConnection(vpn_gateway_id=gw.id, customer_gateway_id=c.id))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["vpn_connection.customer_gateway_id"]
    assert "10.1.0.128/25" in err.details()
    assert counts(cloud) == before
    err = rpc_error(lambda: v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=world["net"].id))))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


def test_cli_vpn_commands(cloud: Cloud, world: dict[str, Any], capsys: Any,
                          tmp_path: Any) -> None:
    import json

    from netmgr.cli import main as cli

    secret = cloud.admin.CreateToken(pb.CreateTokenRequest(
        tenant_id=world["net"].tenant_id, name="cli")).secret

    def run(*argv: str, rc: int = 0) -> Any:
        capsys.readouterr()
        got = cli.main(["--server", cloud.target, "--token", secret, "-o", "json", *argv])
        out, err = capsys.readouterr()
        assert got == rc, err
        return json.loads(out) if rc == 0 and out.strip() else err

    key = tmp_path / "psk"
    key.write_text(PSK + "\n")
    gw = run("vpn", "gateway", "show", world["gw"].id)
    assert gw["public_ip"] == world["gw"].public_ip
    c = run("vpn", "customer-gateway", "create", "site-b", "--peer", "198.51.100.7",
            "--peer-cidr", "172.20.0.0/16", "--peer-cidr", "172.21.0.0/16", "--psk-file",
            str(key), "--ike-version", "1", "--ike-proposal", "aes256-sha256-modp2048",
            "--dpd-delay", "5", "--force-encap")
    assert c["peer_cidrs"] == ["172.20.0.0/16", "172.21.0.0/16"]
    assert not c.get("psk")
    assert c["ike_version"] == "IKE_VERSION_1"
    assert c["force_encapsulation"] is True
    conn = run("vpn", "connection", "create", "--gateway", gw["id"], "--customer-gateway",
               c["id"], "--passive")
    assert conn["passive"] is True
    assert [x["id"] for x in run("vpn", "connection", "list")] == [conn["id"]]
    assert run("vpn", "connection", "reset", conn["id"])["id"] == conn["id"]
    run("vpn", "connection", "delete", conn["id"])
    run("vpn", "customer-gateway", "delete", c["id"])
    assert run("vpn", "customer-gateway", "list") == []
    # A bad key names the field; nothing is created.
    key.write_text("short\n")
    err = run("vpn", "customer-gateway", "create", "x", "--peer", "198.51.100.7",
              "--peer-cidr", "172.20.0.0/16", "--psk-file", str(key), rc=1)
    assert "customer_gateway.psk" in err
    assert run("vpn", "customer-gateway", "list") == []


def test_gateway_on_a_vpc_carries_the_vpc_cidr(cloud: Cloud) -> None:
    from cloudnet.netmgr.v1 import vpc_pb2 as vpcpb
    from cloudnet.netmgr.v1 import vpc_pb2_grpc as vpcrpc

    _, api = cloud.new_tenant("vpcco")
    vpcs = vpcrpc.VpcServiceStub(cloud.channel)
    vpc = vpcs.CreateVpc(vpcpb.CreateVpcRequest(vpc=vpcpb.Vpc(name="v", cidr="10.8.0.0/16")),
                         metadata=api.metadata, timeout=30)
    tier = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="web", cidr="10.8.1.0/24", vpc_id=vpc.id)))
    v = Vpn(cloud, api)
    before = counts(cloud)
    for req, field in ((vpb.VpnGateway(vpc_id=vpc.id, network_id=tier.id), "vpn_gateway.vpc_id"),
                       (vpb.VpnGateway(), "vpn_gateway.vpc_id"),
                       (vpb.VpnGateway(network_id=tier.id), "vpn_gateway.network_id")):
        err = rpc_error(lambda r=req: v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(
            vpn_gateway=r)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in bad_fields(err)
    assert counts(cloud) == before
    gw = v.CreateVpnGateway(vpb.CreateVpnGatewayRequest(vpn_gateway=vpb.VpnGateway(
        vpc_id=vpc.id)))
    assert (gw.vpc_id, gw.public_ip, list(gw.local_cidrs)) == (
        vpc.id, vpc.source_nat_ip, ["10.8.0.0/16"])
    # A peer network inside the VPC (not only inside a tier) is refused.
    bad = v.CreateCustomerGateway(cgw(name="in-vpc", peer_cidrs=["10.8.200.0/24"]))
    err = rpc_error(lambda: v.CreateVpnConnection(vpb.CreateVpnConnectionRequest(
        vpn_connection=vpb.VpnConnection(vpn_gateway_id=gw.id, customer_gateway_id=bad.id))))
    assert bad_fields(err) == ["vpn_connection.customer_gateway_id"]
    c = v.CreateCustomerGateway(cgw())
    conn = v.CreateVpnConnection(vpb.CreateVpnConnectionRequest(vpn_connection=vpb.VpnConnection(
        vpn_gateway_id=gw.id, customer_gateway_id=c.id)))
    assert conn.vpc_id == vpc.id
    assert not conn.network_id
    assert cloud.store.vpn.routers_with_connections([vpc.router_id]) == {vpc.router_id}
    [rc] = build_router_config(cloud.store.router_snapshot(vpc.router_id)).vpn_connections
    assert (rc.local_address, list(rc.local_cidrs)) == (vpc.source_nat_ip, ["10.8.0.0/16"])
    assert v.GetVpnConnection(vpb.GetVpnConnectionRequest(id=conn.id)).state == \
        pb.OBJECT_STATE_PENDING


def test_a_tenant_with_only_customer_gateways_can_be_deleted(cloud: Cloud) -> None:
    tenant, api = cloud.new_tenant("leaving")
    Vpn(cloud, api).CreateCustomerGateway(cgw())
    cloud.admin.DeleteTenant(pb.DeleteTenantRequest(id=tenant.id))
    assert counts(cloud)["customer_gateways"] == 0
