"""Security groups and port security on the Linux-bridge fabric, in nftables.

Where a guest plugs in (its veth's fabric end, a port of the segment's
bridge) two tables filter it, in the fabric's network namespace:

* ``bridge cloudnet_l2`` (stateless port security): a verdict map keyed on
  the input port jumps to the port's chain, which drops a frame whose source
  MAC, IPv4 source or ARP sender is not the port's (or one of its allowed
  address pairs), DHCP server replies (DHCP guard) and IPv6 router
  advertisements (RA guard). Ports not in the map (the router's) pass.
* ``inet cloudnet_sg`` (stateful security groups): bridged IP traffic walks
  the inet hooks through br_netfilter (``bridge-nf-call-iptables``). Its
  prerouting hook sees the input port (``iifname @eg_ports`` jumps to the
  egress chain); its forward hook sees only the bridge, so the bridge
  family's forward hook, which runs first, marks a frame with the number of
  the port it leaves by (``meta mark @in_ports`` jumps to the ingress
  chain). One chain per direction serves every port: established and
  related pass, invalid is dropped, then the rules, which are elements of
  sets keyed by the port (``sg_elements``), accept; the rest is dropped. A
  rule's remote group is a named set of the group's member addresses, so N
  rules x M members stay N + M elements.

Every change is one transaction that touches only what changed: a port's
rule elements, its port-security chain and map elements, or a group's set
elements. A rule change adds no rule: the kernel validates a table's whole
chain graph at a commit that adds rules, which with a chain per port grew
with the ports. The Linux kernel here has no bridge-family conntrack
(``nf_conntrack_bridge``), which is why the stateful part rides br_netfilter.

Conntrack is the fabric namespace's: two tenants' guests on different
segments that use the same addresses and ports at the same time share a
conntrack entry (zones by segment are not set).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
import re
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence

from common import libnft, nft_elements, nft_rules
from common.fabric import sg_elements
from common.fabric.base import FabricError
from common.netns import run_in_netns

L2_TABLE = "cloudnet_l2"
SG_TABLE = "cloudnet_sg"
# DHCPv4 and ICMPv6 neighbour discovery: a guest needs them before it has an
# address, and they are never connections conntrack could call established.
DHCP_CLIENT = "udp sport 68 udp dport 67 accept"
DHCP_SERVER_REPLY = "udp sport 67 udp dport 68 accept"
ND_TYPES = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }"


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One allow rule of one of the port's groups (netmgr flattens them)."""

    direction: str  # ingress | egress
    ethertype: str = "ipv4"  # ipv4 | ipv6
    protocol: str = "all"  # tcp | udp | icmp | all | a number
    port_min: int = 0
    port_max: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    remote_cidr: str = ""
    remote_group_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Port:
    """A guest's attachment: ``device`` is its fabric-side interface."""

    device: str
    mac: str
    ips: tuple[str, ...]
    # (address or CIDR, MAC) the guest may also send from.
    pairs: tuple[tuple[str, str], ...] = ()
    rules: tuple[Rule, ...] = ()


def group_set(group_id: str, ethertype: str, networks: bool = False) -> str:
    """A remote group's members: single addresses in a hash set (adding one
    needs no look at the others), networks (allowed pairs given as CIDRs) in
    an interval set of their own."""
    kind = ("n" if networks else "g") + ("4_" if ethertype == "ipv4" else "6_")
    return sg_elements.hashed_name(kind, group_id)


def group_objects(group_id: str) -> list[str]:
    """Every set a remote group has in the table: its members' sets and its
    rule sets."""
    return [*(group_set(group_id, e, n) for e in ("ipv4", "ipv6") for n in (False, True)),
            *(sg_elements.group_rule_set(group_id, v, k, d)
              for d in ("egress", "ingress") for v in (4, 6) for k in ("x", "y"))]


# The shape of group_objects' names, to find an earlier agent's in the table.
_GROUP_OBJECT = re.compile(r"\bset ((?:[gn][46]|r[46][xy][ei])_[0-9a-f]{16}) \{")


def _set_decl(group_id: str, ethertype: str, networks: bool) -> str:
    kind = "ipv4_addr" if ethertype == "ipv4" else "ipv6_addr"
    flags = " flags interval;" if networks else ""
    return (f"add set inet {SG_TABLE} {group_set(group_id, ethertype, networks)} "
            f"{{ type {kind};{flags} }}")


