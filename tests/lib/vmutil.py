"""Helpers of the VM tests: tenants with a compute client, console waits."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import time
import uuid
from typing import Any

from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.demo import Api

LEASE_RE = re.compile(rb"CLOUDNET-LEASE bound iface=(\S+) mac=(\S+) ip=(\S+)")


class VmTenant:
    def __init__(self, cloud, host) -> None:
        self.cloud = cloud
        self.host = host
        admin = Api(cloud.listen, cloud.admin_token, tls=cloud.client_tls)
        self.tenant = admin.call(admin.tenants.CreateTenant,
                                 pb.CreateTenantRequest(name=f"t{uuid.uuid4().hex[:8]}"))
        self.secret = admin.call(admin.tenants.CreateToken, pb.CreateTokenRequest(
            tenant_id=self.tenant.id, name="t")).secret
        admin.close()
        self.api = Api(cloud.listen, self.secret, tls=cloud.client_tls)
        self.md = (("authorization", f"Bearer {self.secret}"),)

    def network(self, name: str, cidr: str) -> pb.Network:
        net = self.api.call(self.api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name=name, cidr=cidr)))
        self.api.wait_router_active(net.router_id)
        return net

    def vm(self, name: str, *nets: pb.Network, host=None, memory_mib: int = 128,
           fixed_ips: tuple[str, ...] = ()) -> cpb.Vm:
        nics = [cpb.Nic(network_id=n.id, fixed_ip=ip)
                for n, ip in zip(nets, fixed_ips or ("",) * len(nets), strict=True)]
        return (host or self.host).stub.CreateVm(cpb.CreateVmRequest(vm=cpb.Vm(
            name=name, image="tiny", vcpus=1, memory_mib=memory_mib, nics=nics)),
            metadata=self.md, timeout=60)

    def console(self, vm: cpb.Vm, host=None) -> bytes:
        return (host or self.host).stub.GetConsoleLog(
            cpb.GetConsoleLogRequest(id=vm.id), metadata=self.md, timeout=10).data

    def wait_leases(self, vm: cpb.Vm, count: int = 1, timeout: float = 90,
                    host=None) -> list[tuple[str, str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            log = self.console(vm, host)
            leases = [tuple(x.decode() for x in m) for m in LEASE_RE.findall(log)]
            if len(leases) >= count and b"CLOUDNET-READY" in log:
                return leases
            if time.monotonic() > deadline:
                raise TimeoutError(f"vm {vm.name}: no lease; console:\n{log.decode()[-2000:]}")
            time.sleep(0.5)

    def close(self) -> None:
        self.api.close()


def http_get(netns: str, url: str, timeout: int = 20) -> str:
    proc = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "-m", str(timeout), url],
                          capture_output=True, text=True, timeout=timeout + 10)
    return proc.stdout if proc.returncode == 0 else f"ERROR {proc.stderr.strip()}"


def run_cli(tenant: VmTenant, host: Any, *argv: str) -> tuple[int, str, str]:
    """``cloudnet GROUP COMMAND --compute HOST ARGS...`` in this process as
    the tenant: (exit code, stdout, stderr)."""
    from netmgr.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["--server", tenant.cloud.listen, "--token", tenant.secret, *argv[:2],
                       "--compute", host.address, *argv[2:]])
    return rc, out.getvalue(), err.getvalue()
