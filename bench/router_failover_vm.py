"""bench/router_failover.py --backend vm: failovers of a redundant router
whose two instances are router VMs (netmgr's VM backend, TCG) on two
compute hosts: the all-in-one's and a second one in this process.

A guest (a namespace) streams through the router the whole time: UDP at 100
packets/s to the internet namespace (the seconds without forwarding are the
sink's longest silence around each move) and a long-lived TCP stream
through source NAT. Per failover: the master VM's QEMU killed by its PID
(``vm``); the backup takes over; DHCP again (the same address?) and a new
connection; then the killed VM is made again on its own host by netmgr's
tend loop and, being the preferred instance, takes the master role back
after its preempt delay (that second move is measured too).

``uplink``: the master VM's uplink NIC set down from the host (libvirt's
``domif-setlink``: the guest sees its virtio link go down, keepalived's
tracked interface puts the instance in FAULT), the backup takes over, the
link set up again and the pair serving again (the preferred instance takes
the master role back after its preempt delay). The master's uplink is found
by the MAC the edge holds for the router's public IP.

``keepalived``, ``agent``: that daemon SIGKILLed inside the master VM
through the fault channel (tests only: the compute agents run with
``--fault-channel``; docs/redundant-routers.md); the backup takes over; the
daemon back in the old master (a new pid: the agent's health pass restarts
keepalived, systemd the agent) and the pair serving again with the
preferred instance master. The move is seen when the other instance
reports MASTER (the killed agent's own report lags).

Per move the JSON keeps the machine's load and the stream's TCP sockets as
``ss`` shows them right after the move and again STREAM_LOOK seconds later
(Send-Q, retransmissions, backoff) on the guest's side and the server's: a
stream that stalls shows which direction the new master drops. With
``--consoles DIR`` both hosts' router VM consoles are copied into DIR as they
grow (each VM, replacements too: the agents log every VRRP transition and
conntrackd's commit with the kernel's TCP entries after it). The JSON ends
with the split-brain arbiter's events (an instance it demoted is in FAULT).
"""

from __future__ import annotations

import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import redundancy_pb2 as rpb
from cloudnet.netmgr.v1 import redundancy_pb2_grpc as rrpc

from aio import vm_backend
from aio.allinone import INET_HOST_IP, AllInOne
from aio.nsguest import DhcpFailed
from tests.lib import vm_faults
from tests.lib.allinone import Tenant, free_port, router_image_built
from tests.lib.redundantlab import Flow, connects
from tests.lib.second_compute_host import SecondHost, host_state, wait_for
from tests.lib.vm_routers import master, pair_serving, router, router_vm_pid, wait_router

TRIGGERS = ("vm", "uplink", "keepalived", "agent")
# Triggers that reach inside the master VM (the fault channel).
IN_VM = ("keepalived", "agent")
SNAT_TCP_PORT, UDP_PORT = 7301, 7302
SETTLE = 1.0
# The streams' connections synced to the backup before the first move (as
# the integration test: a connection younger than conntrackd's sync is lost
# with the master).
SYNC_SETTLE = 3.0
BOOT = 300.0  # two VMs booting at once under TCG on a loaded machine
# The stream's sockets are read again this long after a move (a stalled
# stream's retransmissions by then: 0.2 + 0.4 + ... s).
STREAM_LOOK = 6.0


def _failover(aio: AllInOne, second: SecondHost, t: Tenant, net: pb.Network,
              port: pb.Port, guest: Any) -> dict[str, Any]:
    """The master VM's QEMU killed; the backup takes over; the killed VM made
    again (a new QEMU on its host) and the pair with a master again."""
    # From the preferred instance as master, the pair whole (as the namespace bench).
    r = wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == 0,
                    BOOT, poll=0.1)
    before = master(r)
    assert before is not None
    host = {i.instance: i.host for i in r.instances}[before]
    pid = router_vm_pid(aio, second, host, net.router_id)
    time.sleep(SETTLE)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    after = _after_move(aio.inet_ns, t, net, port, guest, before, t0)
    t1 = time.monotonic()
    # The killed VM made again on its host (a new QEMU), then a master.
    wait_for("the killed VM made again", lambda: _new_pid(aio, second, host, net.router_id,
                                                          pid), BOOT)
    # The pair whole again before the next failover (else the next kill finds
    # no backup: the replacement still booting), the preferred instance
    # master (it takes the role back once its conntrackd has resynced).
    wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == 0, BOOT,
                poll=0.1)
    return {"t0": t0, "t1": t1, "killed": before, **after,
            "replaced_in_s": round(time.monotonic() - t0, 1)}


