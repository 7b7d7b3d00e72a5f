"""The router's metadata service (nginx) with real clients: curl in guest
namespaces reads EC2, OpenStack and CloudStack paths and gets its own data
only; a guest that takes another guest's IP (curl bound to it, and scapy's
SYN from it) gets nothing; path traversal and header injection get 400/404;
a change is served as soon as its generation is applied."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb
from cloudnet.router.v1 import edge_pb2_grpc
from cloudnet.router.v1 import metadata_pb2 as mpb

from router.runtime import router_netns_name
from tests.lib.routerlab import HOSTS, InProcessAgent, Topology, make_config, sh

pytestmark = pytest.mark.integration

MD = "169.254.169.254"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs7cQdJ3m1mI3h1w0b0c4mQ3xC1uYy3cMuR2x1tY1a9"


def metadata(port: str, user_data: bytes, **kw: object) -> mpb.GuestMetadata:
    mac, ip, host = HOSTS[port]
    g = mpb.GuestMetadata(port_id=port, interface="g-net1", mac=mac, ip=ip, hostname=host,
                          fqdn=f"{host}.tenant.test", availability_zone="zone1",
                          user_data=user_data, network_id="net1", **kw)  # type: ignore[arg-type]
    return g


def config(router_id: str, generation: int, p1_user_data: bytes) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, ["p1", "p2", "p3"])
    cfg.guest_metadata.extend([
        metadata("p1", p1_user_data, ssh_key_name="laptop", ssh_public_key=KEY,
                 public_ip="203.0.113.50", labels={"role": "web"}),
        metadata("p2", b"#!/bin/sh\necho p2\n"),
        metadata("p3", b"#!/bin/sh\necho p3\n", tokens_required=True),
    ])
    return cfg


def curl(ns: str, url: str, *extra: str) -> tuple[int, str]:
    """(HTTP status, body); status 0 when no answer came."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "3", "-o", "-",
         "-w", "\n%{http_code}", *extra, url], capture_output=True, text=True, timeout=20,
        check=False)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


# A SYN to the metadata port from a chosen source address; prints the reply's flags.
SYN = (
    "import sys\n"
    "from scapy.all import IP, TCP, sr1, conf\n"
    "conf.verb = 0\n"
    "r = sr1(IP(src=sys.argv[1], dst=sys.argv[2]) / TCP(sport=40000 + int(sys.argv[3]),"
    " dport=80, flags='S'), timeout=2, iface='eth0')\n"
    "print('none' if r is None else r[TCP].sprintf('%TCP.flags%'))\n"
)


def syn(ns: str, src: str, n: int) -> str:
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", SYN, src, MD, str(n),
              timeout=30).strip()


@pytest.fixture
def guests(topo: Topology, agent: InProcessAgent) -> tuple[str, str, str]:
    router_id = uuid.uuid4().hex
    reply = agent.stub.ApplyConfig(pb.ApplyConfigRequest(
        config=config(router_id, 1, b"#cloud-config\nhostname: one\n")))
    assert reply.status.applied_generation == 1, reply.status.last_error
    assert {s.name: s.healthy for s in reply.status.services}["metadata"] is True
    g1, g2 = topo.guest("p1"), topo.guest("p2")
    topo.configure_guest(g1, HOSTS["p1"][1])
    topo.configure_guest(g2, HOSTS["p2"][1])
    return router_id, g1, g2


