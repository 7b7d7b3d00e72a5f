"""A redundant network through netmgr, with two router agents (two 'hosts'
on one fabric): two instances, one per host, each shown with its role; a
guest keeps its lease and its way out through a failover asked for on
purpose; the split-brain arbiter (netmgr's resync) demotes an instance cut
off from VRRP; switched back to a single router, the guest keeps going."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from cloudnet.netmgr.v1 import redundancy_pb2 as rpb
from cloudnet.netmgr.v1 import redundancy_pb2_grpc as rrpc
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc
from google.protobuf import field_mask_pb2

from netmgr.reconcile import redundant_push
from netmgr.reconcile.reconciler import Reconciler
from netmgr.server import ServerConfig, create_server
from netmgr.store.base import DEFAULT_ZONE
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox
from router.agent.registry import RouterRegistry
from router.agent.server import create_server as agent_server
from router.runtime import router_netns_name
from router.services.nftables.journal import read_journal
from tests.lib.redundantlab import Flow, connects, cut_vrrp, new_topology
from tests.lib.routerlab import INET_HOST, Topology, sh, wait_for

pytestmark = pytest.mark.integration

ADMIN = "redundancy-admin-token"
HOSTS = ("host-a", "host-b")
ECHO_PORT = 9100


@dataclass
class World:
    topo: Topology
    agents: dict[str, RouterRegistry]
    store: Store
    reconciler: Reconciler
    api: Any
    redundancy: Any
    inet: str


def _bind(stub: Any, md: tuple[tuple[str, str], ...]) -> Any:
    class Bound:
        def __getattr__(self, name: str) -> Any:
            method = getattr(stub, name)
            return lambda req: method(req, metadata=md, timeout=30)

    return Bound()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    prefix = f"n{os.getpid() % 10000}{uuid.uuid4().hex[:3]}"
    state_dir = tempfile.mkdtemp(prefix="cn-vrrp-nm-", dir="/tmp")
    os.chmod(state_dir, 0o755)
    topo = new_topology(prefix, state_dir)
    servers: list[grpc.Server] = []
    agents: dict[str, RouterRegistry] = {}
    targets = {}
    reconciler = store = None
    echo: Flow | None = None
    try:
        for i, host in enumerate(HOSTS):
            reg = RouterRegistry(os.path.join(state_dir, host), netns_prefix=f"{prefix}{i}",
                                 fabric_netns=topo.fabric.netns, agent_id=host)
            reg.start()
            sock = f"unix://{state_dir}/{host}.sock"
            server, _ = agent_server(sock, reg)
            servers.append(server)
            agents[host], targets[host] = reg, sock
        inet = topo.internet()
        echo = Flow.start(inet, "tcp-server", str(ECHO_PORT))
        config = ServerConfig(listen="127.0.0.1:0", db_url=f"sqlite:///{state_dir}/netmgr.db",
                              admin_token=ADMIN, agents=targets, default_host=HOSTS[0])
        store = Store(config.db_url, zone_defaults=DEFAULT_ZONE, default_host=HOSTS[0],
                      secrets=SecretBox(b"k" * 32))
        reconciler = Reconciler(store, store.vpn, targets, resync_interval=1.0,
                                redundancy=store.redundancy)
        server, port = create_server(config, store=store, hooks=reconciler)
        server.start()
        servers.append(server)
        reconciler.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        admin = (("authorization", f"Bearer {ADMIN}"),)
        tenants = rpc.TenantServiceStub(channel)
        t = tenants.CreateTenant(pb.CreateTenantRequest(name="acme"), metadata=admin)
        md = (*admin, ("x-cloudnet-tenant", t.id))
        yield World(topo, agents, store, reconciler,
                    _bind(_Api(channel), md), _bind(rrpc.RouterRedundancyServiceStub(channel), md),
                    inet)
    finally:
        if echo is not None:
            echo.result()
        if reconciler is not None:
            reconciler.stop()
        for s in servers:
            s.stop(None)
        for reg in agents.values():
            for rt in reg.runtimes():
                # What fails here, the namespace sweep below gets.
                with contextlib.suppress(Exception):
                    reg.delete(rt.ctx.router_id, keep_leases=False)
            reg.vrrp_listener.stop()
        if store is not None:
            store.close()
        topo.cleanup()


class _Api:
    """Networks, ports and routers on one stub-like object."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stubs = (rpc.NetworkServiceStub(channel), rpc.PortServiceStub(channel),
                       rpc.RouterServiceStub(channel), vrpc.VpcServiceStub(channel),
                       erpc.PublicIpServiceStub(channel), erpc.PortForwardServiceStub(channel),
                       erpc.FirewallServiceStub(channel))

    def __getattr__(self, name: str) -> Any:
        for stub in self._stubs:
            if hasattr(stub, name):
                return getattr(stub, name)
        raise AttributeError(name)


