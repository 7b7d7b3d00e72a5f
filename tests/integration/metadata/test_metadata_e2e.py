"""Guest metadata end to end: the API (key pair, user data, labels) -> store ->
reconciler -> agent -> nginx in the router, read with curl from namespace
guests of the all-in-one cloud; a change is served by the time the port
reads ACTIVE."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cloudnet.netmgr.v1 import dns_pb2 as dpb
from cloudnet.netmgr.v1 import dns_pb2_grpc as dnsrpc
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import keypair_pb2_grpc as kprpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from router.services.base import RouterPaths
from router.services.nftables.journal import read_journal
from tests.lib.edge import Edge
from tests.lib.vpc import Vpc

pytestmark = pytest.mark.integration

# The tests that run on both backends share one network (one router: a VM
# boot under TCG on the VM backend) per module, each with its own ports,
# guests and host names (tests/fixtures/edge.py: site).
SITE_CIDR = "10.1.1.0/24"
SITE_NETWORK = dict(name="web")

MD = "http://169.254.169.254"


def curl(guest, url: str, *extra: str) -> tuple[int, str]:
    r = guest.run(["curl", "-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", *extra,
                   url])
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def ask_password_server(guest, server: str, request: str) -> tuple[int, str]:
    """What CloudStack's cloud-set-guest-password asks: one header, the answer in the body."""
    return curl(guest, f"http://{server}:8080/", "-H", f"DomU_Request: {request}")


def files_holding(root: str, secret: bytes) -> list[str]:
    found = []
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if secret in f.read():
                    found.append(path)
    return found


def wait_port_active(t, port_id: str, timeout: float = 120) -> pb.Port:
    deadline = time.monotonic() + timeout
    while True:
        p = t.api.call(t.api.ports.GetPort, pb.GetPortRequest(id=port_id))
        if p.state == pb.OBJECT_STATE_ACTIVE:
            return p
        assert p.state != pb.OBJECT_STATE_ERROR, p.error
        assert time.monotonic() < deadline, f"port {port_id} still {p.state}"
        time.sleep(0.05)


