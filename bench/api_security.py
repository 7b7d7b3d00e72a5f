"""What TLS, the audit log and quotas cost the API, against a plaintext
server with none of them, measured in the same run.

One netmgr API server in this process (SQLite file, no reconciler: only the
API path is measured) per variant; 16 client threads create ports (one
network each, so only the store serialises them) and then read them back.

    baseline        plaintext, no audit interceptor, no quota limits
    tls             TLS (the server's certificate from a fresh CA)
    tls+audit       and every create recorded as an audit event
    tls+audit+quota and a ports quota on the tenant (checked at every create)

Calls/s and p50/p99 latency per variant and its ratio to the baseline.

    .venv/bin/python bench/api_security.py [--creates 50] [--threads 16] [--out bench/out]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import quota_pb2 as qpb
from cloudnet.netmgr.v1 import quota_pb2_grpc as qrpc

from common.channels import make_channel
from common.tls import ROLE_NETMGR, TlsFiles
from netmgr.api import audit
from netmgr.certificates import CertificateAuthority
from netmgr.server import ServerConfig, create_server
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox
from tests.lib.netmgr_cloud import ADMIN, Api

VARIANTS = ("baseline", "tls", "tls+audit", "tls+audit+quota")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_variant(name: str, work: Path, creates: int, threads: int) -> dict[str, Any]:
    tls_on, audit_on, quota_on = "tls" in name, "audit" in name, "quota" in name
    saved = audit.AuditInterceptor.intercept_service
    if not audit_on:
        # The baseline has no audit log (the product has no switch for it).
        def passthrough(self: audit.AuditInterceptor, continuation: Any,
                        handler_call_details: Any) -> Any:
            return continuation(handler_call_details)

        audit.AuditInterceptor.intercept_service = passthrough  # type: ignore[method-assign]
    d = work / name.replace("+", "_")
    d.mkdir()
    config = ServerConfig(listen="127.0.0.1:0", db_url=f"sqlite:///{d}/netmgr.db",
                          admin_token=ADMIN, workers=threads)
    store = Store(config.db_url, secrets=SecretBox(bytes(32)), pool_size=threads)
    tls = None
    client_tls = None
    if tls_on:
        ca = CertificateAuthority.load_or_create(d / "tls")
        tls = ca.issue_files(d / "tls", "netmgr", ROLE_NETMGR)
        client_tls = TlsFiles(ca=tls.ca)
    server, port = create_server(config, store=store, tls=tls)
    server.start()
    channel = make_channel(f"127.0.0.1:{port}", tls=client_tls)
    try:
        admin = Api(channel, ADMIN)
        tenant = admin.CreateTenant(pb.CreateTenantRequest(name="bench"))
        secret = admin.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="b")).secret
        api = Api(channel, secret)
        if quota_on:
            qrpc.QuotaServiceStub(channel).SetQuota(
                qpb.SetQuotaRequest(tenant_id=tenant.id, resource="ports",
                                    limit=threads * creates + 1), metadata=admin.metadata)
        nets = [api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
            name=f"n{i}", cidr=f"10.{i}.0.0/24"))) for i in range(threads)]

        def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
            t = time.perf_counter()
            out = fn()
            return time.perf_counter() - t, out

        def create(i: int) -> tuple[list[float], list[str]]:
            lat, ids = [], []
            for _ in range(creates):
                took, port = timed(lambda: api.CreatePort(pb.CreatePortRequest(
                    port=pb.Port(network_id=nets[i].id))))
                lat.append(took)
                ids.append(port.id)
            return lat, ids

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            made = list(pool.map(create, range(threads)))
        create_s = time.perf_counter() - start
        create_lat = [x for lat, _ in made for x in lat]

        def get(port_id: str) -> Any:
            return api.GetPort(pb.GetPortRequest(id=port_id))

        def read(i: int) -> list[float]:
            return [timed(functools.partial(get, p))[0] for p in made[i][1]]

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            read_lat = [x for lat in pool.map(read, range(threads)) for x in lat]
        read_s = time.perf_counter() - start
        events = store.events.last_seq()
    finally:
        channel.close()
        server.stop(None).wait()
        store.close()
        audit.AuditInterceptor.intercept_service = saved  # type: ignore[method-assign]
    n = threads * creates
    return {
        "variant": name, "creates": n, "events_recorded": events,
        "create_per_s": n / create_s, "create_p50_ms": 1000 * statistics.median(create_lat),
        "create_p99_ms": 1000 * _percentile(create_lat, 0.99),
        "read_per_s": n / read_s, "read_p50_ms": 1000 * statistics.median(read_lat),
        "read_p99_ms": 1000 * _percentile(read_lat, 0.99),
    }


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["variants"]
    names = [r["variant"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(names, [r["create_ratio"] for r in rows], label="creates/s")
    a.plot(names, [r["read_ratio"] for r in rows], "o", color="black", label="reads/s")
    a.axhline(1.0, color="grey", lw=0.5)
    a.set_ylabel("throughput / baseline")
    a.legend()
    a.tick_params(axis="x", labelrotation=20)
    b.bar(names, [r["create_p99_ms"] for r in rows], label="create p99")
    b.bar(names, [r["create_p50_ms"] for r in rows], label="create p50")
    b.set_ylabel("ms")
    b.legend()
    b.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"API cost of TLS, audit, quotas ({result['threads']} threads, SQLite)")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--creates", type=int, default=50, help="ports per thread")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cn-api-security-") as work:
        rows = [run_variant(v, Path(work), args.creates, args.threads) for v in VARIANTS]
    base = rows[0]
    for r in rows:
        r["create_ratio"] = r["create_per_s"] / base["create_per_s"]
        r["read_ratio"] = r["read_per_s"] / base["read_per_s"]
    result = {"bench": "api_security", "threads": args.threads,
              "host": platform.node(), "cpus": os.cpu_count(), "variants": rows}
    with open(os.path.join(args.out, "api_security.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "api_security.png"))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
