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
import ipaddress
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
from common.tls import (
    AGENT_CERT_NAME,
    ROLE_AGENT,
    ROLE_NETMGR,
    TlsFiles,
    server_credentials,
)
from netmgr.api import core as core_api
from netmgr.api import debug, request_rules, router_console
from netmgr.api import dns as dns_api
from netmgr.api import edge as edge_api
from netmgr.api import events as events_api
from netmgr.api import hosts as hosts_api
from netmgr.api import keypairs as keypairs_api
from netmgr.api import quotas as quotas_api
from netmgr.api import redundancy as redundancy_api
from netmgr.api import security_groups as security_groups_api
from netmgr.api import vpc as vpc_api
from netmgr.api import vpn as vpn_api
from netmgr.api.audit import AuditInterceptor
from netmgr.api.auth import AuthInterceptor
from netmgr.api.core import NullHooks, RouterHooks
from netmgr.api.request_ids import RequestIdInterceptor
from netmgr.certificates import CertificateAuthority, ensure_issued
from netmgr.model.core import BgpPeer, RouterBackend, Zone
from netmgr.store.base import DEFAULT_ZONE
from netmgr.store.facade import Store
from netmgr.store.secrets import SecretBox, SecretsKeyMismatch

if TYPE_CHECKING:
    from netmgr.reconcile.store_view import ShardLeases
    from netmgr.reconcile.vm_backend.control_network import ControlNetwork
    from netmgr.reconcile.vm_backend.credentials import RouterVmConfig
    from netmgr.store.notices import RouterNotices

    # How this netmgr reaches the router VMs' control addresses, made from the
    # VM backend's settings (the composition root may inject one).
    ControlNetworkFactory = Callable[[RouterVmConfig], ControlNetwork]

log = logging.getLogger("cloudnet.netmgr")

ADMIN_TOKEN_ENV = "CLOUDNET_ADMIN_TOKEN"
SECRETS_KEY_NAME = "secrets.key"
API_SERVICES = (tuple(
    netmgr_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("TenantService", "ZoneService", "NetworkService", "PortService",
                 "RouterService")
) + edge_api.SERVICES + vpc_api.SERVICES + vpn_api.SERVICES + keypairs_api.SERVICES
                + quotas_api.SERVICES + events_api.SERVICES + security_groups_api.SERVICES
                + dns_api.SERVICES)


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
    # A router host (its agent registered and heartbeats) silent this long is
    # DOWN: its routers are made again on live router hosts.
    host_grace_seconds: float = 15.0
    # Backend of new routers: "netns" (a namespace on a host agent) or "vm"
    # (an appliance VM on a compute host, netmgr.reconcile.vm_backend).
    router_backend: str = "netns"
    # TLS on a TCP listener (docs/security.md): the CA and netmgr's certificate
    # live here, made at first start (an operator's own kept). Empty: "tls"
    # beside the secrets key.
    tls_dir: str = ""
    # Plaintext on TCP (never the default).
    insecure: bool = False
    # Audit events older than this many days are swept (0: kept forever).
    event_retention_days: int = 90
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
        if "bgp_peers" in zone_data:  # [[zone.bgp_peers]] address = "...", asn = N
            zone_data["bgp_peers"] = tuple(BgpPeer(str(p["address"]), int(p["asn"]))
                                           for p in zone_data["bgp_peers"])
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


    def tls_path(self) -> str:
        return self.tls_dir or os.path.join(os.path.dirname(
            os.path.abspath(self.secrets_key_path())), "tls")

    def listens_on_tcp(self) -> bool:
        return not self.listen.startswith("unix:")


def read_token_file(path: str | Path) -> str:
    return Path(path).read_text().strip()


# ------------------------------------------------------------------ server


