"""VM create → DHCP lease latency, and N VMs booted concurrently (1, 4, 8).

The cloud is the all-in-one on the OVS fabric (routers on "host B"), and a
compute agent on "host A" (its own OVS bridge, trunked to B's), as in the
tests. Each VM is the tiny guest (images/guest) under libvirt with QEMU
(KVM where usable, else TCG). Per VM, phases: `api` (CreateVm returned: ports
from netmgr, overlay, domain defined and started), `kernel` (the guest's
/init printed CLOUDNET-BOOT), `lease` (its console shows the DHCP lease of
its port's IP).

Baseline, same run: the same kernel + initrd booted by a bare QEMU with
user-mode networking (QEMU's own DHCP): the floor without libvirt, OVS,
netmgr and the router. The ratio cloudnet / baseline is what to compare.

    .venv/bin/python bench/vm_boot.py [--repeat 3] [--concurrency 1 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.compute.v1 import compute_pb2_grpc as crpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio import host_services
from aio.allinone import AllInOne
from aio.demo import Api
from common.fabric.ovs import OvsFabric, connect_trunk, disconnect_trunk
from compute import images
from compute.agent.netmgr_client import Netmgr
from compute.agent.server import create_server
from compute.agent.service import Compute
from compute.host import HostConfig

LEASE_RE = re.compile(rb"CLOUDNET-LEASE bound iface=\S+ mac=\S+ ip=(\S+)")
MEMORY_MIB = 96


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_console(stub: crpc.ComputeServiceStub, md: Any, vm: cpb.Vm, t0: float,
                 timeout: float = 300) -> dict[str, float]:
    out: dict[str, float] = {}
    while True:
        log = stub.GetConsoleLog(cpb.GetConsoleLogRequest(id=vm.id), metadata=md,
                                 timeout=10).data
        now = time.perf_counter() - t0
        if "kernel" not in out and b"CLOUDNET-BOOT" in log:
            out["kernel"] = now
        m = LEASE_RE.search(log)
        if m:
            assert m.group(1).decode() == vm.nics[0].ip, (m.group(1), vm.nics[0].ip)
            out.setdefault("kernel", now)
            out["lease"] = now
            return out
        if now > timeout:
            raise TimeoutError(f"vm {vm.name}: no lease after {timeout}s")
        time.sleep(0.05)


def baseline_boot(image: images.Image, accel: str) -> float:
    """Bare QEMU, user-mode networking: start → lease marker on the console."""
    accel = "kvm" if accel == "kvm" else "tcg"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", f"pc,accel={accel}", "-m", str(MEMORY_MIB),
         "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-kernel", image.kernel,
         "-initrd", image.initrd, "-append", f"{image.cmdline} cloudnet.hostname=base",
         "-nic", "user,model=virtio-net-pci"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        buf = b""
        while b"CLOUDNET-LEASE bound" not in buf:
            chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                raise RuntimeError("baseline QEMU exited")
            buf += chunk
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="sequential create→lease runs")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = p.parse_args()
    host_services.ensure_running()
    image_dir = images.build_guest()
    image = images.load("tiny", image_dir)
    prefix = f"b{uuid.uuid4().hex[:5]}"
    state = tempfile.mkdtemp(prefix="cloudnet-bench-vm-")
    aio = AllInOne(insecure=True, prefix=prefix, state_dir=state, listen=f"127.0.0.1:{free_port()}",
                   fabric_kind="ovs")
    result: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count(),
                              "memory_mib_per_vm": MEMORY_MIB}
    fabric = None
    server = None
    made: list[tuple[Any, Any, str]] = []  # (stub, metadata, vm id) not deleted yet
    trunk = (f"{prefix}-hat", f"{prefix}-hau")
    try:
        aio.up()
        assert isinstance(aio.fabric, OvsFabric)
        fabric = OvsFabric(f"{prefix}-ha")
        fabric.setup()
        connect_trunk(fabric, aio.fabric, *trunk)
        cfg = HostConfig(name=f"{prefix}-ha", state_dir=os.path.join(state, "host-a"),
                         netmgr=aio.listen, admin_token=aio.admin_token, fabric_kind="ovs",
                         fabric=fabric, images={"tiny": image_dir})
        compute = Compute(cfg, Netmgr(aio.listen, aio.admin_token))
        server, port = create_server(compute, "127.0.0.1:0")
        server.start()
        result["accel"] = compute.accel
        stub = crpc.ComputeServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        admin = Api(aio.listen, aio.admin_token)
        tenant = admin.call(admin.tenants.CreateTenant, pb.CreateTenantRequest(name="bench"))
        secret = admin.call(admin.tenants.CreateToken, pb.CreateTokenRequest(
            tenant_id=tenant.id, name="b")).secret
        api = Api(aio.listen, secret)
        md = (("authorization", f"Bearer {secret}"),)
        net = api.call(api.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name="bench", cidr="10.200.0.0/22")))
        api.wait_router_active(net.router_id)

        def one(name: str) -> dict[str, Any]:
            t0 = time.perf_counter()
            vm = stub.CreateVm(cpb.CreateVmRequest(vm=cpb.Vm(
                name=name, image="tiny", vcpus=1, memory_mib=MEMORY_MIB,
                nics=[cpb.Nic(network_id=net.id)])), metadata=md, timeout=300)
            made.append((stub, md, vm.id))
            phases: dict[str, Any] = {"api": time.perf_counter() - t0}
            phases.update(wait_console(stub, md, vm, t0))
            phases["vm_id"] = vm.id
            return phases

        def delete(runs: list[dict[str, Any]]) -> None:
            for r in runs:
                vm_id = r.pop("vm_id")
                stub.DeleteVm(cpb.DeleteVmRequest(id=vm_id), metadata=md, timeout=120)
                made.remove((stub, md, vm_id))

        seq = []
        for i in range(args.repeat):
            r = one(f"seq{i}")
            delete([r])
            seq.append(r)
            print(f"create→lease #{i}: {r}", file=sys.stderr)
        base = [baseline_boot(image, compute.accel) for _ in range(args.repeat)]
        result["sequential"] = {
            "runs": seq,
            "median_lease_s": statistics.median(r["lease"] for r in seq),
            "baseline_runs_s": base,
            "baseline_median_s": statistics.median(base),
        }
        result["sequential"]["ratio"] = (result["sequential"]["median_lease_s"]
                                         / result["sequential"]["baseline_median_s"])
        conc: dict[str, Any] = {}
        for n in args.concurrency:
            runs: list[dict[str, Any]] = [{} for _ in range(n)]
            t0 = time.perf_counter()

            def worker(i: int, n: int = n, runs: list[dict[str, Any]] = runs) -> None:
                runs[i] = one(f"c{n}x{i}")

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            delete(runs)
            leases = sorted(r["lease"] for r in runs)
            conc[str(n)] = {"all_leased_s": wall, "median_lease_s": statistics.median(leases),
                            "max_lease_s": leases[-1], "runs": runs}
            print(f"{n} concurrent: all leased in {wall:.1f}s", file=sys.stderr)
        result["concurrent"] = conc
    finally:
        for stub_, md_, vm_id in made:  # a failed run's VMs: domain, taps, ports
            try:
                stub_.DeleteVm(cpb.DeleteVmRequest(id=vm_id), metadata=md_, timeout=120)
            except grpc.RpcError as e:
                print(f"cleanup of vm {vm_id}: {e}", file=sys.stderr)
        if server is not None:
            server.stop(grace=1).wait()
        if fabric is not None:
            disconnect_trunk(fabric, aio.fabric, *trunk)  # type: ignore[arg-type]
            fabric.teardown()
        aio.down()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vm_boot.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "vm_boot.png"))
    print(json.dumps({k: v for k, v in result.items() if k != "concurrent"} | {
        "concurrent": {n: {k: v for k, v in c.items() if k != "runs"}
                       for n, c in result["concurrent"].items()}}, indent=2))
    return 0


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    seq = result["sequential"]["runs"]
    xs = range(len(seq))
    bottom = [0.0] * len(seq)
    for phase, prev in (("api", None), ("kernel", "api"), ("lease", "kernel")):
        h = [r[phase] - (r[prev] if prev else 0) for r in seq]
        a.bar(xs, h, bottom=bottom, label=phase)
        bottom = [x + y for x, y in zip(bottom, h, strict=True)]
    a.axhline(result["sequential"]["baseline_median_s"], color="k", ls="--",
              label="bare QEMU + slirp DHCP")
    a.set(title=f"create → lease ({result.get('accel')})", xlabel="run", ylabel="s")
    a.legend()
    ns = sorted(int(n) for n in result["concurrent"])
    c = result["concurrent"]
    b.plot(ns, [c[str(n)]["all_leased_s"] for n in ns], "o-", label="all leased")
    b.plot(ns, [c[str(n)]["median_lease_s"] for n in ns], "s-", label="median VM")
    b.set(title="N VMs booted concurrently", xlabel="VMs", ylabel="s", xticks=ns)
    b.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
