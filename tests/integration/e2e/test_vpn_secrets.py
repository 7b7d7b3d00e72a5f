"""VPN pre-shared keys at rest, through the whole stack: after creating,
deleting and re-creating VPN connections and restarting the router agent
(its charons killed meanwhile, so only netmgr still holds the keys), no file
under netmgr's or the agent's state directories holds a key, every state
file is 0600, and the tunnel comes back with the keys netmgr pushes again."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import time
from pathlib import Path

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from tests.lib.vpn import charon_logs, wait_established

pytestmark = [pytest.mark.integration, pytest.mark.netns_only]


def new_key(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(12)}"


def join(t, vpn, ga, gb, psk: str, tag: str) -> list[vpb.VpnConnection]:
    """A connection each way (a active, b passive) with ``psk``."""
    conns = []
    for mine, theirs, passive in ((ga, gb, False), (gb, ga, True)):
        cgw = t.api.call(vpn.CreateCustomerGateway, vpb.CreateCustomerGatewayRequest(
            customer_gateway=vpb.CustomerGateway(
                name=f"to-{theirs.id[:8]}-{tag}", peer_address=theirs.public_ip,
                peer_cidrs=list(theirs.local_cidrs), psk=psk, ike_version=vpb.IKE_VERSION_2,
                dpd_delay_seconds=2)))
        conns.append(t.api.call(vpn.CreateVpnConnection, vpb.CreateVpnConnectionRequest(
            vpn_connection=vpb.VpnConnection(vpn_gateway_id=mine.id,
                                             customer_gateway_id=cgw.id, passive=passive))))
    return conns


def part(t, vpn, conns) -> None:
    for c in conns:
        t.api.call(vpn.DeleteVpnConnection, vpb.DeleteVpnConnectionRequest(id=c.id))
        t.api.call(vpn.DeleteCustomerGateway,
                   vpb.DeleteCustomerGatewayRequest(id=c.customer_gateway_id))


def charon_pid(cloud, router_id: str) -> int:
    path = Path(cloud.state_dir, "agent", "routers", router_id, "strongswan", "run",
                "charon.pid")
    return int(path.read_text().strip())


def state_files(root: str) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()]


def test_no_key_at_rest_and_the_tunnel_comes_back_after_an_agent_restart(cloud, make_tenant):
    t = make_tenant()
    vpn = vrpc.VpnServiceStub(t.api.channel)
    a = t.network(name="sec-a", cidr="10.61.0.0/24")
    b = t.network(name="sec-b", cidr="10.62.0.0/24")
    pa, pb_ = t.port(a.id, hostname="sa"), t.port(b.id, hostname="sb")
    for net in (a, b):
        t.api.wait_router_active(net.router_id)
    ga = t.api.call(vpn.CreateVpnGateway, vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=a.id)))
    gb = t.api.call(vpn.CreateVpnGateway, vpb.CreateVpnGatewayRequest(
        vpn_gateway=vpb.VpnGateway(network_id=b.id)))
    old_key, key = new_key("old"), new_key("now")
    # Created, up, deleted: its key must not linger anywhere.
    first = join(t, vpn, ga, gb, old_key, "first")
    wait_established(vpn, t, first[0].id)
    part(t, vpn, first)
    conns = join(t, vpn, ga, gb, key, "again")
    wait_established(vpn, t, conns[0].id)
    guest_a, guest_b = t.guest(a, pa), t.guest(b, pb_)
    guest_a.dhcp()
    lb = guest_b.dhcp()
    assert guest_a.run(["busybox", "ping", "-c", "2", "-W", "2", lb.ip]).returncode == 0

    # The agent dies; so do the charons that held the keys in memory. The
    # restarted agent restores its configs from disk, without keys, and
    # netmgr pushes them again.
    charons = [charon_pid(cloud, net.router_id) for net in (a, b)]
    cloud.stop_agent(signal.SIGKILL)
    for pid in charons:
        os.kill(pid, signal.SIGKILL)
    cloud.start_agent()
    cloud.wait_ready()
    for c in conns:
        wait_established(vpn, t, c.id, timeout=120)
    deadline = time.monotonic() + 30
    while guest_a.run(["busybox", "ping", "-c", "1", "-W", "2", lb.ip]).returncode != 0:
        assert time.monotonic() < deadline, charon_logs(t)
    for net in (a, b):
        r = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
        assert r.state == pb.ROUTER_STATE_ACTIVE, r

    # Every file netmgr and the agent keep: no key, in clear or otherwise
    # recognisable, and 0600 where it is theirs.
    keys = [k.encode() for k in (old_key, key)]
    checked = 0
    for path in state_files(cloud.state_dir):
        data = path.read_bytes()
        for k in keys:
            assert k not in data, f"a VPN key in {path}"
        checked += 1
    assert checked > 20
    root = Path(cloud.state_dir)
    private = [root / "admin.token", root / "secrets.key", root / "netmgr.db",
               root / "netmgr.db-wal", root / "netmgr.db-shm"]
    for net in (a, b):
        d = root / "agent" / "routers" / net.router_id
        private += [d / "config.pb", d / "strongswan" / "loaded.json"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Directories: no one else may list them (searchable only where dnsmasq,
    # which drops to its own user, must reach its host files).
    for d in (root, root / "agent", root / "agent" / "routers",
              root / "agent" / "routers" / a.router_id):
        assert stat.S_IMODE(d.stat().st_mode) & 0o066 == 0, d
