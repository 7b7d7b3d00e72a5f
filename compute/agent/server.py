"""cloudnet compute agent: boots guest VMs with libvirt on this host's fabric.

    cloudnet-compute --name host-a --listen 127.0.0.1:7171 \\
        --netmgr 127.0.0.1:7070 --admin-token-file /var/lib/cloudnet/admin.token \\
        --fabric ovs --ovs-bridge cn-br --state-dir /var/lib/cloudnet/compute

Callers authenticate with their netmgr bearer token, which the agent passes
on to netmgr (compute.agent.service says what it asks for). The same server
carries the router VM service (compute.router_vm) for netmgr's VM backend.
The agent registers its host with netmgr (HostService) at start.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import signal
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeAlias

import grpc
from cloudnet.compute.v1 import compute_pb2 as pb
from cloudnet.compute.v1 import compute_pb2_grpc as rpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.channels import POLICIES
from common.fabric.ovs_firewall import OvsFirewall
from common.fabric.port_firewall import PortFirewall
from common.grpc_errors import ErrorMappingInterceptor, Unauthenticated
from common.request_checks import RequestCheckInterceptor, RequestRules
from common.tls import AGENT_CERT_NAME, TlsFiles, server_credentials
from compute import images, openflow
from compute.agent import port_filters
from compute.agent.heartbeat import Heartbeat
from compute.agent.netmgr_client import TENANT_HEADER, Netmgr
from compute.agent.service import Compute
from compute.host import HostConfig, VmFabric
from compute.router_vm import service as router_vm

log = logging.getLogger("cloudnet.compute")

Ctx: TypeAlias = grpc.ServicerContext
SERVICE = str(pb.DESCRIPTOR.services_by_name["ComputeService"].full_name)


def caller_metadata(context: Ctx) -> list[tuple[str, str]]:
    """The caller's credentials, to pass on to netmgr."""
    md = dict(context.invocation_metadata())
    auth = str(md.get("authorization", ""))
    if not auth:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    out = [("authorization", auth)]
    if md.get(TENANT_HEADER):
        out.append((TENANT_HEADER, str(md[TENANT_HEADER])))
    return out


class ComputeServicer(rpc.ComputeServiceServicer):
    def __init__(self, compute: Compute) -> None:
        self.c = compute

    def _tenant(self, context: Ctx) -> str:
        return self.c.whoami(caller_metadata(context))

    def CreateVm(self, request: pb.CreateVmRequest, context: Ctx) -> pb.Vm:
        return self.c.create(caller_metadata(context), request.vm)

    def GetVm(self, request: pb.GetVmRequest, context: Ctx) -> pb.Vm:
        return self.c.get(self._tenant(context), request.id)

    def ListVms(self, request: pb.ListVmsRequest, context: Ctx) -> pb.ListVmsResponse:
        return pb.ListVmsResponse(vms=self.c.list(self._tenant(context)))

    def StartVm(self, request: pb.StartVmRequest, context: Ctx) -> pb.Vm:
        return self.c.start(self._tenant(context), request.id)

    def StopVm(self, request: pb.StopVmRequest, context: Ctx) -> pb.Vm:
        return self.c.stop(self._tenant(context), request.id, request.force)

    def DeleteVm(self, request: pb.DeleteVmRequest, context: Ctx) -> pb.DeleteVmResponse:
        self.c.delete(self._tenant(context), request.id)
        return pb.DeleteVmResponse()

    def GetConsoleLog(self, request: pb.GetConsoleLogRequest, context: Ctx) -> pb.ConsoleLog:
        return self.c.console(self._tenant(context), request.id, request.offset)

    def ListImages(self, request: pb.ListImagesRequest, context: Ctx) -> pb.ListImagesResponse:
        self._tenant(context)
        return pb.ListImagesResponse(images=[
            pb.Image(name=i.name, min_memory_mib=i.min_memory_mib,
                     kernel_release=i.kernel_release)
            for i in sorted(self.c.images.values(), key=lambda i: i.name)])

    def GetHostInfo(self, request: pb.GetHostInfoRequest, context: Ctx) -> pb.HostInfo:
        self._tenant(context)
        return self.c.host_info()


