"""Server configuration: TOML file, environment, command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmgr.server import ADMIN_TOKEN_ENV, ServerConfig, load_config, parse_args


def test_defaults() -> None:
    config = ServerConfig()
    assert config.listen == "127.0.0.1:7070"
    assert config.db_url == "sqlite:////var/lib/cloudnet/netmgr.db"
    assert config.default_host == "local"
    assert config.agents == {"local": "unix:///run/cloudnet/agent.sock"}
    assert (config.zone.name, config.zone.public_cidr, config.zone.vlan_min,
            config.zone.vlan_max, config.zone.domain_suffix) == (
        "zone1", "203.0.113.0/24", 100, 999, "cloud.internal")


def test_toml_then_env_then_flags(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("from-file\n")
    cfg = tmp_path / "netmgr.toml"
    cfg.write_text(f"""
listen = "0.0.0.0:7000"
db_url = "sqlite:///{tmp_path}/x.db"
admin_token_file = "{token_file}"
default_host = "h1"
[agents]
h1 = "10.0.0.1:7071"
h2 = "10.0.0.2:7071"
[zone]
name = "lab"
upstream_dns = ["9.9.9.9"]
vlan_min = 10
""")
    config = load_config(parse_args(["--config", str(cfg)]), environ={})
    assert (config.listen, config.admin_token, config.default_host) == (
        "0.0.0.0:7000", "from-file", "h1")
    assert config.agents == {"h1": "10.0.0.1:7071", "h2": "10.0.0.2:7071"}
    assert (config.zone.name, config.zone.upstream_dns, config.zone.vlan_min,
            config.zone.vlan_max) == ("lab", ("9.9.9.9",), 10, 999)

    config = load_config(parse_args(["--config", str(cfg)]), environ={ADMIN_TOKEN_ENV: "env"})
    assert config.admin_token == "env"

    flag_token = tmp_path / "flag.token"
    flag_token.write_text("from-flag")
    config = load_config(parse_args([
        "--config", str(cfg), "--listen", "127.0.0.1:1", "--db-url", "sqlite:///y.db",
        "--admin-token-file", str(flag_token), "--agent", "local=unix:///tmp/a.sock",
    ]), environ={ADMIN_TOKEN_ENV: "env"})
    assert (config.listen, config.db_url, config.admin_token, config.agents) == (
        "127.0.0.1:1", "sqlite:///y.db", "from-flag", {"local": "unix:///tmp/a.sock"})


@pytest.mark.parametrize("text", ['bogus = 1', '[zone]\nbogus = 1'])
def test_unknown_settings_are_refused(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match="bogus"):
        ServerConfig.from_toml(cfg)


def test_main_refuses_to_start_without_an_admin_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from netmgr.server import main

    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert main(["--db-url", "sqlite://"]) == 2
    assert "no admin token" in capsys.readouterr().err


def test_the_zone_vlan_plan_from_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "netmgr.toml"
    cfg.write_text("[zone]\nprivate_gateway_vlan_min = 2000\nprivate_gateway_vlan_max = 2099\n"
                   "reserved_vlans = [4000, 4001, 4002]\n")
    zone = ServerConfig.from_toml(cfg).zone
    assert (zone.private_gateway_vlan_min, zone.private_gateway_vlan_max,
            zone.reserved_vlans) == (2000, 2099, (4000, 4001, 4002))


def test_the_vm_backend_control_vlan_is_reserved_in_the_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netmgr.server import reserve_control_vlan
    from netmgr.store.facade import Store

    store = Store(f"sqlite:///{tmp_path}/z.db")
    try:
        assert reserve_control_vlan(store, 3999)
        assert 3999 in store.get_zone().reserved_vlans
        assert reserve_control_vlan(store, 3999)  # already: nothing changes
        # A VLAN of the guest range cannot be the control network's.
        assert not reserve_control_vlan(store, 150)
        assert "router_vm.control_vlan 150" in capsys.readouterr().err
        assert 150 not in store.get_zone().reserved_vlans
    finally:
        store.close()


def test_the_secrets_key_lives_beside_the_admin_token(tmp_path: Path) -> None:
    token = tmp_path / "etc" / "admin.token"
    token.parent.mkdir()
    token.write_text("adm\n")
    config = load_config(parse_args(["--admin-token-file", str(token),
                                     "--db-url", f"sqlite:///{tmp_path}/db/x.db"]), environ={})
    assert config.secrets_key_path() == str(tmp_path / "etc" / "secrets.key")
    config = load_config(parse_args(["--db-url", f"sqlite:///{tmp_path}/db/x.db"]),
                         environ={ADMIN_TOKEN_ENV: "adm"})
    assert config.secrets_key_path() == str(tmp_path / "db" / "secrets.key")
    config = load_config(parse_args(["--db-url", "postgresql+psycopg://u@/db",
                                     "--secrets-key-file", "/k/s.key"]),
                         environ={ADMIN_TOKEN_ENV: "adm"})
    assert config.secrets_key_path() == "/k/s.key"
    config = load_config(parse_args(["--db-url", "postgresql+psycopg://u@/db"]),
                         environ={ADMIN_TOKEN_ENV: "adm"})
    with pytest.raises(ValueError, match="secrets_key_file"):
        config.secrets_key_path()
