"""One tenant network end to end: gRPC API → store → reconciler → agent → dnsmasq + nftables,
checked with real clients from namespace guests."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf import field_mask_pb2

from aio.allinone import INET_HOST_IP, WEB_PORT
from aio.nsguest import DhcpFailed

pytestmark = pytest.mark.integration

# The tests that are not about a router's own life share one network (and so
# one router: a VM boot under TCG on the VM backend) per module, each with its
# own ports, guests and host names (tests/fixtures/edge.py: site).
SITE_CIDR = "10.1.1.0/24"
SITE_NETWORK = dict(name="web", mtu=1400, domain_search=["corp.example"], lease_seconds=3600)


def dig(guest, name: str) -> list[str]:
    out = guest.run(["dig", "+short", "+time=2", "+tries=2", name]).stdout
    return out.split()


def seen_from(guest) -> str:
    """The source address the internet host sees for a connection from the guest."""
    r = guest.run(["curl", "-s", "--max-time", "5", f"http://{INET_HOST_IP}:{WEB_PORT}/"])
    return r.stdout.strip()


def wait_active(t, net) -> pb.Router:
    return t.api.wait_router_active(net.router_id)


def test_guest_gets_its_ports_lease_names_and_snat(site):
    t, net = site.t, site.net
    p1 = t.port(net.id, name="vm1", hostname="vm1")
    p2 = t.port(net.id, name="vm2", hostname="vm2", ip="10.1.1.77")
    wait_active(t, net)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)

    lease = g1.dhcp()
    assert lease.ip == p1.ip
    assert lease.prefixlen == 24
    assert lease.router == net.gateway
    assert lease.dns == (net.gateway,)
    assert lease.domain == net.domain
    assert "corp.example" in lease.search
    assert lease.mtu == 1400
    assert lease.lease_seconds == 3600
    assert g2.dhcp().ip == "10.1.1.77"

    assert dig(g1, f"vm2.{net.domain}") == ["10.1.1.77"]
    assert dig(g2, f"vm1.{net.domain}") == [p1.ip]
    # The router answers for itself, by name.
    assert dig(g1, f"router.{net.domain}") == [net.gateway]
    # Forwarded to the zone's upstream resolver (a dnsmasq on the internet host).
    assert dig(g1, "www.example.test") == [INET_HOST_IP]

    assert seen_from(g1) == net.source_nat_ip
    assert seen_from(g2) == net.source_nat_ip
    assert ipaddress.ip_address(net.source_nat_ip) in ipaddress.ip_network("203.0.113.0/24")


def test_two_tenants_with_the_same_cidr_are_isolated(site, make_tenant):
    # Tenant A: the module's network; B: a new tenant's network of the same CIDR.
    # (Addresses high in the range: the module's other ports take the lowest free.)
    a, net_a = site.t, site.net
    b = make_tenant()
    net_b = b.network(name="same", cidr=net_a.cidr)
    assert net_a.vlan_id != net_b.vlan_id
    assert net_a.source_nat_ip != net_b.source_nat_ip
    pa = a.port(net_a.id, hostname="a1", ip="10.1.1.250")
    pb_ = b.port(net_b.id, hostname="b1", ip="10.1.1.251")
    wait_active(a, net_a)
    wait_active(b, net_b)
    ga, gb = a.guest(net_a, pa), b.guest(net_b, pb_)
    assert ga.dhcp().ip == "10.1.1.250"
    assert gb.dhcp().ip == "10.1.1.251"
    # Each leaves through its own source-NAT address...
    assert seen_from(ga) == net_a.source_nat_ip
    assert seen_from(gb) == net_b.source_nat_ip
    # ...and neither reaches the other: not on the guest segment, not through
    # the other's public address, not its router's DNS.
    assert ga.run(["ping", "-c", "2", "-W", "1", "10.1.1.251"]).returncode != 0
    assert gb.run(["ping", "-c", "2", "-W", "1", "10.1.1.250"]).returncode != 0
    assert ga.run(["nc", "-z", "-w", "2", net_b.source_nat_ip, "53"]).returncode != 0
    assert dig(ga, f"b1.{net_b.domain}") != ["10.1.1.251"]


def dnsmasq_pid(cloud, router_id: str) -> int:
    pidfiles = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(cloud.state_dir, "agent"))
                for f in fs if f == "dnsmasq.pid" and router_id in d]
    assert len(pidfiles) == 1, pidfiles
    with open(pidfiles[0]) as f:
        return int(f.read().strip())


def lease_file(cloud, router_id: str) -> str:
    for d, _, fs in os.walk(os.path.join(cloud.state_dir, "agent")):
        if router_id in d and "leases" in fs:
            return os.path.join(d, "leases")
    raise AssertionError("no lease file")


@pytest.mark.netns_only
def test_ports_added_and_removed_without_restarting_dnsmasq(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="churn", cidr="10.2.0.0/24")
    p1 = t.port(net.id, hostname="keep")
    wait_active(t, net)
    g1 = t.guest(net, p1)
    assert g1.dhcp().ip == p1.ip
    pid = dnsmasq_pid(cloud, net.router_id)

    p2 = t.port(net.id, hostname="added")
    wait_active(t, net)
    g2 = t.guest(net, p2)
    assert g2.dhcp().ip == p2.ip
    assert dig(g1, f"added.{net.domain}") == [p2.ip]

    t.api.call(t.api.ports.DeletePort, pb.DeletePortRequest(id=p2.id))
    wait_active(t, net)
    assert dnsmasq_pid(cloud, net.router_id) == pid, "dnsmasq was restarted"
    # The removed port's name is gone and it gets no lease any more (static DHCP only).
    assert dig(g1, f"added.{net.domain}") == []
    with pytest.raises(DhcpFailed):
        g2.dhcp(attempts=2)
    # The kept guest's lease is still known to dnsmasq and renews to the same address.
    with open(lease_file(cloud, net.router_id)) as f:
        assert p1.ip in f.read()
    assert g1.dhcp().ip == p1.ip


@pytest.mark.netns_only
def test_agent_killed_and_restarted_keeps_leases_and_reapplies(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="crash", cidr="10.3.0.0/24")
    p1 = t.port(net.id, hostname="before")
    wait_active(t, net)
    g1 = t.guest(net, p1)
    assert g1.dhcp().ip == p1.ip
    leases = lease_file(cloud, net.router_id)
    with open(leases) as f:
        before = f.read()
    assert p1.mac.lower() in before.lower()

    cloud.stop_agent(signal.SIGKILL)
    # A change made while the agent is down is acknowledged by the API and
    # applied once the agent is back.
    p2 = t.port(net.id, hostname="during")
    router = t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=net.router_id))
    assert router.applied_generation < router.desired_generation
    cloud.start_agent()
    cloud.wait_ready()
    wait_active(t, net)

    with open(leases) as f:
        assert p1.mac.lower() in f.read().lower()
    g2 = t.guest(net, p2)
    assert g2.dhcp().ip == p2.ip
    assert g1.dhcp().ip == p1.ip
    assert dig(g2, f"before.{net.domain}") == [p1.ip]


def test_netmgr_restart_loses_nothing_acknowledged(cloud, site):
    t, net = site.t, site.net
    ports = [t.port(net.id, hostname=f"h{i}") for i in range(3)]
    wait_active(t, net)

    def listing():
        nets = t.api.call(t.api.networks.ListNetworks, pb.ListNetworksRequest()).networks
        ps = t.api.call(t.api.ports.ListPorts, pb.ListPortsRequest(network_id=net.id)).ports
        return ([n.SerializeToString(deterministic=True) for n in nets],
                sorted((p.id, p.ip, p.mac, p.hostname) for p in ps))

    before = listing()
    assert {p.id for p in ports} <= {p[0] for p in before[1]}
    cloud.stop_netmgr(signal.SIGKILL)
    cloud.start_netmgr()
    cloud.wait_ready()
    assert listing() == before
    # And it still drives the router.
    p = t.port(net.id, hostname="after")
    wait_active(t, net)
    g = t.guest(net, p)
    assert g.dhcp().ip == p.ip
    assert dig(g, f"{ports[0].hostname}.{net.domain}") == [ports[0].ip]


def host_state(cloud) -> tuple[list[str], list[str]]:
    namespaces = sorted(n for n in os.listdir("/run/netns") if n.startswith(cloud.prefix))
    routers_dir = os.path.join(cloud.state_dir, "agent", "routers")
    routers = sorted(os.listdir(routers_dir)) if os.path.isdir(routers_dir) else []
    vms_dir = os.path.join(cloud.state_dir, "compute", "routers")  # VM backend
    routers += sorted(os.listdir(vms_dir)) if os.path.isdir(vms_dir) else []
    return namespaces, routers


def settled_host_state(cloud, t) -> tuple[list[str], list[str]]:
    """host_state once the host holds exactly the cloud's routers: a router an
    earlier test deleted may still be going (a VM being swept)."""
    deadline = time.monotonic() + 60
    while True:
        routers = t.admin.call(t.admin.routers.ListRouters,
                               pb.ListRoutersRequest(page_size=500)).routers
        state = host_state(cloud)
        if sorted(state[1]) == sorted(r.id for r in routers):
            return state
        assert time.monotonic() < deadline, (state, [r.id for r in routers])
        time.sleep(0.1)


def test_rejected_calls_leave_nothing_on_the_host(cloud, site):
    t, net = site.t, site.net
    wait_active(t, net)
    time.sleep(0.5)  # let the resync settle
    before = settled_host_state(cloud, t)
    bad_calls = [
        (t.api.networks.CreateNetwork,
         pb.CreateNetworkRequest(network=pb.Network(name="bad", cidr="10.6.0.0/33"))),
        (t.api.networks.CreateNetwork,
         pb.CreateNetworkRequest(network=pb.Network(name="bad", cidr="10.1.1.128/25"))),
        (t.api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name="bad", cidr="10.7.0.0/24", gateway="10.8.0.1"))),
        (t.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname="x\nserver=/evil/1.2.3.4"))),
        (t.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, hostname="a;reboot"))),
    ]
    for method, req in bad_calls:
        with pytest.raises(grpc.RpcError) as e:
            t.api.call(method, req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    time.sleep(2.5)  # a full resync interval: nothing new may appear
    assert host_state(cloud) == before
    nets = t.api.call(t.api.networks.ListNetworks, pb.ListNetworksRequest()).networks
    assert [n.id for n in nets] == [net.id]


def test_router_shows_health_and_generation(site):
    t, net = site.t, site.net
    one = t.port(net.id, hostname="one")
    r = wait_active(t, net)
    assert r.applied_generation == r.desired_generation
    services = {s.name: s.healthy for s in r.services}
    detail = json.dumps([[s.name, s.healthy, s.detail] for s in r.services])
    assert services.get("dnsmasq"), detail
    assert services.get("nftables"), detail
    # The daemons' versions, as the router reports them.
    versions = {s.name: s.version.lower() for s in r.services}
    assert "dnsmasq version 2." in versions["dnsmasq"], versions
    assert versions["nftables"].startswith("nftables v1."), versions
    assert r.public_ip == net.source_nat_ip
    ports = t.api.call(t.api.ports.ListPorts, pb.ListPortsRequest(network_id=net.id)).ports
    assert one.id in {p.id for p in ports}
    assert {p.state for p in ports} == {pb.OBJECT_STATE_ACTIVE}


@pytest.mark.netns_only
def test_nft_table_is_one_agent_owned_table(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="nft", cidr="10.11.0.0/24")
    wait_active(t, net)
    ns = [n for n in os.listdir("/run/netns")
          if n.startswith(f"{cloud.prefix}r-") and n.endswith(net.router_id[:12])]
    assert len(ns) == 1
    out = subprocess.run(["ip", "netns", "exec", ns[0], "nft", "-j", "list", "tables"],
                         capture_output=True, text=True, check=True).stdout
    tables = sorted((x["table"]["family"], x["table"]["name"])
                    for x in json.loads(out)["nftables"] if "table" in x)
    # The router's table, and its ARP guard (ARP never reaches the inet family).
    assert tables == [("arp", "cloudnet"), ("inet", "cloudnet")]


@pytest.mark.netns_only
def test_restart_router_rebuilds_it_and_keeps_leases(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="rebuild", cidr="10.12.0.0/24")
    p1 = t.port(net.id, hostname="stay")
    wait_active(t, net)
    g1 = t.guest(net, p1)
    assert g1.dhcp().ip == p1.ip
    pid = dnsmasq_pid(cloud, net.router_id)
    r = t.api.call(t.api.routers.RestartRouter, pb.RestartRouterRequest(id=net.router_id))
    after = wait_active(t, net)
    assert after.applied_generation == r.desired_generation
    assert dnsmasq_pid(cloud, net.router_id) != pid, "the router was not rebuilt"
    with open(lease_file(cloud, net.router_id)) as f:
        assert p1.mac.lower() in f.read().lower()
    assert g1.dhcp().ip == p1.ip
    assert seen_from(g1) == net.source_nat_ip


def router_netns(cloud, router_id: str) -> str:
    (ns,) = [n for n in os.listdir("/run/netns")
             if n.startswith(f"{cloud.prefix}r-") and n.endswith(router_id[:12])]
    return ns


def eventually(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "not repaired in time"
        time.sleep(0.2)


@pytest.mark.netns_only
def test_agent_repairs_a_dead_dnsmasq_and_a_deleted_ruleset(cloud, make_tenant):
    t = make_tenant()
    net = t.network(name="heal", cidr="10.13.0.0/24")
    p1 = t.port(net.id, hostname="patient")
    wait_active(t, net)
    g1 = t.guest(net, p1)
    assert g1.dhcp().ip == p1.ip
    ns = router_netns(cloud, net.router_id)

    pid = dnsmasq_pid(cloud, net.router_id)
    os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "cloudnet"],
                   check=True)

    def healed() -> bool:
        try:
            return dnsmasq_pid(cloud, net.router_id) != pid and subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "cloudnet"],
                capture_output=True).returncode == 0
        except (AssertionError, OSError, ValueError):
            return False

    eventually(healed)
    assert g1.dhcp().ip == p1.ip
    assert dig(g1, f"patient.{net.domain}") == [p1.ip]
    assert seen_from(g1) == net.source_nat_ip
    with open(lease_file(cloud, net.router_id)) as f:
        assert p1.mac.lower() in f.read().lower()


def test_a_renamed_port_answers_by_its_new_name_only(site, tmp_path):
    t, net = site.t, site.net
    p1 = t.port(net.id, hostname="rn1")
    p2 = t.port(net.id, hostname="rn2")
    wait_active(t, net)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)
    g1.dhcp()
    assert g2.dhcp().ip == p2.ip
    assert dig(g1, f"rn2.{net.domain}") == [p2.ip]

    renamed = t.api.call(t.api.ports.UpdatePort, pb.UpdatePortRequest(
        port=pb.Port(id=p2.id, hostname="web2"),
        update_mask=field_mask_pb2.FieldMask(paths=["hostname"])))
    assert renamed.fqdn == f"web2.{net.domain}"
    wait_active(t, net)

    assert dig(g1, f"web2.{net.domain}") == [p2.ip]
    assert dig(g1, f"rn2.{net.domain}") == []
    # A new DHCP exchange hands out the new name (udhcpc's "hostname" option).
    script = tmp_path / "event.sh"
    out = tmp_path / "env"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    g2.run(["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
            "-s", str(script)], check=True)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert (env["ip"], env.get("hostname")) == (p2.ip, "web2")
    assert dig(g1, f"rn2.{net.domain}") == []
