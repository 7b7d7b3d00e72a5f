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
