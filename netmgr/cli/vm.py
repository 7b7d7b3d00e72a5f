"""``cloudnet vm ...``: guest VMs on a compute agent (ComputeService).

    cloudnet vm create web1 --network NET_ID [--network NET2:10.1.2.50] --wait
    cloudnet vm list | show ID | wait ID | delete ID | console ID [--follow]

The compute agent is `--compute HOST:PORT` (or $CLOUDNET_COMPUTE; default
127.0.0.1:7171); the same token as for netmgr authenticates (the agent asks
netmgr for the VM's ports with it). `create --wait` (and `wait`) shows a
progress line while the VM boots, until every NIC has its DHCP lease: the
leases the networks' routers hold (any image), or, where the caller cannot
read a router's leases (another tenant's shared network), the lease lines
cloudnet's own test image writes on its console.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import grpc
from cloudnet.compute.v1 import compute_pb2 as cpb
from cloudnet.compute.v1 import compute_pb2_grpc as crpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.router.v1 import diag_pb2 as dpb

from common.channels import make_channel
from common.tls import ROLE_AGENT, TlsFiles
from netmgr.cli.commands import Command, CommandFailed, Context, Group, Leaf
from netmgr.cli.metadata import add_port_options
from netmgr.cli.output import format_table, to_json
from netmgr.cli.requests import MAX_USER_DATA, UsageError, parse_labels, read_file_bytes

DEFAULT_COMPUTE = "127.0.0.1:7171"
LEASE_RE = re.compile(rb"CLOUDNET-LEASE bound iface=(\S+) mac=(\S+) ip=(\S+)")
SPINNER = "|/-\\"


@contextmanager
def _compute(ctx: Context, args: argparse.Namespace) -> Iterator[crpc.ComputeServiceStub]:
    """The compute agent's stub on a channel of its own, closed on exit."""
    target = args.compute or os.environ.get("CLOUDNET_COMPUTE") or DEFAULT_COMPUTE
    tls = None if ctx.settings.insecure else TlsFiles(
        ca=Path(ctx.settings.ca_file) if ctx.settings.ca_file else None,
        # The agent requires a certificate of the cloud's CA.
        cert=Path(ctx.settings.cert_file) if ctx.settings.cert_file else None,
        key=Path(ctx.settings.key_file) if ctx.settings.key_file else None)
    with make_channel(target, tls=tls, role=ROLE_AGENT) as channel:
        stub: crpc.ComputeServiceStub = crpc.ComputeServiceStub(channel)
        yield stub


def _call(ctx: Context, method: Callable[..., Any], request: Any, timeout: float = 60) -> Any:
    # The netmgr token authenticates to the agent too (it asks netmgr for the VM's ports).
    return method(request, metadata=ctx.client.metadata(), timeout=timeout)


def _state(vm: cpb.Vm) -> str:
    return str(cpb.VmState.Name(vm.state)).removeprefix("VM_STATE_")


def _show(ctx: Context, vm: cpb.Vm) -> None:
    if ctx.json:
        ctx.print(to_json(vm))
        return
    rows: list[tuple[str, Any]] = [
        ("id", vm.id), ("name", vm.name), ("state", _state(vm)), ("host", vm.host),
        ("image", vm.image), ("vcpus", vm.vcpus), ("memory_mib", vm.memory_mib),
        ("accel", vm.accel), ("tenant_id", vm.tenant_id)]
    for i, n in enumerate(vm.nics):
        rows.append((f"nic{i}", f"{n.ip} {n.mac} vlan {n.vlan_id} network {n.network_id} "
                                f"port {n.port_id} {n.fqdn}".strip()))
    ctx.print(format_table(("FIELD", "VALUE"), rows))


def _parse_nic(text: str) -> cpb.Nic:
    network, _, ip = text.partition(":")
    if not network:
        raise UsageError(f"--network {text!r}: NETWORK_ID[:FIXED_IP]")
    return cpb.Nic(network_id=network, fixed_ip=ip)


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    with _compute(ctx, args) as stub:
        vm = _call(ctx, stub.CreateVm, cpb.CreateVmRequest(vm=cpb.Vm(
            name=args.name, image=args.image, vcpus=args.vcpus, memory_mib=args.memory,
            nics=[_parse_nic(n) for n in args.network], **_guest_metadata(args))), timeout=120)
        if args.wait:
            _wait_booted(ctx, stub, vm, args.wait_timeout)
        _show(ctx, vm)
    return 0