def _build(
    config: ServerConfig, store: Store | None, hooks: RouterHooks | None,
    tls: TlsFiles | None = None,
    filters_changed: Callable[[], None] = lambda: None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    if store is None:
        store = Store(config.db_url, zone_defaults=config.zone,
                      default_host=config.default_host, pool_size=config.workers,
                      secrets=SecretBox.from_key_file(config.secrets_key_path()))
    hooks = hooks if hooks is not None else NullHooks()
    # Where a redundant router's second instance may go: the other agents' hosts.
    store.redundancy.hosts = tuple(sorted(config.agents))
    request_ids = RequestIdInterceptor(store)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="netmgr-api"),
        # The first interceptor is the outermost: errors raised by auth are mapped too;
        # the audit log sees every outcome, auth's refusals included; a request
        # is checked once its caller is known; a create's request ID is seen
        # last (its replay answers with the servicer's own Get).
        interceptors=[ErrorMappingInterceptor(), AuditInterceptor(store.events),
                      AuthInterceptor(config.admin_token, store),
                      RequestCheckInterceptor(request_rules.rules_for), request_ids],
    )
    request_ids.watch(server)
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
    quotas_api.add_to_server(store, server)
    events_api.add_to_server(store.events, config.admin_token, store, server)
    security_groups_api.add_to_server(store, server, filters_changed)
    dns_api.add_to_server(store, hooks, server)
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

    if tls is not None and config.listens_on_tcp():
        # API clients authenticate with bearer tokens: server-auth TLS.
        port = server.add_secure_port(config.listen, server_credentials(tls, mutual=False))
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {config.listen}")
    return server, port, health_servicer


def create_server(
    config: ServerConfig, store: Store | None = None, hooks: RouterHooks | None = None,
    tls: TlsFiles | None = None,
) -> tuple[grpc.Server, int]:
    """A ready-to-start server and the port it is bound to. ``hooks`` hear of
    every committed change to a router (default: nobody); ``tls``: the
    listener's certificate (None: plaintext, as main() allows only with
    ``insecure``)."""
    server, port, _ = _build(config, store, hooks, tls)
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
    p.add_argument("--host-grace", type=float, metavar="SECONDS",
                   help="a router host silent this long is DOWN and its routers move "
                        "(default: 15)")
    p.add_argument("--tls-dir", metavar="DIR",
                   help="the CA and netmgr's certificate, made at first start (default: "
                        "tls/ beside the secrets key)")
    p.add_argument("--insecure", action="store_true",
                   help="serve plaintext on TCP (bearer tokens in clear: tests only)")
    p.add_argument("--issue-cert", metavar="NAME=DIR",
                   help="issue an agent's certificate from the CA into DIR (agent.crt, "
                        "agent.key 0600, ca.crt) and exit")
    p.add_argument("--cert-ip", action="append", default=[], metavar="IP",
                   help="with --issue-cert: an address to name in the certificate")
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
    if getattr(args, "tls_dir", None):
        config.tls_dir = args.tls_dir
    if getattr(args, "insecure", False):
        config.insecure = True
    if args.default_host:
        config.default_host = args.default_host
    if getattr(args, "metrics_listen", None):
        config.metrics_listen = args.metrics_listen
    if getattr(args, "host_grace", None) is not None:
        if not args.host_grace > 0:
            raise ValueError("--host-grace must be more than 0")
        config.host_grace_seconds = args.host_grace
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


def replica_coordination(db_url: str, store: Store) -> tuple[ShardLeases, RouterNotices | None]:
    """SQLite: one process holds every shard. PostgreSQL: any number of
    replicas share the shards by advisory locks and tell each other of
    changes (docs/replicas.md)."""
    from netmgr.store.leases import AdvisoryLeases, LocalLeases

    if make_url(db_url).get_backend_name() == "sqlite":
        return LocalLeases(store.db), None
    from netmgr.store.notices import RouterNotices

    return AdvisoryLeases(db_url), RouterNotices(db_url)


NETMGR_CERT_NAME = "netmgr"


