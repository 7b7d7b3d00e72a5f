"""The router agent: many routers (one network namespace each) behind one gRPC API.

    cloudnet-router-agent --listen unix:///run/cloudnet/agent.sock \
        --state-dir /var/lib/cloudnet/agent --netns-prefix cn --fabric-netns cn-fabric

Each router's last good config is persisted under
<state-dir>/routers/<router_id>/config.pb; on start the agent re-applies every
one of them (adopting daemons that kept running), so routers keep serving
while netmgr is down and across agent restarts.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import netns
from common.fabric.base import Fabric, LinuxBridgeFabric
from router.errors import ConfigError
from router.lib import validate
from router.runtime import CONFIG_FILE, RouterRuntime, load_config, router_netns_name
from router.services import Context
from router.services.nftables import journal as edge_journal

MAX_CONFIG_BYTES = 64 * 1024 * 1024

log = logging.getLogger("router.agent.server")

__all__ = ["Agent", "create_server", "main", "router_netns_name"]


class RequestError(Exception):
    """The request itself is malformed (not a config problem): INVALID_ARGUMENT."""


class NotFound(Exception):
    pass


class Agent:
    """Holds the routers of this host; one lock per router serialises its applies."""

    def __init__(
        self, state_dir: str, netns_prefix: str = "cn", fabric_netns: str = "cn-fabric",
        agent_id: str = "", dnsmasq_user: str = "dnsmasq", fabric: Fabric | None = None,
    ) -> None:
        netns.install()  # pyroute2's fork()ing netns helpers crash next to gRPC threads
        self.state_dir = state_dir
        self.netns_prefix = netns_prefix
        self.fabric = fabric if fabric is not None else LinuxBridgeFabric(fabric_netns)
        self.agent_id = agent_id or socket.gethostname()
        self.boot_id = uuid.uuid4().hex
        self.dnsmasq_user = dnsmasq_user
        self._routers: dict[str, RouterRuntime] = {}
        self._lock = threading.Lock()

    def _routers_dir(self) -> str:
        return os.path.join(self.state_dir, "routers")

    def runtime(self, router_id: str, create: bool = True) -> RouterRuntime:
        try:
            validate.check_id("router", router_id)
        except ConfigError as e:
            raise RequestError(str(e)) from None
        with self._lock:
            rt = self._routers.get(router_id)
            if rt is None:
                if not create:
                    raise NotFound(f"router {router_id} is not on this agent")
                rt = self._routers[router_id] = RouterRuntime(Context(
                    router_id=router_id,
                    netns=router_netns_name(self.netns_prefix, router_id),
                    state_dir=os.path.join(self._routers_dir(), router_id),
                    fabric=self.fabric,
                    dnsmasq_user=self.dnsmasq_user,
                ))
            return rt

    def start(self) -> None:
        """Set up the fabric and re-apply every persisted router config."""
        for d in (self.state_dir, self._routers_dir()):
            os.makedirs(d, mode=0o755, exist_ok=True)
        self.fabric.setup()
        for router_id in sorted(os.listdir(self._routers_dir())):
            path = os.path.join(self._routers_dir(), router_id, CONFIG_FILE)
            if not os.path.exists(path):
                continue
            try:
                # config.pb and the edge deltas applied after it.
                cfg = edge_journal.replay(os.path.dirname(path), load_config(path))
                status = self.runtime(router_id).apply(cfg)
            except Exception:
                log.exception("router %s: cannot restore persisted config", router_id)
                continue
            log.info("router %s: restored generation %d%s", router_id,
                     status.applied_generation,
                     f" ({status.last_error})" if status.last_error else "")

    def apply(self, cfg: pb.RouterConfig) -> pb.RouterStatus:
        return self.runtime(cfg.router_id).apply(cfg)

    def status(self, router_id: str) -> pb.RouterStatus:
        rt = self.runtime(router_id, create=False)
        with rt.lock:
            return rt.status()

    def list_status(self) -> list[pb.RouterStatus]:
        with self._lock:
            runtimes = sorted(self._routers.values(), key=lambda r: r.ctx.router_id)
        out = []
        for rt in runtimes:
            with rt.lock:
                if rt.config is not None or rt.last_error:
                    out.append(rt.status())
        return out

    def repair_all(self) -> dict[str, list[str]]:
        """One pass of the health monitor over every router: {router: repaired services}."""
        with self._lock:
            runtimes = list(self._routers.values())
        repaired = {}
        for rt in runtimes:
            try:
                names = rt.repair()
            except Exception:  # the monitor must outlive a bad router
                log.exception("router %s: repair failed", rt.ctx.router_id)
                continue
            if names:
                repaired[rt.ctx.router_id] = names
        return repaired

    def run_health_monitor(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Every `interval` seconds, repair what has broken since the last apply."""

        def loop() -> None:
            while not stop.wait(interval):
                self.repair_all()

        t = threading.Thread(target=loop, name="health-monitor", daemon=True)
        t.start()
        return t

    def delete(self, router_id: str, keep_leases: bool) -> None:
        rt = self.runtime(router_id)  # also for routers only left on disk
        rt.delete(keep_leases)
        with self._lock:
            if self._routers.get(router_id) is rt:
                del self._routers[router_id]


