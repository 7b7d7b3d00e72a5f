"""Security groups and port security on the Open vSwitch fabric, in OpenFlow
with connection tracking (``ct()``, which the userspace datapath implements),
in the manner of Neutron's openvswitch firewall driver.

The bridge's pipeline (the fabric's own default is table 0 ``NORMAL``):

    table 0   in_port=<filtered port>        -> 71 (its egress)
              anything else                  -> 60
    table 71  port security of the port: ARP with its (MAC, IP) -> 60; DHCP
              client -> 60; DHCP and DHCPv6 server replies, router
              advertisements -> drop; neighbour solicitations and
              advertisements (for its own addresses) from its IPv6 addresses
              -> 60; IPv4/IPv6 from its (MAC, IP) pairs (IPv6: with the EUI-64
              link-local of its MACs) -> ct(zone=VLAN, table 72); else drop
    table 72  egress rules: established/related -> 60; invalid -> drop; new and
              allowed -> ct(commit), 60; else drop
    table 60  IP to a filtered port's MAC -> reg7=port, 81; else NORMAL
    table 81  DHCP replies and neighbour discovery -> NORMAL; IP -> ct(zone=VLAN,
              table 82)
    table 82  ingress rules, like 72, then NORMAL (which keeps the VLANs apart)

A rule naming a remote group is a conjunctive match, shared as Neutron's
openvswitch firewall shares it: one conjunction id per (remote group,
ethertype, direction) on the bridge, whatever the ports. Its second clause
is the rules that name the group, one flow per port rule
(``conjunction(id, 2/2)``, matching the port: ``in_port`` or ``reg7``); its
first clause is the group's member addresses, one flow per address naming
the conjunction of every group it is in (``conjunction(id, 1/2)``); each
port has one flow per conjunction it uses that accepts a packet of its own
that completed it (``conj_id=id`` and the port). So N rules x M members are
N + M flows, and a member joining or leaving is one flow of at most as many
conjunctions as the groups it is in: the same change at 10 or 1,000 ports.
A port's flows carry its cookie.

Every change computes the bridge's desired flows and sends only the
difference (flows added, replaced, deleted) as one OpenFlow 1.4 bundle, all
of it or nothing. The compute agent sends it on one OpenFlow connection per
bridge that stays open (``compute.openflow``, given as ``flows``): a change
costs its flows, not a forked ``ovs-ofctl`` and a new connection. Without
one, each change forks ``ovs-ofctl --bundle`` (tools and tests that have
no compute room at hand).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import ipaddress
import logging
import re
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from common.fabric.base import FabricError
from common.fabric.ovs import vsctl
from common.fabric.port_firewall import Port, Rule, v6_sources

log = logging.getLogger(__name__)

T_EGRESS, T_EGRESS_CT, T_LOOKUP, T_INGRESS, T_INGRESS_CT = 71, 72, 60, 81, 82
Flow = tuple[int, int, str]  # table, priority, match


class FlowSender(Protocol):
    """Sends flow changes (``ovs-ofctl --bundle add-flows`` lines) to a
    bridge as one atomic bundle; raises FabricError if the switch refuses
    any of them (then none is applied). Returns once the datapath follows
    them: OVS's datapath caches flows with the verdicts of the tables when
    they were made, and revalidates them after a change asynchronously."""

    def send_lines(self, lines: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class OfctlSender:
    """A FlowSender that forks ``ovs-ofctl --bundle`` per change. It does
    not wait for the datapath (``ovs-appctl revalidator/wait`` can sleep
    seconds on a quiet bridge; compute.ovs_datapath wakes ovs-vswitchd
    while it waits): for tools, not the agent."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge

    def send_lines(self, lines: Sequence[str]) -> None:
        proc = subprocess.run(["ovs-ofctl", "-O", "OpenFlow14", "--bundle", "add-flows",
                               self.bridge, "-"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise FabricError(f"ovs-ofctl on {self.bridge}: {proc.stderr.strip()[:500]}")

    def close(self) -> None:
        pass


@dataclasses.dataclass(frozen=True, slots=True)
class Plugged:
    """A port as OVS knows it: its OpenFlow port number and access VLAN."""

    ofport: int
    vlan: int


def cookie(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest()[:15], 16)


ConjKey = tuple[str, str, str]  # remote group, ethertype, direction
MEMBERS_COOKIE = cookie("members")
_CONJ_ONE = re.compile(r"conjunction\(\d+,\d/\d\)")
_CONJ = re.compile(rf"{_CONJ_ONE.pattern}(,{_CONJ_ONE.pattern})*")


def conj_hash(key: ConjKey) -> int:
    """A conjunction id's first choice for `key`: the same on every start of
    the agent (ids stay put across restarts, so the diff is empty)."""
    return int(hashlib.sha1("/".join(key).encode()).hexdigest()[:7], 16) or 1


def _l4(rule: Rule) -> str:
    v4 = rule.ethertype == "ipv4"
    if rule.protocol in ("tcp", "udp"):
        m = rule.protocol + ("" if v4 else "6")
        if rule.port_min:
            lo, hi = int(rule.port_min), int(rule.port_max or rule.port_min)
            # OpenFlow matches a range as masks; one flow per value is simpler
            # for small ranges, masks are left for later: a range is its ends.
            m += f",tp_dst={lo}" if lo == hi else ""
        return m
    if rule.protocol == "icmp":
        m = "icmp" if v4 else "icmp6"
        if rule.icmp_type >= 0:
            m += f",icmp_type={int(rule.icmp_type)}"
            if rule.icmp_code >= 0:
                m += f",icmp_code={int(rule.icmp_code)}"
        return m
    base = "ip" if v4 else "ipv6"
    if rule.protocol != "all":
        return f"{base},nw_proto={int(rule.protocol)}"
    return base


def _port_ranges(rule: Rule) -> list[str]:
    """tp_dst matches covering a rule's range (value/mask pairs)."""
    lo, hi = int(rule.port_min), int(rule.port_max or rule.port_min)
    if not rule.port_min or lo == hi:
        return [""]
    out = []
    while lo <= hi:
        size = 1
        while lo % (size * 2) == 0 and lo + size * 2 - 1 <= hi:
            size *= 2
        out.append(f",tp_dst=0x{lo:x}/0x{(0xFFFF & ~(size - 1)):x}")
        lo += size
    return out


def _remote(rule: Rule, direction_field: str) -> str:
    if not rule.remote_cidr:
        return ""
    field = ("nw_" if rule.ethertype == "ipv4" else "ipv6_") + direction_field
    return f",{field}={ipaddress.ip_network(rule.remote_cidr)}"


def _diff(have: Mapping[Flow, tuple[int, str]], want: Mapping[Flow, tuple[int, str]]
          ) -> list[str]:
    """ovs-ofctl bundle lines turning flows `have` into `want`."""
    lines = [f"delete_strict table={t},priority={p},{m}" for (t, p, m) in have.keys() - want.keys()]
    for (t, p, m), (ck, actions) in want.items():
        if have.get((t, p, m)) != (ck, actions):
            lines.append(f"add table={t},priority={p},cookie={ck:#x},{m},actions={actions}")
    return lines


@functools.lru_cache(maxsize=1 << 16)
def _member_match(addr: str, ethertype: str, egress: bool) -> str:
    """The match of a member address's flow ("" if not of `ethertype`)."""
    net = _net(addr)
    if (net.version == 4) != (ethertype == "ipv4"):
        return ""
    field = ("nw_" if net.version == 4 else "ipv6_") + ("dst" if egress else "src")
    return f"ct_state=+new-est+trk,{'ip' if net.version == 4 else 'ipv6'},{field}={net}"


@functools.lru_cache(maxsize=1 << 16)
def _canon(addr: str) -> str:
    return str(_net(addr))


@functools.lru_cache(maxsize=1 << 16)
def _net(addr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(addr, strict=False)


class OvsFirewall:
    """The port filters of OVS bridge `bridge`; one lock serialises changes.
    `flows` sends the flow changes (default: a forked ovs-ofctl each)."""

    def __init__(self, bridge: str, flows: FlowSender | None = None) -> None:
        self.bridge = bridge
        self.flows: FlowSender = flows or OfctlSender(bridge)
        self._lock = threading.Lock()
        # What is installed: each port's flows (and the conjunctions its
        # rules open per remote group), and the member flows.
        self._port_flows_of: dict[str, dict[Flow, tuple[int, str]]] = {}
        self._conj_of: dict[str, frozenset[ConjKey]] = {}
        # The conjunction id of each (remote group, ethertype, direction)
        # some port's rules name, shared by all those ports.
        self._conj_ids: dict[ConjKey, int] = {}
        self._member_flow_cache: dict[Flow, tuple[int, str]] = {}
        self._ports: dict[str, Port] = {}
        self._members: dict[str, tuple[str, ...]] = {}
        # Where each port with flows is plugged (its OpenFlow number, VLAN).
        self._plugged: dict[str, Plugged] = {}

    # ------------------------------------------------------------ OpenFlow

    def run(self, lines: Sequence[str]) -> None:
        """Flow changes (``ovs-ofctl --bundle add-flows`` lines) as one atomic
        bundle; a refusal is a FabricError and changes no flow."""
        self.flows.send_lines(lines)

    def close(self) -> None:
        self.flows.close()

    def plugged(self, device: str) -> Plugged:
        ofport = vsctl("get", "interface", device, "ofport").strip()
        tag = vsctl("get", "port", device, "tag").strip()
        if not ofport.isdigit() or int(ofport) <= 0 or not tag.isdigit():
            raise FabricError(f"{device}: not an access port of {self.bridge}")
        return Plugged(int(ofport), int(tag))

    def plugged_many(self, devices: Sequence[str]) -> dict[str, Plugged]:
        """`plugged` of many devices by two OVSDB reads (not two per device);
        the devices that are not access ports of the bridge are left out."""
        if len(devices) <= 2:
            out = {}
            for dev in devices:
                with contextlib.suppress(FabricError):
                    out[dev] = self.plugged(dev)
            return out

        def table(tbl: str, column: str) -> dict[str, str]:
            text = vsctl("--format=csv", "--data=bare", "--no-headings",
                         f"--columns=name,{column}", "list", tbl)
            return dict(line.split(",", 1) for line in text.splitlines() if "," in line)

        ofports, tags = table("Interface", "ofport"), table("Port", "tag")
        return {dev: Plugged(int(ofports[dev]), int(tags[dev])) for dev in devices
                if ofports.get(dev, "").isdigit() and int(ofports[dev]) > 0
                and tags.get(dev, "").isdigit()}

    def setup(self) -> None:
        self.run([f"add table=0,priority=1,actions=resubmit(,{T_LOOKUP})",
                  f"add table={T_LOOKUP},priority=0,actions=NORMAL"])

    # ------------------------------------------------------------ flows

    def _conj_id(self, key: ConjKey) -> int:
        """The bridge's conjunction id for `key` (its hash, or the next free
        number if another key has it)."""
        cid = self._conj_ids.get(key)
        if cid is None:
            used = set(self._conj_ids.values())
            cid = conj_hash(key)
            while cid in used:
                cid = cid % 0xFFFFFFF + 1
            self._conj_ids[key] = cid
        return cid

    def _port_flows(self, port: Port, at: Plugged, uses: set[ConjKey]
                    ) -> dict[Flow, tuple[int, str]]:
        c = cookie(port.device)
        o, z = at.ofport, at.vlan
        out: dict[Flow, tuple[int, str]] = {}

        def add(table: int, prio: int, match: str, actions: str) -> None:
            have = out.get((table, prio, match))
            if have and _CONJ.fullmatch(have[1]) and _CONJ.fullmatch(actions):
                # Two rules with one match and different remote groups: one
                # flow naming both conjunctions (a flow per rule would clash).
                actions = ",".join(sorted({*_CONJ_ONE.findall(have[1]),
                                           *_CONJ_ONE.findall(actions)}))
            out[(table, prio, match)] = (c, actions)

        add(0, 100, f"in_port={o}", f"resubmit(,{T_EGRESS})")
        to_lookup = f"resubmit(,{T_LOOKUP})"
        v4 = [(port.mac, ip) for ip in port.ips if ipaddress.ip_address(ip).version == 4]
        v4 += [(m or port.mac, p) for p, m in port.pairs if ipaddress.ip_network(p).version == 4]
        for mac, ip in v4:
            net = ipaddress.ip_network(ip)
            add(T_EGRESS, 100, f"in_port={o},arp,dl_src={mac},arp_spa={net},arp_sha={mac}",
                to_lookup)
            add(T_EGRESS, 90, f"in_port={o},ip,dl_src={mac},nw_src={net}",
                f"ct(table={T_EGRESS_CT},zone={z})")
        v6 = v6_sources(port)
        for mac in sorted({port.mac, *(m or port.mac for _, m in port.pairs)}):
            add(T_EGRESS, 100, f"in_port={o},udp,dl_src={mac},nw_src=0.0.0.0,tp_src=68,tp_dst=67",
                to_lookup)
            # Duplicate address detection and its MLD reports come from ::.
            for t in (135, 143, 131):
                add(T_EGRESS, 92, f"in_port={o},icmp6,dl_src={mac},ipv6_src=::,icmp_type={t}",
                    to_lookup)
        for mac, src in v6:
            for t in (133, 135):
                add(T_EGRESS, 92, f"in_port={o},icmp6,dl_src={mac},ipv6_src={src},icmp_type={t}",
                    to_lookup)
            # ND spoofing: an advertisement only for one of the port's addresses.
            for _, target in v6:
                add(T_EGRESS, 93, f"in_port={o},icmp6,dl_src={mac},ipv6_src={src},"
                    f"icmp_type=136,nd_target={target}", to_lookup)
            add(T_EGRESS, 90, f"in_port={o},ipv6,dl_src={mac},ipv6_src={src}",
                f"ct(table={T_EGRESS_CT},zone={z})")
        add(T_EGRESS, 91, f"in_port={o},icmp6,icmp_type=136", "drop")
        add(T_EGRESS, 95, f"in_port={o},udp,tp_src=67", "drop")
        add(T_EGRESS, 95, f"in_port={o},udp6,tp_src=547,tp_dst=546", "drop")
        add(T_EGRESS, 95, f"in_port={o},icmp6,icmp_type=134", "drop")
        add(T_EGRESS, 10, f"in_port={o}", "drop")

        add(T_LOOKUP, 90, f"ip,dl_dst={port.mac}", f"load:{o}->NXM_NX_REG7[],"
            f"resubmit(,{T_INGRESS})")
        add(T_LOOKUP, 90, f"ipv6,dl_dst={port.mac}", f"load:{o}->NXM_NX_REG7[],"
            f"resubmit(,{T_INGRESS})")
        add(T_INGRESS, 100, f"reg7={o},udp,tp_src=67,tp_dst=68", "NORMAL")
        for t in (134, 135, 136):
            add(T_INGRESS, 100, f"reg7={o},icmp6,icmp_type={t}", "NORMAL")
        add(T_INGRESS, 90, f"reg7={o},ip", f"ct(table={T_INGRESS_CT},zone={z})")
        add(T_INGRESS, 90, f"reg7={o},ipv6", f"ct(table={T_INGRESS_CT},zone={z})")

        for table, key, done in ((T_EGRESS_CT, f"in_port={o}", to_lookup),
                                 (T_INGRESS_CT, f"reg7={o}", "NORMAL")):
            add(table, 100, f"{key},ct_state=-new+est-inv+trk", done)
            add(table, 100, f"{key},ct_state=+rel-inv+trk", done)
            add(table, 100, f"{key},ct_state=+inv+trk", "drop")
            add(table, 10, key, "drop")
        for rule in port.rules:
            egress = rule.direction == "egress"
            table, key_match = (T_EGRESS_CT, f"in_port={o}") if egress else (
                T_INGRESS_CT, f"reg7={o}")
            done = to_lookup if egress else "NORMAL"
            base = f"{key_match},ct_state=+new-est+trk,{_l4(rule)}"
            base += _remote(rule, "dst" if egress else "src")
            if rule.remote_group_id:
                ckey = (rule.remote_group_id, rule.ethertype, rule.direction)
                uses.add(ckey)
                cid = self._conj_id(ckey)
                # The conjunction is the bridge's; what completes it for this
                # port is accepted by this port's flow (its own zone).
                add(table, 70, f"conj_id={cid},{key_match},"
                    f"{'ip' if rule.ethertype == 'ipv4' else 'ipv6'}",
                    f"ct(commit,zone={z}),{done}")
            for ports_match in _port_ranges(rule):
                match = base + ports_match
                if rule.remote_group_id:
                    add(table, 70, match, f"conjunction({cid},2/2)")
                else:
                    add(table, 80, match, f"ct(commit,zone={z}),{done}")
        return out

    def _member_flows(self, used: Iterable[ConjKey], members: Mapping[str, Sequence[str]],
                      only: set[str] | None = None) -> dict[Flow, tuple[int, str]]:
        """One flow per (table, member address) naming the conjunction of
        every group it is in that some port's rules name: an address in two
        groups is one flow, not two that clash. `only`: the flows of those
        addresses alone."""
        per_addr: dict[tuple[int, str], list[int]] = {}
        for key in sorted(used):
            gid, ethertype, direction = key
            cid = self._conj_ids[key]
            egress = direction == "egress"
            table = T_EGRESS_CT if egress else T_INGRESS_CT
            addrs = members.get(gid, ())
            for addr in addrs if only is None else only.intersection(addrs):
                match = _member_match(addr, ethertype, egress)
                if match:
                    per_addr.setdefault((table, match), []).append(cid)
        return {(table, 70, match): (MEMBERS_COOKIE,
                                     ",".join(f"conjunction({c},1/2)" for c in sorted(set(cids))))
                for (table, match), cids in per_addr.items()}

    def _member_flows_after(self, used: set[ConjKey], wanted: Mapping[str, tuple[str, ...]]
                            ) -> dict[Flow, tuple[int, str]]:
        """The member flows for `wanted` when only members changed (the
        conjunctions the ports use did not): the flows of the addresses that
        joined or left a group computed again, the rest kept. A join costs
        its address, not the group's other members."""
        moved: set[str] = set()
        for gid in wanted.keys() | self._members.keys():
            old, new = self._members.get(gid, ()), wanted.get(gid, ())
            if old != new:
                moved |= set(old).symmetric_difference(new)
        flows = dict(self._member_flow_cache)
        for addr in moved:
            for ethertype in ("ipv4", "ipv6"):
                for egress, table in ((True, T_EGRESS_CT), (False, T_INGRESS_CT)):
                    match = _member_match(addr, ethertype, egress)
                    if match:
                        flows.pop((table, 70, match), None)
        flows.update(self._member_flows(used, wanted, only=moved))
        return flows

    # ------------------------------------------------------------ changes

    def apply(self, ports: Sequence[Port], members: Mapping[str, Sequence[str]]) -> int:
        """The bridge's whole desired state, sent as the difference from the
        flows this object last installed, in one bundle. Returns the number of
        flow changes (0: nothing changed).

        Only the ports that changed have their flows computed again (a
        change costs that port, not the bridge), and only new ones are looked
        up in OVSDB; the
        member flows are recomputed when members or a port's conjunctions
        change. The same state again asks OVSDB for every port (a VM's tap
        gets a new OpenFlow number when it starts: the agent applies its
        last push again then)."""
        with self._lock:
            want_ports = {p.device: p for p in ports}
            # One spelling per network ("10.0.0.5" and "10.0.0.5/32" are one
            # flow's match): a member's flows are found again by its text.
            wanted = {g: tuple(_canon(x) for x in a) for g, a in members.items()}
            same = want_ports == self._ports and wanted == self._members
            refresh = set(want_ports) if same else {
                d for d, p in want_ports.items()
                if (self._ports.get(d) is not p and self._ports.get(d) != p)
                or d not in self._port_flows_of}
            new_flows: dict[str, dict[Flow, tuple[int, str]]] = {}
            new_conj: dict[str, frozenset[ConjKey]] = {}
            # A port whose rules changed keeps its OpenFlow number: no OVSDB
            # round trip (two forks of ovs-vsctl) for a rule change.
            known = {} if same else {d: self._plugged[d] for d in refresh
                                     if d in self._plugged}
            where = {**known, **self.plugged_many(sorted(refresh - known.keys()))}
            for dev in sorted(refresh):
                at = where.get(dev)
                if at is None:
                    # Not on the bridge now (a stopped VM's tap): no flows until
                    # it is back, and the next push after that.
                    log.info("port filters: %s is not on %s", dev, self.bridge)
                    new_flows[dev], new_conj[dev] = {}, frozenset()
                    continue
                uses: set[ConjKey] = set()
                new_flows[dev] = self._port_flows(want_ports[dev], at, uses)
                new_conj[dev] = frozenset(uses)
            gone = [d for d in self._port_flows_of if d not in want_ports]
            lines: list[str] = []
            for dev in gone:
                lines += _diff(self._port_flows_of[dev], {})
            for dev, flows in new_flows.items():
                lines += _diff(self._port_flows_of.get(dev, {}), flows)
            conj_changed = bool(gone) or any(self._conj_of.get(d) != c
                                             for d, c in new_conj.items())
            conj_of = self._conj_of  # unchanged: every new_conj entry equals its own
            if conj_changed:
                gone_set = set(gone)
                conj_of = {**{d: c for d, c in self._conj_of.items() if d not in gone_set},
                           **new_conj}
            member_flows = self._member_flow_cache
            if conj_changed or wanted != self._members:
                # The keys some port's rules name.
                used: set[ConjKey] = set().union(*conj_of.values())
                member_flows = (self._member_flows(used, wanted) if conj_changed
                                else self._member_flows_after(used, wanted))
                lines += _diff(self._member_flow_cache, member_flows)
            if lines:
                self.run(lines)
            for dev in gone:
                del self._port_flows_of[dev]
            self._port_flows_of.update(new_flows)
            for dev in gone:
                self._plugged.pop(dev, None)
            for dev in new_flows:
                if dev in where:
                    self._plugged[dev] = where[dev]
                else:
                    self._plugged.pop(dev, None)
            self._conj_of = conj_of
            self._member_flow_cache = member_flows
            if conj_changed:  # ids no port names any more are free again
                self._conj_ids = {k: v for k, v in self._conj_ids.items() if k in used}
            self._ports = want_ports
            self._members = wanted
            return len(lines)

    def set_port(self, port: Port) -> None:
        self.apply([*(p for d, p in self._ports.items() if d != port.device), port],
                   self._members)

    def remove_port(self, device: str) -> None:
        self.apply([p for d, p in self._ports.items() if d != device], self._members)

    def set_members(self, group_id: str, addresses: Iterable[str]) -> None:
        self.apply(list(self._ports.values()), {**self._members, group_id: tuple(addresses)})
