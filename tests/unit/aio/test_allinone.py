"""The all-in-one's switches, without root: its help, the Prometheus metrics
switch handed to both daemons, what it says about (and --fresh does to) a
state directory a previous run left, and the compute agent's port (taken
free by the agent itself, and found through netmgr's host registry)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import hosts_pb2, hosts_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aio import allinone
from aio import vm_backend as aio_vm
from aio.allinone import AllInOne
from compute.agent import server as compute_server
from netmgr.store.facade import Store
from tests.lib.netmgr_cloud import ADMIN, start_cloud


def test_help_shows_no_hidden_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        allinone.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "SUPPRESS" not in out
    assert "whoami" not in out
    assert "up" in out
    assert "--metrics-listen" in out
    with pytest.raises(SystemExit):
        allinone.main(["up", "--help"])
    assert "--fresh" in capsys.readouterr().out


class _Recorder(AllInOne):
    """An all-in-one that records what it would start instead of starting it."""

    def spawn(self, name: str, argv: list[str], ns: str | None = None) -> None:
        self.spawned = {**getattr(self, "spawned", {}), name: argv}


def _aio(tmp_path: Path, **kw: Any) -> _Recorder:
    return _Recorder(prefix="tu", state_dir=str(tmp_path), listen="127.0.0.1:7070",
                     fabric_kind="linuxbridge", **kw)


def test_metrics_switch_reaches_both_daemons(tmp_path: Path) -> None:
    aio = _aio(tmp_path, metrics_listen="127.0.0.1:9300")
    aio.start_netmgr()
    aio.start_agent()
    netmgr, agent = aio.spawned["netmgr"], aio.spawned["router-agent"]
    assert netmgr[netmgr.index("--metrics-listen") + 1] == "127.0.0.1:9300"
    assert agent[agent.index("--metrics-listen") + 1] == "127.0.0.1:9301"
    # ... as arguments those daemons take.
    from netmgr.server import parse_args as netmgr_args
    from router.agent.server import parse_args as agent_args

    assert netmgr_args(netmgr[3:]).metrics_listen == "127.0.0.1:9300"
    assert agent_args(agent[3:]).metrics_listen == "127.0.0.1:9301"
    quiet = _aio(tmp_path)
    quiet.start_netmgr()
    quiet.start_agent()
    assert not any("--metrics-listen" in argv for argv in quiet.spawned.values())


def _previous_run(state: Path) -> None:
    """What a previous all-in-one left: netmgr's database with a tenant's
    network (and its source-NAT IP), the agent's router state."""
    from netmgr.model.validation import NetworkSpec

    store = Store(f"sqlite:///{state / 'netmgr.db'}")
    try:
        tenant = store.create_tenant("acme")
        store.create_network(tenant.id, NetworkSpec(name="web", cidr="10.1.0.0/24"))
        store.create_network(tenant.id, NetworkSpec(name="db", cidr="10.2.0.0/24"))
    finally:
        store.close()
    (state / "agent" / "routers" / "r1").mkdir(parents=True)
    (state / "agent" / "routers" / "r1" / "config.pb").write_bytes(b"x")


def test_a_reused_state_dir_is_announced(tmp_path: Path) -> None:
    assert _aio(tmp_path).previous_state() is None  # nothing to say about a fresh one
    _previous_run(tmp_path)
    note = _aio(tmp_path).previous_state()
    assert note is not None
    assert str(tmp_path) in note
    assert "2 networks" in note
    assert "1 tenant" in note
    assert "2 source-NAT" in note
    assert "--fresh" in note


def test_fresh_starts_from_an_empty_state_dir(tmp_path: Path) -> None:
    _previous_run(tmp_path)
    aio = _aio(tmp_path)
    token = aio.admin_token
    aio.wipe_state()
    assert not (tmp_path / "netmgr.db").exists()
    assert not (tmp_path / "agent").exists()
    assert _aio(tmp_path).previous_state() is None
    # The admin token stays: a CLI configured with it still works.
    assert _aio(tmp_path).admin_token == token


