"""A real netmgr gRPC server on a loopback port with a temporary SQLite file,
and stubs that carry a bearer token (admin or a tenant's).

With CLOUDNET_TEST_PG_URL set (a PostgreSQL database the tests may wipe, e.g.
``postgresql+psycopg://user@/cloudnet?host=/tmp``), every test that uses the
``cloud`` / ``make_cloud`` fixtures (tests/fixtures/netmgr_cloud.py) runs
against PostgreSQL as well.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import dns_pb2_grpc as dnsrpc
from cloudnet.netmgr.v1 import keypair_pb2_grpc as kprpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc
from cloudnet.netmgr.v1 import security_group_pb2_grpc as sgrpc
from cloudnet.netmgr.v1 import vpc_pb2 as vpb
from cloudnet.netmgr.v1 import vpc_pb2_grpc as vrpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, make_url, text

from netmgr.api.core import EdgeRef, EdgeRule, NullHooks
from netmgr.model.core import Zone
from netmgr.server import ServerConfig, create_server
from netmgr.store.base import DEFAULT_ZONE
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox

ADMIN = "test-admin-token"
# The key sealing secrets in the tests' databases (the same across a restart).
TEST_SECRETS_KEY = bytes(range(32))
PG_URL_ENV = "CLOUDNET_TEST_PG_URL"
BACKENDS = ["sqlite", *(["postgresql"] if os.environ.get(PG_URL_ENV) else [])]
TABLES = ("tenants", "tokens", "zone", "networks", "routers", "ports", "mac_addresses",
          "public_ips", "ssh_key_pairs", "security_groups", "security_group_rules")


class RecordingHooks(NullHooks):
    """Records what the API tells the reconciler; reaches no router (like NullHooks)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.notified: list[str] = []
        self.restarted: list[str] = []
        self.edge_changes: list[tuple[str, int, tuple[EdgeRef, ...], tuple[EdgeRule, ...]]] = []

    def notify(self, router_id: str) -> None:
        with self.lock:
            self.notified.append(router_id)

    def restart(self, router_id: str) -> None:
        with self.lock:
            self.restarted.append(router_id)

    def edge_changed(self, router_id: str, generation: int, removed: Sequence[EdgeRef],
                     added: Sequence[EdgeRule]) -> None:
        with self.lock:
            self.edge_changes.append((router_id, generation, tuple(removed), tuple(added)))


class Api:
    """The five service stubs, every call carrying this client's metadata."""

    def __init__(self, channel: grpc.Channel, token: str | None, tenant: str = "") -> None:
        md = []
        if token is not None:
            md.append(("authorization", f"Bearer {token}"))
        if tenant:
            md.append(("x-cloudnet-tenant", tenant))
        self.metadata = tuple(md)
        self.tenants = rpc.TenantServiceStub(channel)
        self.zone = rpc.ZoneServiceStub(channel)
        self.networks = rpc.NetworkServiceStub(channel)
        self.ports = rpc.PortServiceStub(channel)
        self.routers = rpc.RouterServiceStub(channel)
        self.key_pairs = kprpc.KeyPairServiceStub(channel)
        self.security_groups = sgrpc.SecurityGroupServiceStub(channel)
        self.dns = dnsrpc.DnsRecordServiceStub(channel)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """``api.CreateNetwork(req)``: find the method on whichever stub has it."""
        for stub in (self.tenants, self.zone, self.networks, self.ports, self.routers,
                     self.key_pairs, self.security_groups, self.dns):
            method = getattr(stub, name, None)
            if method is not None:
                return lambda req, m=method: m(req, metadata=self.metadata, timeout=30)
        raise AttributeError(name)


@dataclasses.dataclass
class Cloud:
    """One running server and helpers to act on it."""

    db_url: str
    server: grpc.Server
    port: int
    channel: grpc.Channel
    store: Store
    hooks: RecordingHooks

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def api(self, token: str | None = ADMIN, tenant: str = "") -> Api:
        return Api(self.channel, token, tenant)

    @property
    def admin(self) -> Api:
        return self.api(ADMIN)

    def new_tenant(self, name: str) -> tuple[pb.Tenant, Api]:
        tenant = self.admin.CreateTenant(pb.CreateTenantRequest(name=name))
        secret = self.admin.CreateToken(pb.CreateTokenRequest(tenant_id=tenant.id, name="t")).secret
        return tenant, self.api(secret)

    def sql(self, query: str) -> list[Any]:
        """Rows of a query on the database, read behind the server's back."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query))]
        finally:
            engine.dispose()

    def row_counts(self) -> dict[str, int]:
        return {t: self.sql(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(None).wait()
        self.store.close()


def worker_database(url: str, worker: str) -> str:
    """The URL of a database of its own for one of pytest-xdist's workers
    (``<database>_<worker>`` on the same server, made when missing): the
    tests wipe their database, so two workers must never share one."""
    base = make_url(url)
    if not re.fullmatch(r"gw[0-9]+", worker) or not base.database:
        raise ValueError(f"{PG_URL_ENV}: no database per worker for {worker[:20]!r}")
    name = f"{base.database}_{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                            {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def wipe_postgresql(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def start_cloud(db: Path | str, zone: Zone = DEFAULT_ZONE,
                hooks: RecordingHooks | None = None) -> Cloud:
    """A server on a SQLite file (a Path) or any database URL (a str)."""
    db_url = f"sqlite:///{db}" if isinstance(db, Path) else db
    config = ServerConfig(listen="127.0.0.1:0", db_url=db_url,
                          admin_token=ADMIN, zone=zone, workers=16)
    store = Store(config.db_url, zone_defaults=zone, default_host=config.default_host,
                  secrets=SecretBox(TEST_SECRETS_KEY))
    hooks = hooks or RecordingHooks()
    server, port = create_server(config, store=store, hooks=hooks)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return Cloud(db_url, server, port, channel, store, hooks)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def bad_fields(err: grpc.RpcError) -> list[str]:
    """The field names of the BadRequest detail of an INVALID_ARGUMENT error."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status on {err}"
    fields = []
    for detail in status.details:
        br = error_details_pb2.BadRequest()
        if detail.Unpack(br):
            fields += [v.field for v in br.field_violations]
    return fields


class VpcApi:
    """A tenant's VPC stubs next to its core ``Api``."""

    def __init__(self, c: Cloud, api: Api) -> None:
        self.api = api
        self.md = api.metadata
        self.vpcs = vrpc.VpcServiceStub(c.channel)
        self.acls = vrpc.NetworkAclServiceStub(c.channel)
        self.routes = vrpc.StaticRouteServiceStub(c.channel)
        self.gateways = vrpc.PrivateGatewayServiceStub(c.channel)

    def __getattr__(self, name: str) -> Any:
        for stub in (self.vpcs, self.acls, self.routes, self.gateways):
            method = getattr(stub, name, None)
            if method is not None:
                return lambda req, m=method: m(req, metadata=self.md, timeout=30)
        return getattr(self.api, name)

    def vpc(self, name: str = "vpc1", cidr: str = "10.0.0.0/16", **kw: Any) -> vpb.Vpc:
        return self.CreateVpc(vpb.CreateVpcRequest(vpc=vpb.Vpc(name=name, cidr=cidr, **kw)))

    def tier(self, vpc_id: str, name: str, cidr: str, **kw: Any) -> pb.Network:
        return self.CreateNetwork(pb.CreateNetworkRequest(
            network=pb.Network(name=name, cidr=cidr, vpc_id=vpc_id, **kw)))
