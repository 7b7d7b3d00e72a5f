"""A redundant router's two instances on two agents: one master holds every
address; killing keepalived on it, taking its uplink down or deleting its
namespace hands them to the other, and a guest keeps its lease and its
long-lived TCP streams through source NAT and a port forward (conntrackd),
while new connections work at once."""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from router.agent.registry import RouterRegistry
from router.lib import proc as rproc
from router.services import conntrackd, keepalived
from tests.lib.peerlab import PEER_HOSTS, make_peer
from tests.lib.redundantlab import (
    FORWARD_IP,
    FORWARD_PORT,
    SNAT_TCP_PORT,
    Arbiter,
    Flow,
    Pair,
    connects,
    cut_vrrp,
    new_topology,
)
from tests.lib.routerlab import INET_HOST, neighbour, sh, wait_for

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    prefix = f"v{os.getpid() % 10000}{uuid.uuid4().hex[:3]}"
    state_dir = tempfile.mkdtemp(prefix="cn-vrrp-test-", dir="/tmp")
    os.chmod(state_dir, 0o755)  # dnsmasq's user reads its host files below
    topo = new_topology(prefix, state_dir)
    p = None
    try:
        p = Pair.build(topo, uuid.uuid4().hex)
        p.wait_master(0)
        yield p
    finally:
        if p is not None:
            p.close()
        topo.cleanup()


@pytest.fixture(autouse=True)
def no_flow_left(pair: Pair) -> Iterator[None]:
    """A test that fails with its flows running leaves none to the next (whose
    servers would find their ports taken)."""
    yield
    pair.kill_flows()


def addresses(ns: str) -> str:
    return sh("ip", "-n", ns, "-4", "-br", "addr")


def test_the_master_holds_every_address_and_the_backup_none(pair: Pair) -> None:
    master, backup = addresses(pair.netns(0)), addresses(pair.netns(1))
    for vip in ("10.10.0.1/24", "203.0.113.10/24", "203.0.113.20/32"):
        assert vip in master
        assert vip not in backup
    assert "169.254.0.2/30" in backup  # the sync link's address is its own
    assert "default via 203.0.113.1 dev pub0" in sh("ip", "-n", pair.netns(0), "route")
    assert "default" not in sh("ip", "-n", pair.netns(1), "route")
    wait_for(lambda: pair.states() == ("MASTER", "BACKUP"), 15, f"states {pair.states()}")
    status = pair.agents[0].status(pair.router_id)
    assert (status.redundancy.state, status.redundancy.priority) == ("MASTER", 200)
    assert status.redundancy.last_transition > 0
    assert pair.agents[1].status(pair.router_id).redundancy.state == "BACKUP"
    assert all(s.healthy for s in status.services), status.services


def mac_holding(ns: str, address: str) -> str:
    """The MAC of the link in ``ns`` that holds ``address``."""
    for line in addresses(ns).splitlines():
        if any(a.split("/")[0] == address for a in line.split()[2:]):
            dev = line.split()[0].split("@")[0]
            return sh("ip", "-n", ns, "-br", "link", "show", "dev", dev).split()[2]
    raise AssertionError(f"no link in {ns} holds {address}: {addresses(ns)}")


def test_a_neighbour_entry_left_on_another_mac_is_put_right_by_the_master(
        pair: Pair) -> None:
    """A guest's or the upstream's neighbour entry for a moving address left
    on a MAC that is not the master's (a gratuitous ARP lost, or an ARP from
    the old master just after a move): without traffic to show it wrong, the
    master's gratuitous ARPs, sent again while it stays master, put it right.
    An entry left so sends new connections through the other instance, which
    has no state for their replies: they time out, while established ones
    (both instances have their state) go on."""
    m = pair.master()
    ns = pair.netns(m)
    # Past the announcements of the master's move (at once and 1 s later).
    since = pair.agents[m].status(pair.router_id).redundancy.last_transition
    time.sleep(max(0.0, since + 5 - time.time()))
    pair.topo.configure_guest(pair.guest, "10.10.0.11")
    cases = [(pair.guest, "10.10.0.1"), (f"{pair.topo.prefix}-up", "203.0.113.10")]
    try:
        for where, ip in cases:
            sh("ip", "-n", where, "neigh", "replace", ip, "lladdr", "02:00:00:de:ad:01",
               "dev", "eth0", "nud", "stale")
            assert neighbour(where, ip) == "02:00:00:de:ad:01"
        for where, ip in cases:
            want = mac_holding(ns, ip)
            wait_for(lambda: neighbour(where, ip) == want, 20,  # noqa: B023
                     f"{where}'s entry for {ip} on the master's {want}")
    finally:
        for where, ip in cases:
            sh("ip", "-n", where, "neigh", "del", ip, "dev", "eth0", check=False)