def roles(w: World, router_id: str) -> list[tuple[str, str]]:
    r = w.api.GetRouter(pb.GetRouterRequest(id=router_id))
    return [(i.host, i.role) for i in r.instances]


def guest_on(w: World, net: pb.Network, port: pb.Port, name: str = "guest") -> str:
    ns = w.topo.ns(name)
    w.topo.fabric.plug(f"{w.topo.prefix}{name[0]}{name[-1]}"[:15], net.vlan_id, ns, "eth0",
                       port.mac)
    return ns


def dhcp_ip(w: World, ns: str, tmp: str) -> str:
    env = w.topo.dhcp(ns, tmp)
    sh("ip", "-n", ns, "addr", "replace", f"{env['ip']}/24", "dev", "eth0")
    sh("ip", "-n", ns, "route", "replace", "default", "via", env["router"].split()[0])
    return env["ip"]


def pings(ns: str) -> None:
    """Out through the router's source NAT to the internet's echo server."""
    connects(ns, INET_HOST, ECHO_PORT)


def test_a_redundant_network_through_netmgr(world: World, tmp_path: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    monkeypatch.setattr(redundant_push, "DEMOTION_HOLD", 3.0)
    net = w.api.CreateNetwork(pb.CreateNetworkRequest(
        network=pb.Network(name="web", cidr="10.20.0.0/24", redundant=True)))
    assert net.redundant
    port = w.api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="vm1")))
    wait_for(lambda: sorted(roles(w, net.router_id)) == [("host-a", "MASTER"),
                                                         ("host-b", "BACKUP")],
             60, f"roles {roles(w, net.router_id)}")
    router = w.api.GetRouter(pb.GetRouterRequest(id=net.router_id))
    assert all(i.healthy and i.last_transition.seconds > 0 for i in router.instances), router
    guest = guest_on(w, net, port)
    assert dhcp_ip(w, guest, str(tmp_path)) == port.ip
    pings(guest)

    # On purpose: the master moves to host-b, the lease and the way out stay.
    w.redundancy.Failover(rpb.FailoverRequest(network_id=net.id))
    wait_for(lambda: sorted(roles(w, net.router_id)) == [("host-a", "BACKUP"),
                                                         ("host-b", "MASTER")],
             60, f"failover: roles {roles(w, net.router_id)}")
    assert dhcp_ip(w, guest, str(tmp_path)) == port.ip
    pings(guest)

    # Split brain: host-a's instance hears no VRRP, becomes master too; the
    # arbiter demotes it (the lower priority now) and it settles once healed.
    ns_a = router_netns_name(f"{w.topo.prefix}0", net.router_id)
    cut_vrrp(ns_a, True)
    try:
        wait_for(lambda: any("split brain" in e for e in w.redundancy.GetRedundancy(
            rpb.GetRedundancyRequest(network_id=net.id)).events), 30, "the arbiter's event")
        wait_for(lambda: ("host-a", "FAULT") in roles(w, net.router_id), 15, "host-a demoted")
        pings(guest)
    finally:
        cut_vrrp(ns_a, False)
    wait_for(lambda: sorted(roles(w, net.router_id)) == [("host-a", "BACKUP"),
                                                         ("host-b", "MASTER")],
             60, f"settled: roles {roles(w, net.router_id)}")
    inst = w.api.GetRouter(pb.GetRouterRequest(id=net.router_id)).instances
    assert not any(i.demoted for i in inst)

    # Single again: host-b's instance goes, host-a's holds the addresses.
    w.api.UpdateNetwork(pb.UpdateNetworkRequest(
        network=pb.Network(id=net.id, redundant=False),
        update_mask=field_mask_pb2.FieldMask(paths=["redundant"])))
    wait_for(lambda: not w.agents["host-b"].runtimes(), 60, "host-b's instance deleted")
    wait_for(lambda: w.api.GetRouter(pb.GetRouterRequest(id=net.router_id)).state
             == pb.ROUTER_STATE_ACTIVE, 60, "the single router active")
    assert dhcp_ip(w, guest, str(tmp_path)) == port.ip
    pings(guest)


