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
