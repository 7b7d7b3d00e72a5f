"""A change of the OVS port filters is in force for the very next packet,
not only in the OpenFlow tables: OVS's datapath keeps a cache of flows
(megaflows, each with the verdict of the tables when it was made) that its
revalidator threads bring up to date after a change, asynchronously; the
bundle's commit reply comes before that. A SYN sent at once after a port
joined a group could still hit the cached "drop" of the last time it left
(and after it left, the cached allow): at the bench's size (10 ports, the
userspace datapath), under load, several of 20 joins were not in force for
their first SYN.

The probe is a process already running in the client's namespace (no fork
between the change and the SYN), asked to connect right after the change
returns: a refusal (RST: the filters let the SYN through) or a time-out
(the SYN dropped)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from common.fabric.ovs import OvsFabric
from common.fabric.ovs_firewall import OvsFirewall, Plugged
from common.fabric.port_firewall import Port, Rule
from common.netns import ensure_netns, remove_netns
from compute import openflow
from tests.lib.guest_servers import in_ns

pytestmark = pytest.mark.integration

PFX = f"dpc{os.getpid() % 100000}"
SEG = 10
GROUP = "00000000-0000-4000-8000-0000000000aa"
GUESTS = {"g1": ("10.8.0.11", "02:00:08:00:00:11"), "g2": ("10.8.0.12", "02:00:08:00:00:12")}
SSH = Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GROUP)
PROBER = """
import socket, sys
for line in sys.stdin:
    host, port, wait = line.split()
    s = socket.socket()
    s.settimeout(float(wait))
    try:
        s.connect((host, int(port)))
        print("open", flush=True)
    except ConnectionRefusedError:
        print("refused", flush=True)
    except TimeoutError:
        print("dropped", flush=True)
    finally:
        s.close()
"""


class ExtraPortsOvsFirewall(OvsFirewall):
    """Ports "x...": flows for OpenFlow numbers no interface has (the bench's
    other ports)."""

    def plugged_many(self, devices: Sequence[str]) -> dict[str, Plugged]:
        extra = {d: Plugged(10000 + int(d.rsplit("-", 1)[1]), 100 + SEG)
                 for d in devices if d.startswith("x")}
        return {**extra, **super().plugged_many([d for d in devices if d not in extra])}


class Lab:
    def __init__(self) -> None:
        self.fabric = OvsFabric(f"{PFX}br")
        self.fw = ExtraPortsOvsFirewall(self.fabric.bridge,
                                        flows=openflow.Connection(self.fabric.bridge))
        self.prober: subprocess.Popen[str] | None = None

    def ns(self, g: str) -> str:
        return f"{PFX}-{g}"

    def port(self, g: str, rules: tuple[Rule, ...]) -> Port:
        ip, mac = GUESTS[g]
        return Port(self.fabric.device_name(self.ns(g)), mac, (ip,), (), rules)

    def connect(self, port: int, wait: float) -> str:
        assert self.prober is not None
        assert self.prober.stdin is not None
        assert self.prober.stdout is not None
        self.prober.stdin.write(f"{GUESTS['g2'][0]} {port} {wait}\n")
        self.prober.stdin.flush()
        return self.prober.stdout.readline().strip()


@pytest.fixture(scope="module")
def lab(host_services: None) -> Iterator[Lab]:
    lab = Lab()
    lab.fabric.setup()
    made = []
    try:
        for g, (ip, mac) in GUESTS.items():
            ensure_netns(lab.ns(g))
            made.append(lab.ns(g))
            lab.fabric.plug(lab.ns(g), SEG, lab.ns(g), "eth0", mac)
            in_ns(lab.ns(g), ["ip", "link", "set", "lo", "up"])
            in_ns(lab.ns(g), ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
        lab.prober = subprocess.Popen(["ip", "netns", "exec", lab.ns("g1"), sys.executable,
                                       "-c", PROBER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        lab.fw.setup()
        yield lab
    finally:
        if lab.prober is not None:
            lab.prober.kill()
            lab.prober.wait()
        for ns in made:
            remove_netns(ns)
        lab.fw.close()
        lab.fabric.teardown()


def test_a_join_and_a_leave_are_in_force_for_the_next_syn(lab: Lab) -> None:
    """The bench's steps at its size: 10 ports, every one with a rule naming
    the group; g1 joins (the SYN to g2:22 must be answered) and leaves (it
    must be dropped), 20 times."""
    others = [Port(f"x{PFX}-{i}", f"02:00:09:00:00:{i:02x}",
                   (str(ipaddress.IPv4Address("10.9.0.0") + i),), (), (SSH, Rule("egress")))
              for i in range(8)]
    members = [p.ips[0] for p in others]
    lab.fw.apply([lab.port("g1", (Rule("egress"),)), lab.port("g2", (SSH, Rule("egress"))),
                  *others], {GROUP: members})
    missed = []
    for trial in range(20):
        lab.fw.set_members(GROUP, [*members, GUESTS["g1"][0]])
        if (got := lab.connect(22, 1.0)) != "refused":
            missed.append(f"trial {trial}: joined, the SYN was {got}")
        lab.fw.set_members(GROUP, members)
        # A leave's stale allow would be answered at once: 0.5 s is ample.
        if (got := lab.connect(22, 0.5)) != "dropped":
            missed.append(f"trial {trial}: left, the SYN was {got}")
    assert not missed