# ---- gRPC ---------------------------------------------------------------------

T = TypeVar("T")


def _rpc(method: Callable[..., T]) -> Callable[..., T]:
    """Maps the agent's exceptions to gRPC status codes, in one place."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> T:
        try:
            return method(self, request, context)
        except RequestError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except Exception as e:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


class RouterAgentServicer(agent_pb2_grpc.RouterAgentServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    @_rpc
    def ApplyConfig(self, request: pb.ApplyConfigRequest, context: Any) -> pb.ApplyConfigResponse:
        if not request.HasField("config") or not request.config.router_id:
            raise RequestError("config.router_id is required")
        return pb.ApplyConfigResponse(status=self.agent.apply(request.config))

    @_rpc
    def GetRouterStatus(self, request: pb.GetRouterStatusRequest, context: Any) -> pb.RouterStatus:
        return self.agent.status(request.router_id)

    @_rpc
    def ListRouterStatus(
        self, request: pb.ListRouterStatusRequest, context: Any
    ) -> pb.ListRouterStatusResponse:
        return pb.ListRouterStatusResponse(
            routers=self.agent.list_status(), agent_id=self.agent.agent_id,
            boot_id=self.agent.boot_id,
        )

    @_rpc
    def DeleteRouter(
        self, request: pb.DeleteRouterRequest, context: Any
    ) -> pb.DeleteRouterResponse:
        self.agent.delete(request.router_id, request.keep_leases)
        return pb.DeleteRouterResponse()


def create_server(
    listen: str, agent: Agent, max_workers: int = 16,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
) -> tuple[grpc.Server, int]:
    """A started gRPC server for `agent` on `listen` ("unix:///path" or "host:port").

    Returns (server, port); the port is 0 for a unix socket. The socket's
    directory is created 0700 and the socket made 0600: only root may talk
    to the agent.
    """
    # A router's whole config (50,000 edge rules: about 7 MB) in one message.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         interceptors=interceptors,
                         options=[("grpc.max_receive_message_length", MAX_CONFIG_BYTES)])
    agent_pb2_grpc.add_RouterAgentServicer_to_server(RouterAgentServicer(agent), server)
    from router.agent.diag_service import add_to_server as add_diagnostics  # imports this module
    diag_name = add_diagnostics(agent, server)
    from router.agent.edge_service import add_to_server as add_edge

    edge_name = add_edge(agent, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_name = pb.DESCRIPTOR.services_by_name["RouterAgent"].full_name
    reflection.enable_server_reflection(
        (service_name, diag_name, edge_name,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    socket_path = listen[len("unix://"):] if listen.startswith("unix://") else ""
    if socket_path:
        os.makedirs(os.path.dirname(socket_path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(socket_path):
            os.unlink(socket_path)  # a stale socket of a previous run
    port = server.add_insecure_port(listen)
    if not socket_path and port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    if socket_path:
        os.chmod(socket_path, 0o600)
        port = 0
    for name in (service_name, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def main(argv: list[str] | None = None) -> None:
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
                        "interfaces the VM's NICs found by MAC (router/appliance.py)")
    p.add_argument("--auth-token-file", default="",
                   help="require 'authorization: Bearer <token>' on every RPC but health "
                        "(router/auth.py); mandatory with --fabric appliance")
    p.add_argument("--agent-id", default=socket.gethostname())
    p.add_argument("--dnsmasq-user", default="dnsmasq",
                   help="user dnsmasq drops privileges to (root if it cannot read the state dir)")
    p.add_argument("--health-interval", type=float, default=5.0,
                   help="seconds between checks that repair dead daemons or lost rulesets "
                        "(0 disables; default: %(default)s)")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve Prometheus metrics on HOST:PORT (default: off)")
    p.add_argument("--log-level", default="INFO")
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
    if args.fabric == "appliance":
        from router.agent import appliance

        if not args.appliance_router_id or not interceptors:
            p.error("--fabric appliance needs --appliance-router-id and --auth-token-file")
        agent: Agent = appliance.ApplianceAgent(
            args.appliance_router_id, args.state_dir, args.netns_prefix, args.agent_id,
            args.dnsmasq_user, appliance.control_mac_from_env())
    else:
        agent = Agent(args.state_dir, args.netns_prefix, args.fabric_netns, args.agent_id,
                      args.dnsmasq_user, fabric)
    agent.start()
    server, port = create_server(args.listen, agent, interceptors=interceptors)
    if args.metrics_listen:
        from router.agent import metrics

        log.info("metrics on port %d", metrics.serve(agent, args.metrics_listen))
    log.info("router agent %s (boot %s) listening on %s", agent.agent_id, agent.boot_id,
             args.listen if not port else f"port {port}")
    if args.fabric == "appliance":
        from router.agent import appliance

        log.info("CLOUDNET-AGENT serving %s", appliance.boot_times())
        appliance.announce_control(args.listen, appliance.control_mac_from_env())
    stopped = threading.Event()
    if args.health_interval > 0:
        agent.run_health_monitor(args.health_interval, stopped)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping (routers keep running)", signum)
        server.stop(grace=5).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopped.wait()


if __name__ == "__main__":
    main()