def test_up_says_what_it_reuses_and_fresh_wipes(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _previous_run(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(AllInOne, "down", lambda self: calls.append("down"))

    def up(self: AllInOne) -> None:
        calls.append(f"up with db={os.path.exists(os.path.join(self.state_dir, 'netmgr.db'))}")
        raise KeyboardInterrupt  # stop right after starting

    monkeypatch.setattr(AllInOne, "up", up)
    argv = ["--state-dir", str(tmp_path), "--fabric", "linuxbridge", "up"]
    assert allinone.main(argv) == 0
    assert "2 networks" in capsys.readouterr().out
    assert calls == ["down", "up with db=True", "down"]
    calls.clear()
    assert allinone.main([*argv, "--fresh"]) == 0
    assert "2 networks" not in capsys.readouterr().out
    assert calls == ["down", "up with db=False", "down"]


# ---- the compute agent's port --------------------------------------------------


class _NoFabric:
    def setup(self) -> None: ...


def _start_compute(netmgr_target: str, token_file: Path, state: Path, name: str,
                   monkeypatch: pytest.MonkeyPatch) -> grpc.Server:
    monkeypatch.setattr(compute_server, "make_fabric", lambda *a: _NoFabric())
    ready: list[grpc.Server] = []
    started = threading.Event()

    def run() -> None:
        with contextlib.suppress(ValueError):  # signal handlers: not the main thread
            compute_server.main(
                ["--name", name, "--listen", "127.0.0.1:0", "--netmgr", netmgr_target,
                 "--admin-token-file", str(token_file), "--state-dir", str(state),
                 "--accel", "qemu", "--image", f"tiny={state}", "--insecure"],
                on_ready=lambda s: (ready.append(s), started.set()))
        started.set()

    monkeypatch.setattr("compute.images.load", lambda name, d: None)
    monkeypatch.setattr(compute_server.signal, "signal", lambda *a: None)
    threading.Thread(target=run, daemon=True).start()
    assert started.wait(30)
    assert ready, "the compute agent did not start"
    return ready[0]


def test_two_compute_agents_take_their_own_ports(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = start_cloud(tmp_path / "netmgr.db")
    token = tmp_path / "admin.token"
    token.write_text(ADMIN + "\n")
    servers = []
    try:
        for name in ("cn-h1", "cn2-h1"):
            state = tmp_path / name
            state.mkdir()
            servers.append(_start_compute(cloud.target, token, state, name, monkeypatch))
        listed = hosts_pb2_grpc.HostServiceStub(cloud.channel).ListHosts(
            hosts_pb2.ListHostsRequest(), metadata=cloud.admin.metadata, timeout=10)
        hosts = {h.name: h.address for h in listed.hosts}
        addresses = [hosts["cn-h1"], hosts["cn2-h1"]]
        assert len(set(addresses)) == 2
        for address in addresses:
            assert address.startswith("127.0.0.1:")
            assert address != "127.0.0.1:0"
            with grpc.insecure_channel(address) as ch:  # the agent answers there
                assert health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5).status == \
                    health_pb2.HealthCheckResponse.SERVING
        # The all-in-one learns its agent's address from the registry.
        aio = _aio(tmp_path / "aio", router_backend="vm", insecure=True)
        aio.listen, aio.admin_token = cloud.target, ADMIN
        monkeypatch.setattr(aio_vm, "host_name", lambda prefix: "cn2-h1")
        aio_vm.wait_registered(aio, timeout=5, since=time.time() - 30)
        assert aio.compute_listen == hosts["cn2-h1"]
        # A registration older than this start (a reused database's) is not it.
        aio.compute_listen = ""
        with pytest.raises(TimeoutError):
            aio_vm.wait_registered(aio, timeout=1, since=time.time() + 30)
        assert aio.compute_listen == ""
    finally:
        for s in servers:
            s.stop(0)
        cloud.stop()


def test_the_all_in_one_has_no_fixed_compute_port(tmp_path: Path) -> None:
    aio = _aio(tmp_path, router_backend="vm")
    assert aio.compute_listen_request() == "127.0.0.1:0"
    assert _aio(tmp_path, compute_listen="127.0.0.1:7999").compute_listen_request() == \
        "127.0.0.1:7999"


def test_sqlite_of_a_previous_run_is_only_read(tmp_path: Path) -> None:
    _previous_run(tmp_path)
    before = (tmp_path / "netmgr.db").stat().st_mtime_ns
    _aio(tmp_path).previous_state()
    assert (tmp_path / "netmgr.db").stat().st_mtime_ns == before
    with sqlite3.connect(tmp_path / "netmgr.db") as db:
        assert db.execute("SELECT count(*) FROM networks").fetchone() == (2,)


def test_tls_is_the_default_and_the_cli_finds_its_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netmgr.cli.config import load as load_cli_config
    from netmgr.server import parse_args as netmgr_args

    aio = _aio(tmp_path / "s")
    aio.start_netmgr()
    netmgr = netmgr_args(aio.spawned["netmgr"][3:])
    assert (netmgr.tls_dir, netmgr.insecure) == (str(tmp_path / "s" / "tls"), False)
    assert aio.agent_tls_args("compute") == ["--tls-dir", str(tmp_path / "s/tls/compute")]
    assert (tmp_path / "s/tls/ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "s/tls/compute/agent.key").stat().st_mode & 0o777 == 0o600
    home = tmp_path / "home" / ".config" / "cloudnet" / "config"
    written = aio.write_client_config(str(home))
    assert written == [str(tmp_path / "s" / "client.toml"), str(home)]
    conf = load_cli_config({"CLOUDNET_CONFIG": str(home)})
    assert (conf.server, conf.ca_file, conf.insecure) == (
        "127.0.0.1:7070", str(tmp_path / "s/tls/ca.crt"), False)
    assert conf.token_file == str(tmp_path / "s" / "admin.token")
    # The CLI's certificate for the compute agents (they require one of the CA).
    assert (conf.cert_file, conf.key_file) == (str(tmp_path / "s/tls/cli/agent.crt"),
                                               str(tmp_path / "s/tls/cli/agent.key"))
    assert (tmp_path / "s/tls/cli/agent.key").stat().st_mode & 0o777 == 0o600

    plain = _aio(tmp_path / "p", insecure=True)
    plain.start_netmgr()
    assert netmgr_args(plain.spawned["netmgr"][3:]).insecure
    assert plain.agent_tls_args("compute") == ["--insecure"]
    plain.write_client_config(None)
    assert load_cli_config({"CLOUDNET_CONFIG": str(tmp_path / "p/client.toml")}).insecure
    assert load_cli_config({"CLOUDNET_CONFIG": str(tmp_path / "p/client.toml")}).cert_file is None