def test_each_guest_reads_its_own_ec2_openstack_and_cloudstack_metadata(
    guests: tuple[str, str, str]
) -> None:
    _, g1, g2 = guests
    base = f"http://{MD}"
    assert curl(g1, f"{base}/latest/meta-data/instance-id") == (200, "p1")
    assert curl(g2, f"{base}/latest/meta-data/instance-id") == (200, "p2")
    # The router's guest address answers the same (CloudStack's data-server).
    assert curl(g1, "http://10.10.0.1/latest/meta-data/local-ipv4") == (200, HOSTS["p1"][1])
    code, listing = curl(g1, f"{base}/latest/meta-data/")
    assert code == 200
    assert {"instance-id", "local-hostname", "local-ipv4", "public-ipv4", "mac",
            "placement/", "public-keys/", "service-offering", "vm-id",
            "availability-zone", "public-hostname"} <= set(listing.splitlines())
    assert curl(g1, f"{base}/latest/meta-data/local-hostname") == (200, "vm1")
    assert curl(g1, f"{base}/latest/meta-data/public-ipv4") == (200, "203.0.113.50")
    assert curl(g1, f"{base}/latest/meta-data/mac") == (200, HOSTS["p1"][0])
    assert curl(g1, f"{base}/latest/meta-data/placement/availability-zone") == (200, "zone1")
    assert curl(g1, f"{base}/latest/meta-data/public-keys/") == (200, "0=laptop")
    assert curl(g1, f"{base}/latest/meta-data/public-keys/0/openssh-key") == (200, KEY + "\n")
    # CloudStack's file where EC2 has a directory.
    assert curl(g1, f"{base}/latest/meta-data/public-keys") == (200, KEY + "\n")
    assert curl(g1, f"{base}/latest/meta-data/tags/instance/role") == (200, "web")
    assert curl(g1, f"{base}/latest/user-data") == (200, "#cloud-config\nhostname: one\n")
    assert curl(g1, f"{base}/2009-04-04/meta-data/instance-id") == (200, "p1")
    assert curl(g2, f"{base}/latest/meta-data/public-keys/0/openssh-key")[0] == 404
    assert curl(g2, f"{base}/latest/user-data") == (200, "#!/bin/sh\necho p2\n")

    code, text = curl(g1, f"{base}/openstack/latest/meta_data.json")
    assert code == 200
    md = json.loads(text)
    assert (md["uuid"], md["name"], md["availability_zone"], md["meta"]) == (
        "p1", "vm1", "zone1", {"role": "web"})
    assert md["public_keys"] == {"laptop": KEY}
    code, text = curl(g2, f"{base}/openstack/latest/network_data.json")
    assert json.loads(text)["links"][0]["ethernet_mac_address"] == HOSTS["p2"][0]
    assert curl(g2, f"{base}/openstack/latest/user_data") == (200, "#!/bin/sh\necho p2\n")
    # IMDSv2's token is issued on PUT only, for a TTL; optional for p1.
    code, token = curl(g1, f"{base}/latest/api/token", "-X", "PUT", "-H", f"{TTL}: 60")
    assert code == 200
    assert len(token) >= 32
    assert curl(g1, f"{base}/latest/api/token")[0] == 405
    assert curl(g1, f"{base}/latest/meta-data/instance-id", "-H", f"{TOKEN}: {token}") == (
        200, "p1")


def test_imdsv2_tokens_when_the_port_requires_them(
    topo: Topology, guests: tuple[str, str, str]
) -> None:
    _, g1, _ = guests
    g2 = topo.guest("p3")  # p3 requires tokens, p1 does not
    topo.configure_guest(g2, HOSTS["p3"][1])
    base = f"http://{MD}"
    assert curl(g2, f"{base}/latest/meta-data/instance-id")[0] == 401
    assert curl(g2, f"{base}/latest/user-data")[0] == 401
    assert curl(g2, f"{base}/openstack/latest/meta_data.json")[0] == 401
    assert curl(g2, f"{base}/latest/meta-data/")[0] == 401
    # A TTL is required, 1 to 21600 s; a forwarded request gets no token.
    for extra in ((), ("-H", f"{TTL}: 0"), ("-H", f"{TTL}: 21601"), ("-H", f"{TTL}: x")):
        assert curl(g2, f"{base}/latest/api/token", "-X", "PUT", *extra)[0] == 400, extra
    assert curl(g2, f"{base}/latest/api/token", "-X", "PUT", "-H", f"{TTL}: 60",
                "-H", "X-Forwarded-For: 10.9.9.9")[0] == 403
    code, token = curl(g2, f"{base}/latest/api/token", "-X", "PUT", "-H", f"{TTL}: 60")
    assert code == 200
    with_token = ("-H", f"{TOKEN}: {token}")
    assert curl(g2, f"{base}/latest/meta-data/instance-id", *with_token) == (200, "p3")
    assert curl(g2, f"{base}/latest/user-data", *with_token) == (200, "#!/bin/sh\necho p3\n")
    assert "instance-id" in curl(g2, f"{base}/latest/meta-data/", *with_token)[1].split()
    assert curl(g2, f"{base}/latest/meta-data/instance-id", "-H",
                f"{TOKEN}: {token[:-2]}xx")[0] == 401
    # A token is its guest's own: p1's token does not open p3's data.
    code, token1 = curl(g1, f"{base}/latest/api/token", "-X", "PUT", "-H", f"{TTL}: 60")
    assert curl(g2, f"{base}/latest/meta-data/instance-id", "-H", f"{TOKEN}: {token1}")[0] \
        == 401
    # A token past its TTL is refused.
    code, short = curl(g2, f"{base}/latest/api/token", "-X", "PUT", "-H", f"{TTL}: 1")
    assert code == 200
    deadline = time.monotonic() + 10
    while curl(g2, f"{base}/latest/meta-data/instance-id", "-H", f"{TOKEN}: {short}")[0] \
            != 401:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # cloud-init's EC2 crawler with the token header, as its datasource sends it.
    if subprocess.run([SYSTEM_PYTHON, "-c", "import cloudinit.sources.helpers.ec2"],
                      capture_output=True, check=False).returncode == 0:
        out = sh("ip", "netns", "exec", g2, SYSTEM_PYTHON, "-c", CLOUD_INIT_V2, base, token,
                 timeout=60)
        assert json.loads(out) == {"instance-id": "p3", "user-data": "#!/bin/sh\necho p3\n"}
    # p1 still needs none.
    assert curl(g1, f"{base}/latest/meta-data/instance-id") == (200, "p1")


