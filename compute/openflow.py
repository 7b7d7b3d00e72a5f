"""One OpenFlow connection to an Open vSwitch bridge, kept open, over the
bridge's management socket (``<rundir>/<bridge>.mgmt``, the one
``ovs-ofctl`` uses), and the flow text of ``ovs-ofctl add-flows`` turned into
OpenFlow 1.4 messages.

Forking ``ovs-ofctl`` per change costs its start-up, its connection and its
version negotiation every time (tens of ms); here a change is one bundle on
a connection that is already open. The messages are os-ken's
(``os_ken.ofproto.ofproto_v1_4_parser``: OXM and Nicira extension matches,
``ct()``, ``conjunction()``); os-ken's controller framework (eventlet, the
switch connecting to a listening controller, ``set-controller`` on the
bridge) is not used: the agent is threaded and the bridge keeps no
controller, so this module dials the switch the way ``ovs-ofctl`` does.

Only the vocabulary the port filters use is understood; anything else is a
``FabricError`` before the switch sees it.

It lives in the compute room, not in common/: common/ ships in the router
appliance's wheel, which has no use for os-ken and its dependencies. The
compute agent hands a ``Connection`` to ``common.fabric.ovs_firewall``.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import select
import socket
import struct
import threading
import types
from collections.abc import Sequence
from typing import Any

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_4 as ofp
from os_ken.ofproto import ofproto_v1_4_parser as parser

from common.fabric.base import FabricError
from compute.ovs_datapath import Revalidation, once_more_after_hangup

_DP = types.SimpleNamespace(ofproto=ofp, ofproto_parser=parser)
_HEADER = struct.Struct("!BBHI")
# ovs-ofctl's shorthands: eth_type and ip_proto they stand for.
_PROTOS: dict[str, tuple[int, int | None]] = {
    "ip": (0x0800, None), "ipv6": (0x86DD, None), "arp": (0x0806, None),
    "tcp": (0x0800, 6), "udp": (0x0800, 17), "icmp": (0x0800, 1),
    "tcp6": (0x86DD, 6), "udp6": (0x86DD, 17), "icmp6": (0x86DD, 58)}
_CT_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10, "trk": 0x20}
_NO_TABLE = 255  # NX_CT_RECIRC_NONE
# Added again after each change: a change of the tables that changes nothing
# (no packet is sent to table 253), to start a revalidation round.
KICK_FLOW = "add table=253,priority=0,cookie=0x6b69636b,actions=drop"


def rundir() -> str:
    return os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")


def _bad(what: str) -> FabricError:
    return FabricError(f"openflow: cannot express {what[:80]!r}")


def _net(value: str) -> Any:
    """An address, or (address, mask) for a network that is not one address."""
    net = ipaddress.ip_network(value, strict=False)
    if net.num_addresses == 1:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def _int(value: str) -> int:
    return int(value, 0)


def _masked(value: str) -> Any:
    if "/" in value:
        v, m = value.split("/", 1)
        return (_int(v), _int(m))
    return _int(value)


def _ct_state(text: str) -> tuple[int, int]:
    """``+est-new+trk`` as (value, mask)."""
    value = mask = 0
    i = 0
    while i < len(text):
        sign = text[i]
        j = i + 1
        while j < len(text) and text[j] not in "+-":
            j += 1
        name = text[i + 1:j]
        if sign not in "+-" or name not in _CT_BITS:
            raise _bad(f"ct_state={text}")
        mask |= _CT_BITS[name]
        if sign == "+":
            value |= _CT_BITS[name]
        i = j
    return value, mask


def match_of(text: str) -> parser.OFPMatch:
    """An ovs-ofctl match (``in_port=3,udp,tp_src=67``) as an OFPMatch."""
    fields: dict[str, Any] = {}
    proto = None
    deferred: list[tuple[str, str]] = []
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if not value and key in _PROTOS:
            eth, proto = _PROTOS[key]
            fields["eth_type"] = eth
            if proto is not None:
                fields["ip_proto"] = proto
            continue
        deferred.append((key, value))
    v6 = fields.get("eth_type") == 0x86DD
    for key, value in deferred:
        if key == "in_port":
            fields["in_port"] = _int(value)
        elif key in ("dl_src", "dl_dst"):
            fields["eth_" + key[3:]] = value
        elif key in ("nw_src", "nw_dst"):
            fields["ipv4_" + key[3:]] = _net(value)
        elif key in ("ipv6_src", "ipv6_dst"):
            fields[key] = _net(value)
        elif key == "arp_spa":
            fields["arp_spa"] = _net(value)
        elif key == "arp_sha":
            fields["arp_sha"] = value
        elif key == "nw_proto":
            fields["ip_proto"] = proto = _int(value)
        elif key in ("tp_src", "tp_dst") and proto in (6, 17):
            fields[("tcp_" if proto == 6 else "udp_") + key[3:]] = _masked(value)
        elif key in ("icmp_type", "icmp_code") and proto in (1, 58):
            fields[("icmpv6_" if v6 else "icmpv4_") + key[5:]] = _int(value)
        elif key == "nd_target":
            fields["ipv6_nd_target"] = _net(value)
        elif key == "reg7":
            fields["reg7"] = _int(value)
        elif key == "conj_id":
            fields["conj_id"] = _int(value)
        elif key == "ct_state":
            fields["ct_state"] = _ct_state(value)
        else:
            raise _bad(f"{key}={value}")
    return parser.OFPMatch(**fields)


def _split_actions(text: str) -> list[str]:
    """Actions split on the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    if cur:
        out.append(cur)
    return out