def addresses(w: World, host: str, router_id: str) -> str:
    ns = router_netns_name(f"{w.topo.prefix}{HOSTS.index(host)}", router_id)
    return sh("ip", "-n", ns, "-4", "-br", "addr")


def settled(w: World, router_id: str, master: str) -> None:
    backup = HOSTS[1 - HOSTS.index(master)]
    wait_for(lambda: sorted(roles(w, router_id)) == sorted([(master, "MASTER"),
                                                            (backup, "BACKUP")]),
             60, f"{master} master: roles {roles(w, router_id)}")


def test_a_redundant_vpc_moves_every_tier_together(world: World, tmp_path: Any) -> None:
    """A VPC created redundant: its one router (both tiers' gateways, the
    source NAT) on two hosts; a failover moves both tiers' gateways at once,
    and made single again by an update the guests of both tiers go on."""
    w = world
    vpc = w.api.CreateVpc(vpb.CreateVpcRequest(vpc=vpb.Vpc(
        name="shop", cidr="10.40.0.0/16", redundant=True)))
    assert vpc.redundant
    tiers = [w.api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name=name, cidr=cidr, vpc_id=vpc.id)))
        for name, cidr in (("web", "10.40.1.0/24"), ("db", "10.40.2.0/24"))]
    assert all(t.router_id == vpc.router_id and t.redundant for t in tiers)
    ports = [w.api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=t.id, name="vm")))
             for t in tiers]
    settled(w, vpc.router_id, "host-a")
    guests = [guest_on(w, t, p, f"vpc{i}") for i, (t, p) in enumerate(zip(tiers, ports,
                                                                             strict=True))]
    db_server = Flow.start(guests[1], "tcp-server", "9300")
    try:
        def serves(master: str) -> None:
            backup = HOSTS[1 - HOSTS.index(master)]
            # The roles settle with the router's first config; the tiers'
            # links come with a later push (seen late on a loaded host).
            wait_for(lambda: all(f"{t.gateway}/24" in addresses(w, master, vpc.router_id)
                                 for t in tiers), 60, f"the tiers' gateways on {master}")
            for t in tiers:  # every tier's gateway on the master, none on the backup
                gw = f"{t.gateway}/24"
                assert gw in addresses(w, master, vpc.router_id), (master, gw)
                assert gw not in addresses(w, backup, vpc.router_id), (backup, gw)
            for g, p in zip(guests, ports, strict=True):
                assert dhcp_ip(w, g, str(tmp_path)) == p.ip
                pings(g)  # out through the VPC's source NAT
            connects(guests[0], ports[1].ip, 9300)  # tier to tier through the router

        serves("host-a")
        w.redundancy.Failover(rpb.FailoverRequest(vpc_id=vpc.id))
        settled(w, vpc.router_id, "host-b")
        serves("host-b")

        # Single again by an update of the VPC: host-b's instance goes.
        out = w.api.UpdateVpc(vpb.UpdateVpcRequest(
            vpc=vpb.Vpc(id=vpc.id, redundant=False),
            update_mask=field_mask_pb2.FieldMask(paths=["redundant"])))
        assert not out.redundant
        wait_for(lambda: vpc.router_id not in {rt.ctx.router_id
                                               for rt in w.agents["host-b"].runtimes()},
                 60, "host-b's instance deleted")
        wait_for(lambda: w.api.GetRouter(pb.GetRouterRequest(id=vpc.router_id)).state
                 == pb.ROUTER_STATE_ACTIVE and not w.api.GetRouter(
                     pb.GetRouterRequest(id=vpc.router_id)).instances,
                 60, "the single VPC router active")
        for g, p in zip(guests, ports, strict=True):
            assert dhcp_ip(w, g, str(tmp_path)) == p.ip
            pings(g)  # its ARP cache follows (instance 1 gone before instance 0 announced)
        connects(guests[0], ports[1].ip, 9300)
    finally:
        db_server.result()


def applied_on_both(w: World, router_id: str) -> bool:
    """Both instances run the router's desired generation: a change made now
    has a base both acknowledged, so it can go as a delta."""
    want = w.api.GetRouter(pb.GetRouterRequest(id=router_id)).desired_generation
    for host in HOSTS:
        try:
            cfg = w.agents[host].runtime(router_id, create=False).config
        except Exception:  # not there yet
            return False
        if cfg is None or cfg.generation != want:
            return False
    return True


def journal_of(w: World, host: str, router_id: str) -> list[Any]:
    rt = w.agents[host].runtime(router_id, create=False)
    return read_journal(rt.ctx.paths.edge_journal)


def test_edge_rules_of_a_redundant_router_are_deltas_on_both_instances(
        world: World, tmp_path: Any) -> None:
    """A port forward and a firewall rule added to a redundant router go as
    one edge delta to each instance (both journal it: no full push), and the
    forward works on either instance, before and after a failover."""
    w = world
    net = w.api.CreateNetwork(pb.CreateNetworkRequest(
        network=pb.Network(name="edge", cidr="10.50.0.0/24", redundant=True)))
    port = w.api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="vm")))
    ip = w.api.AllocatePublicIp(epb.AllocatePublicIpRequest(network_id=net.id))
    settled(w, net.router_id, "host-a")
    guest = guest_on(w, net, port, "edgeg")
    assert dhcp_ip(w, guest, str(tmp_path)) == port.ip
    server = Flow.start(guest, "tcp-server", "8080")
    try:
        # The public IP's full push done: what follows can go as deltas.
        wait_for(lambda: f"{ip.ip}/32" in addresses(w, "host-a", net.router_id)
                 and w.api.GetRouter(pb.GetRouterRequest(id=net.router_id)).state
                 == pb.ROUTER_STATE_ACTIVE, 30, "the public IP on the master")
        wait_for(lambda: applied_on_both(w, net.router_id), 30,
                 "the desired generation on both instances")
        fwd = w.api.CreatePortForward(epb.CreatePortForwardRequest(port_forward=epb.PortForward(
            public_ip_id=ip.id, protocol="tcp", public_port=80, port_id=port.id,
            private_port=8080)))
        rule = w.api.CreateFirewallRule(epb.CreateFirewallRuleRequest(
            firewall_rule=epb.FirewallRule(direction=epb.FIREWALL_DIRECTION_INGRESS,
                                           public_ip_id=ip.id, protocol="tcp", port=80)))
        for get, req in ((w.api.GetPortForward, epb.GetPortForwardRequest(id=fwd.id)),
                         (w.api.GetFirewallRule, epb.GetFirewallRuleRequest(id=rule.id))):
            wait_for(lambda get=get, req=req: get(req).state == pb.OBJECT_STATE_ACTIVE, 30,
                     f"{req} active")
        # Each instance journaled the two rules as deltas (a full push
        # rewrites the config instead, and journals nothing).
        for h in HOSTS:
            deltas = journal_of(w, h, net.router_id)
            assert [f.id for d in deltas for f in d.port_forwards] == [fwd.id], (h, deltas)
            assert [r.id for d in deltas for r in d.ingress_rules] == [rule.id], (h, deltas)
            assert deltas[-1].generation == w.api.GetFirewallRule(
                epb.GetFirewallRuleRequest(id=rule.id)).generation
        connects(w.inet, ip.ip, 80)
        w.redundancy.Failover(rpb.FailoverRequest(network_id=net.id))
        settled(w, net.router_id, "host-b")
        connects(w.inet, ip.ip, 80)  # the delta is in the new master's table too
        w.api.DeleteNetwork(pb.DeleteNetworkRequest(id=net.id, force=True))
    finally:
        server.result()