def test_a_guest_using_another_guests_ip_gets_nothing(guests: tuple[str, str, str]) -> None:
    _, g1, _ = guests
    # p1 takes p2's address as well; its requests from it still leave p1's MAC.
    sh("ip", "-n", g1, "addr", "add", f"{HOSTS['p2'][1]}/32", "dev", "eth0")
    assert curl(g1, f"http://{MD}/latest/meta-data/instance-id", "--interface",
                HOSTS["p2"][1]) == (0, "")
    assert curl(g1, "http://10.10.0.1/latest/user-data", "--interface",
                HOSTS["p2"][1]) == (0, "")
    # scapy: a SYN from p1's own address is answered, one from p2's is not.
    assert syn(g1, HOSTS["p1"][1], 1) == "SA"
    assert syn(g1, HOSTS["p2"][1], 2) == "none"
    assert curl(g1, f"http://{MD}/latest/meta-data/instance-id") == (200, "p1")


def test_traversal_and_header_injection_get_400_or_404(guests: tuple[str, str, str]) -> None:
    _, g1, _ = guests
    for path in ("/latest/../../etc/passwd", "/latest/%2e%2e/%2e%2e/etc/passwd",
                 "/latest/meta-data/..%2f..%2f..%2f..%2fetc%2fpasswd",
                 "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/latest/meta-data/../../../p2/",
                 "/../10.10.0.12/latest/user-data", "/latest/meta-data/%00"):
        code, body = curl(g1, f"http://{MD}{path}", "--path-as-is")
        assert code in (400, 404), (path, code)
        assert "root:" not in body
        assert "p2" not in body
    raw = (b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n"
           b"X-Evil: a\rInjected: 1\r\n\r\n")
    out = subprocess.run(["ip", "netns", "exec", g1, "socat", "-t", "2", "-",
                          f"TCP:{MD}:80"], input=raw, capture_output=True, timeout=20,
                         check=False).stdout
    assert out.startswith(b"HTTP/1.1 400"), out[:80]
    assert curl(g1, f"http://{MD}/latest/meta-data/instance-id", "-X", "POST")[0] in (403, 405)


def test_a_change_is_served_when_its_generation_is_applied_and_a_repeat_is_a_no_op(
    topo: Topology, agent: InProcessAgent, guests: tuple[str, str, str]
) -> None:
    router_id, g1, _ = guests
    pidfile = f"{agent.agent.state_dir}/routers/{router_id}/metadata/nginx.pid"
    with open(pidfile) as f:
        pid = f.read().strip()
    for gen in range(2, 6):
        data = f"#cloud-config\n# generation {gen}\n".encode()
        reply = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=config(router_id, gen,
                                                                           data)))
        assert reply.status.applied_generation == gen, reply.status.last_error
        assert curl(g1, f"http://{MD}/latest/user-data") == (200, data.decode())
    reply = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=config(router_id, 6, data)))
    assert reply.status.applied_generation == 6
    with open(pidfile) as f:
        assert f.read().strip() == pid  # a tree change needs no nginx restart