def test_guests_read_their_own_metadata_and_changes_are_served_when_active(
    site, tmp_path: Path
) -> None:
    t, net = site.t, site.net
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kp = t.api.call(kprpc.KeyPairServiceStub(t.api.channel).ImportKeyPair,
                    kpb.ImportKeyPairRequest(key_pair=kpb.KeyPair(
                        name="laptop", public_key=(tmp_path / "id.pub").read_text())))
    p1 = t.port(net.id, name="vm1", hostname="vm1", user_data=b"#cloud-config\n# one\n",
                ssh_key_pair_id=kp.id, labels={"role": "web"})
    p2 = t.port(net.id, name="vm2", hostname="vm2", user_data=b"#!/bin/sh\necho two\n")
    t.api.wait_router_active(net.router_id)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)
    g1.dhcp()
    g2.dhcp()

    assert curl(g1, f"{MD}/latest/meta-data/instance-id") == (200, p1.id)
    assert curl(g2, f"{MD}/latest/meta-data/instance-id") == (200, p2.id)
    assert curl(g1, f"{MD}/latest/meta-data/local-ipv4") == (200, p1.ip)
    assert curl(g1, f"{MD}/latest/meta-data/public-keys/0/openssh-key") == (
        200, kp.public_key + "\n")
    assert curl(g1, f"{MD}/latest/user-data") == (200, "#cloud-config\n# one\n")
    assert curl(g2, f"{MD}/latest/user-data") == (200, "#!/bin/sh\necho two\n")
    # The router's own address on the network answers the same (CloudStack's data-server).
    assert curl(g2, f"http://{net.gateway}/latest/meta-data/local-hostname") == (200, "vm2")
    code, text = curl(g1, f"{MD}/openstack/latest/meta_data.json")
    assert code == 200
    md = json.loads(text)
    assert (md["uuid"], md["meta"], md["public_keys"]) == (p1.id, {"role": "web"},
                                                         {"laptop": kp.public_key})

    # Updated through the API: served once the port reads ACTIVE.
    for n in range(3):
        data = f"#cloud-config\n# update {n}\n".encode()
        t.api.call(t.api.ports.UpdatePort, pb.UpdatePortRequest(
            port=pb.Port(id=p1.id, user_data=data)))
        wait_port_active(t, p1.id)
        assert curl(g1, f"{MD}/latest/user-data") == (200, data.decode())
    if t.cloud.router_backend != "vm":
        # They went as edge deltas of p1's metadata alone (journaled by the agent).
        journal = RouterPaths(os.path.join(t.cloud.state_dir, "agent", "routers",
                                           net.router_id)).edge_journal
        sent = [g for d in read_journal(journal) for g in d.guest_metadata]
        assert [(g.port_id, g.user_data) for g in sent][-3:] == [
            (p1.id, f"#cloud-config\n# update {n}\n".encode()) for n in range(3)]

    # The port's key pair replaced: the new key served once the port reads ACTIVE.
    (tmp_path / "id2").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id2")],
                   check=True)
    kp2 = t.api.call(kprpc.KeyPairServiceStub(t.api.channel).ImportKeyPair,
                     kpb.ImportKeyPairRequest(key_pair=kpb.KeyPair(
                         name="desk", public_key=(tmp_path / "id2.pub").read_text())))
    t.api.call(t.api.ports.UpdatePort, pb.UpdatePortRequest(
        port=pb.Port(id=p1.id, ssh_key_pair_id=kp2.id)))
    wait_port_active(t, p1.id)
    assert curl(g1, f"{MD}/latest/meta-data/public-keys/0/openssh-key") == (
        200, kp2.public_key + "\n")
    code, text = curl(g1, f"{MD}/openstack/latest/meta_data.json")
    assert (code, json.loads(text)["public_keys"]) == (200, {"desk": kp2.public_key})
    assert curl(g1, f"{MD}/latest/user-data") == (200, data.decode())

    # IMDSv2 required from the generation that asks for it.
    t.api.call(t.api.ports.UpdatePort, pb.UpdatePortRequest(
        port=pb.Port(id=p1.id, metadata_tokens="required")))
    wait_port_active(t, p1.id)
    assert curl(g1, f"{MD}/latest/user-data")[0] == 401
    assert curl(g2, f"{MD}/latest/user-data") == (200, "#!/bin/sh\necho two\n")
    code, token = curl(g1, f"{MD}/latest/api/token", "-X", "PUT",
                       "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60")
    assert code == 200
    assert curl(g1, f"{MD}/latest/user-data", "-H", f"X-aws-ec2-metadata-token: {token}") == (
        200, data.decode())


def test_a_static_nat_address_is_served_as_public_ipv4_in_the_same_generation(
    site
) -> None:
    t, net = site.t, site.net
    p2 = t.port(net.id, name="nat2", hostname="nat2")
    t.api.wait_router_active(net.router_id)
    g2 = t.guest(net, p2)
    g2.dhcp()
    assert curl(g2, f"{MD}/latest/meta-data/public-ipv4")[0] == 404
    edge = Edge(t)
    ip = edge.public_ip(net.id)
    # Created: an edge delta, served once the static NAT reads ACTIVE.
    nat = edge.static_nat(ip.id, p2.id)
    edge.wait_active(edge.nats.GetStaticNat, epb.GetStaticNatRequest(id=nat.id))
    assert curl(g2, f"{MD}/latest/meta-data/public-ipv4") == (200, ip.ip)
    assert curl(g2, f"{MD}/latest/meta-data/public-hostname") == (200, ip.ip)
    # A full push (the port's user data changed) serves it too.
    t.api.call(t.api.ports.UpdatePort, pb.UpdatePortRequest(
        port=pb.Port(id=p2.id, user_data=b"#cloud-config\n")))
    wait_port_active(t, p2.id)
    assert curl(g2, f"{MD}/latest/meta-data/public-ipv4") == (200, ip.ip)
    # Deleted: gone once the router has applied the deletion.
    edge.call(edge.nats.DeleteStaticNat, epb.DeleteStaticNatRequest(id=nat.id))
    t.api.wait_router_active(net.router_id)
    assert curl(g2, f"{MD}/latest/meta-data/public-ipv4")[0] == 404
    code, hostname = curl(g2, f"{MD}/latest/meta-data/public-hostname")
    assert (code, hostname.split(".")[0]) == (200, "nat2")


