"""Port security at the router: a guest address is only ever the port's own.

The router knows every port of its guest networks (interface, MAC, IP: the
config's DHCP hosts). Two checks use that knowledge:

* ``port_guard`` (``inet cloudnet``, prerouting at raw priority, before
  conntrack, DNAT and routing): a packet that arrives on a guest interface
  with a source address of a guest network must come from the port holding
  that address, on that interface, with that MAC. Anything else is dropped
  (and counted: ``cn:port-spoof``), so a guest can neither send as another
  guest through source NAT or to another tier, nor answer for another
  guest's port forward.
* ``arp cloudnet`` (a table of the ``arp`` family: ARP never reaches the
  ``inet`` family): an ARP request or reply that claims an address of a
  guest network for another MAC than the port's is dropped before the
  router's neighbour table learns from it (``cn:arp-spoof``): a spoofer
  cannot redirect the router's traffic for a port (a port forward) to itself.

Addresses a guest network holds that no port has (the gateway itself, free
ones) match no element, so they are refused too. Sources outside every guest
network (networks routed behind a tier guest by a static route) are not a
port's and pass, as before.

Both sets hold one element per port, ``"<ifname>" . <mac> . <ip>``: they are
part of the table's elements (``nft_edge.Elements``), so adding, changing
or deleting a port is an element update, never a table reload.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from cloudnet.router.v1 import agent_pb2 as pb

from router.lib import libnft, validate
from router.services.nftables import table

INET_SET = "port_sec"
ARP_SET = "port_arp"
ARP_FAMILY = "arp"
# Set name -> (family, table) of a set that is not in ``inet cloudnet``.
SET_TABLES: Mapping[str, tuple[str, str]] = {ARP_SET: (ARP_FAMILY, table.NAME)}
KIND = "port"


def verify(cfg: pb.RouterConfig) -> None:
    """Every port's interface, MAC and IP is fit for an element (dnsmasq's
    verify checks the rest: unique, inside the network)."""
    names = {i.name for i in cfg.interfaces}
    for net in cfg.guest_networks:
        for host in net.hosts:
            what = f"port {host.port_id}"
            validate.check_mac(what, host.mac, KIND, host.port_id)
            validate.parse_ipv4(what, host.ip, KIND, host.port_id)
        if net.interface not in names:
            validate.check_ifname(f"network {net.network_id}", net.interface)


def elements(cfg: pb.RouterConfig) -> dict[str, dict[str, tuple[str, str]]]:
    """The two sets' elements (pure; assumes verify passed): the same key in
    both, the port named in the comment."""
    out: dict[str, tuple[str, str]] = {}
    for net in cfg.guest_networks:
        for host in net.hosts:
            key = f'"{net.interface}" . {host.mac.lower()} . {host.ip}'
            out[key] = ("", f"cn:{KIND}:{host.port_id}")
    return {INET_SET: out, ARP_SET: dict(out)}


@contextlib.contextmanager
def admitted(netns: str, ifname: str, mac: str, ip: str) -> Iterator[None]:
    """Let one more (interface, MAC, IP) in while the block runs: a
    diagnostics probe port, which is no port of the config. Its elements are
    added to the loaded table (not to what the service last rendered) and
    removed after; a table reloaded meanwhile has already dropped them."""
    key = f'"{ifname}" . {mac.lower()} . {ip}'
    sets = ((table.FAMILY, INET_SET), (ARP_FAMILY, ARP_SET))
    libnft.run(netns, "".join(f'add element {fam} {table.NAME} {name} {{ {key} comment '
                              f'"cn:probe" }}\n' for fam, name in sets))
    try:
        yield
    finally:
        for fam, name in sets:
            with contextlib.suppress(libnft.NftError):
                libnft.run(netns, f"delete element {fam} {table.NAME} {name} {{ {key} }}")
