"""The network manager's gRPC server (``cloudnet-netmgr``).

``create_server(config, store=None, hooks=None) -> (server, port)`` builds a
server with every API service, gRPC health and server reflection, the error
mapping and the authentication interceptors; tests bind port 0. ``main()``
adds the reconciler (as the hooks) and serves until SIGTERM/SIGINT.

Configuration: a TOML file (``--config``), then the environment
(``CLOUDNET_ADMIN_TOKEN``), then command-line flags, later ones winning::

    listen = "127.0.0.1:7070"
    db_url = "sqlite:////var/lib/cloudnet/netmgr.db"   # or postgresql+psycopg://...
    admin_token_file = "/etc/cloudnet/admin.token"      # or admin_token = "..."
    secrets_key_file = "/etc/cloudnet/secrets.key"      # default: beside the token file
    default_host = "local"
    [agents]
    local = "unix:///run/cloudnet/agent.sock"
    [zone]                                              # defaults of a new database
    public_cidr = "203.0.113.0/24"
    vlan_min = 100
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2, netmgr_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.engine import make_url

from common.grpc_errors import DomainError, ErrorMappingInterceptor
from common.request_checks import RequestCheckInterceptor
from netmgr.api import core as core_api
from netmgr.api import debug, request_rules, router_console
from netmgr.api import edge as edge_api
from netmgr.api import hosts as hosts_api
from netmgr.api import keypairs as keypairs_api
from netmgr.api import redundancy as redundancy_api
from netmgr.api import vpc as vpc_api
from netmgr.api import vpn as vpn_api
from netmgr.api.auth import AuthInterceptor
from netmgr.api.core import NullHooks, RouterHooks
from netmgr.model.core import RouterBackend, Zone
from netmgr.store.base import DEFAULT_ZONE
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox, SecretsKeyMismatch

if TYPE_CHECKING:
    from netmgr.reconcile.vm_backend.control_network import ControlNetwork
    from netmgr.reconcile.vm_backend.credentials import RouterVmConfig

    # How this netmgr reaches the router VMs' control addresses, made from the
    # VM backend's settings (the composition root may inject one).
    ControlNetworkFactory = Callable[[RouterVmConfig], ControlNetwork]

log = logging.getLogger("cloudnet.netmgr")

ADMIN_TOKEN_ENV = "CLOUDNET_ADMIN_TOKEN"
SECRETS_KEY_NAME = "secrets.key"
API_SERVICES = tuple(
    netmgr_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("TenantService", "ZoneService", "NetworkService", "PortService",
                 "RouterService")
) + edge_api.SERVICES + vpc_api.SERVICES + vpn_api.SERVICES + keypairs_api.SERVICES


def _default_agents() -> dict[str, str]:
    return {"local": "unix:///run/cloudnet/agent.sock"}


@dataclasses.dataclass
class ServerConfig:
    listen: str = "127.0.0.1:7070"
    db_url: str = "sqlite:////var/lib/cloudnet/netmgr.db"
    # Empty: no admin access at all (main() refuses to start without one).
    admin_token: str = ""
    # Where the admin token was read from, if from a file.
    admin_token_file: str = ""
    # The key sealing secrets at rest (VPN pre-shared keys; netmgr.store.secrets),
    # made at first start. Empty: secrets.key beside the admin token file, else
    # beside the SQLite database (secrets_key_path()).
    secrets_key_file: str = ""
    # The host new routers are placed on.
    default_host: str = "local"
    # host name -> gRPC target of that host's router agent.
    agents: dict[str, str] = dataclasses.field(default_factory=_default_agents)
    # Zone of a new database (an existing one keeps its own).
    zone: Zone = DEFAULT_ZONE
    workers: int = 16
    # HOST:PORT serving Prometheus metrics (docs/metrics.md); empty: off.
    metrics_listen: str = ""
    grace_seconds: float = 5.0
    # Backend of new routers: "netns" (a namespace on a host agent) or "vm"
    # (an appliance VM on a compute host, netmgr.reconcile.vm_backend).
    router_backend: str = "netns"
    # [router_vm] settings (netmgr.reconcile.vm_backend.credentials.RouterVmConfig).
    router_vm: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path) -> ServerConfig:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "config") -> ServerConfig:
        data = dict(data)
        zone_data = data.pop("zone", {})
        token_file = data.pop("admin_token_file", None)
        known = {f.name for f in dataclasses.fields(cls)} - {"zone"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{source}: unknown setting(s): {', '.join(sorted(unknown))}")
        zone_fields = {f.name for f in dataclasses.fields(Zone)}
        if set(zone_data) - zone_fields:
            raise ValueError(f"{source}: unknown [zone] setting(s): "
                             f"{', '.join(sorted(set(zone_data) - zone_fields))}")
        for key in ("upstream_dns", "reserved_vlans"):
            if key in zone_data:
                zone_data[key] = tuple(zone_data[key])
        config = cls(**data, zone=dataclasses.replace(DEFAULT_ZONE, **zone_data))
        if token_file:
            config.admin_token = read_token_file(token_file)
            config.admin_token_file = str(token_file)
        return config

    def secrets_key_path(self) -> str:
        """The secrets key file: as configured, or ``secrets.key`` beside the
        admin token file, or beside the SQLite database. ValueError when none
        of these exists (PostgreSQL, and an admin token not from a file)."""
        if self.secrets_key_file:
            return self.secrets_key_file
        if self.admin_token_file:
            return os.path.join(os.path.dirname(os.path.abspath(self.admin_token_file)),
                                SECRETS_KEY_NAME)
        url = make_url(self.db_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return os.path.join(os.path.dirname(os.path.abspath(url.database)),
                                SECRETS_KEY_NAME)
        raise ValueError("no secrets_key_file: set it (the key sealing VPN keys at rest), "
                         "or read the admin token from a file (the key goes beside it)")


def read_token_file(path: str | Path) -> str:
    return Path(path).read_text().strip()


# ------------------------------------------------------------------ server


def _build(
    config: ServerConfig, store: Store | None, hooks: RouterHooks | None
) -> tuple[grpc.Server, int, health.HealthServicer]:
    if store is None:
        store = Store(config.db_url, zone_defaults=config.zone,
                      default_host=config.default_host, pool_size=config.workers,
                      secrets=SecretBox.from_key_file(config.secrets_key_path()))
    hooks = hooks if hooks is not None else NullHooks()
    # Where a redundant router's second instance may go: the other agents' hosts.
    store.redundancy.hosts = tuple(sorted(config.agents))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="netmgr-api"),
        # The first interceptor is the outermost: errors raised by auth are mapped too;
        # a request is checked once its caller is known.
        interceptors=[ErrorMappingInterceptor(), AuthInterceptor(config.admin_token, store),
                      RequestCheckInterceptor(request_rules.rules_for)],
    )
    netmgr_pb2_grpc.add_TenantServiceServicer_to_server(
        core_api.TenantServicer(store, hooks), server)
    netmgr_pb2_grpc.add_ZoneServiceServicer_to_server(core_api.ZoneServicer(store, hooks), server)
    netmgr_pb2_grpc.add_NetworkServiceServicer_to_server(
        core_api.NetworkServicer(store, hooks), server)
    netmgr_pb2_grpc.add_PortServiceServicer_to_server(core_api.PortServicer(store, hooks), server)
    netmgr_pb2_grpc.add_RouterServiceServicer_to_server(
        core_api.RouterServicer(store, hooks), server)
    debug_service = debug.add_to_server(store, hooks, config.admin_token, server)
    edge_api.add_to_server(store, hooks, server)
    vpc_api.add_to_server(store, hooks, server)
    vpn_api.add_to_server(store, hooks, server)
    keypairs_api.add_to_server(store, server)
    host_services = hosts_api.add_to_server(store, server)
    host_services += (router_console.add_to_server(store, hooks, server),
                      redundancy_api.add_to_server(store, hooks, server))

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *API_SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*API_SERVICES, debug_service, *host_services, health.SERVICE_NAME,
         reflection.SERVICE_NAME), server)

    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {config.listen}")
    return server, port, health_servicer


def create_server(
    config: ServerConfig, store: Store | None = None, hooks: RouterHooks | None = None
) -> tuple[grpc.Server, int]:
    """A ready-to-start server and the port it is bound to. ``hooks`` hear of
    every committed change to a router (default: nobody)."""
    server, port, _ = _build(config, store, hooks)
    return server, port


# -------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cloudnet-netmgr", description="cloudnet network manager")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--listen", help="address to serve the API on (host:port or unix:PATH)")
    p.add_argument("--db-url", help="SQLAlchemy database URL (default: a SQLite file)")
    p.add_argument("--admin-token-file", metavar="FILE",
                   help=f"file holding the admin token (or set {ADMIN_TOKEN_ENV})")
    p.add_argument("--secrets-key-file", metavar="FILE",
                   help="key sealing secrets at rest, made at first start (default: "
                        "secrets.key beside the admin token file)")
    p.add_argument("--agent", action="append", default=[], metavar="HOST=TARGET",
                   help="router agent of a host (repeatable; replaces the config's agents)")
    p.add_argument("--default-host", help="host new routers are placed on")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics on HOST:PORT (default: off)")
    p.add_argument("--router-backend", choices=("netns", "vm"),
                   help="backend of new routers (default: netns)")
    p.add_argument("--router-vm", action="append", default=[], metavar="KEY=VALUE",
                   help="a VM backend setting (repeatable; see "
                        "netmgr/reconcile/vm_backend/credentials.py)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerConfig:
    environ = dict(os.environ) if environ is None else environ
    config = ServerConfig.from_toml(args.config) if args.config else ServerConfig()
    if environ.get(ADMIN_TOKEN_ENV):
        config.admin_token = environ[ADMIN_TOKEN_ENV].strip()
    if args.admin_token_file:
        config.admin_token = read_token_file(args.admin_token_file)
        config.admin_token_file = args.admin_token_file
    if getattr(args, "secrets_key_file", None):
        config.secrets_key_file = args.secrets_key_file
    if args.listen:
        config.listen = args.listen
    if args.db_url:
        config.db_url = args.db_url
    if args.default_host:
        config.default_host = args.default_host
    if getattr(args, "metrics_listen", None):
        config.metrics_listen = args.metrics_listen
    if getattr(args, "router_backend", None):
        config.router_backend = args.router_backend
    for spec in getattr(args, "router_vm", None) or ():
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise ValueError(f"--router-vm {spec!r}: expected KEY=VALUE")
        config.router_vm[key] = value
    if args.agent:
        agents = {}
        for spec in args.agent:
            host, sep, target = spec.partition("=")
            if not sep or not host or not target:
                raise ValueError(f"--agent {spec!r}: expected HOST=TARGET")
            agents[host] = target
        config.agents = agents
    return config


def reserve_control_vlan(store: Store, vlan: int) -> bool:
    """The router-VM control network's VLAN among the zone's reserved ones, so
    no network or private gateway is ever put on it. False (said on stderr)
    when the zone cannot take it (its guest range covers it, say)."""
    zone = store.get_zone()
    if vlan in zone.reserved_vlans:
        return True
    try:
        store.update_zone({"reserved_vlans": (*zone.reserved_vlans, vlan)})
    except DomainError as e:
        print(f"cloudnet-netmgr: router_vm.control_vlan {vlan} cannot be reserved in the "
              f"zone: {e.message}", file=sys.stderr)
        return False
    log.info("zone: VLAN %d (the router-VM control network) is now reserved", vlan)
    return True


def default_control_network(cfg: RouterVmConfig) -> ControlNetwork:
    """Through a relay out of the control namespace when one is configured (the
    all-in-one's netmgr is not on the control network), else directly."""
    if cfg.control_netns:
        from common.control_relay import ControlNetwork as Relay

        return Relay(cfg.control_netns, cfg.run_dir)
    from netmgr.reconcile.vm_backend.control_network import DirectControlNetwork

    return DirectControlNetwork()


def main(argv: Sequence[str] | None = None, *,
         control_network: ControlNetworkFactory | None = None) -> int:
    """``control_network``: how the VM backend reaches the router VMs' agents
    (default: ``default_control_network``)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"cloudnet-netmgr: {e}", file=sys.stderr)
        return 2
    if not config.admin_token:
        print(f"cloudnet-netmgr: no admin token: use --admin-token-file, {ADMIN_TOKEN_ENV} "
              "or admin_token_file in the config", file=sys.stderr)
        return 2

    vm_config: RouterVmConfig | None = None
    if config.router_backend == "vm" or config.router_vm:
        from netmgr.reconcile.vm_backend.credentials import router_vm_config

        vm_config = router_vm_config(config.router_vm)

    # Imported here: a server without a reconciler (the API's tests) needs none of it.
    from netmgr.reconcile.reconciler import Reconciler

    # Nothing netmgr writes (database, key, logs it may open) is for other users.
    os.umask(0o077)
    try:
        secrets = SecretBox.from_key_file(config.secrets_key_path())
        store = Store(config.db_url, zone_defaults=config.zone,
                      default_host=config.default_host, pool_size=config.workers,
                      secrets=secrets)
    except (OSError, ValueError, SecretsKeyMismatch) as e:
        print(f"cloudnet-netmgr: {e}", file=sys.stderr)
        return 2
    if vm_config is not None and not reserve_control_vlan(store, vm_config.control_vlan):
        store.close()
        return 2
    reconciler = Reconciler(store, store.vpn, config.agents, redundancy=store.redundancy)
    vm_backend = None
    if vm_config is not None:
        from netmgr.reconcile.vm_backend.tender import RouterVmBackend
        from netmgr.store.router_vms import RouterVmStore

        store.default_backend = RouterBackend(config.router_backend)
        vm_backend = RouterVmBackend(
            store, reconciler, vm_config, config.admin_token,
            vms=RouterVmStore(store.db, vm_config.control_cidr),
            hosts=store.hosts,
            control=(control_network or default_control_network)(vm_config))
        reconciler.vm_routers = vm_backend
    server, port, health_servicer = _build(config, store, reconciler)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    server.start()
    reconciler.start()
    if vm_backend is not None:
        vm_backend.start()
    if config.metrics_listen:
        from netmgr import metrics

        log.info("metrics on port %d", metrics.serve(store, config.metrics_listen))
    log.info("serving the API on %s (port %d)", config.listen, port)
    stopping.wait()
    log.info("stopping")
    health_servicer.enter_graceful_shutdown()
    server.stop(config.grace_seconds).wait()
    if vm_backend is not None:
        vm_backend.stop()
    reconciler.stop()
    store.close()
    return 0

if __name__ == "__main__":
    sys.exit(main())
