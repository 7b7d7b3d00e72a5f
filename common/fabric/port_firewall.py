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
  prerouting hook sees the input port (a verdict map keyed on it jumps to
  the port's egress chain); its forward hook sees only the bridge, so the
  bridge family's forward hook, which runs first, marks a frame with the
  number of the port it leaves by, and a verdict map keyed on that mark
  jumps to the port's ingress chain. In both chains established and related
  pass, invalid is dropped, then the port's rules accept, the rest is
  dropped. A rule's remote group is a named set of the group's member
  addresses, so N rules x M members stay N rules.

Every change is one nft transaction that touches only what changed: a port's
two chains and its map elements, or a group's set elements. The Linux
kernel here has no bridge-family conntrack (``nf_conntrack_bridge``), which
is why the stateful part rides br_netfilter.

Conntrack is the fabric namespace's: two tenants' guests on different
segments that use the same addresses and ports at the same time share a
conntrack entry (zones by segment are not set).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import itertools
import re
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence

from common import libnft, nft_elements, nft_rules
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


def _name(prefix: str, key: str) -> str:
    return prefix + hashlib.sha1(key.encode()).hexdigest()[:16]


def group_set(group_id: str, ethertype: str, networks: bool = False) -> str:
    """A remote group's members: single addresses in a hash set (adding one
    needs no look at the others), networks (allowed pairs given as CIDRs) in
    an interval set of their own."""
    kind = ("n" if networks else "g") + ("4_" if ethertype == "ipv4" else "6_")
    return _name(kind, group_id)


def _set_decl(group_id: str, ethertype: str, networks: bool) -> str:
    kind = "ipv4_addr" if ethertype == "ipv4" else "ipv6_addr"
    flags = " flags interval;" if networks else ""
    return (f"add set inet {SG_TABLE} {group_set(group_id, ethertype, networks)} "
            f"{{ type {kind};{flags} }}")


def port_chain(kind: str, device: str) -> str:
    return _name(f"{kind}_", device)


@functools.lru_cache(maxsize=1 << 16)
def _family(value: str) -> int:
    return ipaddress.ip_network(value, strict=False).version


def rule_texts(rule: Rule) -> list[str]:
    """A rule as nft statements: one, or for a remote group one per member set."""
    if rule.remote_group_id:
        return [rule_text(rule), rule_text(rule, networks=True)]
    return [rule_text(rule)]


def rule_text(rule: Rule, networks: bool = False) -> str:
    """A rule as an nft statement (its values were checked by netmgr; they are
    parsed again here so that nothing else reaches nft)."""
    v4 = rule.ethertype == "ipv4"
    parts = ["meta nfproto " + ("ipv4" if v4 else "ipv6")]
    addr = ("ip " if v4 else "ip6 ") + ("saddr" if rule.direction == "ingress" else "daddr")
    if rule.remote_cidr:
        parts.append(f"{addr} {ipaddress.ip_network(rule.remote_cidr)}")
    elif rule.remote_group_id:
        parts.append(f"{addr} @{group_set(rule.remote_group_id, rule.ethertype, networks)}")
    proto = rule.protocol
    if proto in ("tcp", "udp"):
        parts.append(f"meta l4proto {proto}")
        if rule.port_min:
            lo, hi = int(rule.port_min), int(rule.port_max or rule.port_min)
            parts.append(f"th dport {lo}" if lo == hi else f"th dport {lo}-{hi}")
    elif proto == "icmp":
        icmp = "icmp" if v4 else "icmpv6"
        parts.append(f"meta l4proto {icmp}")
        if rule.icmp_type >= 0:
            parts.append(f"{icmp} type {int(rule.icmp_type)}")
            if rule.icmp_code >= 0:
                parts.append(f"{icmp} code {int(rule.icmp_code)}")
    elif proto != "all":
        parts.append(f"meta l4proto {int(proto)}")
    return " ".join(parts) + " accept"


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


def sg_chain_rules(port: Port, direction: str) -> list[str]:
    """A port's stateful chain. DHCP and neighbour discovery pass in the base
    chains before the jump (one anonymous set for the host, not one per port)."""
    out = ["ct state established,related accept", "ct state invalid drop"]
    out += [t for r in port.rules if r.direction == direction for t in rule_texts(r)]
    out.append("drop")
    return out


def _chain(family: str, table: str, name: str, rules: Sequence[str], new: bool) -> list[str]:
    """A chain (re)filled; an existing one is only flushed."""
    return [*([f"add chain {family} {table} {name}"] if new else []),
            f"flush chain {family} {table} {name}",
            *(f"add rule {family} {table} {name} {r}" for r in rules)]


_ELEMENT_OP = re.compile(
    rf"(add|delete) element inet {SG_TABLE} (g[46]_[0-9a-f]{{16}}) \{{ ([0-9a-f.:, ]+) \}}")


_SET_REF = re.compile(r"@([gn][46]_[0-9a-f]{16})\b")


def set_decls_named(rules: Iterable[str]) -> list[str]:
    """``name { type ...; }`` of each group set the rules name (their names
    say their kind: g/n for addresses/networks, 4/6 for the family)."""
    out = []
    for name in sorted({m for r in rules for m in _SET_REF.findall(r)}):
        kind = "ipv4_addr" if name[1] == "4" else "ipv6_addr"
        out.append(f"{name} {{ type {kind};{' flags interval;' if name[0] == 'n' else ''} }}")
    return out


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


class PortFirewall:
    """The port filters of the bridges in namespace `netns` ("": the host's
    root namespace, where the VXLAN fabric's bridges are); one lock
    serialises changes. In the root namespace br_netfilter is turned on for
    every bridge of the host: traffic of bridges that are not the fabric's
    then walks the host's inet hooks too (it passes: no port of theirs is in
    the maps)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._nft = libnft.Context(netns)
        self._lock = threading.Lock()
        self._ports: dict[str, Port] = {}
        self._members: dict[tuple[str, str], frozenset[str]] = {}
        # A port's number, the mark that names it as the output port.
        self._marks: dict[str, int] = {}
        self._compiler: nft_rules.Compiler | None = None
        self._nl: socket.socket | None = None

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
        """A known port's chains whose rules changed emptied and refilled, as
        netlink messages (nft_rules): no libnftables cache of this
        namespace's chains, so the cost is the port's rules, not the host's
        ports. Only those chains: the kernel's commit costs in proportion to
        each table it touches (a rule change leaves the bridge table alone,
        docs/security-groups.md)."""
        if self._compiler is None:
            self._compiler = nft_rules.Compiler()
        dev = port.device
        old = self._ports.get(dev)
        chains = [(family, table, port_chain(kind, dev), rules(port))
                  for family, table, kind, rules in (
                      ("bridge", L2_TABLE, "l2", l2_chain_rules),
                      ("inet", SG_TABLE, "eg", lambda p: sg_chain_rules(p, "egress")),
                      ("inet", SG_TABLE, "in", lambda p: sg_chain_rules(p, "ingress")))
                  if old is None or rules(old) != rules(port)]
        if not chains:
            return []
        compiled = self._compiler.compile([(family, table, set_decls_named(rules), rules)
                                           for family, table, _, rules in chains])
        msgs: list[bytes] = []
        for (family, table, chain, _), exprs in zip(chains, compiled, strict=True):
            msgs.append(nft_rules.flush_message(family, table, chain))
            msgs += [nft_rules.rule_message(family, table, chain, e) for e in exprs]
        return msgs

    def _netlink_batch(self, member_commands: Sequence[str], ports: Sequence[Port]
                       ) -> list[bytes] | None:
        """Member changes and known ports' chains as one netlink batch, or None
        if any of it needs libnftables (a new port, a set to declare, an
        interval set's elements)."""
        ops = address_element_ops(member_commands) if member_commands else []
        if ops is None or any(p.device not in self._ports or self._sets_for(p)
                              for p in ports):
            return None
        msgs = nft_elements.element_messages("inet", SG_TABLE, ops)
        try:
            for port in ports:
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

    def setup(self) -> None:
        for name in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
            subprocess.run([*enter, "sysctl", "-qw", f"net.bridge.{name}=1"], check=True,
                           capture_output=True)
        self.run([
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
            f"add table inet {SG_TABLE}",
            f"add map inet {SG_TABLE} egress {{ typeof iifname : verdict; }}",
            f"add map inet {SG_TABLE} ingress {{ typeof meta mark : verdict; }}",
            f"add chain inet {SG_TABLE} prerouting "
            "{ type filter hook prerouting priority 0; policy accept; }",
            f"flush chain inet {SG_TABLE} prerouting",
            f"add rule inet {SG_TABLE} prerouting {DHCP_CLIENT}",
            f"add rule inet {SG_TABLE} prerouting icmpv6 type {ND_TYPES} accept",
            f"add rule inet {SG_TABLE} prerouting iifname vmap @egress",
            f"add chain inet {SG_TABLE} forward "
            "{ type filter hook forward priority 0; policy accept; }",
            f"flush chain inet {SG_TABLE} forward",
            f"add rule inet {SG_TABLE} forward {DHCP_SERVER_REPLY}",
            f"add rule inet {SG_TABLE} forward icmpv6 type {ND_TYPES} accept",
            f"add rule inet {SG_TABLE} forward meta mark vmap @ingress",
        ])

    # ------------------------------------------------------------ changes

    def _sets_for(self, port: Port) -> list[str]:
        """Declarations of the group sets the port's rules name that are not
        known to exist (re-declaring one makes libnftables read its elements)."""
        wanted = {(r.remote_group_id, r.ethertype) for r in port.rules if r.remote_group_id}
        return [_set_decl(gid, eth, nets) for gid, eth in sorted(wanted)
                for nets in (False, True)
                if (gid, f"{eth}/{'net' if nets else 'addr'}") not in self._members]

    def _port_commands(self, port: Port) -> list[str]:
        dev = port.device
        l2, eg, ing = (port_chain("l2", dev), port_chain("eg", dev), port_chain("in", dev))
        new = dev not in self._ports
        commands = [*self._sets_for(port),
                    *_chain("bridge", L2_TABLE, l2, l2_chain_rules(port), new),
                    *_chain("inet", SG_TABLE, eg, sg_chain_rules(port, "egress"), new),
                    *_chain("inet", SG_TABLE, ing, sg_chain_rules(port, "ingress"), new)]
        if dev not in self._ports:
            mark = self._mark(dev)
            commands += [
                f'add element bridge {L2_TABLE} ports {{ "{dev}" : jump {l2} }}',
                f'add element bridge {L2_TABLE} out_ids {{ "{dev}" : {mark} }}',
                f'add element inet {SG_TABLE} egress {{ "{dev}" : jump {eg} }}',
                f'add element inet {SG_TABLE} ingress {{ {mark} : jump {ing} }}']
        return commands

    def _remove_commands(self, device: str) -> list[str]:
        l2, eg, ing = (port_chain("l2", device), port_chain("eg", device),
                       port_chain("in", device))
        mark = self._marks[device]
        return [
            f'delete element bridge {L2_TABLE} ports {{ "{device}" }}',
            f'delete element bridge {L2_TABLE} out_ids {{ "{device}" }}',
            f'delete element inet {SG_TABLE} egress {{ "{device}" }}',
            f'delete element inet {SG_TABLE} ingress {{ {mark} }}',
            f"delete chain bridge {L2_TABLE} {l2}",
            f"delete chain inet {SG_TABLE} {eg}",
            f"delete chain inet {SG_TABLE} {ing}"]

    def _member_commands(self, group_id: str, addresses: Iterable[str]
                         ) -> tuple[list[str], dict[tuple[str, str], frozenset[str]]]:
        commands: list[str] = []
        now: dict[tuple[str, str], frozenset[str]] = {}
        addresses = list(addresses)
        for (ethertype, version), nets in itertools.product((("ipv4", 4), ("ipv6", 6)),
                                                            (False, True)):
            want = frozenset(e for e in (_element(a) for a in addresses
                                         if _family(a) == version) if ("/" in e) == nets)
            key = f"{ethertype}/{'net' if nets else 'addr'}"
            have = self._members.get((group_id, key), frozenset())
            name = group_set(group_id, ethertype, nets)
            if (group_id, key) not in self._members:
                commands.append(_set_decl(group_id, ethertype, nets))
            if have - want:
                commands.append(f"delete element inet {SG_TABLE} {name} "
                                f"{_set_of(sorted(have - want))}")
            if want - have:
                commands.append(f"add element inet {SG_TABLE} {name} "
                                f"{_set_of(sorted(want - have))}")
            now[(group_id, key)] = want
        return commands, now

    def set_port(self, port: Port) -> None:
        """Add or replace one port's filters (its chains and map elements)."""
        with self._lock:
            msgs = self._netlink_batch([], [port])
            if msgs is None:
                self.run(self._port_commands(port))
            elif msgs:  # empty: none of its chains' rules changed
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
            commands, now = self._member_commands(group_id, addresses)
            if commands:
                self.run(commands)
            self._members.update(now)

    def apply(self, ports: Sequence[Port], members: Mapping[str, Sequence[str]]) -> int:
        """The host's whole desired state, as one transaction of the differences
        from what this object last applied (group sets first: rules name them).
        Returns the number of nft commands it took (0: nothing changed)."""
        with self._lock:
            commands: list[str] = []
            members_now: dict[tuple[str, str], frozenset[str]] = {}
            for gid, addrs in members.items():
                more, now = self._member_commands(gid, addrs)
                commands += more
                members_now.update(now)
            want = {p.device: p for p in ports}
            gone = [dev for dev in self._ports if dev not in want]
            for dev in gone:
                commands += self._remove_commands(dev)
            changed = [p for dev, p in want.items() if self._ports.get(dev) != p]
            msgs = None if gone else self._netlink_batch(commands, changed)
            if msgs is not None:
                # Known ports' rules and group members only: one netlink
                # batch, without libnftables reading the host's chains (none
                # when no chain's rules changed: the ports are kept all the same).
                if msgs:
                    self._send(msgs)
                self._members.update(members_now)
                self._ports.update({p.device: p for p in changed})
                return len(msgs)
            try:
                for port in changed:
                    commands += self._port_commands(port)
                if not commands:
                    return 0
                self.run(commands)
            except FabricError:
                for port in changed:  # numbers handed out for a transaction that failed
                    if port.device not in self._ports:
                        self._marks.pop(port.device, None)
                raise
            self._members.update(members_now)
            for dev in gone:
                del self._ports[dev]
                del self._marks[dev]
            self._ports.update({p.device: p for p in changed})
            return len(commands)
