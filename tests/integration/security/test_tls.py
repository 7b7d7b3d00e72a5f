"""TLS on every TCP listener, with real processes: netmgr (its CA made at
first start), a router agent on TCP with the certificate netmgr issued, a
compute agent's listener; ``openssl s_client`` shows each chain; a client
certificate of another CA, no certificate (where one is required) and
plaintext are refused; the CLI finds netmgr through its config file, and
netmgr pushes a router over mutual TLS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.channels import make_channel
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.tls import ROLE_AGENT, ROLE_NETMGR, TlsFiles
from compute.agent.server import create_server as compute_server
from compute.agent.service import Compute
from compute.host import HostConfig
from netmgr.certificates import CertificateAuthority
from netmgr.cli import main as cli
from tests.lib.routerlab import Topology

REPO = Path(__file__).resolve().parents[3]
ADMIN = "tls-test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    topo: Topology
    state: Path
    tls_dir: Path
    agent_dir: Path
    netmgr: str
    agent: str
    compute: str
    config: Path
    procs: list[subprocess.Popen[bytes]]


def health(target: str, tls: TlsFiles | None, role: str = ROLE_NETMGR) -> Any:
    with make_channel(target, tls=tls, role=role) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                    timeout=5).status


def wait_serving(target: str, tls: TlsFiles, role: str, proc: subprocess.Popen[bytes],
                 log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if health(target, tls, role) == health_pb2.HealthCheckResponse.SERVING:
                return
        except (grpc.RpcError, FileNotFoundError):
            pass
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    prefix = f"s{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    state = Path(tempfile.mkdtemp(prefix="cn-tls-test-", dir="/tmp"))
    os.chmod(state, 0o755)  # dnsmasq's user reads its host files below it
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    topo = Topology(prefix, str(state), fabric, namespaces=[fabric.netns])
    procs: list[subprocess.Popen[bytes]] = []
    compute_grpc = None
    try:
        token = state / "admin.token"
        token.write_text(ADMIN + "\n")
        os.chmod(token, 0o600)
        tls_dir, agent_dir = state / "tls", state / "agent-tls"
        netmgr, agent = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        subprocess.run([sys.executable, "-m", "netmgr.server", "--tls-dir", str(tls_dir),
                        "--issue-cert", f"h1={agent_dir}"], cwd=REPO, check=True,
                       capture_output=True)
        procs.append(spawn(["-m", "router.agent.server", "--listen", agent,
                            "--tls-dir", str(agent_dir), "--state-dir", str(state / "agent"),
                            "--netns-prefix", prefix, "--fabric-netns", fabric.netns,
                            "--agent-id", "tls-test", "--health-interval", "0"],
                           state / "agent.log"))
        procs.append(spawn(["-m", "netmgr.server", "--listen", netmgr,
                            "--db-url", f"sqlite:///{state}/netmgr.db",
                            "--admin-token-file", str(token), "--tls-dir", str(tls_dir),
                            "--default-host", "h1", "--agent", f"h1={agent}"],
                           state / "netmgr.log"))
        wait_serving(agent, TlsFiles.in_dir(agent_dir, "agent"), ROLE_AGENT, procs[0],
                     state / "agent.log")
        wait_serving(netmgr, TlsFiles(ca=tls_dir / "ca.crt"), ROLE_NETMGR, procs[1],
                     state / "netmgr.log")
        # A compute agent's listener, in this process (no VM is asked for).
        cfg = HostConfig(name="h", state_dir=str(state / "compute"), netmgr=netmgr,
                         admin_token=ADMIN, fabric_kind="ovs", fabric=None,  # type: ignore[arg-type]
                         images={}, accel="qemu", vcpus=1, memory_mib=256)
        compute_dir = state / "compute-tls"
        CertificateAuthority.load_or_create(tls_dir).issue_files(compute_dir, "agent",
                                                                 ROLE_AGENT)
        compute_grpc, port = compute_server(Compute(cfg, netmgr=None),  # type: ignore[arg-type]
                                            "127.0.0.1:0", TlsFiles.in_dir(compute_dir, "agent"))
        compute_grpc.start()
        config = state / "client.toml"
        config.write_text(f'server = "{netmgr}"\nca_file = "{tls_dir}/ca.crt"\n'
                          f'token_file = "{token}"\n')
        yield World(topo, state, tls_dir, agent_dir, netmgr, agent, f"127.0.0.1:{port}",
                    config, procs)
    finally:
        if compute_grpc is not None:
            compute_grpc.stop(None)
        for proc in reversed(procs):  # netmgr first, then the agent (routers stay)
            proc.terminate()
            proc.wait(timeout=30)
        topo.cleanup()


def s_client(address: str, *extra: str) -> str:
    done = subprocess.run(["openssl", "s_client", "-connect", address, "-showcerts",
                           "-verify_return_error", "-alpn", "h2", *extra],
                          input=b"", capture_output=True, timeout=30)
    text = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, text[-2000:]
    return text


def test_openssl_shows_the_chain_of_every_listener(world: World) -> None:
    ca = str(world.tls_dir / "ca.crt")
    agent_cert = ["-cert", str(world.agent_dir / "agent.crt"),
                  "-key", str(world.agent_dir / "agent.key")]
    for address, extra in ((world.netmgr, []), (world.agent, agent_cert),
                           (world.compute, agent_cert)):
        text = s_client(address, "-CAfile", ca, *extra)
        assert "Verify return code: 0 (ok)" in text, address
        assert "i:CN = cloudnet CA" in text, address  # issued by the cloud's own CA
    # Secrets at rest: the CA's key and each certificate's key are 0600.
    for key in (world.tls_dir / "ca.key", world.tls_dir / "netmgr.key",
                world.agent_dir / "agent.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key


def test_certificates_of_another_ca_and_plaintext_are_refused(world: World,
                                                              tmp_path: Path) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    forged = other.issue_files(tmp_path / "forged", "agent", ROLE_NETMGR)
    ours_ca = world.tls_dir / "ca.crt"
    # The router agent: only a certificate of the cloud's CA gets in.
    good = TlsFiles(ca=ours_ca, cert=world.tls_dir / "netmgr.crt",
                    key=world.tls_dir / "netmgr.key")
    assert health(world.agent, good, ROLE_AGENT) == health_pb2.HealthCheckResponse.SERVING
    for refused in (TlsFiles(ca=ours_ca, cert=forged.cert, key=forged.key),
                    TlsFiles(ca=ours_ca)):  # another CA's certificate; none at all
        with pytest.raises(grpc.RpcError) as info:
            health(world.agent, refused, ROLE_AGENT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # The compute agent too (netmgr presents its certificate; so does the CLI).
    assert health(world.compute, good, ROLE_AGENT) == health_pb2.HealthCheckResponse.SERVING
    for refused in (TlsFiles(ca=ours_ca, cert=forged.cert, key=forged.key),
                    TlsFiles(ca=ours_ca)):
        with pytest.raises(grpc.RpcError) as info:
            health(world.compute, refused, ROLE_AGENT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # A server certificate of another CA is not netmgr, whatever it names.
    with pytest.raises(grpc.RpcError):
        health(world.netmgr, TlsFiles(ca=forged.ca))
    # An agent's certificate (our CA, but role agent) cannot pass for netmgr.
    with pytest.raises(grpc.RpcError):
        health(world.agent, TlsFiles(ca=ours_ca, cert=good.cert, key=good.key), ROLE_NETMGR)
    # Plaintext: refused by every listener.
    for address in (world.netmgr, world.agent, world.compute):
        with pytest.raises(grpc.RpcError) as info:
            health(address, None)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, address


def test_openssl_without_a_client_certificate_is_refused_by_the_agents(world: World) -> None:
    ca = str(world.tls_dir / "ca.crt")
    cert = ["-cert", str(world.agent_dir / "agent.crt"), "-key", str(world.agent_dir / "agent.key")]

    def handshake(address: str, *extra: str) -> tuple[int, str]:
        # TLS 1.2: the server refuses within the handshake (with 1.3 its alert
        # comes after the client's Finished, when s_client may have left).
        done = subprocess.run(["openssl", "s_client", "-connect", address, "-alpn", "h2",
                               "-tls1_2", "-CAfile", ca, *extra], input=b"",
                              capture_output=True, timeout=30)
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")

    for address in (world.agent, world.compute):
        rc, text = handshake(address)
        assert rc != 0, (address, text[-1500:])  # the server ends the handshake
        rc, text = handshake(address, *cert)
        assert rc == 0, (address, text[-1500:])
        assert "Verify return code: 0 (ok)" in text, address


def test_an_agent_on_tcp_without_tls_will_not_start(world: World) -> None:
    done = subprocess.run([sys.executable, "-m", "router.agent.server", "--listen",
                           f"127.0.0.1:{free_port()}", "--state-dir",
                           str(world.state / "never")], cwd=REPO, capture_output=True,
                          timeout=60)
    assert done.returncode == 2
    assert b"--tls-dir" in done.stderr
    assert b"--insecure" in done.stderr


def test_the_cli_reads_its_config_and_netmgr_pushes_over_mutual_tls(
        world: World, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CLOUDNET_INSECURE", raising=False)
    monkeypatch.delenv("CLOUDNET_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDNET_SERVER", raising=False)
    monkeypatch.setenv("CLOUDNET_CONFIG", str(world.config))

    def run(*argv: str) -> str:
        capsys.readouterr()
        rc = cli.main(["-o", "json", *argv])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out

    import json

    tenant = json.loads(run("tenant", "create", "acme"))["id"]  # admin: the config's token
    secret = json.loads(run("token", "create", tenant))["secret"]
    monkeypatch.setenv("CLOUDNET_TOKEN", secret)
    net = json.loads(run("network", "create", "web", "--cidr", "10.9.0.0/24", "--wait"))
    router = json.loads(run("router", "show", net["router_id"]))
    assert router["state"] == "ROUTER_STATE_ACTIVE"  # pushed to the agent over mutual TLS
    run("network", "delete", net["id"])
    # The wrong CA: the CLI refuses the server, plainly.
    other = CertificateAuthority.load_or_create(world.state / "cli-other-ca")
    capsys.readouterr()
    assert cli.main(["--ca-file", str(other.cert_path), "network", "list"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