def cmd_wait(ctx: Context, args: argparse.Namespace) -> int:
    with _compute(ctx, args) as stub:
        vm = _call(ctx, stub.GetVm, cpb.GetVmRequest(id=args.id))
        _wait_booted(ctx, stub, vm, args.wait_timeout)
    return 0


def _guest_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """What the VM's ports serve its guest: user data, key pair, labels."""
    out: dict[str, Any] = {}
    if args.user_data_file is not None:
        out["user_data"] = read_file_bytes(args.user_data_file, "--user-data-file",
                                           MAX_USER_DATA)
    if args.key_pair:
        out["ssh_key_pair_id"] = args.key_pair
    if args.label:
        out["labels"] = parse_labels(args.label)
    if args.metadata_tokens:
        out["metadata_tokens"] = args.metadata_tokens
    return out


def network_routers(ctx: Context, vm: cpb.Vm) -> list[str] | None:
    """The routers of the VM's networks; None when the caller cannot read one."""
    try:
        return [ctx.client.networks.GetNetwork(pb.GetNetworkRequest(id=network_id),
                                               timeout=10).router_id
                for network_id in sorted({n.network_id for n in vm.nics})]
    except grpc.RpcError:
        return None


def router_leases(ctx: Context, router_ids: list[str] | None) -> dict[str, str] | None:
    """MAC -> IP of the DHCP leases these routers hold; None when the caller
    cannot read one (not its router, no agent yet)."""
    if router_ids is None:
        return None
    leases: dict[str, str] = {}
    try:
        for router_id in router_ids:
            shown = ctx.client.debug.Show(dpb.ShowRequest(
                router_id=router_id, kind=dpb.SHOW_KIND_LEASES), timeout=10)
            leases.update((lease.mac.lower(), lease.ip) for lease in shown.leases)
    except grpc.RpcError:
        return None
    return leases


def _wait_booted(ctx: Context, stub: crpc.ComputeServiceStub, vm: cpb.Vm,
                 timeout: float) -> None:
    """Poll until every NIC has its lease (the routers' lease tables, else the
    console's lease lines); a progress line on stderr."""
    start = time.monotonic()
    log = b""
    tty = ctx.err.isatty()
    tick = 0
    routers = network_routers(ctx, vm)  # a network's router does not change
    while True:
        chunk = _call(ctx, stub.GetConsoleLog, cpb.GetConsoleLogRequest(
            id=vm.id, offset=len(log)), timeout=10)
        log += chunk.data
        leased = _leased_nics(vm, router_leases(ctx, routers), log)
        elapsed = time.monotonic() - start
        phase = ("kernel" if not log else f"DHCP {len(leased)}/{len(vm.nics)}")
        line = f"{SPINNER[tick % 4]} booting {vm.name}: {phase} ({elapsed:.0f}s)"
        if tty:
            ctx.err.write("\r" + line + "\033[K")
        elif tick % 10 == 0:
            ctx.err.write(line + "\n")
        ctx.err.flush()
        tick += 1
        if len(leased) >= len(vm.nics):
            got = ", ".join(f"{mac} {ip}" for mac, ip in leased)
            ctx.err.write(("\r" if tty else "") + f"booted {vm.name} in {elapsed:.1f}s: "
                          f"{got}" + ("\033[K" if tty else "") + "\n")
            return
        if elapsed > timeout:
            if tty:
                ctx.err.write("\n")
            raise CommandFailed(f"vm {vm.name}: no lease after {timeout:.0f}s "
                                f"(see: cloudnet vm console {vm.id})")
        time.sleep(0.5)