def _daemon_failover(aio: AllInOne, second: SecondHost, t: Tenant, net: pb.Network,
                     port: pb.Port, guest: Any, daemon: str) -> dict[str, Any]:
    """``daemon`` killed in the master VM (the fault channel); the backup
    takes over; the daemon back (a new pid) and the pair whole again."""
    r = wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == 0,
                    BOOT, poll=0.1)
    before = master(r)
    assert before is not None
    host = {i.instance: i.host for i in r.instances}[before]
    prefix = f"cn-{vm_backend.host_name(aio.prefix)}-" \
        if host == vm_backend.host_name(aio.prefix) else second.compute.cfg.domain_prefix
    sock = vm_faults.socket_of(prefix, net.router_id)
    vm_faults.wait_ready(sock)
    old = vm_faults.pid(sock, daemon)
    time.sleep(SETTLE)
    t0 = time.monotonic()
    vm_faults.kill(sock, daemon)

    def back() -> bool:
        try:
            return vm_faults.pid(sock, daemon) != old
        except vm_faults.FaultChannelError:
            return False
    # A killed agent moves the master only when systemd's restart of it takes
    # longer than keepalived's two failed checks (redundant-routers.md): at
    # light load it is back first and nothing needs to move (its daemons went
    # on forwarding). Measured either way: no move is a figure, not a failure.
    stays = daemon == "agent" and _agent_back_first(t, net, before, back)
    after = (_after_move(aio.inet_ns, t, net, port, guest, before, t0, other_master=True)
             if not stays else _no_move(aio.inet_ns, port, guest, t0))
    t1 = time.monotonic()
    wait_for(f"{daemon} back in the old master", back, BOOT)
    back_s = time.monotonic() - t0
    wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == 0, BOOT,
                poll=0.1)
    return {"t0": t0, "t1": t1, "killed": before, **after, "daemon_back_s": round(back_s, 1),
            "pair_whole_s": round(time.monotonic() - t0, 1)}


def _other_is_master(r: pb.Router, before: int) -> bool:
    """The instance other than ``before`` reports MASTER (whatever ``before`` says)."""
    return any(i.instance == 1 - before and i.role == "MASTER" for i in r.instances)