def actions_of(text: str) -> list[Any]:
    """ovs-ofctl actions (resubmit, ct, conjunction, load to reg7, NORMAL,
    drop) as OpenFlow actions."""
    out: list[Any] = []
    for action in _split_actions(text):
        name, _, args = action.partition("(")
        args = args.removesuffix(")")
        if action == "drop":
            continue
        if action == "NORMAL":
            out.append(parser.OFPActionOutput(ofp.OFPP_NORMAL, 0))
        elif name == "resubmit" and args.startswith(","):
            out.append(parser.NXActionResubmitTable(table_id=_int(args[1:])))
        elif name == "ct":
            opts = dict(a.partition("=")[::2] for a in args.split(","))
            unknown = set(opts) - {"commit", "table", "zone"}
            if unknown:
                raise _bad(action)
            out.append(parser.NXActionCT(
                flags=1 if "commit" in opts else 0, zone_src="",
                zone_ofs_nbits=_int(opts.get("zone") or "0"),
                recirc_table=_int(opts["table"]) if opts.get("table") else _NO_TABLE,
                alg=0, actions=[]))
        elif name == "conjunction":
            cid, _, clause = args.partition(",")
            k, _, n = clause.partition("/")
            out.append(parser.NXActionConjunction(clause=_int(k) - 1, n_clauses=_int(n),
                                                  id_=_int(cid)))
        elif name.startswith("load:") and action.endswith("->NXM_NX_REG7[]"):
            out.append(parser.NXActionRegLoad(
                ofs_nbits=nicira_ext.ofs_nbits(0, 31), dst="reg7",
                value=_int(action[len("load:"):-len("->NXM_NX_REG7[]")])))
        else:
            raise _bad(action)
    return out


def _fields(text: str) -> tuple[dict[str, str], str]:
    """``table=..,priority=..,cookie=..`` pulled out of a flow's match text."""
    head: dict[str, str] = {}
    rest = []
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key in ("table", "priority", "cookie") and value:
            head[key] = value
        else:
            rest.append(item)
    return head, ",".join(rest)


def flow_mod(line: str) -> parser.OFPFlowMod:
    """One line of ``ovs-ofctl --bundle add-flows`` (``add ...`` or
    ``delete_strict ...``) as a flow mod."""
    try:
        return _flow_mod(line)
    except (ValueError, KeyError) as e:
        raise _bad(line) from e


def _flow_mod(line: str) -> parser.OFPFlowMod:
    verb, _, spec = line.partition(" ")
    if verb == "add":
        match_text, sep, actions = spec.partition("actions=")
        if not sep:
            raise _bad(line)
        match_text = match_text.rstrip(",")
        head, match_text = _fields(match_text)
        acts = actions_of(actions)
        return parser.OFPFlowMod(
            _DP, cookie=_int(head.get("cookie", "0")), table_id=_int(head.get("table", "0")),
            command=ofp.OFPFC_ADD, priority=_int(head.get("priority", "32768")),
            match=match_of(match_text),
            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts)]
            if acts else [])
    if verb == "delete_strict":
        head, match_text = _fields(spec)
        return parser.OFPFlowMod(
            _DP, table_id=_int(head.get("table", "0")), command=ofp.OFPFC_DELETE_STRICT,
            priority=_int(head.get("priority", "32768")), out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY, match=match_of(match_text))
    raise _bad(line)


