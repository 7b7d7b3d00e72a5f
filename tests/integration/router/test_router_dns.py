"""The router's DNS and DHCP names with real dnsmasq, dig and udhcpc: a renamed
port answers by its new name only (in DNS and in a new DHCP exchange), and the
router's own domains (networks', a VPC's, and the tiers' names relative to
it) are answered by the router and never asked of the upstream resolver."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from aio.nsguest import NamespaceGuest
from tests.lib.routerlab import (
    DOMAIN,
    HOSTS,
    PUBLIC_GW,
    PUBLIC_IP,
    InProcessAgent,
    Topology,
    make_config,
    sh,
)

pytestmark = pytest.mark.integration


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> pb.RouterStatus:
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == cfg.generation, status.last_error
    assert [o for o in status.objects if not o.ok] == []
    return status


def lookup(ns: str, name: str, *opts: str) -> tuple[str, list[str]]:
    """dig's status (NOERROR, NXDOMAIN...) and answers for ``name`` from ``ns``."""
    out = sh("ip", "netns", "exec", ns, "dig", "+time=2", "+tries=1", "+noall", "+comments",
             "+answer", *opts, name, check=False)
    status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                   if "status: " in line), "no answer")
    answers = [line.split()[-1] for line in out.splitlines()
               if line and not line.startswith(";") and line.split()[3:4] == ["A"]]
    return status, answers


def guest(topo: Topology, port: str, segment: int, mac: str) -> NamespaceGuest:
    g = NamespaceGuest(topo.ns(port), topo.fabric, f"{topo.prefix}{port}"[:15])
    g.attach(segment, mac)
    return g


# ---------------------------------------------------------------- rename


def test_a_renamed_port_answers_by_its_new_name_only(
        topo: Topology, agent: InProcessAgent, tmp_path: object) -> None:
    router_id = uuid.uuid4().hex
    apply(agent, make_config(router_id, 1, ["p1", "p2"]))
    g1 = guest(topo, "p1", 100, HOSTS["p1"][0])
    g2 = guest(topo, "p2", 100, HOSTS["p2"][0])
    try:
        g1.dhcp()
        assert g2.dhcp().ip == HOSTS["p2"][1]
        assert lookup(g1.netns, f"vm2.{DOMAIN}") == ("NOERROR", [HOSTS["p2"][1]])
        state = agent.agent.runtime(router_id).ctx.paths
        pid = int(open(state.dnsmasq("dnsmasq.pid")).read())  # noqa: SIM115

        renamed = make_config(router_id, 2, ["p1", "p2"])
        renamed.guest_networks[0].hosts[1].hostname = "web2"
        apply(agent, renamed)

        assert lookup(g1.netns, f"web2.{DOMAIN}") == ("NOERROR", [HOSTS["p2"][1]])
        assert lookup(g1.netns, f"vm2.{DOMAIN}") == ("NXDOMAIN", [])
        env = topo.dhcp(g2.netns, str(tmp_path))
        assert (env["ip"], env.get("hostname")) == (HOSTS["p2"][1], "web2")
        assert lookup(g1.netns, f"vm2.{DOMAIN}") == ("NXDOMAIN", [])
        # Same dnsmasq (a signal, no restart), the lease kept.
        assert int(open(state.dnsmasq("dnsmasq.pid")).read()) == pid  # noqa: SIM115
        # dnsmasq read the changed file (beside the old record: "duplicate"),
        # then the SIGHUP made it read every file again: none is left over.
        with open(state.dnsmasq("dnsmasq.log")) as f:
            log = f.read().split("cleared cache")
        assert len(log) > 2
        assert "duplicate" not in log[-1]
        with open(state.dhcp_leases) as f:
            assert HOSTS["p2"][0] in f.read()
    finally:
        g1.destroy()
        g2.destroy()


# ------------------------------------------------- what dnsmasq refuses


def dnsmasq_refusals(lines: list[str], tmp: str) -> dict[str, str]:
    """The lines ``dnsmasq --test`` refuses, each with its reason: all the
    lines in one file, the refused one taken out and the rest tested again
    (dnsmasq stops at the first)."""
    path = os.path.join(tmp, "probe.conf")
    left = list(lines)
    refused: dict[str, str] = {}
    while True:
        with open(path, "w") as f:
            f.write("port=0\n" + "\n".join(left) + "\n")
        out = subprocess.run(["dnsmasq", "--test", f"--conf-file={path}"], capture_output=True,
                             text=True, timeout=30, check=False).stderr
        if "at line " not in out:
            assert "CNAME loop" not in out, out
            return refused
        number = int(out.split("at line ")[1].split()[0])
        line = left.pop(number - 2)
        refused[line] = out.split("dnsmasq: ")[-1].split(" at line")[0]


def test_every_option_and_record_our_checks_take_dnsmasq_takes(tmp_path: object) -> None:
    """netmgr's checks (common/dhcp_options, netmgr.model.dns) against
    dnsmasq's own: every option number 1-254 with every value type, and
    records at the limits of each type, as the agent renders them."""
    from common import dhcp_options
    from netmgr.model.dns import DnsRecordSpec, check_record
    from router.services.dnsmasq import option_lines, record_lines

    samples = {"ip": ["10.0.0.5"], "ips": ["10.0.0.5", "10.0.0.6"], "string": ["a" * 200],
               "string2": ["x/y:z@w-v_u.t"], "string3": ["-a."], "string4": ["10.0.0.5"],
               "uint8": ["255"], "uint16": ["65535"], "uint32": ["4294967295"],
               "routes": ["10.9.0.0/16,10.0.0.1", "0.0.0.0/0,10.0.0.1"],
               "domains": ["a.example", "b-c.example"]}
    lines, taken = [], 0
    for number in range(1, 255):
        for kind, values in samples.items():
            option, _ = dhcp_options.check("", number, kind.rstrip("234"), values)
            if option is None:
                continue
            taken += 1
            host = pb.DhcpHost(port_id=f"p{number}{kind}", options=[mpb.DhcpHostOption(
                number=option.number, type=option.type, values=list(option.values))])
            lines += [x for x in option_lines("net-x", host) if not x.startswith("#")]
    assert taken > 1000  # a type for every number cloudnet does not know
    domain = "web.acme.cloud.internal"
    long_label = "l" * 63
    records = [("www", "A", "10.0.0.5"), ("www", "AAAA", "2001:db8::ffff"),
               (f"{long_label}.{long_label}.{long_label[:40]}", "A", "10.0.0.6"),
               ("_x_", "CNAME", "www"), ("out", "CNAME", "elsewhere.example."),
               ("t", "TXT", "A-Za-z0-9 ._:/@=+,;- " * 11), ("t1", "TXT", "x" * 255),
               ("_sip._tcp", "SRV", "65535 65535 65535 www"), ("_s._udp", "SRV", "0 0 0 x."),
               ("10.0.0.50", "PTR", "www"), ("10.0.0.51", "PTR", f"{long_label}.example.")]
    cfg = pb.RouterConfig()
    for i, (name, kind, value) in enumerate(records):
        full, kind, value = check_record(DnsRecordSpec("n", name, kind, value), domain,
                                         "10.0.0.0/24")
        cfg.dns_records.append(mpb.GuestDnsRecord(id=f"r{i}", network_id="n", name=full,
                                                  type=kind, value=value))
    lines += [x for x in record_lines(cfg) if not x.startswith("#")]
    assert dnsmasq_refusals(lines, str(tmp_path)) == {}


def refused(status: pb.RouterStatus) -> dict[tuple[str, str], str]:
    return {(o.kind, o.id): o.error for o in status.objects if not o.ok}