def test_a_reset_password_is_fetched_once_by_its_own_guest_and_never_stored(
    site
) -> None:
    t, net = site.t, site.net
    p1 = t.port(net.id, name="pw1", hostname="pw1")
    p2 = t.port(net.id, name="pw2", hostname="pw2")
    t.api.wait_router_active(net.router_id)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)
    g1.dhcp()
    g2.dhcp()
    # No password reset yet: CloudStack's answer for "nothing for you".
    assert ask_password_server(g1, net.gateway, "send_my_password") == (200, "saved_password")

    password = t.api.call(t.api.ports.ResetPortPassword,
                          pb.ResetPortPasswordRequest(id=p1.id)).password
    # Another guest asking gets nothing of it.
    assert ask_password_server(g2, net.gateway, "send_my_password") == (200, "saved_password")
    assert ask_password_server(g2, net.gateway, "saved_password") == (200, "saved_password")
    # Its own guest fetches it, acknowledges it, and then it is gone.
    assert ask_password_server(g1, net.gateway, "send_my_password") == (200, password)
    assert ask_password_server(g1, net.gateway, "saved_password") == (200, "saved_password")
    assert ask_password_server(g1, net.gateway, "send_my_password") == (200, "saved_password")
    assert ask_password_server(g1, net.gateway, "anything else") == (200, "bad_request")
    # As a CloudStack guest finds it: the data-server name (search domain from DHCP).
    assert g1.run(["getent", "hosts", "data-server"]).stdout.split()[0] == net.gateway
    first = password
    password = t.api.call(t.api.ports.ResetPortPassword,
                          pb.ResetPortPasswordRequest(id=p1.id)).password
    # p2 taking p1's address as well gets nothing: its packets leave p2's MAC.
    g2.run(["ip", "addr", "add", f"{p1.ip}/32", "dev", g2.ifname], check=True)
    assert curl(g2, f"http://{net.gateway}:8080/", "-H", "DomU_Request: send_my_password",
                "--interface", p1.ip)[0] == 0
    assert ask_password_server(g1, "data-server", "send_my_password") == (200, password)
    assert ask_password_server(g1, "data-server", "saved_password") == (200, "saved_password")
    # Never on disk: not in netmgr's database, the agent's state, nor any log.
    for secret in (first, password):
        assert files_holding(t.cloud.state_dir, secret.encode()) == []


DHCP_ENV_SCRIPT = "#!/bin/sh\n[ \"$1\" = bound ] && env > \"$CLOUDNET_DHCP_ENV\"\nexit 0\n"


def dhcp_env(guest, tmp_path: Path, *requested: int) -> dict[str, str]:
    """What busybox udhcpc hands its event script for a lease (as a guest OS's
    network scripts read it), asking for ``requested`` options too."""
    script, env = tmp_path / f"{guest.netns}.sh", tmp_path / f"{guest.netns}.env"
    script.write_text(DHCP_ENV_SCRIPT)
    script.chmod(0o755)
    argv = ["busybox", "udhcpc", "-f", "-q", "-n", "-i", guest.ifname, "-t", "10", "-T", "1",
            "-A", "1", "-s", str(script)]
    for number in requested:
        argv += ["-O", str(number)]
    r = subprocess.run(["ip", "netns", "exec", guest.netns, "env",
                        f"CLOUDNET_DHCP_ENV={env}", *argv], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr[-300:]
    return dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)