# OpenFlow 1.4's error types and the prefix of their codes' names.
_ERROR_CODES = {"OFPET_BAD_REQUEST": "OFPBRC_", "OFPET_BAD_ACTION": "OFPBAC_",
                "OFPET_BAD_INSTRUCTION": "OFPBIC_", "OFPET_BAD_MATCH": "OFPBMC_",
                "OFPET_FLOW_MOD_FAILED": "OFPFMFC_", "OFPET_TABLE_FEATURES_FAILED": "OFPTFFC_",
                "OFPET_BUNDLE_FAILED": "OFPBFC_"}


def error_text(kind: int, code: int) -> str:
    """An OpenFlow error's type and code, named where OpenFlow 1.4 names them."""
    tname = next((k for k, v in vars(ofp).items() if k.startswith("OFPET_") and v == kind), "")
    prefix = _ERROR_CODES.get(tname)
    cname = next((k for k, v in vars(ofp).items() if prefix and k.startswith(prefix)
                  and v == code), "")
    if tname and cname:
        return f"{tname} {cname}"
    return f"error type {tname or kind} code {code}"


class SwitchError(FabricError):
    """The switch refused a message (nothing of the bundle was applied)."""


class Connection:
    """An OpenFlow 1.4 connection to one bridge, opened on first use and
    opened again (once per change) if the switch closed it."""

    def __init__(self, bridge: str, path: str | None = None, timeout: float = 10) -> None:
        self.bridge = bridge
        self.path = path or os.path.join(rundir(), f"{bridge}.mgmt")
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._xid = itertools.count(1)
        self._lock = threading.Lock()
        self.connects = 0  # times a connection was opened (kept for tests and the bench)
        # A committed bundle is in force once the datapath's cached flows
        # follow it (compute.ovs_datapath).
        self.datapath = Revalidation(timeout)

    # ------------------------------------------------------------ wire

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            sock.sendall(_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 0))
            self._sock, self._buf = sock, b""
            version, kind, _, _ = self._read()
        except OSError as e:
            sock.close()
            self._sock = None
            raise FabricError(f"openflow to {self.bridge}: {e}") from e
        if kind != ofp.OFPT_HELLO or version < ofp.OFP_VERSION:
            self.close()
            raise FabricError(f"openflow to {self.bridge}: the switch does not speak "
                              "OpenFlow 1.4 on its management socket")
        self.connects += 1
        return sock

    def _read(self) -> tuple[int, int, int, bytes]:
        """The next message (version, type, xid, body); echo requests are
        answered on the way."""
        assert self._sock is not None
        while True:
            while len(self._buf) < 8 or len(self._buf) < _HEADER.unpack_from(self._buf)[2]:
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionResetError("the switch closed the connection")
                self._buf += data
            version, kind, length, xid = _HEADER.unpack_from(self._buf)
            body, self._buf = self._buf[8:length], self._buf[length:]
            if kind == ofp.OFPT_ECHO_REQUEST:
                self._sock.sendall(_HEADER.pack(version, ofp.OFPT_ECHO_REPLY, 8 + len(body),
                                                xid) + body)
                continue
            return version, kind, xid, body

    def _drain(self) -> None:
        """Answer what the switch sent while we were idle (its echo requests),
        or notice that it hung up."""
        assert self._sock is not None
        while select.select([self._sock], [], [], 0)[0]:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionResetError("the switch closed the connection")
            self._buf += data
            while len(self._buf) >= 8 and len(self._buf) >= _HEADER.unpack_from(self._buf)[2]:
                version, kind, length, xid = _HEADER.unpack_from(self._buf)
                body, self._buf = self._buf[8:length], self._buf[length:]
                if kind == ofp.OFPT_ECHO_REQUEST:
                    self._sock.sendall(_HEADER.pack(version, ofp.OFPT_ECHO_REPLY,
                                                    8 + len(body), xid) + body)

    def _serialize(self, msg: Any) -> tuple[int, bytes]:
        xid = next(self._xid) & 0xFFFFFFFF
        msg.set_xid(xid)
        msg.serialize()
        return xid, bytes(msg.buf)

    def send_lines(self, lines: Sequence[str]) -> None:
        """``ovs-ofctl --bundle add-flows`` lines as one bundle (see bundle)."""
        self.bundle([flow_mod(line) for line in lines])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.datapath.close()

    # ------------------------------------------------------------ bundles

    def bundle(self, mods: Sequence[parser.OFPFlowMod]) -> None:
        """`mods` as one atomic, ordered bundle: all of them or none. A
        refusal of the switch is a SwitchError naming it; the bundle is then
        discarded (the flows stay as they were). Returns once the datapath
        follows the new flows (its cached flows revalidated)."""
        if not mods:
            return
        self._commit(mods)
        # Twice: the first answer may come from a round that was already
        # running when the change was committed (it ends without having
        # seen it: 3 of 240 joins in test_ovs_datapath_cache kept their
        # stale drop); the round that answers the second question started
        # after the first answer, so after the change.
        self.datapath.wait(kick=self._kick)
        self.datapath.wait(kick=self._kick)

    def _kick(self) -> None:
        """KICK_FLOW committed, without waiting for the datapath
        (compute.ovs_datapath)."""
        self._commit([flow_mod(KICK_FLOW)])

    def _commit(self, mods: Sequence[parser.OFPFlowMod]) -> None:
        def send() -> None:
            if self._sock is None:
                self._open()
            else:
                self._drain()
            self._bundle(mods)

        # After a hang-up the bundle was not committed, or was and sending it
        # again changes nothing (adds and strict deletes are idempotent).
        with self._lock:
            once_more_after_hangup(send, self.close, f"openflow to {self.bridge}")

    def _bundle(self, mods: Sequence[parser.OFPFlowMod]) -> None:
        sock = self._sock
        assert sock is not None
        bundle_id = next(self._xid) & 0xFFFFFFFF
        flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
        out: list[bytes] = []
        _, opened = self._serialize(parser.OFPBundleCtrlMsg(
            _DP, bundle_id, ofp.OFPBCT_OPEN_REQUEST, flags, []))
        out.append(opened)
        added: dict[int, int] = {}
        for i, mod in enumerate(mods):
            xid, data = self._serialize(parser.OFPBundleAddMsg(_DP, bundle_id, flags, mod, []))
            added[xid] = i
            out.append(data)
        barrier_xid, barrier = self._serialize(parser.OFPBarrierRequest(_DP))
        out.append(barrier)
        sock.sendall(b"".join(out))
        refused = self._until(barrier_xid, ofp.OFPT_BARRIER_REPLY, added)
        if refused is not None:
            _, discard = self._serialize(parser.OFPBundleCtrlMsg(
                _DP, bundle_id, ofp.OFPBCT_DISCARD_REQUEST, flags, []))
            sync_xid, sync = self._serialize(parser.OFPBarrierRequest(_DP))
            sock.sendall(discard + sync)
            self._until(sync_xid, ofp.OFPT_BARRIER_REPLY, {})
            raise refused
        commit_xid, commit = self._serialize(parser.OFPBundleCtrlMsg(
            _DP, bundle_id, ofp.OFPBCT_COMMIT_REQUEST, flags, []))
        sock.sendall(commit)
        refused = self._until(commit_xid, ofp.OFPT_BUNDLE_CONTROL, added)
        if refused is not None:
            raise refused

    def _until(self, xid: int, reply: int, added: dict[int, int]) -> SwitchError | None:
        """Read up to the reply `reply` to `xid`; the first error of the
        bundle's messages (or of `xid` itself), if any, as a SwitchError."""
        first: SwitchError | None = None
        while True:
            _, kind, got, body = self._read()
            if kind == ofp.OFPT_ERROR:
                etype, code = struct.unpack_from("!HH", body)
                where = f"flow {added[got] + 1}" if got in added else "bundle"
                err = SwitchError(f"openflow on {self.bridge}: the switch refused the "
                                  f"{where}: {error_text(etype, code)}")
                if first is None:
                    first = err
                if got == xid:
                    return first
                continue
            if got == xid and kind == reply:
                return first