# cloud-init's own crawlers (Debian's cloud-init, system Python), as its EC2,
# CloudStack and OpenStack datasources call them, against the router.
CLOUD_INIT_CRAWL = (
    "import json, sys\n"
    "from cloudinit.sources.helpers import ec2, openstack\n"
    "md, gw = sys.argv[1], sys.argv[2]\n"
    "ec2_md = ec2.get_instance_metadata('2009-04-04', md, retries=0)\n"
    "ec2_ud = ec2.get_instance_userdata('2009-04-04', md, retries=0)\n"
    "cs_md = ec2.get_instance_metadata('latest', gw, retries=0)\n"
    "os_md = openstack.MetadataReader(md, retries=0).read_v2()\n"
    "print(json.dumps({'ec2': ec2_md, 'ec2_ud': ec2_ud.decode(), 'cs': cs_md,\n"
    "                  'os': os_md['metadata'], 'os_ud': os_md['userdata'].decode()},\n"
    "                 default=str))\n"
)
SYSTEM_PYTHON = "/usr/bin/python3"
CLOUD_INIT_V2 = (
    "import json, sys\n"
    "from cloudinit.sources.helpers import ec2\n"
    "md, token = sys.argv[1], sys.argv[2]\n"
    "h = lambda url: {'X-aws-ec2-metadata-token': token}\n"
    "m = ec2.get_instance_metadata('2021-03-23', md, retries=0, headers_cb=h)\n"
    "u = ec2.get_instance_userdata('2021-03-23', md, retries=0, headers_cb=h)\n"
    "print(json.dumps({'instance-id': m['instance-id'], 'user-data': u.decode()}))\n"
)


def test_cloud_inits_datasource_crawlers_read_this_guests_data(
    guests: tuple[str, str, str]
) -> None:
    _, g1, _ = guests
    if subprocess.run([SYSTEM_PYTHON, "-c", "import cloudinit.sources.helpers.ec2"],
                      capture_output=True, check=False).returncode:
        pytest.skip("Debian's cloud-init is not installed (scripts/bootstrap.sh installs it)")
    out = sh("ip", "netns", "exec", g1, SYSTEM_PYTHON, "-c", CLOUD_INIT_CRAWL,
             f"http://{MD}", "http://10.10.0.1/", timeout=60)
    got = json.loads(out)
    assert got["ec2"]["instance-id"] == "p1"
    assert got["ec2"]["local-ipv4"] == HOSTS["p1"][1]
    assert got["ec2"]["placement"]["availability-zone"] == "zone1"
    assert got["ec2"]["public-keys"] == {"laptop": [KEY]}
    assert got["ec2_ud"] == "#cloud-config\nhostname: one\n"
    assert (got["cs"]["instance-id"], got["cs"]["vm-id"], got["cs"]["service-offering"]) == (
        "p1", "p1", "cloudnet")
    assert got["cs"]["local-hostname"] == "vm1"
    assert (got["os"]["uuid"], got["os"]["name"]) == ("p1", "vm1")
    assert got["os"]["public_keys"] == {"laptop": KEY}
    assert got["os_ud"] == "#cloud-config\nhostname: one\n"


def test_a_killed_nginx_is_repaired_by_the_health_pass(
    topo: Topology, agent: InProcessAgent, guests: tuple[str, str, str]
) -> None:
    router_id, g1, _ = guests
    # nginx dies whole (master and workers), only the one in this test's router.
    netns = router_netns_name(topo.prefix, router_id)
    for pid in sh("ip", "netns", "pids", netns).split():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().startswith(b"nginx:"):
                os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while curl(g1, f"http://{MD}/latest/meta-data/instance-id")[0] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert agent.agent.repair_all() == {router_id: ["metadata"]}
    assert curl(g1, f"http://{MD}/latest/meta-data/instance-id") == (200, "p1")