def _leased_nics(vm: cpb.Vm, leases: dict[str, str] | None,
                 log: bytes) -> list[tuple[str, str]]:
    """(MAC, IP) of each NIC leased its own address: by its router's lease
    table when readable, else by the console's lease lines."""
    if leases is None:
        leases = {mac.decode().lower(): ip.decode() for _, mac, ip in LEASE_RE.findall(log)}
    return [(n.mac, n.ip) for n in vm.nics if leases.get(n.mac.lower()) == n.ip]


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    with _compute(ctx, args) as stub:
        vms = list(_call(ctx, stub.ListVms, cpb.ListVmsRequest()).vms)
    if ctx.json:
        ctx.print(to_json(vms))
    else:
        ctx.print(format_table(
            ("ID", "NAME", "STATE", "HOST", "VCPUS", "MEMORY_MIB", "IPS"),
            [(v.id, v.name, _state(v), v.host, v.vcpus, v.memory_mib,
              ",".join(n.ip for n in v.nics)) for v in vms]))
    return 0


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    with _compute(ctx, args) as stub:
        _show(ctx, _call(ctx, stub.GetVm, cpb.GetVmRequest(id=args.id)))
    return 0


def cmd_delete(ctx: Context, args: argparse.Namespace) -> int:
    with _compute(ctx, args) as stub:
        _call(ctx, stub.DeleteVm, cpb.DeleteVmRequest(id=args.id), timeout=120)
    ctx.deleted("vm", args.id)
    return 0


class ConsoleChunk(Protocol):
    """A piece of a serial console log (compute's ConsoleLog, netmgr's RouterConsole)."""

    @property
    def data(self) -> bytes: ...
    @property
    def next_offset(self) -> int: ...


def follow_console(ctx: Context, fetch: Callable[[int], ConsoleChunk], follow: bool) -> int:
    """Print a serial console from the start; with ``follow``, keep polling.
    ``fetch(offset)`` returns a chunk with ``data`` and ``next_offset`` (a
    VM's or a router VM's console log)."""
    raw = getattr(ctx.out, "buffer", None)  # bytes as they are, when stdout has them
    offset = 0
    while True:
        chunk = fetch(offset)
        if raw is not None:
            raw.write(chunk.data)
            raw.flush()
        else:
            ctx.out.write(chunk.data.decode(errors="replace"))
            ctx.out.flush()
        offset = chunk.next_offset
        if not follow:
            return 0
        if not chunk.data:
            time.sleep(0.5)


def cmd_console(ctx: Context, args: argparse.Namespace) -> int:
    with _compute(ctx, args) as stub:
        return follow_console(ctx, lambda offset: _call(
            ctx, stub.GetConsoleLog, cpb.GetConsoleLogRequest(id=args.id, offset=offset),
            timeout=10), args.follow)


def add_commands(group: Group, leaf: Leaf) -> None:
    s = group("vm", "guest VMs on a compute agent (--compute HOST:PORT)")

    def vleaf(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = leaf(s, name, func, help)
        p.add_argument("--compute", metavar="HOST:PORT", default="",
                       help=f"compute agent (default: $CLOUDNET_COMPUTE or {DEFAULT_COMPUTE})")
        return p

    p = vleaf("create", cmd_create, "create and boot a VM")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--network", action="append", required=True, metavar="NETWORK_ID[:IP]",
                   help="a NIC on this network (repeatable), optionally with a fixed IP")
    p.add_argument("--image", default="tiny")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--memory", type=int, default=128, metavar="MIB")
    add_port_options(p, update=False, dhcp=False)
    p.add_argument("--wait", action="store_true",
                   help="show progress until every NIC has its DHCP lease")
    p.add_argument("--wait-timeout", type=float, default=120, metavar="SECONDS")
    vleaf("list", cmd_list, "list VMs")
    p = vleaf("show", cmd_show, "show a VM")
    p.add_argument("id", metavar="ID")
    p = vleaf("wait", cmd_wait, "wait until every NIC of a VM has its DHCP lease")
    p.add_argument("id", metavar="ID")
    p.add_argument("--wait-timeout", type=float, default=120, metavar="SECONDS")
    p = vleaf("delete", cmd_delete, "delete a VM (domain, disk, taps and its ports)")
    p.add_argument("id", metavar="ID")
    p = vleaf("console", cmd_console, "print a VM's serial console log")
    p.add_argument("id", metavar="ID")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
