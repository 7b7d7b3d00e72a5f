"""Argument parsing, settings resolution and argument -> request mapping."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from netmgr.cli import main as cli


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def no_env_settings(args: argparse.Namespace, **env: str) -> cli.Settings:
    return cli.resolve_settings(args, env=dict(env))


# ------------------------------------------------------------ settings


def test_settings_defaults_and_env(tmp_path: Path) -> None:
    args = parse("whoami")
    s = no_env_settings(args, CLOUDNET_TOKEN="tok")
    assert (s.server, s.token, s.tenant, s.output, s.timeout) == (
        "127.0.0.1:7070",
        "tok",
        None,
        "table",
        30.0,
    )
    s = no_env_settings(args, CLOUDNET_TOKEN="tok", CLOUDNET_SERVER="h:1", CLOUDNET_TENANT="t-9")
    assert (s.server, s.tenant) == ("h:1", "t-9")


def test_flags_override_env_and_may_follow_the_subcommand() -> None:
    args = parse("--server", "a:1", "network", "list", "--token", "x", "-o", "json")
    s = no_env_settings(args, CLOUDNET_SERVER="env:2", CLOUDNET_TOKEN="envtok")
    assert (s.server, s.token, s.output) == ("a:1", "x", "json")
    # a global option given before the sub-command is not reset by it
    args = parse("--output", "json", "--timeout", "5", "network", "list")
    s = no_env_settings(args, CLOUDNET_TOKEN="t")
    assert (s.output, s.timeout) == ("json", 5.0)


def test_token_from_files(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("  secret-from-file\n")
    s = no_env_settings(parse("whoami"), CLOUDNET_TOKEN_FILE=str(f))
    assert s.token == "secret-from-file"
    with pytest.raises(cli.UsageError, match="does not exist"):
        no_env_settings(parse("whoami"), CLOUDNET_TOKEN_FILE=str(tmp_path / "missing"))


def test_token_from_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(cli.UsageError, match="no API token"):
        no_env_settings(parse("whoami"))
    (home / ".config/cloudnet").mkdir(parents=True)
    (home / ".config/cloudnet/token").write_text("dflt\n")
    assert no_env_settings(parse("whoami")).token == "dflt"


def test_missing_token_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["whoami"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cloudnet: error: no API token")
    assert err.count("\n") == 1


# ------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["network"],
        ["network", "create", "x"],  # --cidr is required
        ["network", "create", "x", "--cidr", "10.0.0.0/24", "--mtu", "-1"],
        ["port", "list", "--limit", "0"],
        ["--output", "yaml", "whoami"],
        ["bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for group in ("tenant", "token", "whoami", "zone", "network", "port", "router"):
        assert group in out


@pytest.mark.parametrize(
    "argv",
    [
        ["zone", "update"],
        ["network", "update", "n-1"],
        ["port", "update", "p-1"],
        ["network", "update", "n-1", "--dns", "1.1.1.1", "--no-dns"],
    ],
)
def test_update_without_fields_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--token", "t", "--server", "127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cloudnet: error: ")
    assert err.count("\n") == 1


# -------------------------------------------------- request mapping


def test_zone_update_mask_is_exactly_the_given_fields() -> None:
    req = cli.build_zone_update(parse("zone", "update", "--pool-start", "203.0.113.10"))
    assert list(req.update_mask.paths) == ["public_pool_start"]
    assert req.zone.public_pool_start == "203.0.113.10"

    req = cli.build_zone_update(
        parse(
            "zone", "update",
            "--public-cidr", "203.0.113.0/24",
            "--public-gateway", "203.0.113.1",
            "--pool-end", "203.0.113.200",
            "--vlan-min", "100",
            "--vlan-max", "0",
            "--upstream-dns", "1.1.1.1", "9.9.9.9",
            "--domain-suffix", "cloud.test",
        )
    )  # fmt: skip
    assert sorted(req.update_mask.paths) == sorted(
        [
            "public_cidr",
            "public_gateway",
            "public_pool_end",
            "vlan_min",
            "vlan_max",
            "upstream_dns",
            "domain_suffix",
        ]
    )
    assert (req.zone.vlan_min, req.zone.vlan_max) == (100, 0)
    assert list(req.zone.upstream_dns) == ["1.1.1.1", "9.9.9.9"]


def test_zone_update_upstream_dns_without_values_clears_it() -> None:
    req = cli.build_zone_update(parse("zone", "update", "--upstream-dns"))
    assert list(req.update_mask.paths) == ["upstream_dns"]
    assert list(req.zone.upstream_dns) == []


def test_network_create_request() -> None:
    req = cli.build_network_create(
        parse(
            "network", "create", "web", "--cidr", "10.1.0.0/24",
            "--gateway", "10.1.0.254", "--domain", "web.test",
            "--dns", "1.1.1.1", "--dns", "8.8.8.8,9.9.9.9",
            "--domain-search", "a.test", "--mtu", "1400", "--lease-seconds", "600",
        )
    )  # fmt: skip
    n = req.network
    assert (n.name, n.cidr, n.gateway, n.domain) == ("web", "10.1.0.0/24", "10.1.0.254", "web.test")
    assert list(n.dns_servers) == ["1.1.1.1", "8.8.8.8", "9.9.9.9"]
    assert list(n.domain_search) == ["a.test"]
    assert (n.mtu, n.lease_seconds) == (1400, 600)
    minimal = cli.build_network_create(parse("network", "create", "x", "--cidr", "10.0.0.0/29"))
    assert minimal.network.gateway == ""
    assert minimal.network.mtu == 0


def test_network_update_mask() -> None:
    req = cli.build_network_update(parse("network", "update", "n-1", "--mtu", "0"))
    assert req.network.id == "n-1"
    assert list(req.update_mask.paths) == ["mtu"]
    req = cli.build_network_update(
        parse("network", "update", "n-1", "--name", "b", "--no-dns", "--domain-search", "x.test")
    )
    assert list(req.update_mask.paths) == ["name", "dns_servers", "domain_search"]
    assert list(req.network.dns_servers) == []
    assert list(req.network.domain_search) == ["x.test"]
    req = cli.build_network_update(parse("network", "update", "n-1", "--lease-seconds", "60"))
    assert list(req.update_mask.paths) == ["lease_seconds"]


def test_port_requests() -> None:
    req = cli.build_port_create(
        parse("port", "create", "n-1", "--hostname", "vm1", "--ip", "10.0.0.9", "--device-id", "i")
    )
    p = req.port
    assert (p.network_id, p.hostname, p.ip, p.device_id, p.mac, p.name) == (
        "n-1",
        "vm1",
        "10.0.0.9",
        "i",
        "",
        "",
    )
    req = cli.build_port_update(parse("port", "update", "p-1", "--device-id", "", "--name", "a"))
    assert req.port.id == "p-1"
    assert list(req.update_mask.paths) == ["name", "device_id"]


def test_zone_update_sets_the_vlan_plan() -> None:
    req = cli.build_zone_update(parse("zone", "update", "--pg-vlan-min", "2000",
                                      "--pg-vlan-max", "2099", "--reserved-vlans", "4000",
                                      "4001", "4002"))
    assert sorted(req.update_mask.paths) == ["private_gateway_vlan_max",
                                             "private_gateway_vlan_min", "reserved_vlans"]
    assert (req.zone.private_gateway_vlan_min, req.zone.private_gateway_vlan_max) == (2000, 2099)
    assert list(req.zone.reserved_vlans) == [4000, 4001, 4002]
