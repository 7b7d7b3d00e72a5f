"""The all-in-one demo: a tenant network with two guests, shown working.

Creates tenant "demo", a network and two ports through the gRPC API (as any
client would), plugs two namespace guests into the network, and shows each
guest's DHCP lease, a DNS lookup of the other guest, an upstream name, and a
connection out to the internet host through source NAT.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import netmgr_pb2_grpc as rpc

from aio.nsguest import NamespaceGuest
from aio.topology import INET_HOST_IP, WEB_PORT
from common.channels import make_channel
from common.fabric.base import Fabric
from common.private_files import write_private
from common.tls import TlsFiles


class Cloud(Protocol):
    """The running cloud the demo uses (``aio.allinone.AllInOne``)."""

    @property
    def listen(self) -> str:
        """netmgr's API address."""
        ...

    @property
    def admin_token(self) -> str: ...

    @property
    def state_dir(self) -> str:
        """Where the demo tenant's token file goes."""
        ...

    @property
    def prefix(self) -> str:
        """Of the namespace names (the guests' too)."""
        ...

    @property
    def fabric(self) -> Fabric:
        """Where the guests plug in."""
        ...

    @property
    def client_tls(self) -> TlsFiles | None:
        """The CA that vouches for netmgr (None: plaintext)."""
        ...


class Api:
    """The netmgr stubs with a bearer token (and optionally a tenant) attached."""

    def __init__(self, target: str, token: str, tenant: str = "",
                 tls: TlsFiles | None = None) -> None:
        self.channel = make_channel(target, tls=tls)
        md = [("authorization", f"Bearer {token}")]
        if tenant:
            md.append(("x-cloudnet-tenant", tenant))
        self.metadata = tuple(md)
        self.tenants = rpc.TenantServiceStub(self.channel)
        self.zone = rpc.ZoneServiceStub(self.channel)
        self.networks = rpc.NetworkServiceStub(self.channel)
        self.ports = rpc.PortServiceStub(self.channel)
        self.routers = rpc.RouterServiceStub(self.channel)

    def call(self, method: Callable[..., Any], request: Any, timeout: float = 30) -> Any:
        return method(request, metadata=self.metadata, timeout=timeout)

    # Generous: a VM router boots in 15-140 s under TCG on a loaded machine
    # (and one that does not is replaced after the VM backend's boot_timeout).
    def wait_router_active(self, router_id: str, timeout: float = 360) -> pb.Router:
        deadline = time.monotonic() + timeout
        while True:
            r: pb.Router = self.call(self.routers.GetRouter, pb.GetRouterRequest(id=router_id))
            if r.applied_generation >= r.desired_generation and r.state == pb.ROUTER_STATE_ACTIVE:
                return r
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"router {router_id}: {pb.RouterState.Name(r.state)} applied "
                    f"{r.applied_generation}/{r.desired_generation} {r.last_error}")
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()


def _step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def _demo_objects(admin: Api, target: str,
                  tls: TlsFiles | None) -> tuple[Api, str, pb.Network, list[pb.Port]]:
    """The demo tenant, network and ports: made on the first run, found again
    on later ones (the all-in-one keeps its state across restarts)."""
    tenants = admin.call(admin.tenants.ListTenants, pb.ListTenantsRequest(page_size=500))
    tenant = next((t for t in tenants.tenants if t.name == "demo"), None)
    if tenant is None:
        tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="demo"))
    # One demo token: this run's replaces the earlier runs' (its secret goes
    # to the same file), so tokens do not pile up at each run.
    earlier = admin.call(admin.tenants.ListTokens, pb.ListTokensRequest(
        tenant_id=tenant.id, page_size=500)).tokens
    made = admin.call(admin.tenants.CreateToken,
                      pb.CreateTokenRequest(tenant_id=tenant.id, name="demo"))
    secret = made.secret
    for old in earlier:
        if old.name == "demo" and old.id != made.token.id:
            admin.call(admin.tenants.DeleteToken, pb.DeleteTokenRequest(id=old.id))
    api = Api(target, secret, tls=tls)
    nets = api.call(api.networks.ListNetworks, pb.ListNetworksRequest(page_size=500)).networks
    net = next((n for n in nets if n.name == "web"), None)
    if net is None:
        net = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name="web", cidr="10.1.1.0/24")))
    have = {p.hostname: p for p in api.call(api.ports.ListPorts, pb.ListPortsRequest(
        network_id=net.id, page_size=500)).ports}
    ports = [have.get(n) or api.call(api.ports.CreatePort, pb.CreatePortRequest(
        port=pb.Port(network_id=net.id, name=n, hostname=n))) for n in ("vm1", "vm2")]
    return api, secret, net, ports


def run_demo(aio: Cloud) -> bool:
    admin = Api(aio.listen, aio.admin_token, tls=aio.client_tls)
    _step("tenant 'demo' has network 'web' 10.1.1.0/24 with ports vm1 and vm2")
    api, secret, net, ports = _demo_objects(admin, aio.listen, aio.client_tls)
    router = api.wait_router_active(net.router_id)
    print(f"network {net.id} vlan {net.vlan_id} domain {net.domain} "
          f"source NAT {net.source_nat_ip}; router {router.id} ACTIVE "
          f"(generation {router.applied_generation})")
    guests = []
    ok = True
    try:
        for port in ports:
            g = NamespaceGuest(f"{aio.prefix}-g-{port.hostname}", aio.fabric,
                               f"gp{port.id.replace('-', '')[:10]}")
            g.attach(net.vlan_id, port.mac)
            guests.append(g)
        _step("each guest runs a DHCP client (busybox udhcpc)")
        for g, port in zip(guests, ports, strict=True):
            lease = g.dhcp()
            print(f"{port.hostname}: lease {lease.ip}/{lease.prefixlen} router {lease.router} "
                  f"dns {' '.join(lease.dns)} domain {lease.domain} ({lease.lease_seconds}s)")
            ok &= bool(lease.ip == port.ip)
        _step(f"vm1 looks up vm2.{net.domain} and www.example.test (upstream) with dig")
        for name in (f"vm2.{net.domain}", "www.example.test"):
            out = guests[0].run(["dig", "+short", "+time=2", name]).stdout.strip()
            print(f"{name} -> {out or '(no answer)'}")
            ok &= bool(out)
        _step(f"vm1 connects to http://{INET_HOST_IP}:{WEB_PORT}/ on the internet host, "
              "which answers with the source address it sees")
        seen = guests[0].run(["curl", "-s", "--max-time", "5",
                              f"http://{INET_HOST_IP}:{WEB_PORT}/"]).stdout.strip()
        print(f"internet host saw the connection from {seen} "
              f"(network's source NAT address {net.source_nat_ip})")
        ok &= bool(seen == net.source_nat_ip)
        print("\ndemo " + ("succeeded" if ok else "FAILED"))
        # The tenant's secret in a 0600 file, never printed nor on a command line.
        token_file = os.path.join(aio.state_dir, "demo.token")
        write_private(token_file, secret.encode())
        print(f"Try: CLOUDNET_TOKEN_FILE={token_file} .venv/bin/cloudnet network list")
        print(f"     ip netns exec {guests[0].netns} ping -c1 vm2")
        return ok
    finally:
        admin.close()
        api.close()