def _request_rules(method: str) -> RequestRules | None:
    """Every compute request (IDs are netmgr's canonical UUIDs); health and
    reflection keep grpc's own."""
    return _RULES if method.startswith("/cloudnet.compute.") else None


_RULES = RequestRules()


def is_admin(compute: Compute) -> Callable[[Ctx], bool]:
    def check(context: Ctx) -> bool:
        auth = str(dict(context.invocation_metadata()).get("authorization", ""))
        return hmac.compare_digest(auth.encode(),
                                   f"Bearer {compute.cfg.admin_token}".encode())
    return check


def nic_devices(compute: Compute) -> Callable[[], dict[str, str]]:
    """Port ID -> tap of this host's VM NICs."""
    def devices() -> dict[str, str]:
        return {str(n["port_id"]): str(n["device"]) for vm in compute.records()
                for n in vm.nics}
    return devices


def create_server(compute: Compute, listen: str, tls: TlsFiles | None = None,
                  filters: port_filters.FilterBackend | None = None
                  ) -> tuple[grpc.Server, int]:
    """The agent's gRPC server (not started) on `listen`, and its port;
    ``tls``: server-auth TLS (None: plaintext). Its callers authenticate by
    token: tenants' CLIs (``cloudnet vm``, their netmgr token) and netmgr
    (the admin token, RouterVmService, port filters), so no client
    certificate is asked. `filters`: where the host's port filters are
    enforced (None: not here)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8,
                                                    thread_name_prefix="compute-api"),
                         interceptors=[ErrorMappingInterceptor(),
                                       RequestCheckInterceptor(_request_rules)])
    rpc.add_ComputeServiceServicer_to_server(ComputeServicer(compute), server)
    router_vm_service = router_vm.add_to_server(compute, server)
    filter_servicer = port_filters.PortFilterServicer(filters, nic_devices(compute),
                                                      is_admin(compute))
    compute.after_plug = filter_servicer.reapply
    filter_service = port_filters.add_to_server(filter_servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE, router_vm_service, filter_service, health.SERVICE_NAME,
         reflection.SERVICE_NAME), server)
    if tls is not None and not listen.startswith("unix:"):
        port = int(server.add_secure_port(listen, server_credentials(tls, mutual=True)))
    else:
        port = int(server.add_insecure_port(listen))
    if port == 0:
        raise RuntimeError(f"cannot listen on {listen}")
    return server, port


def bound_address(listen: str, port: int) -> str:
    """``listen`` with the port the server bound (a unix socket as it is)."""
    if listen.startswith("unix:"):
        return listen
    host, _, _ = listen.rpartition(":")
    return f"{host}:{port}"


def make_fabric(kind: str, ovs_bridge: str, vxlan_args: dict[str, Any]) -> VmFabric:
    if kind == "ovs":
        from common.fabric.ovs import OvsFabric

        return OvsFabric(ovs_bridge)
    if kind == "vxlan":
        from common.fabric.vxlan import VxlanFabric

        return VxlanFabric(**vxlan_args)
    raise SystemExit(f"compute agent: unknown fabric {kind!r}")


def main(argv: list[str] | None = None,
         on_ready: Callable[[grpc.Server], None] | None = None) -> None:
    p = argparse.ArgumentParser(prog="cloudnet-compute",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--name", default=socket.gethostname().split(".")[0].lower())
    p.add_argument("--listen", default="127.0.0.1:7171")
    p.add_argument("--netmgr", default="127.0.0.1:7070")
    p.add_argument("--admin-token-file", default="/var/lib/cloudnet/admin.token")
    p.add_argument("--state-dir", default="/var/lib/cloudnet/compute")
    p.add_argument("--fabric", choices=("ovs", "vxlan"), default="ovs")
    p.add_argument("--ovs-bridge", default="cn-br")
    p.add_argument("--vxlan-prefix", default="cnvx", help="VXLAN fabric: device name prefix")
    p.add_argument("--vxlan-underlay-netns", default="", help="VXLAN fabric: underlay namespace")
    p.add_argument("--vxlan-local", default="", help="VXLAN fabric: this host's underlay IP")
    p.add_argument("--vxlan-remote", action="append", default=[],
                   help="VXLAN fabric: another host's underlay IP (repeatable)")
    p.add_argument("--image", action="append", default=[], metavar="NAME=DIR",
                   help=f"a bootable image directory (default: tiny={images.DEFAULT_GUEST_DIR}, "
                        f"and {images.CLOUD_GUEST_NAME}={images.DEFAULT_CLOUD_GUEST_DIR} "
                        "when built)")
    p.add_argument("--accel", choices=("auto", "kvm", "qemu"), default="auto")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--heartbeat-interval", type=float, default=5.0, metavar="SECONDS",
                   help="heartbeat netmgr this often (0: register once, no heartbeat); "
                        "silent past netmgr's --host-grace, the host is DOWN")
    p.add_argument("--netmgr-policy", choices=POLICIES, default="pick_first",
                   help="with several --netmgr addresses: gRPC's load-balancing policy")
    p.add_argument("--tls-dir", default="", metavar="DIR",
                   help="mutual TLS with netmgr: the certificate it issued (cloudnet-netmgr "
                        "--issue-cert NAME=DIR: ca.crt, agent.crt, agent.key)")
    p.add_argument("--insecure", action="store_true",
                   help="without --tls-dir: plaintext on TCP (never the default)")
    p.add_argument("--fault-channel", action="store_true",
                   help="tests only: give router VMs the fault channel, a virtio-serial port "
                        "reached from this host alone through which a test kills a daemon "
                        "inside the VM (docs/redundant-routers.md)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    tls = TlsFiles.in_dir(args.tls_dir, AGENT_CERT_NAME) if args.tls_dir else None
    if tls is None and not args.insecure:
        p.error("give --tls-dir (mutual TLS with netmgr), or --insecure for plaintext")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.admin_token_file) as f:
        admin_token = f.read().strip()
    image_dirs = dict(i.split("=", 1) for i in args.image) or images.default_images()
    fabric = make_fabric(args.fabric, args.ovs_bridge, {
        "prefix": args.vxlan_prefix, "underlay_netns": args.vxlan_underlay_netns,
        "local": args.vxlan_local, "remotes": args.vxlan_remote})
    fabric.setup()
    cfg = HostConfig(name=args.name, state_dir=args.state_dir, netmgr=args.netmgr,
                     admin_token=admin_token, fabric_kind=args.fabric, fabric=fabric,
                     images=image_dirs, address=args.listen, accel=args.accel,
                     fault_channel=args.fault_channel)
    compute = Compute(cfg, Netmgr(args.netmgr, admin_token, tls=tls,
                                  policy=args.netmgr_policy))
    # Port filters where the guests plug in: OpenFlow with ct() on OVS,
    # nftables on the VXLAN fabric's Linux bridges (the root namespace).
    # Set up at the first push (the tables or flows exist only on a host that
    # has filtered ports). On OVS, one OpenFlow connection to the bridge is
    # kept for every change.
    filters: port_filters.FilterBackend = (
        OvsFirewall(args.ovs_bridge, flows=openflow.Connection(args.ovs_bridge))
        if args.fabric == "ovs" else PortFirewall(""))
    server, port = create_server(compute, args.listen, tls, filters)
    # Port 0: the agent takes a free port, and registers the address it got.
    cfg.address = bound_address(args.listen, port)
    server.start()
    stopped = threading.Event()
    if not args.no_register:
        compute.register()
        if args.heartbeat_interval > 0:
            beats = Heartbeat(compute.netmgr, cfg.name, compute.register, args.heartbeat_interval)
            beats.registered = True
            beats.run(stopped)
    log.info("compute agent %s (%s, %s) listening on %s", cfg.name, args.fabric, compute.accel,
             cfg.address)

    def on_signal(signum: int, frame: object) -> None:
        server.stop(grace=5).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if on_ready:
        on_ready(server)
    stopped.wait()


if __name__ == "__main__":
    main()
