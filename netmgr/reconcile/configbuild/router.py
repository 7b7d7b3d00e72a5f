"""Build a router's complete desired state from the model.

A pure function: the same snapshot always gives the same RouterConfig, so
the reconciler can rebuild and re-push it at any time (level-triggered), and
the tests can check it without a database or a network.
"""

from __future__ import annotations

import ipaddress

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from netmgr.model.core import Network, RouterSnapshot
from netmgr.model.edge import EdgeSnapshot
from netmgr.reconcile.configbuild import vpc as configbuild_vpc
from netmgr.reconcile.configbuild.edge import PUBLIC_INTERFACE, add_edge
from netmgr.reconcile.configbuild.metadata import add_metadata
from netmgr.reconcile.configbuild.routing import add_routing
from netmgr.reconcile.configbuild.vpc import add_vpc
from netmgr.reconcile.configbuild.vpn import add_vpn

DEFAULT_ROUTE = "0.0.0.0/0"


def guest_interface_name(network_id: str) -> str:
    """Stable, readable name of a network's interface inside the router (≤ 15 bytes)."""
    return configbuild_vpc.guest_interface_name(network_id)


def _prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


def _guest_network(network: Network, snapshot: RouterSnapshot) -> pb.GuestNetwork:
    ports = sorted(
        (p for p in snapshot.ports if p.network_id == network.id),
        key=lambda p: ipaddress.ip_address(p.ip),
    )
    return pb.GuestNetwork(
        network_id=network.id,
        interface=guest_interface_name(network.id),
        cidr=network.cidr,
        gateway=network.gateway,
        domain=network.domain,
        dns_servers=list(network.dns_servers),
        domain_search=list(network.domain_search),
        mtu=network.mtu,
        lease_seconds=network.lease_seconds,
        hosts=[pb.DhcpHost(port_id=p.id, mac=p.mac, ip=p.ip, hostname=p.hostname,
                           ipv6=p.ipv6 if network.ipv6_cidr else "",
                           options=[mpb.DhcpHostOption(number=o.number, type=o.type,
                                                       values=list(o.values))
                                    for o in p.dhcp_options])
               for p in ports],
        ipv6_cidr=network.ipv6_cidr,
        ipv6_gateway=network.ipv6_gateway,
        ipv6_mode=network.ipv6_mode.value,
        routed=network.routed,
    )


def build_router_config(snapshot: RouterSnapshot) -> pb.RouterConfig:
    router, zone = snapshot.router, snapshot.zone
    networks = sorted(snapshot.networks, key=lambda n: n.id)
    # The router's public address is the source-NAT address of its network
    # or VPC; every tier of a VPC shares it.
    public_ip = router.public_ip or (networks[0].source_nat_ip if networks else "")
    edge = snapshot.edge or EdgeSnapshot()
    interfaces = []
    if public_ip:
        interfaces.append(
            pb.Interface(
                name=PUBLIC_INTERFACE,
                role=pb.INTERFACE_ROLE_PUBLIC,
                mac=router.public_mac,
                addresses=[f"{public_ip}/{_prefixlen(zone.public_cidr)}"]
                + [f"{ip.ip}/32" for ip in edge.public_ips],
                segment_id=0,
            )
        )
    for net in networks:
        interfaces.append(
            pb.Interface(
                name=guest_interface_name(net.id),
                role=pb.INTERFACE_ROLE_GUEST,
                # A VPC tier has its own router MAC (one per interface).
                mac=net.router_mac or router.guest_mac,
                addresses=[f"{net.gateway}/{_prefixlen(net.cidr)}"],
                mtu=net.mtu,
                segment_id=net.vlan_id,
                network_id=net.id,
            )
        )
    routes = []
    if public_ip:
        routes.append(
            pb.Route(
                destination=DEFAULT_ROUTE, gateway=zone.public_gateway, interface=PUBLIC_INTERFACE
            )
        )
    config = pb.RouterConfig(
        router_id=router.id,
        generation=router.desired_generation,
        interfaces=interfaces,
        routes=routes,
        guest_networks=[_guest_network(n, snapshot) for n in networks],
        dns=pb.Dns(upstream_servers=list(zone.upstream_dns)),
        source_nats=[
            pb.SourceNat(
                network_id=n.id,
                source_cidr=n.cidr,
                public_ip=n.source_nat_ip,
                public_interface=PUBLIC_INTERFACE,
            )
            for n in networks
            # A routed network's guests leave by their own addresses.
            if n.source_nat_ip and not n.routed
        ],
    )
    add_routing(config, snapshot, public_ip)
    if public_ip:
        add_edge(config, edge, {n.id: n.cidr for n in networks})
        add_vpn(config, snapshot.vpn)
    if snapshot.vpc is not None:
        add_vpc(config, snapshot)
    add_metadata(config, snapshot)
    return config