def test_what_dnsmasq_refuses_marks_that_record_or_ports_options_only(
        topo: Topology, agent: InProcessAgent, tmp_path: object) -> None:
    """Records the agent's own checks let through and dnsmasq --test refuses,
    and a port's options its checks refuse: the offending records and the
    port's options are left out and reported with the reason (dnsmasq's for
    the records); the port and the rest of the router move on to the
    generation."""
    router_id = uuid.uuid4().hex
    cfg = make_config(router_id, 1, ["p1", "p2"])

    def record(rid: str, name: str, type_: str, value: str) -> mpb.GuestDnsRecord:
        return mpb.GuestDnsRecord(id=rid, network_id="net1", name=f"{name}.{DOMAIN}",
                                  type=type_, value=value)

    cfg.dns_records.extend([
        record("rwww", "www", "A", "10.10.0.50"),
        # A loop of CNAMEs (netmgr refuses one within a network; the agent
        # does not look): dnsmasq names no line, only a name of the loop.
        record("rloopa", "a", "CNAME", f"b.{DOMAIN}"),
        record("rloopb", "b", "CNAME", f"a.{DOMAIN}"),
        # Two CNAMEs at one name: dnsmasq refuses the second line.
        record("rdup1", "c", "CNAME", f"www.{DOMAIN}"),
        record("rdup2", "c", "CNAME", f"vm1.{DOMAIN}"),
    ])
    # Option 33 (static routes) is an address list to dnsmasq, which refuses
    # a string (so do netmgr and the agent: common/dhcp_options); as netmgr
    # would never send it, the agent's own check leaves out the options alone.
    cfg.guest_networks[0].hosts[0].options.extend([
        mpb.DhcpHostOption(number=33, type="string", values=["hello"]),
        mpb.DhcpHostOption(number=42, type="ips", values=["10.10.0.5"])])
    status = agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status
    assert status.applied_generation == 1, status.last_error
    bad = refused(status)
    loop = [k for k in bad if k[1] in ("rloopa", "rloopb")]
    assert len(loop) == 1, bad
    assert "CNAME loop" in bad[loop[0]], bad
    assert "duplicate CNAME" in bad[("dnsrecord", "rdup2")], bad
    assert "option 33 takes ip or ips" in bad[("dhcpoptions", "p1")], bad
    assert len(bad) == 3, bad
    assert not status.last_error
    g1 = guest(topo, "p1", 100, HOSTS["p1"][0])
    g2 = guest(topo, "p2", 100, HOSTS["p2"][0])
    try:
        # The port itself runs (a lease, its name), without its options.
        env = topo.dhcp(g1.netns, str(tmp_path))
        assert env["ip"] == HOSTS["p1"][1]
        assert "ntpsrv" not in env
        assert g2.dhcp().ip == HOSTS["p2"][1]
        assert lookup(g2.netns, f"www.{DOMAIN}") == ("NOERROR", ["10.10.0.50"])
        assert lookup(g2.netns, f"vm1.{DOMAIN}") == ("NOERROR", [HOSTS["p1"][1]])
        assert lookup(g2.netns, f"c.{DOMAIN}") == ("NOERROR", ["10.10.0.50"])

        # Fixed in the next generation: nothing refused, the options served.
        fixed = pb.RouterConfig()
        fixed.CopyFrom(cfg)
        fixed.generation = 2
        del fixed.guest_networks[0].hosts[0].options[0]
        kept = [r for r in fixed.dns_records if r.id not in ("rloopb", "rdup2")]
        del fixed.dns_records[:]
        fixed.dns_records.extend(kept)
        status = apply(agent, fixed)
        assert refused(status) == {}
        env = topo.dhcp(g1.netns, str(tmp_path))
        assert env["ntpsrv"] == "10.10.0.5"
    finally:
        g1.destroy()
        g2.destroy()


# ---------------------------------------------------------- own domains

