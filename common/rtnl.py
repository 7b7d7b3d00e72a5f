"""rtnetlink on a raw socket: the links, addresses and routes a host's
fabric and its routers' namespaces are made of.

pyroute2 (0.9) runs every request through an asyncio loop of its own and
decodes every attribute of every answer: about 0.5 ms of CPU a request and
0.65 ms to open a socket, measured here; a router's creation makes some
fifty, most of the agent's CPU for it. Here a request is a ``struct.pack``,
a send and a receive, and only the attributes asked for are read. The
framing is ``rawnetlink``'s; the message layouts are the kernel's
(linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h).

A ``Rtnl`` is one socket, used by one thread at a time. Errors are
``OSError`` with the kernel's errno (EEXIST, ENODEV, EXFULL, ...): callers
decide which are not errors for them; ``netlink`` turns them into its own
exceptions for the rest of the tree.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from common import rawnetlink
from common.nsthread import netns_path, run_in_netns

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH = 28
NLM_F_APPEND = 0x800
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLA_F_NESTED = 0x8000

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_PID, IFLA_NET_NS_FD, IFLA_EXT_MASK = 18, 19, 28, 29
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_DATA = 1, 2, 5
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_BRPORT_NO = 18
VETH_INFO_PEER = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 4, 7, 15
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP = 0x1

IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0

_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol,
#                                       scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
# The biggest answer datagram a dump sends (the kernel's dumps fill at most
# 32 KiB a datagram).
RECV_SIZE = 1 << 16


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    kind: str  # IFLA_INFO_KIND: "veth", "bridge", ...; "" for a plain device
    master: int  # the index of its bridge (0: none)
    port_no: int  # its number on that bridge (IFLA_BRPORT_NO; 0: not a bridge port)


@dataclass(frozen=True, order=True)
class RouteInfo:
    destination: str  # the network address ("0.0.0.0" / "::" for a default route)
    prefixlen: int
    gateway: str  # "" for none
    oif: int  # 0 for none


def _attr_u32(kind: int, value: int) -> bytes:
    return rawnetlink.attribute(kind, _U32.pack(value))


def _attr_str(kind: int, value: str) -> bytes:
    return rawnetlink.attribute(kind, value.encode() + b"\0")


def _nested(kind: int, *attrs: bytes) -> bytes:
    return rawnetlink.attribute(kind | NLA_F_NESTED, b"".join(attrs))


def _cstr(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def parse_link(body: bytes) -> LinkInfo:
    """An RTM_NEWLINK answer's link."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    name = mac = kind = ""
    mtu = master = port_no = 0
    for attr, value in rawnetlink.attributes(body[_IFINFOMSG.size:]):
        if attr == IFLA_IFNAME:
            name = _cstr(value)
        elif attr == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in value)
        elif attr == IFLA_MTU:
            mtu = _U32.unpack_from(value)[0]
        elif attr == IFLA_MASTER:
            master = _U32.unpack_from(value)[0]
        elif attr == IFLA_LINKINFO:
            for info, data in rawnetlink.attributes(value):
                if info == IFLA_INFO_KIND:
                    kind = _cstr(data)
                elif info == IFLA_INFO_SLAVE_DATA:
                    for port_attr, port_value in rawnetlink.attributes(data):
                        if port_attr == IFLA_BRPORT_NO:
                            port_no = _U16.unpack_from(port_value)[0]
    return LinkInfo(index=index, name=name, mac=mac, mtu=mtu, up=bool(flags & IFF_UP),
                    kind=kind, master=master, port_no=port_no)


