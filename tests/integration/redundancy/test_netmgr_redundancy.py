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
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from cloudnet.netmgr.v1 import redundancy_pb2 as rpb
from cloudnet.netmgr.v1 import redundancy_pb2_grpc as rrpc

from netmgr.reconcile import redundant_push
from netmgr.reconcile.reconciler import Reconciler
from netmgr.server import ServerConfig, create_server
from netmgr.store.base import DEFAULT_ZONE
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox
from router.agent.registry import RouterRegistry
from router.agent.server import create_server as agent_server
from router.runtime import router_netns_name
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
                       rpc.RouterServiceStub(channel))

    def __getattr__(self, name: str) -> Any:
        for stub in self._stubs:
            if hasattr(stub, name):
                return getattr(stub, name)
        raise AttributeError(name)


def roles(w: World, router_id: str) -> list[tuple[str, str]]:
    r = w.api.GetRouter(pb.GetRouterRequest(id=router_id))
    return [(i.host, i.role) for i in r.instances]


def guest_on(w: World, net: pb.Network, port: pb.Port) -> str:
    ns = w.topo.ns("guest")
    w.topo.fabric.plug(f"{w.topo.prefix}g"[:15], net.vlan_id, ns, "eth0", port.mac)
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
        update_mask={"paths": ["redundant"]}))
    wait_for(lambda: not w.agents["host-b"].runtimes(), 60, "host-b's instance deleted")
    wait_for(lambda: w.api.GetRouter(pb.GetRouterRequest(id=net.router_id)).state
             == pb.ROUTER_STATE_ACTIVE, 60, "the single router active")
    assert dhcp_ip(w, guest, str(tmp_path)) == port.ip
    pings(guest)