# dnsmasq's configuration is the same on a router VM: one boot (under TCG)
# per test would cost the suite a minute for nothing the netns run misses.
@pytest.mark.netns_only
def test_a_ports_dhcp_options_reach_its_guest_only(make_tenant, tmp_path: Path) -> None:
    t = make_tenant()
    net = t.network(name="opts", cidr="10.1.4.0/24")
    Opt = pb.DhcpOption
    p1 = t.port(net.id, name="vm1", hostname="vm1", dhcp_options=[
        Opt(name="ntp-server", values=["10.1.4.5", "10.1.4.6"]),
        Opt(name="dns-server", values=["10.1.4.53"]),
        Opt(name="classless-static-route",
            values=["192.168.50.0/24,10.1.4.1", "0.0.0.0/0,10.1.4.1"]),
        Opt(name="tftp-server", values=["10.1.4.7"]),  # a string that looks like an address
        Opt(name="next-server", values=["10.1.4.7"]),
        Opt(name="bootfile-name", values=["pxelinux.0"]),
        Opt(number=224, type="string", values=["hello"]),
        Opt(number=225, type="uint16", values=["1234"]),
        Opt(number=226, type="ips", values=["10.1.4.8"]),
    ])
    p2 = t.port(net.id, name="vm2", hostname="vm2")
    t.api.wait_router_active(net.router_id)
    g1, g2 = t.guest(net, p1), t.guest(net, p2)
    env1 = dhcp_env(g1, tmp_path, 42, 121, 66, 67, 224, 225, 226)
    assert env1["ip"] == p1.ip
    assert env1["ntpsrv"].split() == ["10.1.4.5", "10.1.4.6"]
    assert env1["dns"].split() == ["10.1.4.53"]  # the port's own, not the network's
    assert env1["staticroutes"].split() == ["192.168.50.0/24", "10.1.4.1", "0.0.0.0/0",
                                            "10.1.4.1"]
    assert env1["tftp"] == "10.1.4.7"
    # PXE: the BOOTP next-server field, and the file as option 67 (asked for).
    assert (env1["siaddr"], env1["bootfile"]) == ("10.1.4.7", "pxelinux.0")
    assert env1["opt224"] == b"hello".hex()
    assert env1["opt225"] == "04d2"
    assert env1["opt226"] == "0a010408"
    env2 = dhcp_env(g2, tmp_path, 42, 121, 66, 67, 224, 225, 226)
    assert env2["ip"] == p2.ip
    assert env2["dns"].split() == [net.gateway]
    assert not {"ntpsrv", "staticroutes", "tftp", "opt224", "opt225", "opt226"} & set(env2)
    assert env2.get("siaddr", "0.0.0.0") in ("0.0.0.0", net.gateway)

    # Changed through the API: the next lease has the new options.
    t.api.call(t.api.ports.UpdatePort, pb.UpdatePortRequest(
        port=pb.Port(id=p1.id, dhcp_options=[Opt(name="ntp-server", values=["10.1.4.9"])])))
    wait_port_active(t, p1.id)
    env1 = dhcp_env(g1, tmp_path, 42, 224)
    assert env1["ntpsrv"] == "10.1.4.9"
    assert "opt224" not in env1


def dig(guest, server: str, *query: str) -> tuple[list[str], str]:
    """(answers, header flags) of dig in the guest's namespace."""
    r = guest.run(["dig", f"@{server}", "+tries=2", "+time=2", "+nocomments", "+noquestion",
                   "+nostats", "+nocmd", "+noadditional", "+noauthority", *query])
    full = guest.run(["dig", f"@{server}", "+tries=2", "+time=2", *query]).stdout
    flags = next((line.split("flags:")[1].split(";")[0].strip() for line in full.splitlines()
                  if "flags:" in line), "")
    answers = [" ".join(line.split()[3:]) for line in r.stdout.splitlines()
               if line.strip() and not line.startswith(";")]
    return answers, flags


# dnsmasq's configuration is the same on a router VM: one boot (under TCG)
# per test would cost the suite a minute for nothing the netns run misses.
@pytest.mark.netns_only
def test_a_networks_dns_records_and_every_ports_ptr_are_served(make_tenant) -> None:
    t = make_tenant()
    net = t.network(name="dns", cidr="10.1.5.0/24")
    p1 = t.port(net.id, name="vm1", hostname="vm1")
    p2 = t.port(net.id, name="vm2", hostname="vm2")
    d = net.domain
    dns = dnsrpc.DnsRecordServiceStub(t.api.channel)

    def record(name: str, type_: str, value: str) -> dpb.DnsRecord:
        return t.api.call(dns.CreateDnsRecord, dpb.CreateDnsRecordRequest(
            dns_record=dpb.DnsRecord(network_id=net.id, name=name, type=type_, value=value)))

    made = [record("www", "A", "10.1.5.50"), record("www", "AAAA", "2001:db8::50"),
            record("alias", "CNAME", "vm1"), record("info", "TXT", "v=spf1 -all"),
            record("_sip._tcp", "SRV", "10 20 5060 vm2"), record("10.1.5.60", "PTR", "www")]
    t.api.wait_router_active(net.router_id)
    g1 = t.guest(net, p1)
    g1.dhcp()
    gw = net.gateway
    answers, flags = dig(g1, gw, f"www.{d}", "A")
    assert answers == ["A 10.1.5.50"]
    assert "aa" in flags.split()  # the router's own data, answered authoritatively
    assert dig(g1, gw, f"www.{d}", "AAAA")[0] == ["AAAA 2001:db8::50"]
    assert dig(g1, gw, f"alias.{d}", "A")[0] == [f"CNAME vm1.{d}.", f"A {p1.ip}"]
    assert dig(g1, gw, f"info.{d}", "TXT")[0] == ['TXT "v=spf1 -all"']
    assert dig(g1, gw, f"_sip._tcp.{d}", "SRV")[0] == [f"SRV 10 20 5060 vm2.{d}."]
    assert dig(g1, gw, "-x", "10.1.5.60")[0] == [f"PTR www.{d}."]
    # Every port's address has its PTR.
    assert dig(g1, gw, "-x", p1.ip)[0] == [f"PTR vm1.{d}."]
    assert dig(g1, gw, "-x", p2.ip)[0] == [f"PTR vm2.{d}."]
    # Deleted: gone once the router has applied it.
    t.api.call(dns.DeleteDnsRecord, dpb.DeleteDnsRecordRequest(id=made[0].id))
    t.api.wait_router_active(net.router_id)
    assert dig(g1, gw, f"www.{d}", "A")[0] == []
    assert dig(g1, gw, f"www.{d}", "AAAA")[0] == ["AAAA 2001:db8::50"]


