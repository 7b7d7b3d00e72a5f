"""Three netmgr replicas on one PostgreSQL (``cloudnet-aio --replicas 3 --db
postgresql``) under a write load from several clients; the replica holding
the most shard leases is killed with SIGKILL mid-load. Its shards are taken
over by the others, no acknowledged write is lost or made twice (retries
carry their request ID), every router ends ACTIVE, no router ever runs an
older generation than before (sampled on the agent all along), and a
network whose router is in a taken-over shard serves DHCP to a guest."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio import replicas
from aio.allinone import AllInOne
from aio.demo import Api
from aio.nsguest import NamespaceGuest
from netmgr.store.leases import SHARDS, shard_of
from tests.lib.replicas import AgentWatch, WriteLoad, free_ports, lease_holders, shards_of

pytestmark = pytest.mark.integration

REPLICAS = 3


@pytest.fixture(scope="module")
def replicated() -> Iterator[AllInOne]:
    # Under /tmp, searchable: the postgres user runs the cluster in <state>/pg.
    state_dir = tempfile.mkdtemp(prefix="cn-replicas-", dir="/tmp")
    os.chmod(state_dir, 0o711)
    prefix = f"t{uuid.uuid4().hex[:6]}"
    aio = AllInOne(insecure=True, prefix=prefix, state_dir=state_dir,
                   listen=f"127.0.0.1:{free_ports(REPLICAS)}",
                   fabric_kind="linuxbridge", health_interval=1.0, replicas=REPLICAS,
                   db="postgresql")
    try:
        aio.up()
        yield aio
    finally:
        aio.down()
        shutil.rmtree(state_dir, ignore_errors=True)
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        assert not leftovers, f"namespaces left behind: {leftovers}"


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_kill_9_of_the_busiest_replica_during_writes(replicated: AllInOne) -> None:
    aio = replicated
    url = replicas.db_url(aio)
    listens = replicas.listens(aio)
    admin = Api(listens[1], aio.admin_token)  # any replica serves any call
    tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="load"))
    secret = admin.call(admin.tenants.CreateToken, pb.CreateTokenRequest(
        tenant_id=tenant.id, name="t")).secret
    # Every replica took its share of the shards.
    holders = wait_for("three lease holders", lambda: (
        h if len(h := lease_holders(url)) == REPLICAS and sum(h.values()) == SHARDS else None))

    watch = AgentWatch(f"unix://{aio.agent_socket}")
    watch.start()
    load = WriteLoad(listens, secret, threads=6, networks=24, ports=2)
    load.start()
    wait_for("some acknowledged writes", lambda: len(load.acked.networks) >= 6)
    holders = lease_holders(url)
    victim = max(holders, key=lambda pid: holders[pid])
    victim_shards = shards_of(url, victim)
    assert victim_shards
    assert victim in aio.pids.values()
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    victim_name = next(n for n, p in aio.pids.items() if p == victim)

    # Its leases pass to the two others (the database ended its session).
    after = wait_for("the shards held again", lambda: (
        h if sum((h := lease_holders(url)).values()) == SHARDS and victim not in h else None))
    assert len(after) == REPLICAS - 1
    load.join()
    live = [i for i in range(REPLICAS) if aio.pids.get(replicas.name(i)) != victim]
    survivor = Api(listens[live[0]], secret)
    del aio.pids[victim_name]  # gone: the next test uses the live ones

    # Nothing acknowledged lost, nothing made twice.
    nets = survivor.call(survivor.networks.ListNetworks,
                         pb.ListNetworksRequest(page_size=500)).networks
    by_id = {n.id: n for n in nets}
    assert set(load.acked.networks) <= set(by_id), "an acknowledged network was lost"
    names = [n.name for n in nets]
    assert len(names) == len(set(names)), "a retried create made two networks"
    ports = survivor.call(survivor.ports.ListPorts, pb.ListPortsRequest(page_size=500)).ports
    port_ids = {p.id for p in ports}
    for net_id, acked_ports in load.acked.networks.items():
        assert set(acked_ports) <= port_ids, f"an acknowledged port of {net_id} was lost"
    assert len({(p.network_id, p.name) for p in ports}) == len(ports), "a port made twice"
    assert len(load.acked.networks) == 24
    # Every router reaches its desired generation, pushed by whoever holds it now.
    for net in nets:
        survivor.wait_router_active(net.router_id, timeout=180)
    moved = [n for n in nets if shard_of(n.router_id) in victim_shards]

    # A network made now, in a shard the killed replica held, serves a guest.
    for i in range(40):
        net = survivor.call(survivor.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name=f"after-{i}", cidr=f"10.{200 + i}.0.0/24")))
        if shard_of(net.router_id) in victim_shards:
            break
    else:
        pytest.fail("no new router fell in the taken-over shards")
    port = survivor.call(survivor.ports.CreatePort, pb.CreatePortRequest(
        port=pb.Port(network_id=net.id)))
    survivor.wait_router_active(net.router_id, timeout=120)
    guest = NamespaceGuest(f"{aio.prefix}-g-{port.id[:8]}", aio.fabric,
                           f"gp{port.id.replace('-', '')[:10]}")
    try:
        guest.attach(net.vlan_id, port.mac)
        assert guest.dhcp().ip == port.ip
    finally:
        guest.destroy()

    watch.stop()
    load.close()
    assert watch.samples > 10
    assert not watch.rollbacks, f"routers rolled back: {watch.rollbacks}"
    # Routers of the killed replica's shards were among those checked ACTIVE.
    assert moved
    print(f"victim {victim} held {len(victim_shards)} shards; {len(moved)} of {len(nets)} "
          f"routers moved; {load.acked.failures} calls retried elsewhere; "
          f"{watch.samples} agent samples")


def test_postgresql_restarted_under_load(replicated: AllInOne) -> None:
    """The database restarts mid-load: every replica loses its leases and its
    connections, reconnects, takes its share again; calls that failed
    meanwhile were UNAVAILABLE and retried with their request ID; nothing
    acknowledged is lost, nothing rolled back, every router ends ACTIVE."""
    aio = replicated
    url = replicas.db_url(aio)
    live = [i for i in range(REPLICAS) if replicas.name(i) in aio.pids]
    listens = [replicas.listens(aio)[i] for i in live]
    admin = Api(listens[0], aio.admin_token)
    tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="pgrestart"))
    secret = admin.call(admin.tenants.CreateToken, pb.CreateTokenRequest(
        tenant_id=tenant.id, name="t")).secret
    watch = AgentWatch(f"unix://{aio.agent_socket}")
    watch.start()
    load = WriteLoad(listens, secret, threads=4, networks=16, ports=2, cidr_base=120)
    load.start()
    wait_for("some acknowledged writes", lambda: len(load.acked.networks) >= 4)
    replicas.postgres(aio).restart()
    after = wait_for("the shards held again by every live replica", lambda: (
        h if sum((h := lease_holders(url)).values()) == SHARDS and len(h) == len(live)
        else None))
    assert set(after) == {aio.pids[replicas.name(i)] for i in live}
    load.join()
    api = Api(listens[0], secret)
    nets = {n.id: n for n in api.call(api.networks.ListNetworks,
                                      pb.ListNetworksRequest(page_size=500)).networks}
    ports = {p.id for p in api.call(api.ports.ListPorts,
                                    pb.ListPortsRequest(page_size=500)).ports}
    assert len(load.acked.networks) == 16
    assert set(load.acked.networks) <= set(nets)
    assert all(set(ps) <= ports for ps in load.acked.networks.values())
    assert len(nets) == 16, "a retried create made two networks"
    for n in nets.values():
        api.wait_router_active(n.router_id, timeout=180)
    watch.stop()
    load.close()
    assert not watch.rollbacks, watch.rollbacks
