"""Pure parts of the router diagnostics: parsers, validation, limits."""
# ruff: noqa: E501 (nft output is quoted verbatim)

from __future__ import annotations

import pytest
from cloudnet.router.v1 import diag_pb2 as pb

from router.diag import capture, show, trace
from router.diag.common import DiagError, object_of_comment

RULESET = '''table inet cloudnet { # handle 7
	chain forward { # handle 3
		type filter hook forward priority filter; policy drop;
		ct state established,related counter packets 12 bytes 3400 accept comment "replies" # handle 9
		iifname @guest_ifaces oifname @public_ifaces ip saddr @guest_nets counter packets 5 bytes 300 accept comment "guest egress" # handle 11
		counter packets 2 bytes 120 comment "dropped by policy" # handle 12
	}
	chain prerouting { # handle 4
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 203.0.113.10 tcp dport 8080 counter packets 1 bytes 60 dnat ip to 10.0.0.5:80 comment "cn:port-forward:pf-1" # handle 20
	}
}
'''


def test_counters_map_rules_to_objects():
    counters = {c.handle: c for c in show.parse_counters(RULESET)}
    assert counters[9].packets == 12
    assert counters[9].bytes == 3400
    assert counters[9].chain == "forward"
    assert counters[9].table == "inet cloudnet"
    assert (counters[12].object_kind, counters[12].object_id) == ("firewall-default", "drop")
    assert (counters[20].object_kind, counters[20].object_id) == ("port-forward", "pf-1")
    assert "# handle" not in counters[20].rule


def test_conntrack_line_with_snat():
    line = ("tcp      6 431999 ESTABLISHED src=10.1.1.2 dst=198.51.100.10 sport=40000 dport=80 "
            "src=198.51.100.10 dst=203.0.113.10 sport=80 dport=40000 [ASSURED] mark=0 use=1")
    e = show.parse_conntrack_line(line)
    assert e is not None
    assert (e.protocol, e.state, e.source, e.destination_port) == ("tcp", "ESTABLISHED",
                                                                   "10.1.1.2", 80)
    assert e.reply_destination == "203.0.113.10"
    assert e.nat == "snat"
    assert show.parse_conntrack_line("conntrack v1.4.7 (conntrack-tools): 1 flow entries") is None


def test_trace_lines():
    rule = trace.parse_line('trace id 0a1b inet cloudnet prerouting rule ip daddr 203.0.113.10 '
                            'tcp dport 8080 counter packets 0 bytes 0 dnat ip to 10.0.0.5:80 '
                            'comment "cn:port-forward:pf-1" (verdict accept)')
    assert rule is not None
    assert (rule.object_kind, rule.object_id) == ("port-forward", "pf-1")
    assert rule.nat_target == "10.0.0.5:80"
    assert rule.verdict.startswith("dnat to 10.0.0.5:80")
    pol = trace.parse_line("trace id 0a1b inet cloudnet input policy drop ")
    assert pol is not None
    assert pol.verdict == "drop"
    assert pol.object_kind == "firewall-default"
    assert trace.parse_line("add table inet x") is None
    # A marked packet (a source-NAT address's, by edge_ingress): nft appends its mark.
    pol = trace.parse_line("trace id 0a1b inet cloudnet input policy drop meta mark 0x636e0001")
    assert pol is not None
    assert (pol.verdict, pol.object_kind) == ("drop", "firewall-default")
    rule = trace.parse_line('trace id 0a1b inet cloudnet forward rule meta mark 0x636e0001 ct '
                            'status dnat counter packets 0 bytes 0 drop comment '
                            '"cn:fw-default-drop" (verdict drop) meta mark 0x636e0001')
    assert rule is not None
    assert (rule.verdict, rule.object_kind) == ("drop", "firewall-default")


@pytest.mark.parametrize(("req", "field"), [
    (pb.TraceRequest(), "source"),
    (pb.TraceRequest(source="10.0.0.1; drop"), "source"),
    (pb.TraceRequest(destination="1.2.3.4", protocol="sctp"), "protocol"),
    (pb.TraceRequest(port=22), "port"),
    (pb.TraceRequest(protocol="tcp", port=70000), "port"),
])
def test_trace_match_rejects(req, field):
    with pytest.raises(DiagError) as e:
        trace.match_expr(req)
    assert e.value.field == field


def test_trace_match_and_table():
    m = trace.match_expr(pb.TraceRequest(source="10.0.0.0/24", destination="203.0.113.10",
                                         protocol="tcp", port=22))
    assert m == "ip saddr 10.0.0.0/24 ip daddr 203.0.113.10 tcp dport 22"
    text = trace.table_text("cloudnet-trace-x", m)
    assert "meta nftrace set 1" in text
    assert "priority -350" in text


@pytest.mark.parametrize(("kw", "field"), [
    (dict(max_packets=100_001), "max_packets"),
    (dict(max_seconds=-1), "max_seconds"),
    (dict(max_bytes=10), "max_bytes"),
    (dict(snaplen=1 << 20), "snaplen"),
])
def test_capture_limits(kw, field):
    args = dict(max_packets=0, max_seconds=0, max_bytes=0, snaplen=0)
    args.update(kw)
    with pytest.raises(DiagError) as e:
        capture.check_limits(**args)
    assert e.value.field == field


def test_capture_defaults_and_filter_text():
    lim = capture.check_limits(0, 0, 0, 0)
    assert (lim.packets, lim.seconds, lim.bytes) == (100, 10.0, 10 << 20)
    with pytest.raises(DiagError):
        capture.check_filter_text("udp\nport 67")
    with pytest.raises(DiagError):
        capture.check_filter_text("x" * 2000)