def parse_address(body: bytes) -> tuple[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """An RTM_NEWADDR answer: (link index, address with its prefix)."""
    family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(body)
    raw = b""
    for attr, value in rawnetlink.attributes(body[_IFADDRMSG.size:]):
        if attr == IFA_ADDRESS:
            raw = value
    addr = ipaddress.ip_address(raw if raw else (b"\0" * (4 if family == socket.AF_INET
                                                          else 16)))
    return index, ipaddress.ip_interface(f"{addr}/{prefixlen}")


def addresses_of(answers: Iterable[tuple[int, bytes]], family: int, index: int = 0) -> list[
        ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The addresses of ``family`` on link ``index`` (0: every link) in an
    RTM_GETADDR dump's answers."""
    out = []
    for kind, body in answers:
        if kind == RTM_NEWADDR and len(body) >= _IFADDRMSG.size and body[0] == family:
            at, addr = parse_address(body)
            if not index or at == index:
                out.append(addr)
    return out


def parse_route(body: bytes) -> tuple[int, int, RouteInfo]:
    """An RTM_NEWROUTE answer: (table, protocol, route)."""
    family, dst_len, _, _, table, proto, _, _, _ = _RTMSG.unpack_from(body)
    dst = gateway = b""
    oif = 0
    for attr, value in rawnetlink.attributes(body[_RTMSG.size:]):
        if attr == RTA_DST:
            dst = value
        elif attr == RTA_GATEWAY:
            gateway = value
        elif attr == RTA_OIF:
            oif = _U32.unpack_from(value)[0]
        elif attr == RTA_TABLE:
            table = _U32.unpack_from(value)[0]
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    return table, proto, RouteInfo(
        str(ipaddress.ip_address(dst)) if dst else zero, dst_len,
        str(ipaddress.ip_address(gateway)) if gateway else "", oif)


class Rtnl:
    """One rtnetlink socket in ``netns`` (None: the process's own namespace).

    A namespace that does not exist is ``FileNotFoundError``; a socket is
    never what creates one."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._what = f"rtnetlink in {netns}" if netns else "rtnetlink"
        self._seq = itertools.count(1)
        if netns:
            self._sock = run_in_netns(netns, _open)
        else:
            self._sock = _open()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask(self, kind: int, flags: int, body: bytes,
            dump: bool = False) -> list[tuple[int, bytes]]:
        """Send one request and read its answers (up to its ack or the end
        of its dump); the kernel's refusal raises OSError with its errno."""
        seq = next(self._seq)
        # A dump ends with NLMSG_DONE; any other request with its ack. (The
        # flags' bits mean other things in other requests: NLM_F_EXCL is a
        # bit of NLM_F_DUMP.)
        flags |= rawnetlink.NLM_F_DUMP if dump else rawnetlink.NLM_F_ACK
        self._sock.send(rawnetlink.request(kind, flags, body, seq))
        return list(rawnetlink.answers(rawnetlink.received(self._sock, RECV_SIZE), self._what,
                                       seq))

    # ---------------------------------------------------------------- links

    def link(self, *, name: str = "", index: int = 0) -> LinkInfo | None:
        """The link of that name or index; None when there is none."""
        attrs = _attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        if name:
            attrs += _attr_str(IFLA_IFNAME, name)
        try:
            found = self.ask(RTM_GETLINK, 0, _IFINFOMSG.pack(0, 0, index, 0, 0) + attrs)
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.EINVAL) and (name or index):  # EINVAL: bad name
                return None
            raise
        return next((parse_link(body) for kind, body in found if kind == RTM_NEWLINK), None)

    def links(self) -> list[LinkInfo]:
        found = self.ask(RTM_GETLINK, 0, _IFINFOMSG.pack(0, 0, 0, 0, 0)
                         + _attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS), dump=True)
        return [parse_link(body) for kind, body in found if kind == RTM_NEWLINK]

    def add_veth(self, name: str, peer: str, *, mtu: int = 0, peer_mac: str = "",
                 peer_netns: str = "") -> None:
        """A veth pair in one request: ``peer`` made with its MAC and MTU,
        in namespace ``peer_netns`` if given (all or nothing)."""
        peer_attrs = _attr_str(IFLA_IFNAME, peer) + self._link_attrs(mtu=mtu, mac=peer_mac)
        with _netns_fd(peer_netns) as fd:
            if fd >= 0:
                peer_attrs += _attr_u32(IFLA_NET_NS_FD, fd)
            self._new_link(name, self._link_attrs(mtu=mtu) + _nested(
                IFLA_LINKINFO, _attr_str(IFLA_INFO_KIND, "veth"),
                _nested(IFLA_INFO_DATA, rawnetlink.attribute(
                    VETH_INFO_PEER | NLA_F_NESTED, _IFINFOMSG.pack(0, 0, 0, 0, 0) + peer_attrs))))

    def add_bridge(self, name: str) -> None:
        """A bridge without STP and without forwarding delay."""
        self._new_link(name, _nested(
            IFLA_LINKINFO, _attr_str(IFLA_INFO_KIND, "bridge"),
            _nested(IFLA_INFO_DATA, _attr_u32(IFLA_BR_FORWARD_DELAY, 0),
                    _attr_u32(IFLA_BR_STP_STATE, 0))))

    def add_vxlan(self, name: str, vni: int, local: str, port: int, *,
                  learning: bool = True) -> None:
        """A vxlan device for ``vni`` on UDP ``port``, sending from ``local``
        (its socket is opened in this socket's namespace)."""
        self._new_link(name, _nested(
            IFLA_LINKINFO, _attr_str(IFLA_INFO_KIND, "vxlan"),
            _nested(IFLA_INFO_DATA, _attr_u32(IFLA_VXLAN_ID, vni),
                    rawnetlink.attribute(IFLA_VXLAN_LOCAL,
                                         ipaddress.IPv4Address(local).packed),
                    rawnetlink.attribute(IFLA_VXLAN_LEARNING, bytes([int(learning)])),
                    rawnetlink.attribute(IFLA_VXLAN_PORT, struct.pack("!H", port)))))

    def append_fdb(self, index: int, mac: str, dst: str) -> None:
        """A permanent forwarding entry of the device itself (``bridge fdb
        append MAC dev DEV dst DST``): an all-zeros MAC floods to ``dst``,
        one entry per remote; appending one it has changes nothing."""
        self.ask(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND,
                 _NDMSG.pack(socket.AF_BRIDGE, index, NUD_NOARP | NUD_PERMANENT, NTF_SELF, 0)
                 + rawnetlink.attribute(NDA_LLADDR, _mac_bytes(mac))
                 + rawnetlink.attribute(NDA_DST, ipaddress.IPv4Address(dst).packed))

    def _new_link(self, name: str, attrs: bytes) -> None:
        self.ask(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                 _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, name) + attrs)

    @staticmethod
    def _link_attrs(*, mtu: int = 0, mac: str = "", name: str = "",
                    master: int | None = None) -> bytes:
        attrs = b""
        if mtu:
            attrs += _attr_u32(IFLA_MTU, mtu)
        if mac:
            attrs += rawnetlink.attribute(IFLA_ADDRESS, _mac_bytes(mac))
        if name:
            attrs += _attr_str(IFLA_IFNAME, name)
        if master is not None:
            attrs += _attr_u32(IFLA_MASTER, master)
        return attrs

    def set_link(self, index: int, *, up: bool | None = None, mtu: int = 0, mac: str = "",
                 name: str = "", master: int | None = None, netns: str = "",
                 netns_pid: int = 0) -> None:
        """Change what is given of link ``index`` in one request (``netns``:
        move it into that namespace; ``netns_pid``: into that process's)."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        attrs = self._link_attrs(mtu=mtu, mac=mac, name=name, master=master)
        if netns_pid:
            attrs += _attr_u32(IFLA_NET_NS_PID, netns_pid)
        with _netns_fd(netns) as fd:
            if fd >= 0:
                attrs += _attr_u32(IFLA_NET_NS_FD, fd)
            self.ask(RTM_NEWLINK, 0, _IFINFOMSG.pack(0, 0, index, flags, change) + attrs)

    def delete_link(self, index: int) -> None:
        self.ask(RTM_DELLINK, 0, _IFINFOMSG.pack(0, 0, index, 0, 0))

    # ------------------------------------------------------------ addresses

    def addresses(self, family: int, index: int = 0) -> list[
            ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The addresses of ``family`` on link ``index`` (0: every link)."""
        return addresses_of(
            self.ask(RTM_GETADDR, 0, _IFADDRMSG.pack(family, 0, 0, 0, 0), dump=True),
            family, index)

    def add_address(self, index: int, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                    *, nodad: bool = False) -> None:
        """EEXIST when the link has it already."""
        self.ask(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, self._address(index, addr, nodad))

    def delete_address(self, index: int,
                       addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        self.ask(RTM_DELADDR, 0, self._address(index, addr, False))

    @staticmethod
    def _address(index: int, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                 nodad: bool) -> bytes:
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        packed = addr.ip.packed
        body = _IFADDRMSG.pack(family, addr.network.prefixlen, IFA_F_NODAD if nodad else 0,
                               RT_SCOPE_UNIVERSE, index)
        body += rawnetlink.attribute(IFA_LOCAL, packed) + rawnetlink.attribute(IFA_ADDRESS, packed)
        if addr.version == 4:
            body += rawnetlink.attribute(IFA_BROADCAST, addr.network.broadcast_address.packed)
        return body

    # --------------------------------------------------------------- routes

    def routes(self, family: int, table: int, proto: int) -> list[RouteInfo]:
        """The routes of ``table`` that protocol ``proto`` installed."""
        found = self.ask(RTM_GETROUTE, 0, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                         dump=True)
        out = []
        for kind, body in found:
            if kind == RTM_NEWROUTE and body[0] == family:
                in_table, by, route = parse_route(body)
                if in_table == table and by == proto:
                    out.append(route)
        return out

    def replace_route(self, family: int, route: RouteInfo, table: int, proto: int) -> None:
        self.ask(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                 self._route(family, route, table, proto))

    def delete_route(self, family: int, route: RouteInfo, table: int, proto: int) -> None:
        self.ask(RTM_DELROUTE, 0, self._route(family, route, table, proto))

    @staticmethod
    def _route(family: int, route: RouteInfo, table: int, proto: int) -> bytes:
        body = _RTMSG.pack(family, route.prefixlen, 0, 0, table if table < 256 else 252, proto,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += _attr_u32(RTA_TABLE, table)
        if route.prefixlen:
            body += rawnetlink.attribute(RTA_DST, ipaddress.ip_address(route.destination).packed)
        if route.gateway:
            body += rawnetlink.attribute(RTA_GATEWAY, ipaddress.ip_address(route.gateway).packed)
        if route.oif:
            body += _attr_u32(RTA_OIF, route.oif)
        return body


@contextlib.contextmanager
def _netns_fd(netns: str) -> Iterator[int]:
    """An open descriptor of namespace ``netns`` (-1 for none asked)."""
    if not netns:
        yield -1
        return
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _open() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock
