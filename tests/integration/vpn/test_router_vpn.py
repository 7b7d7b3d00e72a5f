"""Site-to-site VPN of a namespace router (charon + kernel-libipsec, through
vici) against a stock strongSwan peer configured by a plain swanctl.conf:
IKEv2 and IKEv1, two remote subnets, ESP in UDP on the wire and nothing in
clear, the tunnel back after the peer restarts, and unrelated changes (a
port forward, a DHCP host, a full nftables reload) that leave the very same
SAs up with no lost packet."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import vpn_pb2

from router.runtime import router_netns_name
from router.services import strongswan
from tests.lib.peerlab import (
    PEER_HOSTS,
    PEER_IP,
    PEER_NETS,
    Peer,
    capture_public,
    make_peer,
    router_connection,
)
from tests.lib.routerlab import (
    PUBLIC_IP,
    InProcessAgent,
    Topology,
    make_config,
    sh,
    wait_for,
)

pytestmark = pytest.mark.integration

ROUTER = "vpn-r1"
GUEST_IP = "10.10.0.11"
EIP = "203.0.113.77"


def vpn_config(generation: int, conn: vpn_pb2.VpnConnection,
               ports: tuple[str, ...] = ("p1",)) -> pb.RouterConfig:
    cfg = make_config(ROUTER, generation, list(ports))
    cfg.vpn_connections.append(conn)
    return cfg


def conn_status(a: InProcessAgent) -> vpn_pb2.VpnConnectionStatus:
    status = a.agent.status(ROUTER)
    assert len(status.vpn_connections) == 1, status
    return status.vpn_connections[0]


def wait_established(a: InProcessAgent, children: int, timeout: float = 60,
                     other_than: int = 0) -> vpn_pb2.VpnConnectionStatus:
    def up() -> bool:
        st = conn_status(a)
        return (st.ike_state == "ESTABLISHED" and st.ike_unique_id != other_than
                and sum(ch.state == "INSTALLED" for ch in st.children) == children)

    try:
        wait_for(up, timeout, "the tunnel to be established")
    except AssertionError:
        raise AssertionError(f"tunnel not up: {conn_status(a)}") from None
    return conn_status(a)


def ping(ns: str, dst: str, count: int = 3) -> None:
    sh("ip", "netns", "exec", ns, "busybox", "ping", "-c", str(count), "-W", "2", dst,
       timeout=30)


def setup(topo: Topology, a: InProcessAgent, ike_version: int) -> tuple[str, Peer]:
    topo.internet()
    guest = topo.guest("p1")
    topo.configure_guest(guest, GUEST_IP)
    peer = make_peer(topo, f"{topo.prefix}-up", ike_version)
    peer.start()
    status = a.agent.apply(vpn_config(1, router_connection(ike_version)))
    assert status.applied_generation == 1, status.last_error
    return guest, peer


@pytest.mark.parametrize("ike_version", [2, 1])
def test_guest_reaches_both_peer_subnets_encrypted(
        topo: Topology, agent: InProcessAgent, ike_version: int) -> None:
    from scapy.layers.inet import ICMP, IP, UDP

    guest, peer = setup(topo, agent, ike_version)
    # IKEv2: one child SA for both subnets; IKEv1: one per subnet (#3138).
    st = wait_established(agent, children=1 if ike_version == 2 else 2)
    assert {t for ch in st.children for t in ch.remote_ts} == set(PEER_NETS)
    assert st.backend == "libipsec"
    assert all(ch.encapsulated for ch in st.children)

    packets = capture_public(topo, 1.0, [
        ["ip", "netns", "exec", guest, "busybox", "ping", "-c", "3", "-W", "2", host]
        for host in PEER_HOSTS])
    # The peer's hosts answered through the tunnel (ping exits 0 above) and
    # the public side saw ESP in UDP 4500 between the gateways only.
    esp = [p for p in packets if IP in p and UDP in p and 4500 in (p[UDP].sport, p[UDP].dport)
           and len(p[UDP].payload) > 8]
    assert {(p[IP].src, p[IP].dst) for p in esp} == {(PUBLIC_IP, PEER_IP), (PEER_IP, PUBLIC_IP)}
    assert len(esp) >= 12, f"{len(esp)} ESP-in-UDP packets for 6 echo requests and replies"
    inner = {GUEST_IP, *PEER_HOSTS}
    clear = [p for p in packets if IP in p and (p[IP].src in inner or p[IP].dst in inner)]
    assert not clear, f"cleartext on the public side: {clear[0].summary()}"
    assert not any(ICMP in p for p in packets), "ICMP seen in clear on the public side"
    st = conn_status(agent)
    assert st.bytes_in > 0
    assert st.bytes_out > 0
    assert st.last_error == ""
    assert "ESTABLISHED" in peer.sas()


def test_unrelated_changes_keep_the_same_sas_and_every_packet(
        topo: Topology, agent: InProcessAgent) -> None:
    guest, _peer = setup(topo, agent, 2)
    before = wait_established(agent, children=1)
    ping(guest, PEER_HOSTS[0])
    ns = router_netns_name(agent.agent.netns_prefix, ROUTER)
    handle = json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "tables"))
    stream = subprocess.Popen(
        ["ip", "netns", "exec", guest, "busybox", "ping", "-c", "60", "-i", "0.1", "-W", "2",
         PEER_HOSTS[1]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    # Generation 2: a DHCP host and a port forward (element update of the table).
    cfg = vpn_config(2, router_connection(2), ports=("p1", "p2"))
    cfg.interfaces[0].addresses.append(f"{EIP}/32")
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip=EIP, interface="pub0"))
    cfg.port_forwards.append(pb.PortForwardRule(
        id="pf1", public_ip=EIP, protocol="tcp", public_port_start=8080,
        public_port_end=8080, private_ip=GUEST_IP, private_port_start=80, private_port_end=80))
    assert agent.agent.apply(cfg).applied_generation == 2
    # Generation 3: an ingress rule with a new source prefix length: the
    # whole table is replaced by nft -f.
    cfg.generation = 3
    cfg.ingress_rules.append(pb.IngressRule(id="fw1", public_ip=EIP, protocol="tcp",
                                            port_start=22, port_end=22,
                                            cidrs=["198.51.100.0/27"]))
    assert agent.agent.apply(cfg).applied_generation == 3
    out, _ = stream.communicate(timeout=60)
    assert stream.returncode == 0, out
    assert "60 packets transmitted, 60 packets received" in out, out
    assert json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "tables")) != handle, \
        "the table was not replaced: the test did not exercise a full reload"
    after = conn_status(agent)
    assert after.ike_state == "ESTABLISHED"
    assert after.ike_unique_id == before.ike_unique_id
    assert [ch.unique_id for ch in after.children] == [ch.unique_id for ch in before.children]
    assert agent.agent.runtime(ROUTER).service_applies["strongswan"] == 1


def test_tunnel_comes_back_after_the_peer_restarts(
        topo: Topology, agent: InProcessAgent) -> None:
    guest, peer = setup(topo, agent, 2)
    before = wait_established(agent, children=1)
    ping(guest, PEER_HOSTS[0])
    # A crash (no DELETE sent): the router finds out by DPD (2 s) and its
    # retransmissions (about 22 s), then re-establishes (keyingtries 0).
    pid = peer.pid()
    assert pid
    os.kill(pid, 9)
    peer.stop()
    time.sleep(1)
    peer.start()
    after = wait_established(agent, children=1, timeout=90, other_than=before.ike_unique_id)
    assert after.ike_unique_id != before.ike_unique_id
    ping(guest, PEER_HOSTS[1])


def test_reapply_is_a_no_op_and_removal_unloads(
        topo: Topology, agent: InProcessAgent) -> None:
    guest, peer = setup(topo, agent, 2)
    before = wait_established(agent, children=1)
    runtime = agent.agent.runtime(ROUTER)
    assert agent.agent.apply(vpn_config(1, router_connection(2))).applied_generation == 1
    assert runtime.service_applies["strongswan"] == 1
    assert conn_status(agent).ike_unique_id == before.ike_unique_id
    # A reset (what the API's ResetVpnConnection changes): new SAs, established again.
    reset = vpn_config(1, router_connection(2, reset_serial=1))
    assert agent.agent.apply(reset).applied_generation == 1
    again = wait_established(agent, children=1, other_than=before.ike_unique_id)
    assert again.ike_unique_id != before.ike_unique_id
    ping(guest, PEER_HOSTS[0])
    # Without the connection: charon is stopped and traffic to the peer's
    # networks is dropped rather than sent in clear.
    cfg = make_config(ROUTER, 2, ["p1"])
    assert agent.agent.apply(cfg).applied_generation == 2
    assert agent.agent.status(ROUTER).vpn_connections == []
    wait_for(lambda: "ESTABLISHED" not in peer.sas(), 30, "the peer to see the SA deleted")


def test_dead_charon_leaks_nothing_and_is_repaired(
        topo: Topology, agent: InProcessAgent) -> None:
    from scapy.layers.inet import ICMP, IP

    guest, _peer = setup(topo, agent, 2)
    wait_established(agent, children=1)
    ctx = agent.agent.runtime(ROUTER).ctx
    pid = strongswan.charon_pid(ctx)
    assert pid
    os.kill(pid, 9)  # routes to ipsec0 and the TUN device go with it
    wait_for(lambda: strongswan.charon_pid(ctx) is None, 10, "charon gone")
    # The guest's traffic to the peer's networks now routes to the public
    # interface: dropped there, never sent in clear.
    packets = capture_public(topo, 1.0, [["ip", "netns", "exec", guest, "busybox", "ping",
                                          "-c", "2", "-W", "1", PEER_HOSTS[0]]], check=False)
    leaked = [p for p in packets if IP in p and ICMP in p and p[IP].dst in PEER_HOSTS]
    assert not leaked, leaked[0].summary()
    assert not any(IP in p and p[IP].src == PUBLIC_IP and p[IP].dst in PEER_HOSTS
                   for p in packets)
    # The health monitor's pass restarts charon and reloads the connection.
    assert agent.agent.repair_all() == {ROUTER: ["strongswan"]}
    # A new charon (its SA IDs start again at 1), a new tunnel.
    assert strongswan.charon_pid(ctx) not in (None, pid)
    wait_established(agent, children=1)
    ping(guest, PEER_HOSTS[0])


def test_agent_restart_adopts_charon_and_keeps_the_tunnel(
        topo: Topology, agent: InProcessAgent) -> None:
    from router.agent.registry import RouterRegistry

    guest, _peer = setup(topo, agent, 2)
    before = wait_established(agent, children=1)
    pid = strongswan.charon_pid(agent.agent.runtime(ROUTER).ctx)
    # A new agent on the same state dir (what a restart does): it re-applies
    # the persisted config and finds charon running with the same connection.
    again = RouterRegistry(agent.agent.state_dir, netns_prefix=agent.agent.netns_prefix,
                           fabric_netns=topo.fabric.netns, agent_id="test")
    again.start()
    st = again.status(ROUTER).vpn_connections[0]
    assert strongswan.charon_pid(again.runtime(ROUTER).ctx) == pid
    assert (st.ike_state, st.ike_unique_id) == ("ESTABLISHED", before.ike_unique_id)
    assert [c.unique_id for c in st.children] == [c.unique_id for c in before.children]
    ping(guest, PEER_HOSTS[1])


def test_a_refused_connection_is_initiated_again(
        topo: Topology, agent: InProcessAgent) -> None:
    topo.internet()
    guest = topo.guest("p1")
    topo.configure_guest(guest, GUEST_IP)
    peer = make_peer(topo, f"{topo.prefix}-up", 2)
    peer.start(load=False)  # charon up, its config not loaded yet: it refuses
    assert agent.agent.apply(vpn_config(1, router_connection(2))).applied_generation == 1
    wait_for(lambda: "NO_PROPOSAL_CHOSEN" in conn_status(agent).last_error, 30,
             "the peer's refusal")
    assert conn_status(agent).ike_state == "DOWN"
    peer.load()
    # charon does not retry a refusal; the agent's health pass initiates again.
    assert agent.agent.repair_all() == {}
    wait_established(agent, children=1, timeout=30)
    assert conn_status(agent).last_error == ""
    ping(guest, PEER_HOSTS[0])


def test_a_restart_that_lost_charon_waits_for_the_key_then_comes_back(
        topo: Topology, agent: InProcessAgent) -> None:
    from router.agent.registry import RouterRegistry

    guest, _peer = setup(topo, agent, 2)
    wait_established(agent, children=1)
    rt = agent.agent.runtime(ROUTER)
    cfg = rt.config
    assert cfg is not None
    psk = cfg.vpn_connections[0].psk
    assert psk
    for path in (rt.ctx.paths.config, strongswan._loaded_path(rt.ctx)):
        with open(path, "rb") as f:
            assert psk.encode() not in f.read(), path  # memory only
    # The agent and charon die together; a new agent on the same state dir.
    pid = strongswan.charon_pid(rt.ctx)
    assert pid
    os.kill(pid, 9)
    wait_for(lambda: strongswan.charon_pid(rt.ctx) is None, 10, "charon gone")
    again = RouterRegistry(agent.agent.state_dir, netns_prefix=agent.agent.netns_prefix,
                           fabric_netns=topo.fabric.netns, agent_id="test")
    again.start()
    status = again.status(ROUTER)
    assert status.applied_generation == 1
    assert status.awaiting_secrets  # netmgr's resync pushes again on this
    [st] = status.vpn_connections
    assert st.ike_state == "DOWN"
    assert "waiting for its pre-shared key" in st.last_error
    # The push at the same generation brings the key, and the tunnel.
    assert not again.apply(cfg).awaiting_secrets
    wait_for(lambda: again.status(ROUTER).vpn_connections[0].ike_state == "ESTABLISHED",
             60, "the tunnel back")
    ping(guest, PEER_HOSTS[0])
