"""``cloudnet-netmgr`` as a process: serves health, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def test_serves_until_sigterm_then_exits_cleanly(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    env = {**os.environ, "CLOUDNET_ADMIN_TOKEN": "adm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "netmgr.server", "--listen", f"unix:{sock}",
         "--db-url", f"sqlite:///{tmp_path}/db.sqlite",
         "--agent", f"local=unix:{tmp_path}/no-agent.sock"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = health_pb2_grpc.HealthStub(channel)
            status = stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopping" in out
    assert "Traceback" not in out


def test_issue_cert_writes_an_agents_files_from_the_ca(tmp_path: Path) -> None:
    from cryptography import x509

    tls, out = tmp_path / "tls", tmp_path / "h1"
    done = subprocess.run([sys.executable, "-m", "netmgr.server", "--tls-dir", str(tls),
                           "--issue-cert", f"h1={out}", "--cert-ip", "192.0.2.7"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tls / "ca.key").stat().st_mode & 0o777 == 0o600  # the CA, made now
    assert (out / "agent.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "agent.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cloudnet-agent" in names.get_values_for_type(x509.DNSName)
    assert "cloudnet-netmgr" not in names.get_values_for_type(x509.DNSName)
    assert "192.0.2.7" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    # The same CA next time (kept, not made again).
    again = subprocess.run([sys.executable, "-m", "netmgr.server", "--tls-dir", str(tls),
                            "--issue-cert", f"h2={tmp_path / 'h2'}"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "h2" / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()
    bad = subprocess.run([sys.executable, "-m", "netmgr.server", "--tls-dir", str(tls),
                          "--issue-cert", "no-directory"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2
    assert "NAME=DIR" in bad.stderr