def wait_record(dns, t, record_id: str, timeout: float = 60) -> dpb.DnsRecord:
    deadline = time.monotonic() + timeout
    while True:
        r = t.api.call(dns.GetDnsRecord, dpb.GetDnsRecordRequest(id=record_id))
        if r.state == pb.OBJECT_STATE_ACTIVE:
            return r
        assert r.state != pb.OBJECT_STATE_ERROR, r.error
        assert time.monotonic() < deadline, f"record {record_id} still {r.state}"
        time.sleep(0.05)


# dnsmasq's configuration is the same on a router VM (see above).
@pytest.mark.netns_only
def test_a_vpcs_records_are_served_to_every_tier(make_tenant) -> None:
    t = make_tenant()
    v = Vpc(t, "shop", "10.31.0.0/16")
    d = v.vpc.domain
    web, db = v.tier("web", "10.31.1.0/24"), v.tier("db", "10.31.2.0/24")
    dns = dnsrpc.DnsRecordServiceStub(t.api.channel)

    def record(name: str, type_: str, value: str, vpc_id: str = "",
               network_id: str = "") -> dpb.DnsRecord:
        return t.api.call(dns.CreateDnsRecord, dpb.CreateDnsRecordRequest(
            dns_record=dpb.DnsRecord(name=name, type=type_, value=value, vpc_id=vpc_id,
                                     network_id=network_id)))

    made = [record("www", "A", "10.31.1.50", vpc_id=v.vpc.id),
            record("api", "CNAME", "db1.db", vpc_id=v.vpc.id),
            record("info", "TXT", "owner=ops", vpc_id=v.vpc.id),
            record("10.31.2.60", "PTR", "www", vpc_id=v.vpc.id),
            record("cache", "A", "10.31.2.7", network_id=db.id)]
    (_, g_web), (p_db, g_db) = v.guest(web, "web1"), v.guest(db, "db1")
    for r in made:
        wait_record(dns, t, r.id)
    for g, gw in ((g_web, web.gateway), (g_db, db.gateway)):
        answers, flags = dig(g, gw, f"www.{d}", "A")
        assert answers == ["A 10.31.1.50"], g.netns
        assert "aa" in flags.split()
        assert dig(g, gw, f"api.{d}", "A")[0] == [f"CNAME db1.db.{d}.", f"A {p_db.ip}"]
        assert dig(g, gw, f"info.{d}", "TXT")[0] == ['TXT "owner=ops"']
        assert dig(g, gw, "-x", "10.31.2.60")[0] == [f"PTR www.{d}."]
        # A tier's own record is served to the other tier too (one router).
        assert dig(g, gw, f"cache.db.{d}", "A")[0] == ["A 10.31.2.7"]
    # Deleted: gone from every tier once the router applied it.
    t.api.call(dns.DeleteDnsRecord, dpb.DeleteDnsRecordRequest(id=made[0].id))
    v.wait()
    assert dig(g_web, web.gateway, f"www.{d}", "A")[0] == []
    assert dig(g_db, db.gateway, f"www.{d}", "A")[0] == []