def test_a_short_fault_keeps_the_connections_of_a_master_left_alone(pair: Pair) -> None:
    """The master held in FAULT for a few seconds (its demoted file, as a
    tracked link's flap or a failed check would), with no other instance to
    take over (the backup held in FAULT too): back to MASTER, it still
    carries its established streams, the data-heavy one too, and none is
    reset. The FAULT outlasts conntrackd's PurgeTimeout: a flush asked for at
    the FAULT (``conntrackd -t``) empties the kernel's table then, and only a
    commit (the MASTER transition) before it would cancel it."""
    pair.wait_master(0)
    ctx = [pair.agents[i].runtime(pair.router_id, create=False).ctx for i in (0, 1)]
    pair.start_flows()
    streams = {name: pair.flows[i] for name, i in (("snat", 3), ("forward", 4), ("bulk", 6))}
    wait_for(lambda: all(f.echoed() > 0 for f in streams.values()), 20, "the streams going")
    try:
        keepalived.set_demoted(ctx[1], True)
        wait_for(lambda: pair.state(1) == "FAULT", 15, f"instance 1 in FAULT ({pair.states()})")
        keepalived.set_demoted(ctx[0], True)
        wait_for(lambda: pair.state(0) == "FAULT", 15, f"instance 0 in FAULT ({pair.states()})")
        faulted = time.monotonic()
        while time.monotonic() < faulted + conntrackd.PURGE_TIMEOUT + 3:
            time.sleep(0.5)
        keepalived.set_demoted(ctx[0], False)
        wait_for(lambda: pair.state(0) == "MASTER", 30, f"instance 0 back ({pair.states()})")
        seen = {name: f.echoed() for name, f in streams.items()}
        wait_for(lambda: all(f.echoed() > seen[name] for name, f in streams.items()), 20,
                 f"the streams flowing after the FAULT (echoed {seen})")
    finally:
        keepalived.set_demoted(ctx[0], False)
        keepalived.set_demoted(ctx[1], False)
    wait_for(lambda: pair.states() == ("MASTER", "BACKUP"), 30, f"states {pair.states()}")
    results = pair.stop_flows()
    for name in ("snat_client", "forward_client", "bulk_client"):
        assert results[name]["error"] == "", (name, results[name])
        assert results[name]["sent"] == results[name]["echoed"], (name, results[name])


TRIGGERS = ("keepalived killed", "uplink down", "namespace deleted")


def test_streams_leases_and_new_connections_survive_every_failover(
        pair: Pair, tmp_path: object) -> None:
    lease = pair.topo.dhcp(pair.guest, str(tmp_path))
    assert lease["ip"] == "10.10.0.11"
    pair.start_flows()
    moves = []
    for trigger in TRIGGERS:
        pair.wait_master(0)
        if trigger == "keepalived killed":
            pair.kill_keepalived(0)
        elif trigger == "uplink down":
            pair.uplink(0, False)
        else:
            pair.delete_namespace(0)
        pair.wait_master(1)
        moves.append(trigger)
        # The new master serves at once: DHCP (the same lease), new
        # connections both ways, and the streams go on (checked at the end).
        assert pair.topo.dhcp(pair.guest, str(tmp_path))["ip"] == "10.10.0.11", trigger
        connects(pair.guest, INET_HOST, SNAT_TCP_PORT)
        connects(pair.inet, FORWARD_IP, FORWARD_PORT)
        assert all(f.alive() for f in pair.flows), trigger
        # The failed instance comes back (the agent's health pass, or the
        # link) and takes the master role back after its preempt delay.
        if trigger == "uplink down":
            pair.uplink(0, True)
        else:
            assert pair.repair(0), trigger
        pair.wait_master(0)
        connects(pair.guest, INET_HOST, SNAT_TCP_PORT)
    results: dict[str, dict[str, Any]] = pair.stop_flows()  # flowprobe's JSON: counts are ints
    for name in ("snat_client", "forward_client", "bulk_client"):
        flow = results[name]
        assert flow["error"] == "", (name, flow, moves)
        assert flow["sent"] == flow["echoed"], (name, flow)
        assert int(flow["sent"]) > 100, (name, flow)
    assert results["snat_server"]["connections"] >= 1 + 2 * len(TRIGGERS)
    # Datagrams kept arriving through all six moves (how long each pause
    # lasted is bench/router_failover.py's to measure, not a test's).
    assert int(results["udp_sink"]["received"]) > 0.5 * int(results["udp_source"]["sent"])


