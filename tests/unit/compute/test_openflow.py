"""compute.openflow's translation of the port filters' flow text into
OpenFlow 1.4 messages (pure logic; the switch's side is
tests/integration/security_groups/test_openflow_connection.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from os_ken.ofproto import ofproto_v1_4 as ofp

from common.fabric.base import FabricError
from common.fabric.ovs_firewall import OvsFirewall, Plugged
from common.fabric.port_firewall import Port, Rule
from compute.openflow import actions_of, flow_mod, match_of

GID = "00000000-0000-4000-8000-0000000000aa"


class Recorded(OvsFirewall):
    def __init__(self) -> None:
        super().__init__("unused")
        self.lines: list[str] = []

    def run(self, lines: Sequence[str]) -> None:
        self.lines += lines

    def plugged_many(self, devices: Sequence[str]) -> dict[str, Plugged]:
        return {d: Plugged(int(d.removeprefix("p")) + 1, 100) for d in devices}


def test_every_flow_the_firewall_writes_becomes_a_message() -> None:
    rules = (Rule("ingress", protocol="tcp", port_min=22, port_max=30, remote_group_id=GID),
             Rule("egress"), Rule("ingress", "ipv6", protocol="icmp", icmp_type=128,
                                  icmp_code=0),
             Rule("ingress", protocol="udp", port_min=53, remote_cidr="10.1.0.0/16"),
             Rule("ingress", protocol="47"),
             Rule("egress", "ipv6", protocol="tcp", port_min=80, remote_group_id=GID))
    ports = [Port(f"p{i}", f"02:00:00:00:00:{i:02x}", (f"10.0.0.{i + 10}", f"2001:db8::{i + 10}"),
                  (("10.5.0.0/24", ""), ("2001:db8:5::/64", "02:00:00:00:01:01")), rules)
             for i in range(3)]
    fw = Recorded()
    fw.setup()
    fw.apply(ports, {GID: ["10.0.0.10", "2001:db8::99"]})
    fw.apply(ports[1:], {GID: []})
    assert any(line.startswith("delete_strict") for line in fw.lines)
    for line in fw.lines:
        mod = flow_mod(line)
        mod.serialize()
        assert mod.command == (ofp.OFPFC_ADD if line.startswith("add")
                               else ofp.OFPFC_DELETE_STRICT)


def test_matches_and_actions_carry_their_values() -> None:
    m = match_of("ct_state=+new-est+trk,tcp6,reg7=0x5,ipv6_src=2001:db8::/64,"
                 "tp_dst=0x16/0xfffe")
    assert m["ct_state"] == (0x21, 0x23)
    assert m["eth_type"] == 0x86DD
    assert m["ip_proto"] == 6
    assert m["tcp_dst"] == (0x16, 0xFFFE)
    assert m["ipv6_src"] == ("2001:db8::", "ffff:ffff:ffff:ffff::")
    assert m["reg7"] == 5
    ct, resubmit = actions_of("ct(commit,zone=7),resubmit(,60)")
    assert (ct.flags, ct.zone_ofs_nbits, ct.recirc_table) == (1, 7, 255)
    assert resubmit.table_id == 60
    (conj,) = actions_of("conjunction(99,2/2)")
    assert (conj.id, conj.clause, conj.n_clauses) == (99, 1, 2)
    assert actions_of("drop") == []


@pytest.mark.parametrize("line", [
    "add table=1,priority=5,in_port=1,actions=output:3",
    "add table=1,priority=5,vlan_tci=0x1000,actions=drop",
    "add table=1,priority=5,ct_state=+bogus,actions=drop",
    "add table=1,priority=5,ip,nw_src=10.0.0.300,actions=drop",
    "modify table=1,priority=5,actions=drop",
    "add table=1,priority=5,in_port=1",
])
def test_what_it_cannot_express_is_a_fabric_error(line: str) -> None:
    with pytest.raises(FabricError, match="openflow: cannot express"):
        flow_mod(line)