def dhclient_routes(guest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """ISC dhclient takes a lease in the guest; Debian's own exit hook for
    option 121 (rfc3442-classless-routes) installs the classless routes, as
    on a Debian guest. Returns the guest's IPv4 routes and the lease's
    variables. The event script is ours only so that nothing of the host
    (its resolv.conf, timesyncd) is touched; it stops dhclient by its PID."""
    base = tmp_path / guest.netns
    env, script = Path(f"{base}.env"), Path(f"{base}.sh")
    script.write_text(
        "#!/bin/sh\n"
        'case "$reason" in BOUND|REBOOT)\n'
        '  ip -4 addr add "$new_ip_address/$new_subnet_mask" dev "$interface"\n'
        '  if [ -z "$new_rfc3442_classless_static_routes" ] && [ -n "$new_routers" ]; then\n'
        '    ip -4 route replace default via "${new_routers%% *}" dev "$interface"\n'
        "  fi\n"
        "  . /etc/dhcp/dhclient-exit-hooks.d/rfc3442-classless-routes\n"
        f'  env > "{env}.tmp" && mv "{env}.tmp" "{env}";;\n'
        "esac\nexit 0\n")
    script.chmod(0o755)
    # In the foreground (-d), so that it is stopped by the handle that started it.
    proc = subprocess.Popen(["ip", "netns", "exec", guest.netns, "dhclient", "-d", "-1", "-4",
                             "-sf", str(script), "-lf", f"{base}.leases", "-pf", f"{base}.pid",
                             "-cf", "/etc/dhcp/dhclient.conf", guest.ifname],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not env.exists():
            assert proc.poll() is None, proc.stderr.read()[-300:] if proc.stderr else ""
            assert time.monotonic() < deadline, "dhclient took no lease"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    routes = guest.run(["ip", "-4", "route", "show"]).stdout
    return routes, dict(line.split("=", 1) for line in env.read_text().splitlines()
                        if "=" in line)


# dnsmasq's configuration is the same on a router VM (see above).
@pytest.mark.netns_only
def test_a_port_whose_gateway_is_not_the_router_gets_a_route_to_metadata(
    make_tenant, tmp_path: Path
) -> None:
    """A port with its own `router` option, or its own classless routes,
    would reach 169.254.169.254 through something else than its router:
    DHCP option 121 carries a host route to it through the router."""
    t = make_tenant()
    net = t.network(name="mdroute", cidr="10.1.6.0/24")
    Opt = pb.DhcpOption
    other_gw = "10.1.6.99"  # a gateway that is not the router (nothing answers there)
    p1 = t.port(net.id, name="vm1", hostname="vm1",
                dhcp_options=[Opt(name="router", values=[other_gw])])
    p2 = t.port(net.id, name="vm2", hostname="vm2", dhcp_options=[
        Opt(name="classless-static-route", values=[f"192.168.60.0/24,{other_gw}"])])
    p3 = t.port(net.id, name="vm3", hostname="vm3")
    t.api.wait_router_active(net.router_id)
    g1, g2, g3 = t.guest(net, p1), t.guest(net, p2), t.guest(net, p3)

    routes, lease = dhclient_routes(g1, tmp_path)
    assert lease["new_ip_address"] == p1.ip
    assert f"169.254.169.254 via {net.gateway}" in routes, routes
    assert f"default via {other_gw}" in routes, routes  # its own gateway stays the default
    assert curl(g1, f"{MD}/latest/meta-data/instance-id") == (200, p1.id)

    routes, _ = dhclient_routes(g2, tmp_path)
    assert f"169.254.169.254 via {net.gateway}" in routes, routes
    assert f"192.168.60.0/24 via {other_gw}" in routes, routes
    assert curl(g2, f"{MD}/latest/meta-data/instance-id") == (200, p2.id)

    # A port whose gateway is the router needs none: no option 121.
    routes, lease = dhclient_routes(g3, tmp_path)
    assert "new_rfc3442_classless_static_routes" not in lease
    assert f"default via {net.gateway}" in routes, routes
    assert curl(g3, f"{MD}/latest/meta-data/instance-id") == (200, p3.id)