VPC = "shop.vpc.test"
RECORDING_DNS = "198.51.100.53"
ANYWHERE = "192.0.2.99"  # what the upstream answers for any name


@pytest.fixture
def upstream(topo: Topology) -> str:
    """A resolver on the internet host that answers every name (ANYWHERE) and
    logs every query it is asked; yields the log's path."""
    inet = topo.internet()
    sh("ip", "-n", inet, "addr", "add", f"{RECORDING_DNS}/24", "dev", "eth0")
    log = os.path.join(topo.state_dir, "upstream-queries.log")
    pidfile = os.path.join(topo.state_dir, "recording-dns.pid")
    topo.pidfiles.append(pidfile)
    sh("ip", "netns", "exec", inet, "dnsmasq", "--conf-file=/dev/null", "--no-resolv",
       "--no-hosts", "--bind-interfaces", f"--listen-address={RECORDING_DNS}",
       f"--address=/#/{ANYWHERE}", "--log-queries", f"--log-facility={log}",
       f"--pid-file={pidfile}", "--user=root")
    return log


def asked(log: str) -> list[str]:
    with open(log) as f:
        return [line.split("query[")[1].split("] ")[1].split(" from")[0]
                for line in f if "query[" in line]


def vpc_config(router_id: str) -> pb.RouterConfig:
    """Two tiers of a VPC: web (10.10.0.0/24, p1) and db (10.11.0.0/24, db1)."""
    cfg = make_config(router_id, 1, ["p1"], domain=f"web.{VPC}")
    cfg.guest_networks[0].domain_search[:] = [f"web.{VPC}", VPC]
    cfg.dns.upstream_servers[:] = [RECORDING_DNS]
    cfg.dns.local_domains.append(VPC)
    cfg.interfaces.append(pb.Interface(
        name="g-net2", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:02",
        addresses=["10.11.0.1/24"], segment_id=101, network_id="net2"))
    cfg.guest_networks.append(pb.GuestNetwork(
        network_id="net2", interface="g-net2", cidr="10.11.0.0/24", gateway="10.11.0.1",
        domain=f"db.{VPC}", domain_search=[f"db.{VPC}", VPC],
        hosts=[pb.DhcpHost(port_id="pd", mac="02:aa:00:00:01:11", ip="10.11.0.11",
                           hostname="db1")]))
    cfg.source_nats.append(pb.SourceNat(network_id="net2", source_cidr="10.11.0.0/24",
                                        public_ip=PUBLIC_IP, public_interface="pub0"))
    assert cfg.routes[0].gateway == PUBLIC_GW
    return cfg


def test_the_routers_own_domains_are_never_asked_upstream(
        topo: Topology, agent: InProcessAgent, upstream: str) -> None:
    apply(agent, vpc_config(uuid.uuid4().hex))
    web = guest(topo, "p1", 100, HOSTS["p1"][0])
    try:
        lease = web.dhcp()
        assert lease.search == (f"web.{VPC}", VPC)
        # The upstream answers and records (the router forwards other names).
        assert lookup(web.netns, "www.example.org") == ("NOERROR", [ANYWHERE])
        assert asked(upstream) == ["www.example.org"]

        # <host>.<tier> through the search list: answered by the router.
        assert lookup(web.netns, "db1.db", "+search") == ("NOERROR", ["10.11.0.11"])
        assert lookup(web.netns, f"db1.db.{VPC}") == ("NOERROR", ["10.11.0.11"])
        assert lookup(web.netns, "vm1", "+search") == ("NOERROR", [HOSTS["p1"][1]])
        # Names the router does not hold, in its domains: NXDOMAIN, not forwarded.
        for name in (f"nothere.{VPC}", f"nothere.db.{VPC}", f"x.y.web.{VPC}"):
            assert lookup(web.netns, name) == ("NXDOMAIN", []), name
        assert lookup(web.netns, VPC)[1] == []
        assert asked(upstream) == ["www.example.org"]
    finally:
        web.destroy()