def test_object_of_comment():
    assert object_of_comment("cn:fw:r-1") == ("fw", "r-1")
    assert object_of_comment("cn:fw-default-drop") == ("firewall-default", "drop")
    assert object_of_comment("replies") == ("", "")


def test_element_lookup_with_masks_ranges_and_maps():
    els = trace._Elements.__new__(trace._Elements)
    els.netns = "unused"
    els.cache = {
        "allow_24": [(["203.0.113.20", "tcp", 22, "198.51.100.0"], "cn:firewall:fw-1", None)],
        "fw_in": [(["203.0.113.20", "tcp", {"range": [1000, 2000]},
                    {"prefix": {"addr": "10.0.0.0", "len": 8}}], "cn:firewall:fw-2", None)],
        "pf_dnat": [(["203.0.113.20", "tcp", 8080], "cn:portforward:pf-1",
                     {"concat": ["10.1.1.5", 80]})],
    }
    fields = trace.packet_fields(
        'iif "pub0" ip saddr 198.51.100.10 ip daddr 203.0.113.20 ip protocol tcp '
        "tcp sport 4000 tcp dport 22 tcp flags == syn")
    rule = "ip daddr . meta l4proto . th dport . ip saddr & 255.255.255.0 @allow_24 accept"
    assert els.match("inet cloudnet", rule, fields) == ("cn:firewall:fw-1", "")
    fields2 = dict(fields, **{"ip saddr": "10.2.3.4", "th dport": "1500"})
    rule2 = "ip daddr . meta l4proto . th dport . ip saddr @fw_in accept"
    assert els.match("inet cloudnet", rule2, fields2) == ("cn:firewall:fw-2", "")
    fields3 = dict(fields, **{"th dport": "8080"})
    rule3 = "dnat ip to ip daddr . meta l4proto . th dport map @pf_dnat"
    assert els.match("inet cloudnet", rule3, fields3) == ("cn:portforward:pf-1", "10.1.1.5:80")
    assert els.match("inet cloudnet", rule2, fields) is None


def test_element_lookup_with_icmp_names_and_address_ranges():
    # What `nft -j` prints for the firewall's ICMP set: types and codes by
    # name (a range starts at a name, ends at a number); big source ranges
    # as address ranges, not prefixes.
    els = trace._Elements.__new__(trace._Elements)
    els.netns = "unused"
    els.cache = {"fw_in_icmp": [
        (["203.0.113.20", "echo-request", "net-unreachable",
          {"range": ["198.51.100.7", "198.51.100.20"]}], "cn:firewall:ping", None),
        (["203.0.113.20", {"range": ["destination-unreachable", 5]},
          {"range": ["net-unreachable", 255]},
          {"prefix": {"addr": "0.0.0.0", "len": 0}}], "cn:firewall:unreach", None)]}
    rule = "ip daddr . icmp type . icmp code . ip saddr @fw_in_icmp counter accept"

    def packet(saddr: str, icmp: str) -> dict[str, str]:
        return trace.packet_fields(f'iif "pub0" ip saddr {saddr} ip daddr 203.0.113.20 '
                                   f"ip protocol icmp {icmp}")

    assert els.match("inet cloudnet", rule, packet(
        "198.51.100.9", "icmp type echo-request icmp code net-unreachable")) == (
        "cn:firewall:ping", "")
    assert els.match("inet cloudnet", rule, packet(
        "198.51.100.9", "icmp type echo-request icmp code 0")) == ("cn:firewall:ping", "")
    assert els.match("inet cloudnet", rule, packet(
        "198.51.100.21", "icmp type echo-request icmp code 0")) is None
    assert els.match("inet cloudnet", rule, packet(
        "192.0.2.1", "icmp type redirect icmp code host-unreachable")) == (
        "cn:firewall:unreach", "")
    assert els.match("inet cloudnet", rule, packet(
        "192.0.2.1", "icmp type echo-reply icmp code 0")) is None


def test_a_trace_ends_only_after_its_last_packets_events_stop_arriving():
    """`nft monitor` in a starved router VM prints one packet's events with
    pauses: the trace must not end half a second after the packet's first
    event while its later events (the forward hook's drop) are still coming."""
    window = trace.PacketWindow(packets=1, quiet=0.5)
    assert window.admit("p1", now=10.0)  # our marking rule: the packet is ours
    assert window.ends_at(deadline=20.0) == pytest.approx(10.5)
    assert window.admit("p1", now=10.4)  # edge_ingress
    assert window.admit("p1", now=10.8)  # forward, 0.8 s after the first event
    assert window.ends_at(deadline=20.0) == pytest.approx(11.3)
    assert not window.admit("p2", now=10.9)  # past max_packets: not traced
    assert window.ends_at(deadline=20.0) == pytest.approx(11.3)
    assert window.ends_at(deadline=11.0) == 11.0  # max_seconds still bounds it


def test_a_trace_window_stays_open_until_enough_packets():
    window = trace.PacketWindow(packets=2, quiet=0.5)
    assert window.ends_at(deadline=20.0) == 20.0
    assert window.admit("p1", now=10.0)
    assert window.ends_at(deadline=20.0) == 20.0  # a second packet may come
    assert window.admit("p2", now=12.0)
    assert window.admit("p1", now=12.1)  # a late line of the first packet is still its
    assert window.ends_at(deadline=20.0) == pytest.approx(12.6)
