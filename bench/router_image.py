"""Router appliance image: build time, size, boot-to-serving under TCG, config push latency.

    .venv/bin/python bench/router_image.py [--boots 3] [--pushes 10] [--skip-cold]
        [--skip-build] [--skip-qemu] [--netmgr]

Build: cold (empty caches: every .deb from the mirror, every wheel from PyPI,
into a scratch cache and output), cached (the base root file system and the
wheels cached, only the last stage runs: what a code change costs) and
unchanged (the inputs' hash matches: skipped). Boot, per VM: QEMU started →
agent healthy on the control address → first config applied → a namespace
guest on the VM's guest NIC holds its lease. Push latency: ApplyConfig round
trips, each adding one DHCP host, to the VM router, against the same pushes
to a namespace-backend router (an in-process agent on a unix socket) in the
same run, the baseline. With --netmgr, the same through netmgr's VM backend
(bench/router_vm_netmgr.py): CreateNetwork → VM defined → agent healthy →
config applied → first guest lease, and CreatePort → applied for a VM router
vs a namespace router. Writes bench/out/router_image.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import agent_pb2_grpc

from aio.nsguest import NamespaceGuest
from common.fabric.linuxbridge import LinuxBridgeFabric
from common.netns import remove_netns
from router.agent import auth
from router.agent.registry import RouterRegistry
from router.agent.server import create_server
from tests.lib import routervm

if TYPE_CHECKING:
    from matplotlib.axes import Axes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "images", "router", "build.sh")
KVM_NOTE = (
    "KVM is unusable on these machines (guests hang), so every VM figure is QEMU TCG "
    "(binary translation, roughly 10-20x slower CPU than the host for this workload). "
    "Under KVM the same image would be expected to reach a healthy agent in about 3-5 s "
    "(kernel + initramfs + systemd ~2-3 s, Python agent start ~1 s, as on the host) and "
    "config pushes would be close to the namespace backend plus one TCP round trip; "
    "not measured here."
)


def _timed_build(out: str, cache: str | None) -> tuple[float, str]:
    # One commit for every build of the run: others committing meanwhile must
    # not turn "unchanged" into a rebuild.
    env = dict(os.environ, CLOUDNET_IMAGE_REV=_REV)
    if cache:
        env["CLOUDNET_IMAGE_CACHE"] = cache
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", BUILD, out], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"build failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took, proc.stdout.strip().splitlines()[-1]


_REV = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True,
                      check=True).stdout.strip()


def bench_build(skip_cold: bool) -> dict[str, Any]:
    res: dict[str, Any] = {"commit": _REV}
    scratch = tempfile.mkdtemp(prefix="cloudnet-image-bench-", dir="/var/tmp")
    try:
        if not skip_cold:
            took, line = _timed_build(os.path.join(scratch, "cold-out"),
                                      os.path.join(scratch, "cold-cache"))
            res["cold_seconds"] = round(took, 1)
            print(f"build cold: {took:.1f} s ({line})", flush=True)
        # The real output is brought up to date first (so the boots below use
        # this tree's code), then a fresh output with warm caches: the cost of
        # a code change.
        _timed_build(routervm.IMAGE_DIR, None)
        took, line = _timed_build(os.path.join(scratch, "cached-out"), None)
        res["cached_seconds"] = round(took, 1)
        print(f"build cached (base + wheels): {took:.1f} s", flush=True)
        took, line = _timed_build(routervm.IMAGE_DIR, None)
        res["unchanged_seconds"] = round(took, 1)
        res["unchanged_skipped"] = "up to date" in line
        print(f"build unchanged: {took:.1f} s ({line})", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return res


def push_series(stub: agent_pb2_grpc.RouterAgentStub, first: pb.RouterConfig, pushes: int,
                md: tuple[tuple[str, str], ...] | None) -> list[float]:
    """ApplyConfig round trips, each adding one DHCP host (what a new port costs)."""
    times = []
    for i in range(pushes):
        cfg = pb.RouterConfig()
        cfg.CopyFrom(first)
        cfg.generation = first.generation + 1 + i
        for k in range(i + 1):
            cfg.guest_networks[0].hosts.append(pb.DhcpHost(
                port_id=f"bench{k}", mac=f"02:bb:00:00:01:{k:02x}", ip=f"10.10.0.{100 + k}",
                hostname=f"bench{k}"))
        t0 = time.perf_counter()
        status = stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg), metadata=md,
                                  timeout=300).status
        times.append(time.perf_counter() - t0)
        if status.last_error or status.applied_generation != cfg.generation:
            raise RuntimeError(f"push {i}: {status.last_error}")
    return times


def bench_vm(boots: int, pushes: int) -> dict[str, Any]:
    rows = []
    push_times: list[float] = []
    for b in range(boots):
        lab = routervm.ImageLab(f"bi{uuid.uuid4().hex[:4]}")
        try:
            lab.setup()
            vm = lab.vm(f"rbench-{uuid.uuid4().hex[:8]}", [routervm.GUEST_SEGMENT])
            vm.start()
            channel = lab.channel()
            healthy = routervm.wait_healthy(channel, vm, 300)
            stub = routervm.agent_stub(channel)
            md = auth.metadata(vm.token)
            cfg = routervm.one_network_config(vm)
            t0 = time.perf_counter()
            status = stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg), metadata=md,
                                      timeout=300).status
            first_apply = time.perf_counter() - t0
            if status.last_error:
                raise RuntimeError(status.last_error)
            applied = time.monotonic() - vm.started
            guest = NamespaceGuest(f"{lab.prefix}-g", lab.fabric, f"{lab.prefix}gp")
            try:
                guest.attach(routervm.GUEST_SEGMENT, routervm.GUEST_MAC)
                guest.dhcp(attempts=60, interval=1)
                leased = time.monotonic() - vm.started
            finally:
                guest.destroy()
            row: dict[str, Any] = {
                "healthy_s": round(healthy, 2), "applied_s": round(applied, 2),
                "first_apply_s": round(first_apply, 2), "leased_s": round(leased, 2),
                "load_avg_1m": os.getloadavg()[0]}
            # Where the boot went, in guest uptime (marks the image prints).
            row["phases"] = routervm.boot_phases(vm.console())
            print(f"boot {b + 1}/{boots}: {row}", flush=True)
            rows.append(row)
            if b == 0:
                push_times = push_series(stub, cfg, pushes, md)
            channel.close()
        finally:
            lab.teardown()
    return {"boots": rows, "push_seconds": [round(t, 4) for t in push_times]}


def bench_namespace(pushes: int) -> dict[str, Any]:
    """The same pushes to a namespace-backend router (the baseline)."""
    prefix = f"bn{uuid.uuid4().hex[:4]}"
    state = tempfile.mkdtemp(prefix="cn-bench-agent-", dir="/tmp")
    os.chmod(state, 0o755)
    fabric = LinuxBridgeFabric(f"{prefix}-fab")
    agent = RouterRegistry(os.path.join(state, "agent"), netns_prefix=prefix,
                           fabric_netns=fabric.netns, agent_id="bench", fabric=fabric)
    agent.start()
    sock = f"unix://{state}/agent.sock"
    server, _ = create_server(sock, agent)
    channel = grpc.insecure_channel(sock)
    try:
        stub = agent_pb2_grpc.RouterAgentStub(channel)

        class _Nic:
            def __init__(self, mac: str) -> None:
                self.mac = mac

        class _Vm:  # the config builder only needs a router ID and two MACs
            router_id = f"rns-{uuid.uuid4().hex[:8]}"
            nics: ClassVar = [_Nic("02:00:00:00:00:10"), _Nic("02:00:00:00:01:01")]

        cfg = routervm.one_network_config(_Vm())  # type: ignore[arg-type]
        try:
            t0 = time.perf_counter()
            status = stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg), timeout=60).status
            first = time.perf_counter() - t0
            if status.last_error:
                raise RuntimeError(status.last_error)
            times = push_series(stub, cfg, pushes, None)
        finally:
            agent.delete(cfg.router_id, keep_leases=False)  # its namespace and daemons
        return {"first_apply_s": round(first, 3), "push_seconds": [round(t, 4) for t in times]}
    finally:
        channel.close()
        server.stop(grace=None)
        remove_netns(fabric.netns)
        shutil.rmtree(state, ignore_errors=True)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (2 if "vm" in result else 0) + (2 if "netmgr_vm" in result else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    if "vm" in result:
        _plot_qemu(result, axes[0][0], axes[0][1])
    if "netmgr_vm" in result:
        _plot_netmgr(result["netmgr_vm"], axes[0][panels - 2], axes[0][panels - 1])
    build = result.get("build", {})
    fig.suptitle(f"router image: {result['image']['disk_qcow2_mib']} MiB qcow2, build cold "
                 f"{build.get('cold_seconds', '-')} s / cached "
                 f"{build.get('cached_seconds', '-')} s", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_netmgr(res: dict[str, Any], ax1: Axes, ax2: Axes) -> None:
    boots = res["boots"]
    x = range(1, len(boots) + 1)
    for key, label in (("defined_s", "VM defined"), ("healthy_s", "agent healthy"),
                       ("applied_s", "config applied"), ("leased_s", "first guest lease")):
        ax1.plot(x, [b[key] for b in boots], marker="o", label=label)
    ax1.axhline(25, color="grey", linestyle="--", label="target 25 s")
    ax1.set_xticks(list(x))
    ax1.set_xlabel("router VM via netmgr (TCG)")
    ax1.set_ylabel("seconds since CreateNetwork")
    ax1.set_title("netmgr VM backend: boot to serving")
    ax1.legend()
    vm_ms = [t * 1000 for t in res["push_seconds_vm"]]
    ns_ms = [t * 1000 for t in res["push_seconds_namespace"]]
    ax2.plot(range(1, len(vm_ms) + 1), vm_ms, marker="o", label="VM router")
    ax2.plot(range(1, len(ns_ms) + 1), ns_ms, marker="o", label="namespace router (baseline)")
    ax2.set_yscale("log")
    ax2.set_xlabel("CreatePort (one more DHCP host each)")
    ax2.set_ylabel("API call → router applied, ms")
    ax2.set_title("netmgr push latency")
    ax2.legend()


def _plot_qemu(result: dict[str, Any], ax1: Axes, ax2: Axes) -> None:
    boots = result["vm"]["boots"]
    x = range(1, len(boots) + 1)
    for key, label in (("healthy_s", "agent healthy"), ("applied_s", "first config applied"),
                       ("leased_s", "first guest lease")):
        ax1.plot(x, [b[key] for b in boots], marker="o", label=label)
    ax1.axhline(25, color="grey", linestyle="--", label="target 25 s")
    ax1.set_xticks(list(x))
    ax1.set_xlabel("boot (QEMU TCG; KVM is unusable here)")
    ax1.set_ylabel("seconds since QEMU started (TCG)")
    ax1.set_title("router VM boot to serving")
    ax1.legend()
    vm_ms = [t * 1000 for t in result["vm"]["push_seconds"]]
    ns_ms = [t * 1000 for t in result["namespace"]["push_seconds"]]
    ax2.plot(range(1, len(vm_ms) + 1), vm_ms, marker="o", label="VM router (TCG, over TCP)")
    ax2.plot(range(1, len(ns_ms) + 1), ns_ms, marker="o", label="namespace router (baseline)")
    ax2.set_yscale("log")
    ax2.set_xlabel("push (one more DHCP host each)")
    ax2.set_ylabel("ApplyConfig round trip, ms")
    ax2.set_title("config push latency")
    ax2.legend()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--pushes", type=int, default=10)
    p.add_argument("--skip-cold", action="store_true", help="no cold build (it downloads)")
    p.add_argument("--skip-build", action="store_true", help="no build timings")
    p.add_argument("--skip-qemu", action="store_true", help="no direct QEMU boots")
    p.add_argument("--netmgr", action="store_true",
                   help="boot-to-serving and push latency through netmgr's VM backend")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out"))
    args = p.parse_args()
    if os.geteuid() != 0:
        print("run as root (image build, namespaces, QEMU taps)", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    result: dict[str, Any] = {"host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                             "kernel": platform.release()}}
    if not args.skip_build:
        result["build"] = bench_build(args.skip_cold)
    manifest = routervm.image_manifest()
    assert manifest is not None
    if not args.skip_qemu:
        result.update(_qemu_part(args.boots, args.pushes))
    if args.netmgr:
        import router_vm_netmgr  # beside this script

        res = router_vm_netmgr.bench(args.boots, args.pushes)
        vm_med = statistics.median(res["push_seconds_vm"])
        ns_med = statistics.median(res["push_seconds_namespace"])
        res["median"] = {k: round(statistics.median(b[k] for b in res["boots"]), 2)
                         for k in res["boots"][0] if k != "phases"}
        res["phases_median"] = _phases_median(res["boots"])
        res["push_median_ms"] = {"vm": round(vm_med * 1000, 1),
                                 "namespace": round(ns_med * 1000, 1),
                                 "ratio_vm_over_namespace": round(vm_med / ns_med, 2)}
        result["netmgr_vm"] = res
    result.update({
        "image": {"disk_qcow2_mib": manifest["sizes_mib"]["disk_qcow2"],
                  "rootfs_mib": manifest["sizes_mib"]["rootfs"],
                  "vmlinuz_mib": manifest["sizes_mib"]["vmlinuz"],
                  "initrd_mib": manifest["sizes_mib"]["initrd"],
                  "kernel": manifest["kernel_release"], "versions": manifest["versions"]},
        "accelerator": "tcg",
        "kvm_note": KVM_NOTE,
    })
    with open(os.path.join(args.out, "router_image.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "router_image.png"))
    summary: dict[str, Any] = {k: result[k] for k in ("build", "image", "vm_median",
                                                      "vm_phases_median", "push_median_ms")
                               if k in result}
    if "netmgr_vm" in result:
        summary["netmgr_vm"] = {k: result["netmgr_vm"][k]
                                for k in ("median", "phases_median", "push_median_ms")}
    print(json.dumps(summary, indent=2))
    return 0


def _phases_median(boots: list[dict[str, Any]]) -> dict[str, float]:
    """Median of each boot phase (routervm.boot_phases) over the boots that printed it."""
    keys = sorted({k for b in boots for k in b.get("phases", {})})
    return {k: round(statistics.median(b["phases"][k] for b in boots
                                       if k in b.get("phases", {})), 2) for k in keys}


def _qemu_part(boots: int, pushes: int) -> dict[str, Any]:
    vm = bench_vm(boots, pushes)
    ns = bench_namespace(pushes)
    vm_med = statistics.median(vm["push_seconds"])
    ns_med = statistics.median(ns["push_seconds"])
    return {
        "vm": vm,
        "vm_median": {k: round(statistics.median(b[k] for b in vm["boots"]), 2)
                      for k in ("healthy_s", "applied_s", "first_apply_s", "leased_s",
                                "load_avg_1m")},
        "vm_phases_median": _phases_median(vm["boots"]),
        "namespace": ns,
        "push_median_ms": {"vm": round(vm_med * 1000, 1), "namespace": round(ns_med * 1000, 1),
                           "ratio_vm_over_namespace": round(vm_med / ns_med, 1)},
    }


if __name__ == "__main__":
    sys.exit(main())
