"""Port forwards and load balancers on a network's (or a VPC's) source-NAT
address, as CloudStack allows: accepted by the API, carried in the router's
config, and accepted by the router's own verify and render (the nftables
table keeps the address's other traffic as it was: see
tests/integration/edge/test_edge_source_nat.py for the packets). Static NAT
and firewall rules stay refused there (a 1:1 mapping would take the
network's outbound address; a forward's sources are its own rule's)."""

from __future__ import annotations

from typing import Any

import grpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from netmgr.reconcile.configbuild.router import build_router_config
from router.services import haproxy
from router.services.nftables import service as nft
from tests.lib.netmgr_cloud import Cloud, rpc_error
from tests.lib.netmgr_edge import Edge, counts


def _snat(e: Edge, network_id: str) -> epb.PublicIp:
    return next(i for i in e.ListPublicIps(epb.ListPublicIpsRequest(
        network_id=network_id)).public_ips if i.source_nat)


def _router_accepts(cloud: Cloud, router_id: str) -> Any:
    cfg = build_router_config(cloud.store.router_snapshot(router_id))
    nft.verify(cfg)
    haproxy.verify(cfg)
    rendered, _ = nft.render(cfg, map_counters=False, tun="")
    return cfg, rendered


def test_forward_and_load_balancer_on_a_networks_source_nat_address(
        cloud: Cloud, edge_world: dict[str, Any]) -> None:
    e, w = edge_world["e"], edge_world
    snat = _snat(e, w["net"].id)
    assert snat.ip == w["net"].source_nat_ip
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=snat.id, protocol="tcp", public_port=2222, port_id=w["p1"].id,
        private_port=22, source_cidrs=["198.51.100.10/32"])))
    assert (f.public_ip, f.network_id) == (snat.ip, w["net"].id)
    lb = e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(load_balancer=epb.LoadBalancer(
        public_ip_id=snat.id, public_port=80, protocol="http", private_port=8080,
        members=[epb.LoadBalancerMember(port_id=w["p1"].id)])))
    assert (lb.public_ip, lb.network_id) == (snat.ip, w["net"].id)
    cfg, rendered = _router_accepts(cloud, w["net"].router_id)
    assert [r.public_ip for r in cfg.port_forwards] == [snat.ip]
    assert [r.public_ip for r in cfg.load_balancers] == [snat.ip]
    assert snat.ip not in {a.ip for a in cfg.public_addresses}  # the router's own address
    table = rendered[nft.RULESET]
    assert f"elements = {{ {snat.ip} }}" in table.split("set source_nat_ips", 1)[1]
    # Ports still clash on it as on any address.
    err = rpc_error(lambda: e.CreatePortForward(epb.CreatePortForwardRequest(
        port_forward=epb.PortForward(public_ip_id=snat.id, protocol="tcp", public_port=80,
                                     port_id=w["p1"].id, private_port=80))))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    # Static NAT and firewall rules: refused there, naming the field, nothing created.
    before = counts(cloud)
    err = rpc_error(lambda: e.CreateStaticNat(epb.CreateStaticNatRequest(
        static_nat=epb.StaticNat(public_ip_id=snat.id, port_id=w["p1"].id))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "static_nat.public_ip_id" in err.details()
    err = rpc_error(lambda: e.CreateFirewallRule(epb.CreateFirewallRuleRequest(
        firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                       public_ip_id=snat.id, protocol="tcp", port=22))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert counts(cloud) == before
    # Another network's source-NAT address: its port is not on that network.
    err = rpc_error(lambda: e.CreatePortForward(epb.CreatePortForwardRequest(
        port_forward=epb.PortForward(public_ip_id=snat.id, protocol="tcp", public_port=3333,
                                     port_id=w["p2"].id, private_port=22))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "port_forward.port_id" in err.details()


def test_forward_and_load_balancer_on_a_vpcs_source_nat_address(acme_vpc) -> None:
    cloud, api = acme_vpc
    vpc = api.vpc()
    web = api.tier(vpc.id, "web", "10.0.1.0/24")
    db = api.tier(vpc.id, "db", "10.0.2.0/24")
    p1 = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=web.id, hostname="w1")))
    p2 = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=db.id, hostname="d1")))
    e = Edge(cloud, api.api)
    snat = next(i for i in e.ListPublicIps(epb.ListPublicIpsRequest()).public_ips
                if i.source_nat)
    assert snat.ip == vpc.source_nat_ip
    f = e.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
        public_ip_id=snat.id, protocol="tcp", public_port=2222, port_id=p2.id,
        private_port=22)))
    assert f.network_id == db.id
    lb = e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(load_balancer=epb.LoadBalancer(
        public_ip_id=snat.id, public_port=80, protocol="tcp", private_port=8080,
        members=[epb.LoadBalancerMember(port_id=p1.id)])))
    assert lb.network_id == web.id  # the tier of its members
    # Members on two tiers, or none: the address serves no one tier.
    for members in ([p1.id, p2.id], []):
        err = rpc_error(lambda m=members: e.CreateLoadBalancer(epb.CreateLoadBalancerRequest(
            load_balancer=epb.LoadBalancer(
                public_ip_id=snat.id, public_port=81, protocol="tcp", private_port=8080,
                members=[epb.LoadBalancerMember(port_id=p) for p in m]))))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, members
        assert "load_balancer.members" in err.details()
    cfg, _ = _router_accepts(cloud, vpc.router_id)
    assert {r.public_ip for r in (*cfg.port_forwards, *cfg.load_balancers)} == {snat.ip}