def test_a_new_instance_takes_the_master_role_back_only_once_resynced(pair: Pair) -> None:
    """The preferred instance made again (its namespace deleted, then
    repaired: a new conntrackd with no connections) does not preempt while
    the master's conntrackd cannot answer its resync (stopped), and does once
    it can."""
    pair.wait_master(0)
    pair.delete_namespace(0)
    pair.wait_master(1)
    master_ct = conntrackd.daemon_pid(
        pair.agents[1].runtime(pair.router_id, create=False).ctx)
    assert master_ct is not None
    rproc.os_kill(master_ct, signal.SIGSTOP)
    try:
        assert pair.repair(0)
        wait_for(lambda: pair.keepalived_state(0) == "BACKUP", 30,
                 f"instance 0 back as backup (states {pair.states()})")
        # Its priority (200) lowered below the master's (100) while the
        # resync is pending: no preemption.
        assert pair.keepalived_priority(0) == 200 - conntrackd.RESYNC_WEIGHT
        assert pair.keepalived_state(1) == "MASTER"
    finally:
        rproc.os_kill(master_ct, signal.SIGCONT)
    pair.wait_master(0)
    assert pair.keepalived_priority(0) == 200
    server = Flow.start(pair.inet, "tcp-server", str(SNAT_TCP_PORT))
    try:
        connects(pair.guest, INET_HOST, SNAT_TCP_PORT)
    finally:
        server.result()


def test_split_brain_is_ended_by_the_arbiter_and_the_pair_settles(pair: Pair) -> None:
    """Only the VRRP path cut: the backup hears no master and takes over too;
    the arbiter (netmgr's, run here against both agents) demotes the lower
    priority one, which drops its addresses; once the path heals, it is
    released and stays BACKUP."""
    pair.wait_master(0)
    with Arbiter(pair, period=1.0, hold=3.0) as arbiter:
        cut_vrrp(pair.netns(1), True)
        try:
            wait_for(lambda: pair.state(1) == "MASTER", 15, "instance 1 master (cut off)")
            became_master = pair.agents[1].status(pair.router_id).redundancy.last_transition
            wait_for(lambda: pair.state(1) == "FAULT", 15, "instance 1 demoted")
            demoted = pair.agents[1].status(pair.router_id).redundancy
            assert demoted.demoted
            assert pair.state(0) == "MASTER"
            assert "10.10.0.1/24" not in addresses(pair.netns(1))
            assert "10.10.0.1/24" in addresses(pair.netns(0))
            assert any("split brain" in e and "instance 1 (priority 100) demoted" in e
                       for e in arbiter.events), arbiter.events
            print(f"two masters for {demoted.last_transition - became_master:.3f} s")
        finally:
            cut_vrrp(pair.netns(1), False)
        # Healed: released after the hold, it hears the master and stays BACKUP.
        wait_for(lambda: pair.state(1) == "BACKUP"
                 and not pair.agents[1].status(pair.router_id).redundancy.demoted,
                 30, "instance 1 released as BACKUP")
        for _ in range(3):
            arbiter.round()
        assert pair.states() == ("MASTER", "BACKUP")
        assert any("released" in e for e in arbiter.events), arbiter.events