def port_chain(kind: str, device: str) -> str:
    return sg_elements.hashed_name(f"{kind}_", device)


@functools.lru_cache(maxsize=1 << 16)
def _family(value: str) -> int:
    return ipaddress.ip_network(value, strict=False).version


@functools.lru_cache(maxsize=1 << 16)
def _element(value: str) -> str:
    """An address or CIDR as a set element (a single address without /32)."""
    net = ipaddress.ip_network(value, strict=False)
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _set_of(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def link_local(mac: str) -> str:
    """The EUI-64 IPv6 link-local address of `mac` (RFC 4291 appendix A)."""
    try:
        b = [int(x, 16) for x in mac.split(":")]
        if len(b) != 6 or not all(0 <= x <= 255 for x in b):
            raise ValueError(mac)
    except ValueError:
        raise FabricError(f"not a MAC address: {mac[:20]!r}") from None
    b[0] ^= 0x02
    eui = bytes([*b[:3], 255, 254, *b[3:]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def v6_sources(port: Port) -> list[tuple[str, str]]:
    """(MAC, IPv6 address or network) pairs the port may send from: its
    addresses, its pairs, and the EUI-64 link-local of each of its MACs."""
    out = [(port.mac, str(ipaddress.ip_network(ip))) for ip in port.ips if _family(ip) == 6]
    out += [(m or port.mac, str(ipaddress.ip_network(ip)))
            for ip, m in port.pairs if _family(ip) == 6]
    out += [(m, f"{link_local(m)}/128") for m in _macs(port)]
    return out


def _macs(port: Port) -> list[str]:
    return sorted({port.mac, *(m or port.mac for _, m in port.pairs)})


def _na_target_differs(net: str) -> str:
    """The target of a neighbour advertisement (16 bytes at offset 8 of the
    ICMPv6 header) is not in `net`. nft 1.0 names no such field, so it is a
    raw payload match (a masked one for a network)."""
    n = ipaddress.IPv6Network(net)
    value = f"0x{int(n.network_address):032x}"
    if n.prefixlen == 128:
        return f"@th,64,128 != {value}"
    return f"@th,64,128 & 0x{int(n.netmask):032x} != {value}"


def l2_chain_rules(port: Port) -> list[str]:
    """Stateless port security. Every match is a plain comparison (several in
    one rule are ANDed), never an anonymous set: each anonymous set is a set
    of the table, and libnftables lists every set of a table before an
    element or rule is added, so sets per port make every change cost
    O(ports) (``docs/security-groups.md``)."""
    v4 = [(port.mac, str(ipaddress.ip_network(ip))) for ip in port.ips if _family(ip) == 4]
    v4 += [(m or port.mac, str(ipaddress.ip_network(ip)))
           for ip, m in port.pairs if _family(ip) == 4]
    v6 = v6_sources(port)
    # What a guest never serves: DHCP (DHCP guard), DHCPv6 (DHCPv6 guard),
    # router advertisements (RA guard).
    out = ["udp sport 67 drop", "udp sport 547 udp dport 546 drop",
           "icmpv6 type nd-router-advert drop"]
    out.append(" ".join(f"ether saddr != {m}" for m in _macs(port)) + " drop")
    out += [f"ether type arp arp saddr ether {m} arp saddr ip {ip} return" for m, ip in v4]
    out.append("ether type arp drop")
    # A guest's DHCP DISCOVER/REQUEST comes from 0.0.0.0 before it has an address.
    out.append("ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return")
    out += [f"ether type ip ether saddr {m} ip saddr {ip} return" for m, ip in v4]
    out.append("ether type ip drop")
    # ND spoofing: an advertisement only for the port's own addresses.
    out.append("icmpv6 type nd-neighbor-advert "
               + " ".join(_na_target_differs(ip) for _, ip in v6) + " drop")
    # Duplicate address detection and its MLD reports come from ::.
    out += ["ip6 saddr :: icmpv6 type nd-neighbor-solicit return",
            "ip6 saddr :: icmpv6 type mld2-listener-report return",
            "ip6 saddr :: icmpv6 type mld-listener-report return"]
    out += [f"ether type ip6 ether saddr {m} ip6 saddr {ip} return" for m, ip in v6]
    out.append("ether type ip6 drop")
    out.append("return")
    return out


def _chain(family: str, table: str, name: str, rules: Sequence[str], new: bool) -> list[str]:
    """A chain (re)filled; an existing one is only flushed."""
    return [*([f"add chain {family} {table} {name}"] if new else []),
            f"flush chain {family} {table} {name}",
            *(f"add rule {family} {table} {name} {r}" for r in rules)]


_ELEMENT_OP = re.compile(
    rf"(add|delete) element inet {SG_TABLE} (g[46]_[0-9a-f]{{16}}) \{{ ([0-9a-f.:, ]+) \}}")


def address_element_ops(commands: Sequence[str]) -> list[nft_elements.Change] | None:
    """The commands as element changes of remote groups' address sets (hash
    sets of single addresses), or None if any command is something else."""
    ops: list[nft_elements.Change] = []
    for c in commands:
        m = _ELEMENT_OP.fullmatch(c)
        if m is None:
            return None
        ops.append((m[1], m[2], [nft_elements.key_bytes(a) for a in m[3].split(", ")]))
    return ops


_Members = tuple[frozenset[str], dict[str, int]]
CIDR_SETS = [sg_elements.cidr_set(v, k, d) for d in ("egress", "ingress") for v in (4, 6)
             for k in ("x", "y")]


def _key_decl(kind: str, version: int, direction: str, with_address: bool) -> str:
    return (f"{{ typeof {sg_elements.set_key(kind, version, direction, with_address)}; "
            "flags interval; }")


def _cidr_rules(direction: str) -> list[str]:
    """The shared chain's lookups of the rules with a CIDR (or none)."""
    out = []
    for v in (4, 6):
        for k in ("x", "y"):
            key = sg_elements.set_key(k, v, direction, True)
            out.append(f"meta nfproto ipv{v} {key} @{sg_elements.cidr_set(v, k, direction)} "
                       "accept")
    return out


def group_rules(group_id: str, direction: str) -> list[str]:
    """A remote group's lookups in a direction's group chain: its members (an
    address set and a network set) and the rules of the host's ports that
    name it (a set per protocol kind)."""
    out = []
    for v, eth in ((4, "ipv4"), (6, "ipv6")):
        addr = ("ip " if v == 4 else "ip6 ") + ("daddr" if direction == "egress" else "saddr")
        for nets in (False, True):
            for k in ("x", "y"):
                out.append(f"meta nfproto ipv{v} {addr} @{group_set(group_id, eth, nets)} "
                           f"{sg_elements.set_key(k, v, direction, False)} "
                           f"@{sg_elements.group_rule_set(group_id, v, k, direction)} accept")
    return out


class PortFirewall:
    """The port filters of the bridges in namespace `netns` ("": the host's
    root namespace, where the VXLAN fabric's bridges are); one lock
    serialises changes. In the root namespace br_netfilter is turned on for
    every bridge of the host: traffic of bridges that are not the fabric's
    then walks the host's inet hooks too (it passes: no port of theirs is in
    the sets)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._nft = libnft.Context(netns)
        self._lock = threading.Lock()
        self._ports: dict[str, Port] = {}
        # Per remote group: the member list last applied, and how many of
        # its entries each element of the group's sets stands for.
        self._members: dict[str, _Members] = {}
        # Remote groups whose sets and lookups are in the table.
        self._groups: set[str] = set()
        # Whether the table was read once for the group sets an earlier
        # agent left (groups no longer named while it was down).
        self._leftovers_read = False
        # A port's number, the mark that names it as the output port.
        self._marks: dict[str, int] = {}
        self._compiler: nft_rules.Compiler | None = None
        self._nl: socket.socket | None = None
        # The first change empties the rule sets (a restarted agent's
        # elements may be cut differently).
        self._fresh = True

    def _mark(self, device: str) -> int:
        if device not in self._marks:
            used = set(self._marks.values())
            self._marks[device] = next(i for i in range(1, len(used) + 2) if i not in used)
        return self._marks[device]

    # ------------------------------------------------------------ nft

    def run(self, commands: Sequence[str]) -> None:
        """One transaction, all of it or nothing, by libnftables in-process, on
        one kept context (a forked nft, or a new context, costs its start-up
        on top of reading the ruleset: docs/security-groups.md)."""
        ops = address_element_ops(commands)
        try:
            if ops is not None:
                # Only members of groups' address sets: straight to the
                # kernel, without libnftables' O(ruleset) cache.
                self._send(nft_elements.element_messages("inet", SG_TABLE, ops))
                return
            self._nft.run("\n".join(commands) + "\n")
        except (libnft.NftError, nft_elements.ElementError, OSError) as e:
            raise FabricError(f"nft in {self.netns}: {str(e)[:500]}") from e

    def _chain_messages(self, port: Port) -> list[bytes]:
        """A known port's port-security chain emptied and refilled, if its
        rules changed, as netlink messages (nft_rules): no libnftables cache
        of this namespace's chains."""
        old = self._ports.get(port.device)
        rules = l2_chain_rules(port)
        if old is not None and l2_chain_rules(old) == rules:
            return []
        if self._compiler is None:
            self._compiler = nft_rules.Compiler()
        chain = port_chain("l2", port.device)
        (exprs,) = self._compiler.compile([("bridge", L2_TABLE, [], rules)])
        return [nft_rules.flush_message("bridge", L2_TABLE, chain),
                *(nft_rules.rule_message("bridge", L2_TABLE, chain, e) for e in exprs)]

    def _element_changes(self, port: Port | None, old: Port | None
                         ) -> tuple[list[tuple[str, sg_elements.Box]],
                                    list[tuple[str, sg_elements.Box]]]:
        """(deleted, added) elements of the rule sets from `old` to `port`."""
        want = sg_elements.port_elements(port.rules) if port else {}
        have = sg_elements.port_elements(old.rules) if old else {}
        gone = [(n, b) for n in sorted(have) for b in sorted(have[n] - want.get(n, frozenset()))]
        new = [(n, b) for n in sorted(want) for b in sorted(want[n] - have.get(n, frozenset()))]
        return gone, new

    def _element_messages(self, port: Port) -> list[bytes]:
        """A known port's rule change: its elements deleted and added, as
        netlink messages (deletions first: the new boxes may overlap the old)."""
        dev, mark = port.device, self._marks[port.device]
        gone, new = self._element_changes(port, self._ports.get(dev))
        # One change per set (its elements in as few messages as fit): the
        # lists come sorted by set name.
        changes: list[nft_elements.Change] = [
            (op, name, [sg_elements.element_bytes(name, dev, mark, box) for _, box in group])
            for op, items in (("delete", gone), ("add", new))
            for name, group in itertools.groupby(items, key=lambda item: item[0])]
        return nft_elements.element_messages("inet", SG_TABLE, changes)

    def _element_commands(self, port: Port | None, old: Port | None, device: str
                          ) -> list[str]:
        mark = self._mark(device)
        gone, new = self._element_changes(port, old)
        return ([f"delete element inet {SG_TABLE} {n} "
                 f"{{ {sg_elements.element_text(n, device, mark, b)} }}" for n, b in gone]
                + [f"add element inet {SG_TABLE} {n} "
                   f"{{ {sg_elements.element_text(n, device, mark, b)} }}" for n, b in new])

    def _netlink_batch(self, member_commands: Sequence[str], ports: Sequence[Port]
                       ) -> list[bytes] | None:
        """Member changes and known ports' changes as one netlink batch, or
        None if any of it needs libnftables (a new port, a group whose sets
        are not there yet, an interval set's members)."""
        ops = address_element_ops(member_commands) if member_commands else []
        if ops is None or self._fresh or any(
                p.device not in self._ports or self._groups_named([p]) for p in ports):
            return None
        msgs = nft_elements.element_messages("inet", SG_TABLE, ops)
        try:
            for port in ports:
                msgs += self._element_messages(port)
                msgs += self._chain_messages(port)
        except nft_rules.CompileError as e:
            raise FabricError(f"nft in {self.netns}: {str(e)[:500]}") from e
        return msgs

    def _send(self, msgs: Sequence[bytes]) -> None:
        """One netlink batch on the namespace's kept nfnetlink socket."""
        try:
            if self._nl is None:
                self._nl = (run_in_netns(self.netns, nft_elements.open_socket) if self.netns
                            else nft_elements.open_socket())
            nft_elements.send_batch(msgs, f"nft in {self.netns}", self._nl)
        except (nft_elements.ElementError, OSError) as e:
            if self._nl is not None and not isinstance(e, nft_elements.ElementError):
                self._nl.close()
                self._nl = None
            raise FabricError(f"nft in {self.netns}: {str(e)[:500]}") from e

    def list_table(self) -> str:
        """The security groups' table as nft lists it."""
        try:
            return self._nft.run(f"list table inet {SG_TABLE}\n")
        except libnft.NftError as e:
            raise FabricError(f"nft in {self.netns}: {str(e)[:500]}") from e

    def setup(self) -> None:
        for name in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
            subprocess.run([*enter, "sysctl", "-qw", f"net.bridge.{name}=1"], check=True,
                           capture_output=True)
        sg = f"inet {SG_TABLE}"
        commands = [
            f"add table bridge {L2_TABLE}",
            f"add map bridge {L2_TABLE} ports {{ typeof iifname : verdict; }}",
            f"add chain bridge {L2_TABLE} prerouting "
            "{ type filter hook prerouting priority -300; policy accept; }",
            f"flush chain bridge {L2_TABLE} prerouting",
            f"add rule bridge {L2_TABLE} prerouting iifname vmap @ports",
            # The inet hooks br_netfilter runs see the bridge, not the port a
            # frame leaves by: name that port by a mark before they run.
            f"add map bridge {L2_TABLE} out_ids {{ typeof oifname : meta mark; }}",
            f"add chain bridge {L2_TABLE} forward "
            "{ type filter hook forward priority -200; policy accept; }",
            f"flush chain bridge {L2_TABLE} forward",
            f"add rule bridge {L2_TABLE} forward meta mark set 0",
            f"add rule bridge {L2_TABLE} forward meta mark set oifname map @out_ids",
            f"add table {sg}",
            # The filtered ports, by input name and by output mark.
            f"add set {sg} eg_ports {{ typeof iifname; }}",
            f"add set {sg} in_ports {{ typeof meta mark; }}",
            *(f"add set {sg} {sg_elements.cidr_set(v, k, d)} {_key_decl(k, v, d, True)}"
              for d in ("egress", "ingress") for v in (4, 6) for k in ("x", "y"))]
        # One chain per direction for every port: no chain per port, so the
        # table's chain graph (which the kernel validates at each commit of a
        # rule) stays the same size whatever the ports.
        for direction, d, hook, base, match in (
                ("egress", "eg", "prerouting", [DHCP_CLIENT], "iifname @eg_ports"),
                ("ingress", "in", "forward", [DHCP_SERVER_REPLY], "meta mark @in_ports")):
            commands += [
                f"add chain {sg} {hook} {{ type filter hook {hook} priority 0; policy accept; }}",
                f"add chain {sg} {direction}", f"add chain {sg} {d}_groups",
                f"flush chain {sg} {hook}", f"flush chain {sg} {direction}",
                *(f"add rule {sg} {hook} {r}" for r in base),
                f"add rule {sg} {hook} icmpv6 type {ND_TYPES} accept",
                f"add rule {sg} {hook} {match} jump {direction}",
                f"add rule {sg} {direction} ct state established,related accept",
                f"add rule {sg} {direction} ct state invalid drop",
                *(f"add rule {sg} {direction} {r}" for r in _cidr_rules(direction)),
                f"add rule {sg} {direction} jump {d}_groups",
                f"add rule {sg} {direction} drop"]
        self.run(commands)

    # ------------------------------------------------------------ changes

    def _groups_named(self, ports: Iterable[Port], also: Iterable[str] = ()) -> list[str]:
        """Remote groups the ports' rules (or `also`) name whose sets are not
        in the table yet."""
        named = {r.remote_group_id for p in ports for r in p.rules if r.remote_group_id}
        return sorted((named | set(also)) - self._groups)

    def _group_commands(self, new: Sequence[str]) -> list[str]:
        """New remote groups' sets (emptied: an earlier agent's may hold
        stale elements) and the group chains refilled with every group's
        lookups."""
        if not new:
            return []
        out = self._new_group_sets(new)
        return out + self._group_chains(sorted(self._groups | set(new)))

    def _new_group_sets(self, new: Sequence[str]) -> list[str]:
        sg = f"inet {SG_TABLE}"
        out: list[str] = []
        for gid in new:
            for eth in ("ipv4", "ipv6"):
                for nets in (False, True):
                    out += [_set_decl(gid, eth, nets),
                            f"flush set {sg} {group_set(gid, eth, nets)}"]
            for d in ("egress", "ingress"):
                for v in (4, 6):
                    for k in ("x", "y"):
                        name = sg_elements.group_rule_set(gid, v, k, d)
                        out += [f"add set {sg} {name} {_key_decl(k, v, d, False)}",
                                f"flush set {sg} {name}"]
        return out

    @staticmethod
    def _group_chains(groups: Sequence[str]) -> list[str]:
        sg = f"inet {SG_TABLE}"
        out: list[str] = []
        for d, direction in (("eg", "egress"), ("in", "ingress")):
            out.append(f"flush chain {sg} {d}_groups")
            out += [f"add rule {sg} {d}_groups {r}"
                    for gid in groups for r in group_rules(gid, direction)]
        return out

    def _leftover_sets(self, named: set[str]) -> list[str]:
        """Group sets in the table of groups none of `named`: an earlier
        agent's, read once (libnftables lists the table)."""
        if self._leftovers_read:
            return []
        listed = self.list_table()
        keep = {n for gid in named | self._groups for n in group_objects(gid)}
        return sorted(set(_GROUP_OBJECT.findall(listed)) - keep)

    def _fresh_commands(self) -> list[str]:
        if not self._fresh:
            return []
        return [f"flush set inet {SG_TABLE} {n}" for n in (*CIDR_SETS, "eg_ports", "in_ports")]

    def _port_commands(self, port: Port) -> list[str]:
        dev = port.device
        l2 = port_chain("l2", dev)
        new = dev not in self._ports
        rules = l2_chain_rules(port)
        old = self._ports.get(dev)
        commands = ([] if old is not None and l2_chain_rules(old) == rules
                    else _chain("bridge", L2_TABLE, l2, rules, new))
        commands += self._element_commands(port, old, dev)
        if new:
            mark = self._mark(dev)
            commands += [
                f'add element bridge {L2_TABLE} ports {{ "{dev}" : jump {l2} }}',
                f'add element bridge {L2_TABLE} out_ids {{ "{dev}" : {mark} }}',
                f'add element inet {SG_TABLE} eg_ports {{ "{dev}" }}',
                f"add element inet {SG_TABLE} in_ports {{ {mark} }}"]
        return commands

    def _remove_commands(self, device: str) -> list[str]:
        l2 = port_chain("l2", device)
        mark = self._marks[device]
        return [
            *self._element_commands(None, self._ports[device], device),
            f'delete element bridge {L2_TABLE} ports {{ "{device}" }}',
            f'delete element bridge {L2_TABLE} out_ids {{ "{device}" }}',
            f'delete element inet {SG_TABLE} eg_ports {{ "{device}" }}',
            f"delete element inet {SG_TABLE} in_ports {{ {mark} }}",
            f"delete chain bridge {L2_TABLE} {l2}"]

    def _member_commands(self, group_id: str, addresses: Iterable[str]
                         ) -> tuple[list[str], dict[str, _Members]]:
        """A group's member changes (its sets are declared by _group_commands).
        netmgr sends the whole member list; only the addresses that differ
        from the last one are converted and counted (two spellings of one
        address, ``10.0.0.1`` and ``10.0.0.1/32``, are one element, kept
        while either is listed), so a join costs the change, not the group."""
        raw = frozenset(addresses)
        old_raw, old_counts = self._members.get(group_id, (frozenset(), {}))
        gone_raw, new_raw = old_raw - raw, raw - old_raw
        if not gone_raw and not new_raw:
            return [], {}
        counts = dict(old_counts)
        removed: set[str] = set()
        added: set[str] = set()
        for a in gone_raw:
            e = _element(a)
            counts[e] -= 1
            if not counts[e]:
                del counts[e]
                removed.add(e)
        for a in new_raw:
            e = _element(a)
            counts[e] = counts.get(e, 0) + 1
            if counts[e] == 1:
                added.add(e)
        removed, added = removed - added, added - removed
        commands: list[str] = []
        for (ethertype, version), nets in itertools.product((("ipv4", 4), ("ipv6", 6)),
                                                            (False, True)):
            name = group_set(group_id, ethertype, nets)
            for op, elements in (("delete", removed), ("add", added)):
                mine = sorted(e for e in elements
                              if ("/" in e) == nets and _family(e) == version)
                if mine:
                    commands.append(f"{op} element inet {SG_TABLE} {name} {_set_of(mine)}")
        return commands, {group_id: (raw, counts)}

    def _forget_marks(self, ports: Iterable[Port]) -> None:
        """The numbers handed out to new ports for a transaction that failed."""
        for port in ports:
            if port.device not in self._ports:
                self._marks.pop(port.device, None)

    def set_port(self, port: Port) -> None:
        """Add or replace one port's filters (its chain, map and set elements)."""
        with self._lock:
            msgs = self._netlink_batch([], [port])
            if msgs is None:
                new_groups = self._groups_named([port])
                try:
                    self.run([*self._fresh_commands(), *self._group_commands(new_groups),
                              *self._port_commands(port)])
                except FabricError:
                    self._forget_marks([port])
                    raise
                self._groups.update(new_groups)
                self._fresh = False
            elif msgs:  # empty: nothing of it changed
                self._send(msgs)
            self._ports[port.device] = port

    def remove_port(self, device: str) -> None:
        with self._lock:
            if device not in self._ports:
                return
            self.run(self._remove_commands(device))
            del self._ports[device]
            del self._marks[device]

    def set_members(self, group_id: str, addresses: Iterable[str]) -> None:
        """A group's member addresses: only the elements that changed."""
        with self._lock:
            new_groups = self._groups_named([], [group_id])
            commands, now = self._member_commands(group_id, addresses)
            commands = [*self._group_commands(new_groups), *commands]
            if commands:
                self.run(commands)
            self._groups.update(new_groups)
            self._members.update(now)

    def apply(self, ports: Sequence[Port], members: Mapping[str, Sequence[str]]) -> int:
        """The host's whole desired state, as one transaction of the differences
        from what this object last applied (group sets first: rules name them).
        Returns the number of nft commands (or netlink messages) it took (0:
        nothing changed)."""
        with self._lock:
            commands: list[str] = []
            members_now: dict[str, _Members] = {}
            for gid, addrs in members.items():
                more, now = self._member_commands(gid, addrs)
                commands += more
                members_now.update(now)
            want = {p.device: p for p in ports}
            gone = [dev for dev in self._ports if dev not in want]
            changed = [p for dev, p in want.items() if self._ports.get(dev) != p]
            new_groups = self._groups_named(changed, members)
            # Groups no rule and no member list names any more: their sets
            # and lookups go, last in the transaction (after the elements
            # of the rules that named them).
            named = {r.remote_group_id for p in ports for r in p.rules
                     if r.remote_group_id} | set(members)
            unnamed = sorted(self._groups - named)
            leftovers = self._leftover_sets(named)
            msgs = (None if gone or new_groups or unnamed or leftovers
                    else self._netlink_batch(commands, changed))
            if msgs is not None:
                # Known ports' rules and group members only: one netlink
                # batch of set elements (and port-security chains), without
                # libnftables reading the host's chains (none when nothing
                # changed: the ports are kept all the same).
                if msgs:
                    self._send(msgs)
                self._members.update(members_now)
                self._ports.update({p.device: p for p in changed})
                return len(msgs)
            for dev in gone:
                commands += self._remove_commands(dev)
            try:
                for port in changed:
                    commands += self._port_commands(port)
                commands = [*self._fresh_commands(), *self._new_group_sets(new_groups),
                            *commands]
                if new_groups or unnamed or leftovers:
                    kept = sorted((self._groups | set(new_groups)) - set(unnamed))
                    commands += self._group_chains(kept)
                    commands += [f"delete set inet {SG_TABLE} {n}"
                                 for n in (*leftovers, *(o for g in unnamed
                                                         for o in group_objects(g)))]
                if not commands:
                    self._leftovers_read = True
                    return 0
                self.run(commands)
            except FabricError:
                self._forget_marks(changed)
                raise
            self._fresh = False
            self._leftovers_read = True
            self._groups.update(new_groups)
            self._groups.difference_update(unnamed)
            for gid in unnamed:
                self._members.pop(gid, None)
            self._members.update(members_now)
            for dev in gone:
                del self._ports[dev]
                del self._marks[dev]
            self._ports.update({p.device: p for p in changed})
            return len(commands)
