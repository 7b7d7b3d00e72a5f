"""Security groups and port security on both fabrics (Linux bridge:
nftables; Open vSwitch, userspace datapath: OpenFlow with ct()), with real
clients in namespace guests: four guests of two tenants on one segment (a
shared network), a "router" port that is exempt, scapy spoofers, a rogue
dnsmasq DHCP server, socat and ping.

Filters are applied through ``common.fabric.port_firewall.PortFirewall`` /
``common.fabric.ovs_firewall.OvsFirewall`` the way the host applies what
netmgr computes for it (rules flattened per port,
group members as sets).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from common.fabric.base import FabricError
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric
from common.fabric.ovs_firewall import OvsFirewall
from common.fabric.port_firewall import Port, PortFirewall, Rule, link_local
from common.netns import ensure_netns, remove_netns
from compute import openflow
from tests.lib import spoof
from tests.lib.guest_servers import TCP, UDP, ask, in_ns

pytestmark = pytest.mark.integration

SEG = 10
PFX = f"sg{os.getpid() % 100000}"
A_DEFAULT = "00000000-0000-4000-8000-00000000000a"
B_DEFAULT = "00000000-0000-4000-8000-00000000000b"
WEB = "00000000-0000-4000-8000-0000000000ee"
GUESTS = {  # name: (tenant default group, ip, mac)
    "a1": (A_DEFAULT, "10.9.0.11", "02:00:0a:00:00:11"),
    "a2": (A_DEFAULT, "10.9.0.12", "02:00:0a:00:00:12"),
    "b1": (B_DEFAULT, "10.9.0.21", "02:00:0a:00:00:21"),
    "b2": (B_DEFAULT, "10.9.0.22", "02:00:0a:00:00:22"),
}
ROUTER = ("10.9.0.1", "02:00:0a:00:00:01")
# Each guest's IPv6 address (dual stack): its IPv4 address's last byte.
V6 = {name: f"2001:db8:9::{ip.rsplit('.', 1)[1]}" for name, (_, ip, _) in
      {**GUESTS, "rt": ("", *ROUTER)}.items()}


def default_rules(group: str) -> tuple[Rule, ...]:
    return (Rule("egress"), Rule("egress", "ipv6"), Rule("ingress", remote_group_id=group),
            Rule("ingress", "ipv6", remote_group_id=group))


class Lab:
    def __init__(self, kind: str) -> None:
        self.fabric: LinuxBridgeFabric | OvsFabric
        self.fw: PortFirewall | OvsFirewall
        if kind == "ovs":
            self.fabric = OvsFabric(f"{PFX}br")
            # As the compute agent does: one kept OpenFlow connection.
            self.fw = OvsFirewall(self.fabric.bridge,
                                  flows=openflow.Connection(self.fabric.bridge))
        else:
            self.fabric = LinuxBridgeFabric(f"{PFX}-fab")
            self.fw = PortFirewall(self.fabric.netns)
        self.procs: list[subprocess.Popen[bytes]] = []

    def ns(self, name: str) -> str:
        return f"{PFX}-{name}"

    def attachment(self, name: str) -> str:
        return f"{PFX}-{name}"

    def dev(self, name: str) -> str:
        """The guest's device on the fabric's side (what filters are keyed on)."""
        if isinstance(self.fabric, OvsFabric):
            return self.fabric.device_name(self.attachment(name))
        return self.attachment(name)

    def port(self, name: str, extra: tuple[Rule, ...] = (),
             pairs: tuple[tuple[str, str], ...] = ()) -> Port:
        group, ip, mac = GUESTS[name]
        return Port(self.dev(name), mac, (ip, V6[name]), pairs, default_rules(group) + extra)

    def members(self, web: tuple[str, ...] = ()) -> dict[str, list[str]]:
        return {A_DEFAULT: [GUESTS[g][1] for g in ("a1", "a2")] + [V6["a1"], V6["a2"]],
                B_DEFAULT: [GUESTS[g][1] for g in ("b1", "b2")] + [V6["b1"], V6["b2"]],
                WEB: [GUESTS[g][1] for g in web]}

    def baseline(self) -> None:
        self.fw.apply([self.port(g) for g in GUESTS], self.members())

    def popen(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def ping(self, src: str, ip: str, tries: int = 1) -> bool:
        """One echo answered within a second, in at most `tries` attempts (a
        port just plugged into OVS's userspace datapath may lose the first)."""
        return any(in_ns(self.ns(src), ["busybox", "ping", "-c", "1", "-W", "1", ip]
                         ).returncode == 0 for _ in range(tries))

    def reaches(self, src: str, ip: str) -> bool:
        return self.ping(src, ip, tries=3)

    def listen(self, name: str, proto: str, port: int, answer: str) -> None:
        listen = (f"TCP-LISTEN:{port},fork,reuseaddr" if proto == TCP
                  else f"UDP-RECVFROM:{port},fork,reuseaddr")
        self.popen(name, ["socat", listen, f"SYSTEM:read line; echo {answer}"])
        flag = "-tln" if proto == TCP else "-uln"
        deadline = time.monotonic() + 5
        while f":{port} " not in in_ns(self.ns(name), ["ss", "-H", flag]).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["linuxbridge", "ovs"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if request.param == "ovs":
        request.getfixturevalue("host_services")  # ovs-vswitchd, run alone too
    lab = Lab(request.param)
    lab.fabric.setup()
    made = []
    try:
        for name, (_, ip, mac) in {**GUESTS, "rt": ("", *ROUTER)}.items():
            ns = lab.ns(name)
            ensure_netns(ns)
            made.append(ns)
            lab.fabric.plug(lab.attachment(name), SEG, ns, "eth0", mac)
            in_ns(ns, ["ip", "link", "set", "lo", "up"])
            in_ns(ns, ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
            in_ns(ns, ["ip", "-6", "addr", "add", f"{V6[name]}/64", "dev", "eth0", "nodad"])
        lab.fw.setup()
        lab.baseline()
        yield lab
    finally:
        for p in lab.procs:
            p.kill()
            p.wait()
        for ns in made:
            remove_netns(ns)
        if isinstance(lab.fw, OvsFirewall):
            lab.fw.close()
        lab.fabric.teardown()


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    lab.baseline()
    yield lab
    lab.baseline()


def test_default_groups_isolate_two_tenants_on_one_network(fresh: Lab) -> None:
    lab = fresh
    a2, b1 = GUESTS["a2"][1], GUESTS["b1"][1]
    assert lab.reaches("a1", a2), "same tenant, same default group"
    assert lab.reaches("b2", b1)
    assert not lab.ping("a1", b1), "another tenant's default group"
    assert not lab.ping("b1", a2)
    assert lab.reaches("a1", ROUTER[0]), "egress to the router is allowed, and its reply"
    assert not lab.ping("rt", a2), "the router is no member of the default group"


def test_allow_by_cidr_and_established_replies(fresh: Lab) -> None:
    lab = fresh
    lab.listen("a1", TCP, 8080, "a1-web")
    b1 = GUESTS["b1"][1]
    a1 = GUESTS["a1"][1]
    assert ask(lab.ns("b1"), TCP, a1, 8080, timeout=2) == ""
    lab.fw.set_port(lab.port("a1", (Rule("ingress", protocol="tcp", port_min=8080,
                                         remote_cidr=f"{b1}/32"),)))
    # b1's egress is all; a1's reply is established (a1 has no egress rule to b1's port).
    assert ask(lab.ns("b1"), TCP, a1, 8080) == "a1-web"
    assert ask(lab.ns("b2"), TCP, a1, 8080, timeout=2) == "", "another address"
    assert not lab.ping("b1", a1), "only tcp/8080"


def test_joining_a_remote_group_gains_access_and_leaving_loses_it(fresh: Lab) -> None:
    lab = fresh
    lab.listen("a2", UDP, 5353, "a2-udp")
    a2 = GUESTS["a2"][1]
    lab.fw.apply([lab.port(g) for g in GUESTS if g != "a2"]
                 + [lab.port("a2", (Rule("ingress", protocol="udp", port_min=5353,
                                         remote_group_id=WEB),))], lab.members())
    assert ask(lab.ns("b1"), UDP, a2, 5353, timeout=2) == ""
    lab.fw.set_members(WEB, [GUESTS["b1"][1]])
    assert ask(lab.ns("b1"), UDP, a2, 5353) == "a2-udp"
    assert ask(lab.ns("b2"), UDP, a2, 5353, timeout=2) == ""
    lab.fw.set_members(WEB, [GUESTS["b2"][1]])
    assert ask(lab.ns("b2"), UDP, a2, 5353) == "a2-udp"
    # socat's client picks a new source port: a new flow, judged afresh.
    assert ask(lab.ns("b1"), UDP, a2, 5353, timeout=2) == ""


OTHER = "00000000-0000-4000-8000-0000000000dd"


def test_a_group_two_ports_name_opens_each_port_to_its_own_rules(fresh: Lab) -> None:
    """One remote group named by two ports' different rules (on OVS one
    shared conjunction; on the Linux bridge one set): a member joining gets
    each port's own rule, not the other's; a rule with the same match from
    another group keeps working; leaving closes both."""
    lab = fresh
    for g in ("a1", "a2"):
        lab.listen(g, TCP, 8181, f"{g}-tcp")
        lab.listen(g, UDP, 5454, f"{g}-udp")
    a1, a2 = GUESTS["a1"][1], GUESTS["a2"][1]
    a1_rules = (Rule("ingress", protocol="tcp", port_min=8181, remote_group_id=WEB),
                Rule("ingress", protocol="tcp", port_min=8181, remote_group_id=OTHER))
    a2_rules = (Rule("ingress", protocol="udp", port_min=5454, remote_group_id=WEB),)
    ports = [lab.port(g) for g in ("b1", "b2")] + [lab.port("a1", a1_rules),
                                                    lab.port("a2", a2_rules)]
    lab.fw.apply(ports, {**lab.members(), OTHER: [GUESTS["b2"][1]]})
    assert ask(lab.ns("b2"), TCP, a1, 8181) == "a1-tcp", "the other group's rule, same match"
    assert ask(lab.ns("b1"), TCP, a1, 8181, timeout=2) == ""
    lab.fw.set_members(WEB, [GUESTS["b1"][1]])
    assert ask(lab.ns("b1"), TCP, a1, 8181) == "a1-tcp"
    assert ask(lab.ns("b1"), UDP, a2, 5454) == "a2-udp"
    assert ask(lab.ns("b1"), UDP, a1, 5454, timeout=2) == "", "a2's rule is not a1's"
    assert ask(lab.ns("b1"), TCP, a2, 8181, timeout=2) == "", "a1's rule is not a2's"
    assert ask(lab.ns("b2"), UDP, a2, 5454, timeout=2) == "", "b2 is in OTHER, not WEB"
    assert ask(lab.ns("b2"), TCP, a1, 8181) == "a1-tcp"
    lab.fw.set_members(WEB, [])
    assert ask(lab.ns("b1"), TCP, a1, 8181, timeout=2) == ""
    assert ask(lab.ns("b1"), UDP, a2, 5454, timeout=2) == ""
    assert ask(lab.ns("b2"), TCP, a1, 8181) == "a1-tcp", "OTHER's conjunction survives"


def test_icmp_types(fresh: Lab) -> None:
    lab = fresh
    a1 = GUESTS["a1"][1]
    lab.fw.set_port(lab.port("a1", (Rule("ingress", protocol="icmp", icmp_type=13),)))
    assert not lab.ping("b1", a1), "echo request is not a timestamp request"
    lab.fw.set_port(lab.port("a1", (Rule("ingress", protocol="icmp", icmp_type=8,
                                         icmp_code=0),)))
    assert lab.reaches("b1", a1)


def received(lab: Lab, name: str, marker: str, send: list[str], seconds: float = 3) -> bool:
    """Whether guest `name` sees a UDP datagram carrying `marker` while `send` runs."""
    cap = subprocess.Popen(["ip", "netns", "exec", lab.ns(name), "tcpdump", "-l", "-n", "-A",
                            "-i", "eth0", "udp port 9999"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)  # tcpdump attaches
        subprocess.run(send, check=True, timeout=60)
        time.sleep(0.3)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    return marker in out


def test_spoofed_ip_and_mac_are_dropped_and_an_allowed_pair_passes(fresh: Lab) -> None:
    lab = fresh
    _, a1_ip, _ = GUESTS["a1"]
    _, a2_ip, a2_mac = GUESTS["a2"]
    dst_mac = GUESTS["a1"][2]
    honest = spoof.command(lab.ns("a2"), "udp", "eth0", a2_mac, dst_mac, a2_ip, a1_ip, "9999",
                           "honest-1", "3")
    assert received(lab, "a1", "honest-1", honest)
    as_b1 = spoof.command(lab.ns("a2"), "udp", "eth0", a2_mac, dst_mac, GUESTS["b1"][1], a1_ip,
                          "9999", "ip-spoof", "3")
    assert not received(lab, "a1", "ip-spoof", as_b1)
    own_ip_other_mac = spoof.command(lab.ns("a2"), "udp", "eth0", GUESTS["b1"][2], dst_mac,
                                     a2_ip, a1_ip, "9999", "mac-spoof", "3")
    assert not received(lab, "a1", "mac-spoof", own_ip_other_mac)
    vip = "10.9.0.200"
    lab.fw.set_port(lab.port("a2", pairs=((vip, ""),)))
    # A group's members are its ports' addresses and their allowed pairs.
    lab.fw.set_members(A_DEFAULT, [a1_ip, a2_ip, vip])
    from_vip = spoof.command(lab.ns("a2"), "udp", "eth0", a2_mac, dst_mac, vip, a1_ip, "9999",
                             "vip-ok", "3")
    assert received(lab, "a1", "vip-ok", from_vip)


def test_arp_spoofing_is_dropped(fresh: Lab) -> None:
    lab = fresh
    _, a1_ip, a1_mac = GUESTS["a1"]
    _, a2_ip, a2_mac = GUESTS["a2"]
    in_ns(lab.ns("a1"), ["ip", "neigh", "flush", "dev", "eth0"])
    lab.ping("a1", a2_ip)
    # a2 claims the router's address to a1.
    spoof.run(lab.ns("a2"), "arp", "eth0", a2_mac, a1_mac, ROUTER[0], a1_ip, "1.5")
    neigh = in_ns(lab.ns("a1"), ["ip", "neigh", "show", ROUTER[0]]).stdout
    assert a2_mac not in neigh


def test_a_rogue_dhcp_server_in_a_guest_reaches_no_other_guest(fresh: Lab, tmp_path) -> None:
    lab = fresh
    lab.popen("a2", ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                     "--interface=eth0", "--bind-interfaces", "--dhcp-authoritative",
                     f"--dhcp-leasefile={tmp_path}/leases", "--dhcp-range=10.9.0.100,10.9.0.150"])
    time.sleep(0.5)
    got = in_ns(lab.ns("b1"), ["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1",
                               "-s", "/bin/true"], timeout=30)
    assert "lease of" not in got.stdout + got.stderr, "the rogue server's offer passed"
    assert "no lease" in (got.stdout + got.stderr).lower()


def test_an_established_connection_survives_its_rule_being_removed(fresh: Lab) -> None:
    """AWS's behaviour (conntrack entries are kept): a removed rule stops new
    connections; one already established keeps passing until it ends."""
    lab = fresh
    a1 = GUESTS["a1"][1]
    lab.fw.set_port(lab.port("a1", (Rule("ingress", protocol="tcp", port_min=7000),)))
    lab.popen("a1", ["socat", "TCP-LISTEN:7000,reuseaddr", "EXEC:cat"])
    time.sleep(0.3)
    client = subprocess.Popen(["ip", "netns", "exec", lab.ns("b1"), "socat", "-T10", "-",
                               f"TCP:{a1}:7000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    lab.procs.append(client)  # type: ignore[arg-type]
    assert client.stdin is not None
    assert client.stdout is not None
    client.stdin.write("one\n")
    client.stdin.flush()
    assert client.stdout.readline() == "one\n"
    lab.fw.set_port(lab.port("a1"))
    client.stdin.write("two\n")
    client.stdin.flush()
    assert client.stdout.readline() == "two\n", "the established connection was cut"
    lab.listen("a1", TCP, 7001, "new")
    assert ask(lab.ns("b1"), TCP, a1, 7001, timeout=2) == "", "a new connection passed"


def test_a_change_the_fabric_refuses_applies_nothing(fresh: Lab) -> None:
    """A host's change is one transaction: a value the fabric refuses (a
    malformed MAC) leaves every port as it was, the valid changes with it."""
    lab = fresh
    a1 = GUESTS["a1"][1]
    opened = lab.port("a1", (Rule("ingress", protocol="icmp"),))
    broken = dataclasses.replace(lab.port("a2"), mac="02:00:zz:00:00:12")
    others = [lab.port(g) for g in ("b1", "b2")]
    with pytest.raises(FabricError):
        lab.fw.apply([opened, broken, *others], lab.members())
    assert not lab.ping("b1", a1), "the valid half of the refused change was applied"
    assert lab.reaches("a2", a1), "a2's filters are as they were"


RA_SENDER = """
import sys
from scapy.all import Ether, IPv6, ICMPv6ND_RA, ICMPv6ND_NS, sendp
mac = sys.argv[1]
lla = sys.argv[2]
ns = Ether(src=mac, dst="33:33:ff:00:00:11") / IPv6(src=lla, dst="ff02::1:ff00:11") / \\
    ICMPv6ND_NS(tgt="fe80::ff:fe00:11")
ra = Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=lla, dst="ff02::1") / ICMPv6ND_RA()
sendp([ns, ra] * 3, iface="eth0", inter=0.05, verbose=False)
"""


def test_router_advertisements_from_a_guest_are_dropped(fresh: Lab) -> None:
    lab = fresh
    cap = subprocess.Popen(["ip", "netns", "exec", lab.ns("a1"), "tcpdump", "-l", "-n", "-i",
                            "eth0", "icmp6"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)  # tcpdump attaches
        subprocess.run(["ip", "netns", "exec", lab.ns("a2"), sys.executable, "-c", RA_SENDER,
                        GUESTS["a2"][2], link_local(GUESTS["a2"][2])], check=True, timeout=60)
        time.sleep(0.3)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    assert "neighbor solicitation" in out, "the control (neighbour discovery) did not pass"
    assert "router advertisement" not in out


V6_ATTACKS = """
import sys
from scapy.all import (Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, Raw, UDP, sendp)
mac, dst_mac, own, lla, victim, router = sys.argv[1:7]
to_victim = Ether(src=mac, dst=dst_mac)
def udp(src, marker, sport=40000, dport=9999):
    return to_victim / IPv6(src=src, dst=victim) / UDP(sport=sport, dport=dport) / Raw(marker)
def na(target):
    return (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=lla, dst="ff02::1")
            / ICMPv6ND_NA(tgt=target, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))
frames = [udp(own, "own-v6"), udp(lla, "eui64-ll"), udp("2001:db8:9::21", "spoofed-v6"),
          udp("fe80::1234", "other-ll"), udp(own, "rogue-dhcpv6", 547, 546),
          udp(own, "not-dhcpv6", 40000, 546), na(own), na(router)]
sendp(frames * 3, iface="eth0", inter=0.05, verbose=False)
"""


def v6_capture(lab: Lab, src: str, dst: str, own: str) -> str:
    """What guest `dst` sees of `src`'s IPv6 attacks, sent from `own`."""
    cap = subprocess.Popen(["ip", "netns", "exec", lab.ns(dst), "tcpdump", "-l", "-n", "-v",
                            "-A", "-i", "eth0", "ip6"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)  # tcpdump attaches
        subprocess.run(["ip", "netns", "exec", lab.ns(src), sys.executable, "-c", V6_ATTACKS,
                        GUESTS[src][2], GUESTS[dst][2], own, link_local(GUESTS[src][2]),
                        V6[dst], V6["rt"]], check=True, timeout=60)
        time.sleep(0.3)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    return out


def test_ipv6_spoofing_nd_spoofing_and_rogue_dhcpv6_are_dropped(fresh: Lab) -> None:
    """A guest sends IPv6 only from its address, its pairs and the EUI-64
    link-local of its MAC; advertises no neighbour address of another's;
    answers no DHCPv6 client. a1's groups let any UDP in: what is dropped
    is port security's doing."""
    lab = fresh
    lab.fw.set_port(lab.port("a1", (Rule("ingress", "ipv6", protocol="udp"),)))
    out = v6_capture(lab, "a2", "a1", V6["a2"])
    assert "own-v6" in out, "the control (its own address) did not pass"
    assert "eui64-ll" in out
    assert "not-dhcpv6" in out, "the control (UDP to 546 not from 547) did not pass"
    assert f"tgt is {V6['a2']}," in out, "the control (an NA for its own address) did not pass"
    assert "spoofed-v6" not in out
    assert "other-ll" not in out, "only the EUI-64 link-local of the MAC is the port's"
    assert "rogue-dhcpv6" not in out
    assert f"tgt is {V6['rt']}," not in out, "an NA claiming the router's address passed"
    vip = "2001:db8:9::200"
    lab.fw.set_port(lab.port("a2", pairs=((vip, ""),)))
    out = v6_capture(lab, "a2", "a1", vip)
    assert "own-v6" in out, "an allowed address pair may send"
    assert f"tgt is {vip}," in out, "and advertise itself"


def test_streams_keep_flowing_while_group_membership_and_rules_churn(fresh: Lab) -> None:
    """Membership and rules churned around two established flows (TCP echo
    and a UDP exchange from b1 to a2, both allowed because b1 is in WEB):
    every line sent comes back after every step, while each step's own
    effect on new connections is checked (b2 joining WEB gains access,
    leaving loses it; a rule added to a2 and removed again; a1 re-filtered).
    Finally b1 itself leaves WEB: its established flow keeps passing (the
    connection-tracking choice above), a new one from it does not."""
    lab = fresh
    a2 = GUESTS["a2"][1]
    b1, b2 = GUESTS["b1"][1], GUESTS["b2"][1]
    web_rules = (Rule("ingress", protocol="tcp", port_min=7100, remote_group_id=WEB),
                 Rule("ingress", protocol="udp", port_min=7101, remote_group_id=WEB))
    extra = (Rule("ingress", protocol="tcp", port_min=7102, remote_cidr=f"{b2}/32"),)
    others = [lab.port(g) for g in GUESTS if g != "a2"]
    lab.fw.apply([*others, lab.port("a2", web_rules)], {**lab.members(), WEB: [b1]})
    lab.popen("a2", ["socat", "TCP-LISTEN:7100,reuseaddr,fork", "EXEC:cat"])
    lab.popen("a2", ["socat", "UDP-LISTEN:7101,reuseaddr", "EXEC:cat"])
    lab.listen("a2", TCP, 7102, "a2-extra")
    deadline = time.monotonic() + 5
    while ":7100 " not in in_ns(lab.ns("a2"), ["ss", "-H", "-tln"]).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    flows = {}
    for name, target in (("tcp", f"TCP:{a2}:7100"), ("udp", f"UDP:{a2}:7101,sourceport=7199")):
        # -T10: a flow cut by a step ends the client, and its read with it.
        client = subprocess.Popen(["ip", "netns", "exec", lab.ns("b1"), "socat", "-T10", "-",
                                   target], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        lab.procs.append(client)  # type: ignore[arg-type]
        flows[name] = client
    sent = 0

    def echoed() -> None:
        nonlocal sent
        sent += 1
        for name, client in flows.items():
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write(f"{name}-{sent}\n")
            client.stdin.flush()
            assert client.stdout.readline() == f"{name}-{sent}\n", \
                f"the established {name} flow was cut at step {sent}"

    echoed()
    for round_ in range(3):
        lab.fw.set_members(WEB, [b1, b2])
        echoed()
        assert ask(lab.ns("b2"), TCP, a2, 7100, timeout=2) != "", f"b2 joined WEB (round {round_})"
        lab.fw.set_members(WEB, [b1])
        echoed()
        lab.fw.set_port(lab.port("a2", web_rules + extra))
        echoed()
        assert ask(lab.ns("b2"), TCP, a2, 7102) == "a2-extra", "the rule added to a2"
        lab.fw.set_port(lab.port("a2", web_rules))
        echoed()
        assert ask(lab.ns("b2"), TCP, a2, 7102, timeout=2) == "", "the rule removed from a2"
        lab.fw.set_port(lab.port("a1", (Rule("ingress", protocol="icmp"),)))
        lab.fw.set_port(lab.port("a1"))
        echoed()
    assert ask(lab.ns("b2"), TCP, a2, 7100, timeout=2) == "", "b2 left WEB"
    lab.fw.set_members(WEB, [])
    echoed()
    got = in_ns(lab.ns("b1"), ["socat", "-T2", "-", f"TCP:{a2}:7100,connect-timeout=2"],
                input="new\n")
    assert "new" not in got.stdout, "b1 left WEB: a new connection from it passed"
