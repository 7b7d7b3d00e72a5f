"""`cloudnet debug ...` argument parsing (no server)."""

from __future__ import annotations

import pytest

from netmgr.cli import main as cli


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_debug_commands_parse():
    a = parse("debug", "capture", "r1", "--network", "n1", "--filter", "udp port 67", "-c", "5",
              "-w", "-")
    assert (a.router, a.network, a.filter, a.count, a.write) == ("r1", "n1", "udp port 67", 5,
                                                                 "-")
    a = parse("-o", "json", "debug", "probe", "tcp", "r1", "1.2.3.4:80", "--from-network", "n1")
    assert (a.target, a.from_network, a.output) == ("1.2.3.4:80", "n1", "json")
    a = parse("debug", "probe", "dns", "r1", "vm1.example", "--type", "AAAA",
              "--resolver", "10.0.0.1")
    assert (a.name, a.type, a.resolver) == ("vm1.example", "AAAA", "10.0.0.1")
    a = parse("debug", "trace", "r1", "--dst", "203.0.113.5", "--proto", "tcp", "--port", "22")
    assert (a.dst, a.proto, a.port) == ("203.0.113.5", "tcp", 22)
    a = parse("debug", "show", "r1", "conntrack", "--address", "10.0.0.5")
    assert (a.what, a.address) == ("conntrack", "10.0.0.5")
    a = parse("debug", "explain", "--from", "internet", "--to", "203.0.113.5:80/tcp")
    assert (a.source, a.to) == ("internet", "203.0.113.5:80/tcp")


@pytest.mark.parametrize("argv", [
    ("debug", "capture", "r1", "--network", "n1"),          # no -w
    ("debug", "show", "r1", "arp-table"),
    ("debug", "trace", "r1", "--proto", "sctp"),
    ("debug", "probe", "dhcp", "r1"),                         # no --network
])
def test_debug_usage_errors(argv, capsys):
    assert cli.main(list(argv)) == 2


def test_capture_needs_one_interface(capsys, monkeypatch):
    monkeypatch.setenv("CLOUDNET_TOKEN", "x")
    monkeypatch.setenv("CLOUDNET_SERVER", "127.0.0.1:1")
    assert cli.main(["debug", "capture", "r1", "-w", "-"]) == 2
    assert "--network" in capsys.readouterr().err


def test_explain_names_the_ingress_rule_that_opens_an_ipv6_guest(c, server) -> None:
    """``cloudnet debug explain`` over IPv6 against the real API server: a
    routed dual-stack guest is closed from the internet until an ingress
    rule naming its network opens it; the rule is named."""
    import grpc
    from cloudnet.netmgr.v1 import netmgr_pb2 as npb
    from google.protobuf.field_mask_pb2 import FieldMask

    from tests.lib.netmgr_cloud import Api

    with grpc.insecure_channel(server) as channel:
        Api(channel, c.admin).UpdateZone(npb.UpdateZoneRequest(
            zone=npb.Zone(ipv6_pool="2001:db8:100::/48", routed_pool="198.18.0.0/16"),
            update_mask=FieldMask(paths=["ipv6_pool", "routed_pool"])))
    t = c.json(c.admin, "tenant", "create", "acme")
    tok = str(c.json(c.admin, "token", "create", t["id"], "--name", "ci")["secret"])
    net = c.json(tok, "network", "create", "pub", "--routed", "--ipv6-mode", "dhcpv6-stateful")
    port = c.json(tok, "port", "create", net["id"])
    to = f"[{port['ipv6']}]:443/tcp"
    code, out, _ = c.run(tok, "debug", "explain", "--from", "2001:db8:beef::7", "--to", to)
    assert (code, out.split(":")[0]) == (1, "BLOCKED by firewall-default drop")
    rule = c.json(tok, "firewall", "create", "ingress", "--network", net["id"], "--protocol",
                  "tcp", "--ports", "443", "--cidr", "2001:db8:beef::/48")
    code, out, _ = c.run(tok, "debug", "explain", "--from", "2001:db8:beef::7", "--to", to)
    assert (code, out.split(":")[0]) == (0, f"ALLOWED by firewall {rule['id']}")
    assert "routed: no NAT" in out