def netmgr_tls(config: ServerConfig) -> TlsFiles | None:
    """netmgr's certificate (its API listener's, and its client certificate
    to the agents), issued from the CA (made at first start); None with
    ``insecure``."""
    if config.insecure:
        log.warning("TLS is off (--insecure): tokens and configs travel in clear")
        return None
    ca = CertificateAuthority.load_or_create(config.tls_path())
    host = config.listen.rpartition(":")[0].strip("[]")
    ips = [host] if host and _is_ip(host) else []
    return ensure_issued(ca, config.tls_path(), NETMGR_CERT_NAME, ROLE_NETMGR, ips)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def issue_agent_cert(config: ServerConfig, spec: str, ips: Sequence[str]) -> int:
    """``--issue-cert NAME=DIR``: an agent's certificate from this netmgr's CA."""
    name, sep, directory = spec.partition("=")
    if not sep or not name or not directory:
        print(f"cloudnet-netmgr: --issue-cert {spec!r}: expected NAME=DIR", file=sys.stderr)
        return 2
    try:
        ca = CertificateAuthority.load_or_create(config.tls_path())
        files = ca.issue_files(directory, AGENT_CERT_NAME, ROLE_AGENT, list(ips))
    except (OSError, ValueError) as e:
        print(f"cloudnet-netmgr: --issue-cert: {e}", file=sys.stderr)
        return 2
    print(f"issued {name}'s certificate: {files.cert} (key {files.key}, CA {files.ca})")
    return 0


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
    if args.issue_cert:
        return issue_agent_cert(config, args.issue_cert, args.cert_ip)
    if not config.admin_token:
        print(f"cloudnet-netmgr: no admin token: use --admin-token-file, {ADMIN_TOKEN_ENV} "
              "or admin_token_file in the config", file=sys.stderr)
        return 2

    vm_config: RouterVmConfig | None = None
    if config.router_backend == "vm" or config.router_vm:
        from netmgr.reconcile.vm_backend.credentials import router_vm_config

        vm_config = router_vm_config(config.router_vm)

    # Imported here: a server without a reconciler (the API's tests) needs none of it.
    from netmgr.reconcile.port_filters import PortFilterPusher
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
    try:
        tls = netmgr_tls(config)
    except (OSError, ValueError) as e:
        print(f"cloudnet-netmgr: TLS: {e}", file=sys.stderr)
        store.close()
        return 2
    leases, notices = replica_coordination(config.db_url, store)
    reconciler = Reconciler(store, store.vpn, config.agents, leases=leases,
                            forward=notices.send if notices is not None else None,
                            hosts=store.hosts, host_grace=config.host_grace_seconds,
                            agent_tls=tls, redundancy=store.redundancy)
    if notices is not None:
        notices.listen(lambda kind, router_id: (
            reconciler.restart_held(router_id) if kind == "restart"
            else reconciler.notify_held(router_id, urgent=kind == "notify")))
    vm_backend = None
    if vm_config is not None:
        from netmgr.reconcile.vm_backend.tender import RouterVmBackend
        from netmgr.store.router_vms import RouterVmStore

        store.default_backend = RouterBackend(config.router_backend)
        vm_backend = RouterVmBackend(
            store, reconciler, vm_config, config.admin_token,
            vms=RouterVmStore(store.db, vm_config.control_cidr),
            hosts=store.hosts,
            control=(control_network or default_control_network)(vm_config),
            compute_tls=tls, redundancy=store.redundancy)
        reconciler.vm_routers = vm_backend
        # A redundant VM router's two VMs go to two live compute hosts.
        store.redundancy.compute_hosts = lambda: [
            h.name for h in store.hosts.list() if h.role != "router" and h.state != "down"]
        vm_backend.owns = lambda router_id: leases.epoch(router_id) is not None
    port_filters = PortFilterPusher(store, config.admin_token, compute_tls=tls)
    reconciler.port_filters = port_filters
    server, port, health_servicer = _build(config, store, reconciler, tls, port_filters.changed)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    if config.metrics_listen:
        # Before the API answers health checks: a caller that saw the API
        # serving finds the metrics too (taking leases may take a moment).
        from netmgr import metrics

        log.info("metrics on port %d", metrics.serve(store, config.metrics_listen))
    server.start()
    reconciler.start()
    port_filters.start()
    if vm_backend is not None:
        vm_backend.start()
    if config.event_retention_days > 0:
        threading.Thread(target=store.events.sweep_until, name="event-sweeper", daemon=True,
                         args=(config.event_retention_days, stopping)).start()
    log.info("serving the API on %s (port %d)", config.listen, port)
    stopping.wait()
    log.info("stopping")
    health_servicer.enter_graceful_shutdown()
    server.stop(config.grace_seconds).wait()
    if vm_backend is not None:
        vm_backend.stop()
    port_filters.stop()
    reconciler.stop()
    if notices is not None:
        notices.stop()
    store.close()
    return 0

if __name__ == "__main__":
    sys.exit(main())