def _agent_back_first(t: Tenant, net: pb.Network, before: int,
                      back: Callable[[], bool]) -> bool:
    """Whether the killed agent was back (a new pid) with the master role
    never moved; False as soon as the other instance is master."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _other_is_master(router(t, net.router_id), before):
            return False
        if back():
            time.sleep(2 * SETTLE)  # the checks' next round: a late move still counts
            return not _other_is_master(router(t, net.router_id), before)
        time.sleep(0.1)
    raise TimeoutError("the killed agent neither came back nor moved the master in 120 s")


def _no_move(inet_ns: str, port: pb.Port, guest: Any, t0: float) -> dict[str, Any]:
    """The checks ``_after_move`` makes, with the master where it was."""
    lease_ok = _lease_kept(guest, port)
    try:
        connects(guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
        fresh = ""
    except Exception as e:  # reported, not fatal
        fresh = str(e)[:200]
    return {"moved_s": None, "moved": False, "lease_kept": lease_ok,
            "new_connection": not fresh, "new_connection_error": fresh,
            "load": os.getloadavg()[0], "back_without_move_s": round(time.monotonic() - t0, 2)}


def _uplink_failover(aio: AllInOne, t: Tenant, net: pb.Network, port: pb.Port,
                     guest: Any) -> dict[str, Any]:
    """The master VM's uplink down (from the host); the backup takes over;
    the link up again and the pair serving again."""
    r = wait_router(t, net.router_id, pair_serving, BOOT, poll=0.1)
    before = master(r)
    assert before is not None
    dom, dev = _vm_nic(net.router_id, _edge_mac(aio, r.public_ip))
    time.sleep(SETTLE)
    t0 = time.monotonic()
    _set_link(dom, dev, up=False)
    try:
        after = _after_move(aio.inet_ns, t, net, port, guest, before, t0)
    finally:
        t1 = time.monotonic()
        _set_link(dom, dev, up=True)
    wait_router(t, net.router_id, pair_serving, BOOT, poll=0.1)
    return {"t0": t0, "t1": t1, "killed": before, **after,
            "back_in_s": round(time.monotonic() - t0, 1)}


def _after_move(inet_ns: str, t: Tenant, net: pb.Network, port: pb.Port, guest: Any,
                before: int, t0: float, other_master: bool = False) -> dict[str, Any]:
    """Once the other instance is master (``moved_s`` after ``t0``; the only
    one, or with ``other_master`` whatever the old one's report says): the
    guest's lease asked for again and a new connection out."""
    def is_moved(r: pb.Router) -> bool:
        return _other_is_master(r, before) if other_master else master(r) == 1 - before
    wait_router(t, net.router_id, is_moved, 120, poll=0.1)
    moved = time.monotonic() - t0
    sockets = {"guest": _stream_sockets(guest.netns), "server": _stream_sockets(inet_ns)}
    lease_ok = _lease_kept(guest, port)
    try:
        connects(guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
        fresh = ""
    except Exception as e:  # reported, not fatal: the next failover runs
        fresh = str(e)[:200]
    time.sleep(max(0.0, t0 + moved + STREAM_LOOK - time.monotonic()))
    later = {"guest": _stream_sockets(guest.netns), "server": _stream_sockets(inet_ns)}
    return {"moved_s": round(moved, 2), "lease_kept": lease_ok, "new_connection": not fresh,
            "new_connection_error": fresh, "load": os.getloadavg()[0],
            "stream_after_move": sockets, f"stream_{STREAM_LOOK:g}s_later": later}


def _stream_sockets(ns: str) -> list[str]:
    """The established stream's TCP sockets (``ss -tnoi``, the port's only):
    its Send-Q, retransmissions and backoff say whether and where it stalls."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnoiH", "state", "established",
                          f"( sport = :{SNAT_TCP_PORT} or dport = :{SNAT_TCP_PORT} )"],
                         capture_output=True, text=True).stdout
    keep = re.compile(r"timer:\S+|backoff:\d+|bytes_(?:sent|retrans|acked|received):\d+"
                      r"|lastsnd:\d+|lastrcv:\d+")
    sockets: list[str] = []
    for line in out.splitlines():
        if line.strip() and not line[0].isspace():
            sockets.append(line)
        elif sockets:
            sockets[-1] += " " + line
    # Recv-Q, Send-Q, local, peer, then what says whether it stalls.
    return [" ".join(text.split()[:4] + keep.findall(text)) for text in sockets]


def _lease_kept(guest: Any, port: pb.Port) -> bool:
    """DHCP again: the same address (no answer counts as a lease lost)."""
    try:
        return bool(guest.dhcp().ip == port.ip)
    except DhcpFailed as e:
        print(f"DHCP after the move: {str(e)[:200]}", file=sys.stderr, flush=True)
        return False


def _edge_mac(aio: AllInOne, ip: str) -> str:
    """The MAC the edge holds for ``ip`` (the master's uplink: its GARPs)."""
    out = subprocess.run(["ip", "-n", aio.edge_ns, "neigh", "show", ip], check=True,
                         capture_output=True, text=True).stdout
    found = re.search(r"lladdr ([0-9a-f:]{17})", out)
    assert found, f"the edge has no neighbour entry for {ip}: {out!r}"
    return found.group(1)


def _vm_nic(router_id: str, mac: str) -> tuple[str, str]:
    """The libvirt domain of the router VM with a NIC of ``mac``, and that NIC's
    host device."""
    import libvirt  # only this trigger needs it

    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains():
            if router_id not in dom.name():
                continue
            for iface in ET.fromstring(dom.XMLDesc()).iter("interface"):
                m, target = iface.find("mac"), iface.find("target")
                if m is not None and target is not None and \
                        m.get("address", "").lower() == mac:
                    return dom.name(), str(target.get("dev"))
    finally:
        conn.close()
    raise LookupError(f"no router VM of {router_id} has a NIC {mac}")


def _set_link(dom: str, dev: str, up: bool) -> None:
    subprocess.run(["virsh", "-c", "qemu:///system", "domif-setlink", dom, dev,
                    "up" if up else "down"], check=True, capture_output=True)


def _new_pid(aio: AllInOne, second: SecondHost, host: str, router_id: str, old: int) -> bool:
    try:
        return router_vm_pid(aio, second, host, router_id) not in (0, old)
    except grpc.RpcError:
        return False


def _arbiter_events(t: Tenant, network_id: str) -> list[str]:
    """The split-brain arbiter's events (an instance demoted: FAULT)."""
    try:
        got = t.api.call(rrpc.RouterRedundancyServiceStub(t.api.channel).GetRedundancy,
                         rpb.GetRedundancyRequest(network_id=network_id))
    except grpc.RpcError as e:
        return [f"GetRedundancy: {e.code().name}"]
    return [str(e).replace("\n", " ").strip() for e in got.events]


def _silence(gaps: list[list[float]], start: float, end: float) -> float:
    return max((g[1] for g in gaps if start <= g[0] < end), default=0.0)


def _follow_consoles(dirs: list[str], out_dir: str, stop: threading.Event) -> None:
    """Copy every router VM console under ``dirs`` into ``out_dir`` as it
    grows (a VM made again writes a new file: kept apart by inode)."""
    os.makedirs(out_dir, exist_ok=True)
    offsets: dict[tuple[str, int], int] = {}
    while not stop.is_set():
        for d in dirs:
            for path in glob.glob(os.path.join(d, "**", "console.log"), recursive=True):
                try:
                    inode = os.stat(path).st_ino
                    with open(path, "rb") as f:
                        f.seek(offsets.get((path, inode), 0))
                        data = f.read()
                        offsets[(path, inode)] = f.tell()
                except OSError:
                    continue
                if data:
                    name = f"{os.path.basename(d.rstrip('/'))}-{inode}.console.log"
                    with open(os.path.join(out_dir, name), "ab") as out:
                        out.write(data)
        stop.wait(1.0)


def run(failovers: int, triggers: list[str], consoles: str = "") -> dict[str, Any]:
    if not router_image_built():
        raise SystemExit(f"router image not built (bash images/router/build.sh): "
                         f"{vm_backend.ROUTER_IMAGE_DIR}")
    unknown = set(triggers) - set(TRIGGERS)
    if unknown:
        raise SystemExit(f"--triggers: the VM backend has {', '.join(TRIGGERS)}, not "
                         f"{', '.join(sorted(unknown))}")
    state_dir = tempfile.mkdtemp(prefix="cn-bench-vmfail-", dir="/tmp")
    aio = AllInOne(insecure=True, prefix=f"v{uuid.uuid4().hex[:6]}", state_dir=state_dir,
                   listen=f"127.0.0.1:{free_port()}", health_interval=1.0,
                   router_backend="vm", compute_listen=f"127.0.0.1:{free_port()}",
                   fault_channel=bool(set(triggers) & set(IN_VM)))
    second = None
    t = None
    out: dict[str, Any] = {}
    stop = threading.Event()
    try:
        aio.up()
        second = SecondHost(aio, tempfile.mkdtemp(prefix="cn-bench-c2-", dir="/tmp"))
        if consoles:
            threading.Thread(target=_follow_consoles, daemon=True, args=(
                [aio.state_dir, second.compute.cfg.state_dir], consoles, stop)).start()
        wait_for("the second host UP", lambda: host_state(aio, second.name) == "HOST_STATE_UP",
                 60)
        t = Tenant(aio, "bench")
        net = t.network(name="web", cidr="10.9.0.0/24", lease_seconds=600, redundant=True)
        port = t.port(net.id, hostname="vm1")
        t0 = time.monotonic()
        try:
            wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == 0,
                        BOOT, poll=0.1)
        except TimeoutError as e:  # the JSON says so (a machine too loaded for TCG)
            out["aborted"] = f"the pair did not serve within {BOOT:.0f} s: {str(e)[:300]}"
            return out
        out["pair_boot_s"] = round(time.monotonic() - t0, 1)
        guest = t.guest(net, port)
        assert guest.dhcp().ip == port.ip
        for trigger in triggers:
            out[trigger] = _run_trigger(aio, second, t, net, port, guest, trigger, failovers)
            print(out[trigger], file=sys.stderr, flush=True)
        out["arbiter_events"] = _arbiter_events(t, net.id)
    finally:
        stop.set()
        if t is not None:
            t.close()
        if second is not None:
            try:
                wait_for("the second host's VMs gone", lambda: not second.domains(), 60)
            finally:
                second.close()
        aio.down()
    return out


def _run_trigger(aio: AllInOne, second: SecondHost, t: Tenant, net: pb.Network,
                 port: pb.Port, guest: Any, trigger: str, n: int) -> dict[str, Any]:
    server = Flow.start(aio.inet_ns, "tcp-server", str(SNAT_TCP_PORT))
    sink = Flow.start(aio.inet_ns, "udp-sink", str(UDP_PORT))
    client = Flow.start(guest.netns, "tcp-client", INET_HOST_IP, str(SNAT_TCP_PORT))
    source = Flow.start(guest.netns, "udp-source", INET_HOST_IP, str(UDP_PORT), "100")
    moves: list[dict[str, Any]] = []
    aborted = ""
    try:
        time.sleep(SYNC_SETTLE)
        for k in range(n):
            try:
                if trigger == "uplink":
                    moves.append(_uplink_failover(aio, t, net, port, guest))
                elif trigger in IN_VM:
                    moves.append(_daemon_failover(aio, second, t, net, port, guest, trigger))
                else:
                    moves.append(_failover(aio, second, t, net, port, guest))
            except (TimeoutError, AssertionError, grpc.RpcError,
                    vm_faults.FaultChannelError) as e:
                # Kept: what was measured so far (a loaded machine can starve
                # the VMs past every wait).
                aborted = f"failover {k + 1}: {type(e).__name__}: {str(e)[:300]}"
                print(aborted, file=sys.stderr, flush=True)
                break
            print(f"{trigger} {k + 1}/{n}: {moves[-1]}", file=sys.stderr, flush=True)
        time.sleep(SETTLE)
    finally:
        source_out, sink_out = source.result(), sink.result()
        client_out, server_out = client.result(), server.result()
    gaps: list[list[float]] = sink_out.get("gaps", [])  # type: ignore[assignment]
    for i, m in enumerate(moves):
        nxt = moves[i + 1]["t0"] if i + 1 < len(moves) else float("inf")
        m["no_forwarding_s"] = round(_silence(gaps, m["t0"] - 0.5, m["t1"] - 0.2), 3)
        m["failback_no_forwarding_s"] = round(_silence(gaps, m["t1"] - 0.2, nxt - 0.5), 3)
    outages = [m["no_forwarding_s"] for m in moves] or [0.0]
    backs = [m["failback_no_forwarding_s"] for m in moves] or [0.0]
    return {
        "failovers": n,
        "no_forwarding_s": {"median": statistics.median(outages), "max": max(outages),
                            "all": outages},
        "failback_no_forwarding_s": {"median": statistics.median(backs), "max": max(backs),
                                     "all": backs},
        "moved_s_median": statistics.median(moved) if (moved := [
            m["moved_s"] for m in moves if m["moved_s"] is not None]) else None,
        "moves_without_a_new_master": sum(1 for m in moves if m["moved_s"] is None),
        "tcp_streams_reset": 1 if client_out["error"] else 0,
        "tcp_streams": 1,
        "tcp_error": client_out["error"],
        "tcp_sent_echoed": [client_out.get("sent"), client_out.get("echoed")],
        "snat_server_connections": server_out.get("connections"),
        "leases_lost": sum(1 for m in moves if not m["lease_kept"]),
        "new_connection_failures": sum(1 for m in moves if not m["new_connection"]),
        "udp": {"sent": source_out.get("sent"), "received": sink_out.get("received")},
        "moves": [{k: v for k, v in m.items() if k not in ("t0", "t1")} for m in moves],
        "aborted": aborted,
    }
