"""The router agent: many routers (one network namespace each) behind one gRPC API.

    cloudnet-router-agent --listen unix:///run/cloudnet/agent.sock \
        --state-dir /var/lib/cloudnet/agent --netns-prefix cn --fabric-netns cn-fabric

This module is the wiring: the RouterAgent servicer, ``create_server`` (with
the RouterEdge and RouterDiagnostics servicers, health and reflection) and
``main``. The routers themselves are held by ``registry.RouterRegistry``,
which restores them from disk on start; every servicer maps its errors to
status codes through ``rpc``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from concurrent import futures
from typing import Any

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.channels import make_channel
from common.fabric.base import Fabric
from common.request_checks import RequestCheckInterceptor, RequestRules
from common.tls import AGENT_CERT_NAME, TlsFiles, server_credentials
from router.agent import diag_service, edge_service, metadata_service, redundancy_service, rpc
from router.agent.host_limits import HostLimits
from router.agent.registry import RouterRegistry
from router.errors import RequestError
from router.services.host import ROUTER_CONNTRACK_LIMIT, KernelProbe

MAX_CONFIG_BYTES = 64 * 1024 * 1024
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["RouterAgent"].full_name

log = logging.getLogger("router.agent.server")


class RouterAgentServicer(agent_pb2_grpc.RouterAgentServicer):
    def __init__(self, registry: RouterRegistry) -> None:
        self.registry = registry

    def ApplyConfig(self, request: pb.ApplyConfigRequest, context: Any) -> pb.ApplyConfigResponse:
        if not request.HasField("config") or not request.config.router_id:
            raise RequestError("config.router_id is required")
        return pb.ApplyConfigResponse(
            status=self.registry.apply(request.config, request.lease_epoch))

    def GetRouterStatus(self, request: pb.GetRouterStatusRequest, context: Any) -> pb.RouterStatus:
        return self.registry.status(request.router_id)

    def ListRouterStatus(
        self, request: pb.ListRouterStatusRequest, context: Any
    ) -> pb.ListRouterStatusResponse:
        return pb.ListRouterStatusResponse(
            routers=self.registry.list_status(), agent_id=self.registry.agent_id,
            boot_id=self.registry.boot_id,
        )

    def DeleteRouter(
        self, request: pb.DeleteRouterRequest, context: Any
    ) -> pb.DeleteRouterResponse:
        self.registry.delete(request.router_id, request.keep_leases, request.lease_epoch)
        return pb.DeleteRouterResponse()


# Diagnostics name routers and networks by their netmgr IDs (canonical UUIDs);
# the agent's own API takes its IDs as netmgr sends them (the services check
# each against router.lib.validate) and walks no whole router config: the
# services' verify checks every value of one, and a generic walk of 50,000
# rules would add half a second to each push.
_DIAG_RULES = RequestRules()
_AGENT_RULES = RequestRules(id_rule=None)
_UNWALKED = frozenset({f"/{SERVICE_NAME}/ApplyConfig",
                       f"/{edge_service.SERVICE_NAME}/ApplyEdgeDelta"})


def request_rules(method: str) -> RequestRules | None:
    if method.startswith(f"/{diag_service.SERVICE_NAME}/"):
        return _DIAG_RULES
    if method in _UNWALKED or not method.startswith("/cloudnet."):
        return None
    return _AGENT_RULES


def create_server(
    listen: str, registry: RouterRegistry, max_workers: int = 16,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
    tls: TlsFiles | None = None,
) -> tuple[grpc.Server, int]:
    """A started gRPC server for the routers of ``registry`` on ``listen``
    ("unix:///path" or "host:port"): RouterAgent, RouterEdge, RouterDiagnostics,
    health and reflection.

    Returns (server, port); the port is 0 for a unix socket. The socket's
    directory is created 0700 and the socket made 0600: only root may talk
    to the agent.
    """
    # A router's whole config (50,000 edge rules: about 7 MB) in one message.
    # Errors are mapped innermost: an interceptor given here (the appliance's
    # bearer-token check) decides first.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         interceptors=(*interceptors, RequestCheckInterceptor(request_rules),
                                       rpc.interceptor()),
                         options=[("grpc.max_receive_message_length", MAX_CONFIG_BYTES)])
    agent_pb2_grpc.add_RouterAgentServicer_to_server(RouterAgentServicer(registry), server)
    diag_name = diag_service.add_to_server(registry, server)
    edge_name = edge_service.add_to_server(registry, server)
    metadata_name = metadata_service.add_to_server(registry, server)
    redundancy_name = redundancy_service.add_to_server(registry, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, diag_name, edge_name, metadata_name, redundancy_name,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    socket_path = listen[len("unix://"):] if listen.startswith("unix://") else ""
    if socket_path:
        os.makedirs(os.path.dirname(socket_path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(socket_path):
            os.unlink(socket_path)  # a stale socket of a previous run
    if tls is not None and not socket_path:
        # netmgr and the agent check each other's certificate (one CA).
        port = server.add_secure_port(listen, server_credentials(tls, mutual=True))
    else:
        port = server.add_insecure_port(listen)
    if not socket_path and port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    if socket_path:
        os.chmod(socket_path, 0o600)
        port = 0
    for name in (SERVICE_NAME, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudnet-router-agent", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="unix:///run/cloudnet/agent.sock",
                   help="unix:///path or host:port (default: %(default)s)")
    p.add_argument("--state-dir", default="/var/lib/cloudnet/agent")
    p.add_argument("--netns-prefix", default="cn")
    p.add_argument("--fabric-netns", default="cn-fabric")
    p.add_argument("--fabric", choices=("linuxbridge", "ovs", "vxlan", "appliance"),
                   default="linuxbridge",
                   help="linuxbridge: a bridge per segment in --fabric-netns; ovs: VLAN access "
                        "ports on the Open vSwitch bridge --ovs-bridge; vxlan: a bridge per "
                        "VNI with a vxlan device over the underlay (--vxlan-*)")
    p.add_argument("--ovs-bridge", default="cn-br")
    p.add_argument("--vxlan-prefix", default="cnvx", help="VXLAN fabric: device name prefix")
    p.add_argument("--vxlan-underlay-netns", default="",
                   help="VXLAN fabric: the namespace holding this host's underlay address")
    p.add_argument("--vxlan-local", default="", help="VXLAN fabric: this host's underlay IP")
    p.add_argument("--vxlan-remote", action="append", default=[],
                   help="VXLAN fabric: another host's underlay IP (repeatable)")
    p.add_argument("--appliance-router-id", default="",
                   help="with --fabric appliance (router VM): the one router served, its "
                        "interfaces the VM's NICs found by MAC (router/agent/appliance.py)")
    p.add_argument("--auth-token-file", default="",
                   help="require 'authorization: Bearer <token>' on every RPC but health "
                        "(router/agent/auth.py); mandatory with --fabric appliance")
    p.add_argument("--tls-dir", default="", metavar="DIR",
                   help="on TCP: mutual TLS with the certificate netmgr issued "
                        "(cloudnet-netmgr --issue-cert NAME=DIR: ca.crt, agent.crt, agent.key)")
    p.add_argument("--insecure", action="store_true",
                   help="on TCP without --tls-dir: plaintext (never the default)")
    p.add_argument("--agent-id", default=socket.gethostname())
    p.add_argument("--dnsmasq-user", default="dnsmasq",
                   help="user dnsmasq drops privileges to (root if it cannot read the state dir)")
    p.add_argument("--health-interval", type=float, default=5.0,
                   help="seconds between checks that repair dead daemons or lost rulesets "
                        "(0 disables; default: %(default)s)")
    p.add_argument("--planned-routers", type=int, default=1024, metavar="N",
                   help="size the host's limits (inotify, neighbour tables, pids, open files, "
                        "conntrack hash) for N routers at start, and for more as routers are "
                        "added (router/agent/host_limits.py; default: %(default)s)")
    p.add_argument("--no-raise-host-limits", dest="raise_host_limits", action="store_false",
                   help="only check the host's limits: report those short in every router's "
                        "status, change nothing")
    p.add_argument("--reapply-workers", type=int, default=8, metavar="N",
                   help="at start, routers that cannot be adopted untouched (new rendering "
                        "code, a change cut short, a reboot) are applied again N at a time "
                        "(default: %(default)s)")
    p.add_argument("--router-conntrack-limit", type=int, default=ROUTER_CONNTRACK_LIMIT,
                   metavar="N",
                   help="connections one router may track at once; new ones beyond are "
                        "dropped (0: no limit of its own; default: %(default)s)")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve Prometheus metrics on HOST:PORT (default: off)")
    p.add_argument("--netmgr", default="", metavar="HOST:PORT",
                   help="register this host with netmgr as a router host and heartbeat "
                        "(router/agent/registration.py; needs --netmgr-token-file)")
    p.add_argument("--netmgr-token-file", default="", help="netmgr's admin token")
    p.add_argument("--host-name", default="",
                   help="the router host's name in netmgr (default: --agent-id)")
    p.add_argument("--advertise", default="",
                   help="the address netmgr reaches this agent on (default: --listen)")
    p.add_argument("--heartbeat-interval", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--log-level", default="INFO")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fabric: Fabric | None = None
    if args.fabric == "ovs":
        from common.fabric.ovs import OvsFabric

        fabric = OvsFabric(args.ovs_bridge)
    elif args.fabric == "vxlan":
        from common.fabric.vxlan import VxlanFabric

        if not (args.vxlan_underlay_netns and args.vxlan_local):
            p.error("--fabric vxlan needs --vxlan-underlay-netns and --vxlan-local")
        fabric = VxlanFabric(args.vxlan_prefix, args.vxlan_underlay_netns, args.vxlan_local,
                             args.vxlan_remote)
    interceptors: tuple[grpc.ServerInterceptor, ...] = ()
    if args.auth_token_file:
        from router.agent import auth

        interceptors = (auth.BearerTokenInterceptor(auth.read_token_file(args.auth_token_file)),)
    tls = TlsFiles.in_dir(args.tls_dir, AGENT_CERT_NAME) if args.tls_dir else None
    if tls is None and not args.insecure and not args.listen.startswith("unix:"):
        p.error(f"--listen {args.listen} is TCP: give --tls-dir (or --insecure for plaintext)")
    if args.planned_routers < 0:
        p.error("--planned-routers must be 0 or more")
    if args.reapply_workers < 1:
        p.error("--reapply-workers must be 1 or more")
    if args.router_conntrack_limit < 0:
        p.error("--router-conntrack-limit must be 0 or more")
    if args.fabric == "appliance":
        from router.agent import appliance

        if not args.appliance_router_id or not interceptors:
            p.error("--fabric appliance needs --appliance-router-id and --auth-token-file")
        registry = appliance.appliance_registry(
            args.appliance_router_id, args.state_dir, args.netns_prefix, args.agent_id,
            args.dnsmasq_user, appliance.control_mac_from_env())
    else:
        limits = HostLimits(planned=args.planned_routers, raise_limits=args.raise_host_limits)
        registry = RouterRegistry(args.state_dir, args.netns_prefix, args.fabric_netns,
                                  args.agent_id, args.dnsmasq_user, fabric, limits=limits,
                                  host=KernelProbe(args.router_conntrack_limit),
                                  reapply_workers=args.reapply_workers)
    if args.health_interval > 0:
        # A listing of every router (netmgr's resync, every 2 s) reports the
        # health pass's checks rather than check 1,000 routers again.
        registry.health_max_age = 3 * args.health_interval
    registry.start()
    server, port = create_server(args.listen, registry, interceptors=interceptors, tls=tls)
    if args.metrics_listen:
        from router.agent import metrics

        log.info("metrics on port %d", metrics.serve(registry, args.metrics_listen))
    log.info("router agent %s (boot %s) listening on %s", registry.agent_id, registry.boot_id,
             args.listen if not port else f"port {port}")
    if args.fabric == "appliance":
        from router.agent import appliance

        log.info("CLOUDNET-AGENT serving %s", appliance.boot_times())
        appliance.announce_control(args.listen, appliance.control_mac_from_env())
    stopped = threading.Event()
    if args.health_interval > 0:
        registry.run_health_monitor(args.health_interval, stopped)
    if args.netmgr:
        from router.agent import auth
        from router.agent.registration import Registration

        if not args.netmgr_token_file or not args.heartbeat_interval > 0:
            p.error("--netmgr needs --netmgr-token-file and a --heartbeat-interval above 0")
        # TLS with the agent's own files (the cloud's CA checks netmgr), or
        # plaintext with --insecure, as the agent's own listener.
        Registration(make_channel(args.netmgr, tls=tls),
                     auth.read_token_file(args.netmgr_token_file),
                     args.host_name or registry.agent_id, args.advertise or args.listen,
                     args.fabric, args.heartbeat_interval).run(stopped)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping (routers keep running)", signum)
        server.stop(grace=5).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopped.wait()


if __name__ == "__main__":
    main()