def test_a_full_push_of_1000_ports_with_32_kib_user_data_each_is_served(
    topo: Topology, agent: InProcessAgent
) -> None:
    """Past gRPC's default 4 MiB message limit: the agent takes a whole config
    of 32 MiB (MAX_CONFIG_BYTES) over its gRPC socket and serves every tree."""
    router_id = uuid.uuid4().hex
    cfg = make_config(router_id, 1, ["p1"], cidr="10.10.0.0/22")
    cfg.interfaces[1].addresses[:] = ["10.10.0.1/22"]
    net = ipaddress.IPv4Network("10.10.0.0/22")
    mine = b"#cloud-config\n# p1\n" + b"a" * (32 * 1024 - 20)
    cfg.guest_metadata.append(metadata("p1", mine))
    for n in range(1, 1000):
        cfg.guest_metadata.append(mpb.GuestMetadata(
            port_id=f"x{n}", interface="g-net1", mac=f"02:bb:00:00:{n >> 8:02x}:{n & 255:02x}",
            ip=str(net.network_address + 20 + n), hostname=f"x{n}", availability_zone="zone1",
            user_data=f"#cloud-config\n# x{n}\n".encode().ljust(32 * 1024, b"b"),
            network_id="net1"))
    request = pb.ApplyConfigRequest(config=cfg)
    assert request.ByteSize() > 30 * 1024 * 1024  # over seven times gRPC's default limit
    reply = agent.stub.ApplyConfig(request, timeout=120)
    assert reply.status.applied_generation == 1, reply.status.last_error
    g1 = topo.guest("p1")
    topo.configure_guest(g1, HOSTS["p1"][1])
    assert curl(g1, f"http://{MD}/latest/user-data") == (200, mine.decode())
    # Every other port's tree is served too, to its own address only.
    by_ip = os.path.join(topo.state_dir, "agent", "routers", router_id, "metadata", "by-ip")
    assert len(os.listdir(by_ip)) == 1000
    with open(os.path.join(by_ip, str(net.network_address + 20 + 999), "latest",
                           "user-data"), "rb") as f:
        assert f.read().startswith(b"#cloud-config\n# x999\n")


def test_a_ports_metadata_delta_serves_the_same_trees_as_a_full_push(
    topo: Topology, agent: InProcessAgent, guests: tuple[str, str, str]
) -> None:
    router_id, g1, g2 = guests
    edge = edge_pb2_grpc.RouterEdgeStub(agent.channel)
    by_ip = os.path.join(topo.state_dir, "agent", "routers", router_id, "metadata", "by-ip")
    trees = os.path.join(by_ip, "..", "trees")
    p2_link = os.readlink(os.path.join(by_ip, HOSTS["p2"][1]))
    new = config(router_id, 2, b"#cloud-config\nhostname: two\n")
    p1 = new.guest_metadata[0]
    p1.ssh_public_key, p1.labels["role"] = KEY.replace("a9", "b8"), "db"
    p1.public_ip = ""  # as netmgr sends it: this lab router has no static NAT

    def delta(base: int, *items: mpb.GuestMetadata) -> epb.ApplyEdgeDeltaResponse:
        return edge.ApplyEdgeDelta(epb.ApplyEdgeDeltaRequest(delta=epb.EdgeDelta(
            router_id=router_id, base_generation=base, generation=base + 1,
            removed=[epb.EdgeObjectRef(kind="guest-metadata", id=g.port_id) for g in items],
            guest_metadata=list(items))))

    reply = delta(1, p1)
    assert (reply.stale, reply.applied_generation) == (False, 2), reply.last_error
    assert curl(g1, f"http://{MD}/latest/user-data") == (200, "#cloud-config\nhostname: two\n")
    assert curl(g1, f"http://{MD}/latest/meta-data/public-keys/0/openssh-key") == (
        200, p1.ssh_public_key + "\n")
    code, text = curl(g1, f"http://{MD}/openstack/latest/meta_data.json")
    assert (code, json.loads(text)["meta"]) == (200, {"role": "db"})
    assert curl(g2, f"http://{MD}/latest/user-data") == (200, "#!/bin/sh\necho p2\n")
    # Only p1's tree was rewritten; its old one is gone.
    assert os.readlink(os.path.join(by_ip, HOSTS["p2"][1])) == p2_link
    links = {ip: os.readlink(os.path.join(by_ip, ip)) for ip in os.listdir(by_ip)}
    assert sorted(os.listdir(trees)) == sorted(os.path.basename(t) for t in links.values())
    # The same content as a full push: the very same trees.
    new.generation = 3
    reply3 = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=new))
    assert reply3.status.applied_generation == 3, reply3.status.last_error
    assert {ip: os.readlink(os.path.join(by_ip, ip)) for ip in os.listdir(by_ip)} == links

    # What a delta cannot change in place: stale, nothing changed.
    moved = mpb.GuestMetadata()
    moved.CopyFrom(p1)
    moved.ip, moved.user_data = HOSTS["p2"][1], b"moved"
    unknown = mpb.GuestMetadata(port_id="p9", interface="g-net1", mac="02:00:00:00:00:99",
                                ip="10.10.0.99", user_data=b"x")
    tokens = mpb.GuestMetadata()
    tokens.CopyFrom(p1)
    tokens.tokens_required, tokens.user_data = True, b"tokens"
    for bad in (moved, unknown, tokens):
        assert delta(3, bad).stale
    assert curl(g1, f"http://{MD}/latest/user-data") == (200, "#cloud-config\nhostname: two\n")