def test_a_killed_agent_process_leaves_the_master_role_and_its_orphan_out(
        pair: Pair, tmp_path: object) -> None:
    """SIGKILL to the master's agent, a process of its own (as a host runs
    it): its namespace and keepalived go on, orphaned. keepalived's check of
    the agent fails: the backup takes the master role, the streams through
    source NAT and the port forward and the lease go on, new connections
    work. Once no process has listened on the agent's socket for five checks,
    keepalived holds the orphan in FAULT (it must not serve on alone once
    netmgr places the instance elsewhere). A new agent adopts the instance,
    which takes the master role back."""
    pair.wait_master(0)
    pair.start_flows()
    agent = pair.agent_process(0)
    try:
        pair.kill_agent(agent)
        wait_for(lambda: pair.state(1) == "MASTER" and not pair.holds(0), 30,
                 f"instance 1 master, the orphan without addresses ({pair.states()})")
        assert pair.topo.dhcp(pair.guest, str(tmp_path))["ip"] == "10.10.0.11"
        connects(pair.guest, INET_HOST, SNAT_TCP_PORT)
        connects(pair.inet, FORWARD_IP, FORWARD_PORT)
        wait_for(lambda: pair.keepalived_state(0) == "FAULT", 30, "the orphan in FAULT")
        assert pair.keepalived_state(1) == "MASTER"
        assert all(f.alive() for f in pair.flows)
    finally:
        pair.agent_back(0)
    pair.wait_master(0)
    connects(pair.guest, INET_HOST, SNAT_TCP_PORT)
    results = pair.stop_flows()
    for name in ("snat_client", "forward_client", "bulk_client"):
        assert results[name]["error"] == "", (name, results[name])
        assert results[name]["sent"] == results[name]["echoed"], (name, results[name])


def test_a_vpn_tunnel_comes_back_after_a_failover_by_itself(pair: Pair) -> None:
    """strongSwan runs on the master only (started by keepalived's notify
    through the agent): after a failover the new master's charon initiates
    the tunnel again from the moved address, with nothing done by hand."""
    pair.topo.configure_guest(pair.guest, "10.10.0.11")
    peer = make_peer(pair.topo, f"{pair.topo.prefix}-up", 2)
    peer.start()
    server = Flow.start(peer.hosts[0], "tcp-server", "9200")
    try:
        pair.wait_master(0)
        pair.vpn = True
        pair.generation += 1
        pair.apply()
        wait_for(lambda: tunnel_carries(pair, PEER_HOSTS[0]), 60, "the tunnel up")
        backup = pair.agents[1].status(pair.router_id)
        assert {s.name: s.detail for s in backup.services}["strongswan"].startswith("standby")
        pair.uplink(0, False)
        t0 = time.monotonic()
        pair.wait_master(1)
        wait_for(lambda: tunnel_carries(pair, PEER_HOSTS[0]), 90, "the tunnel back")
        print(f"VPN tunnel back {time.monotonic() - t0:.2f} s after the uplink went down")
        pair.uplink(0, True)
        pair.wait_master(0)
        wait_for(lambda: tunnel_carries(pair, PEER_HOSTS[0]), 90, "the tunnel back home")
    finally:
        server.result()
        peer.stop()
        pair.vpn = False


def tunnel_carries(pair: Pair, host: str) -> bool:
    try:
        connects(pair.guest, host, 9200)
        return True
    except AssertionError:
        return False


def test_an_agent_restart_keeps_the_role_and_what_runs_on_the_master(pair: Pair) -> None:
    """A new agent process adopts the instance untouched: it learns the role
    from the addresses (no notification comes until the next move), so a
    push does not stop the master's HAProxy for want of one."""
    pair.wait_master(0)
    pair.lb = True
    pair.generation += 1
    pair.apply()
    wait_for(lambda: "master pid" in haproxy_detail(pair, 0), 30, "HAProxy on the master")
    assert haproxy_detail(pair, 1).startswith("standby")
    old = pair.agents[0]
    old.vrrp_listener.stop()
    new = RouterRegistry(old.state_dir, netns_prefix=old.netns_prefix, fabric=old.fabric,
                         agent_id=old.agent_id)
    new.start()
    pair.agents[0] = new
    assert new.status(pair.router_id).redundancy.state == "MASTER"
    pair.generation += 1
    pair.apply()
    assert "master pid" in haproxy_detail(pair, 0)
    assert pair.states() == ("MASTER", "BACKUP")
    pair.lb = False


def haproxy_detail(pair: Pair, i: int) -> str:
    status = pair.agents[i].status(pair.router_id)
    return {s.name: s.detail for s in status.services}.get("haproxy", "")
