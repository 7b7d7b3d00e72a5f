"""A redundant router on the VM backend: two router VMs on two compute hosts
(the all-in-one's and a second one in this process), each its own agent
target, both with the router's config for their instance. A guest streams
TCP through source NAT; the master VM's QEMU is killed (by its PID): the
backup VM becomes master, the guest keeps its lease, the stream keeps
flowing and new connections work; the dead VM is made again on its own
host (never the other instance's), comes back as an instance of the pair
and takes the master role back once its conntrackd is resynced: the same
stream goes on through that failback too. Then faults inside the master VM,
through the fault channel (tests/lib/vm_faults.py): keepalived killed, the
router agent killed; and the master VM's uplink pulled from the host (its
NIC's link down in QEMU). Each time the backup VM takes over with the
guest's lease, a new connection and an established stream kept, the killed
daemon comes back (a new pid, the agent adopting what runs) or the link is
put back, and the pair settles with the preferred instance master again;
and the agent of a single router VM killed, which a new agent adopts (one
VM: one boot). One cloud for the module; both VMs of a network boot in
parallel."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf import field_mask_pb2

from aio import vm_backend
from aio.allinone import INET_HOST_IP, AllInOne
from tests.lib import vm_faults
from tests.lib.allinone import Tenant, vm_cloud_down, vm_cloud_up
from tests.lib.redundantlab import Flow, connects
from tests.lib.routerlab import sh
from tests.lib.second_compute_host import SecondHost, host_state, wait_for
from tests.lib.vm_routers import (
    master,
    pair_serving,
    router,
    router_vm,
    router_vm_pid,
    serving,
    wait_router,
    what_happened,
)

pytestmark = pytest.mark.integration

SNAT_TCP_PORT = 7301
SYNC_SETTLE = 3.0
# A stream held by a move waits for TCP's resend: in a starved router VM the
# new master's conntrackd commit has taken up to 20 s, and TCP's backoff puts
# the next resend up to twice as far from the first loss.
STREAM_WAIT = 45.0
# How long the client waits for an echo before it calls the stream lost.
STREAM_PATIENCE = 60


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AllInOne, SecondHost]]:
    aio = vm_cloud_up(tmp_path_factory, fault_channel=True)
    second = None
    try:
        aio.up()
        second = SecondHost(aio, str(tmp_path_factory.mktemp("c2")))
        wait_for("the second host UP", lambda: host_state(aio, second.name) == "HOST_STATE_UP",
                 60)
        yield aio, second
    finally:
        if second is not None:
            with contextlib.suppress(Exception):
                wait_for("the second host's router VMs gone", lambda: not second.domains(), 60)
            second.close()
        vm_cloud_down(aio)


def instances(r: pb.Router) -> dict[int, tuple[str, str]]:
    """instance -> (host, role)."""
    return {i.instance: (i.host, i.role) for i in r.instances}


# Two boots, a failover, a third boot and a failback after a resync: under
# TCG on a loaded machine more than the suite's default 300 s.
@pytest.mark.timeout(600)
def test_a_redundant_network_has_two_router_vms_on_two_hosts_and_survives_a_killed_master(
        pair: tuple[AllInOne, SecondHost]) -> None:
    aio, second = pair
    t = Tenant(aio, "vmred")
    flows: list[Flow] = []
    net = t.network(name="web", cidr="10.9.0.0/24", lease_seconds=600, redundant=True)
    try:
        port = t.port(net.id, hostname="vm1")
        # Both VMs serve, the preferred one (instance 0) master once its
        # preempt delay passed.
        r = wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == 0)
        hosts = {h for h, _ in instances(r).values()}
        assert hosts == {vm_backend.host_name(aio.prefix), second.name}, instances(r)
        # Each VM its own control address (the relays: one socket each).
        ctl = os.path.join(aio.state_dir, "run", "ctl")
        assert {f"{net.router_id}.sock", f"{net.router_id}.1.sock"} <= set(os.listdir(ctl))

        guest = t.guest(net, port)
        assert guest.dhcp().ip == port.ip
        flows.append(Flow.start(aio.inet_ns, "tcp-server", str(SNAT_TCP_PORT)))
        flows.append(Flow.start(guest.netns, "tcp-client", INET_HOST_IP, str(SNAT_TCP_PORT),
                                "50", str(STREAM_PATIENCE)))

        # conntrackd syncs a new connection to the backup within its
        # refresh; one younger than that is lost with the master (strict
        # TCP tracking on the backup drops it). The stream is established
        # and synced first.
        time.sleep(SYNC_SETTLE)
        before = master(r)
        assert before is not None
        dead_host, _ = instances(r)[before]
        other_host, _ = instances(r)[1 - before]
        pid = router_vm_pid(aio, second, dead_host, net.router_id)
        assert pid > 0
        os.kill(pid, signal.SIGKILL)

        # The backup VM takes over: the guest keeps its lease, new
        # connections work, the stream goes on through the failover.
        wait_router(t, net.router_id, lambda r: master(r) == 1 - before, timeout=60)
        assert guest.dhcp().ip == port.ip
        connects(guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
        stream = flows[1]
        at_failover = stream.echoed()
        wait_for("echoes through the new master",
                 lambda: stream.echoed() > at_failover, STREAM_WAIT)

        # The dead VM is made again on its own host (the only one without
        # the other instance) and rejoins the pair; being the preferred
        # instance, it takes the master role back, but only once its
        # conntrackd holds the master's connections: the same stream goes
        # on through the failback too.
        after = wait_router(t, net.router_id, lambda r: pair_serving(r) and master(r) == before)
        assert instances(after)[before][0] == dead_host
        assert instances(after)[1 - before][0] == other_host
        connects(guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
        at_failback = stream.echoed()
        wait_for("echoes through the master back", lambda: stream.echoed() > at_failback,
                 STREAM_WAIT)
        client, server = flows[1].result(), flows[0].result()
        flows = []
        assert client["error"] == "", client
        assert client["sent"] == client["echoed"], client
        assert int(server["connections"]) >= 3, server  # type: ignore[call-overload]

        flows.append(Flow.start(aio.inet_ns, "tcp-server", str(SNAT_TCP_PORT)))
        # Single again: the second VM goes, the first serves alone.
        t.api.call(t.api.networks.UpdateNetwork, pb.UpdateNetworkRequest(
            network=pb.Network(id=net.id, redundant=False),
            update_mask=field_mask_pb2.FieldMask(paths=["redundant"])))
        wait_router(t, net.router_id, lambda r: serving(r) and not r.instances)
        assert guest.dhcp().ip == port.ip
        connects(guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
    except (AssertionError, TimeoutError):
        print(what_happened(aio, second, t, net.id))  # for the failure's report
        raise
    finally:
        for f in flows:
            with contextlib.suppress(Exception):
                f.result()
        t.close()


class FaultLab:
    """One redundant network whose router VMs have the fault channel, a guest
    holding its lease; shared by the fault tests (each VM boot costs minutes
    under TCG)."""

    def __init__(self, aio: AllInOne, second: SecondHost) -> None:
        self.aio, self.second = aio, second
        self.t = Tenant(aio, "vmfault")
        self.net = self.t.network(name="faults", cidr="10.9.1.0/24", lease_seconds=600,
                                  redundant=True)
        self.port = self.t.port(self.net.id, hostname="vm2")
        self.guest = self.t.guest(self.net, self.port)

    def settled(self, timeout: float = 240) -> pb.Router:
        """Both VMs serve, the preferred instance (0) master."""
        return wait_router(self.t, self.net.router_id,
                           lambda r: pair_serving(r) and master(r) == 0, timeout=timeout)

    def socket(self, host: str) -> str:
        prefix = f"cn-{vm_backend.host_name(self.aio.prefix)}-" \
            if host == vm_backend.host_name(self.aio.prefix) \
            else self.second.compute.cfg.domain_prefix
        return vm_faults.socket_of(prefix, self.net.router_id)

    def stream(self) -> list[Flow]:
        """An echo server on the internet side and, once a connection goes
        out through the master (seen: the stream's first connect timed out
        right after the pair settled), the guest's TCP stream to it through
        source NAT: [server, client]."""
        flows = [Flow.start(self.aio.inet_ns, "tcp-server", str(SNAT_TCP_PORT))]
        try:
            wait_for("a connection out through the master", lambda: _connects(self), 60)
            flows.append(Flow.start(self.guest.netns, "tcp-client", INET_HOST_IP,
                                    str(SNAT_TCP_PORT), "50", str(STREAM_PATIENCE)))
        except BaseException:
            flows[0].result()
            raise
        return flows

    @contextlib.contextmanager
    def reported(self, flows: list[Flow]) -> Iterator[None]:
        """A failed check prints what happened (the failure's report); the
        flows still in ``flows`` at the end are stopped."""
        try:
            yield
        except (AssertionError, TimeoutError):
            print(self.what_happened())
            raise
        finally:
            for f in flows:
                with contextlib.suppress(Exception):
                    f.result()

    def what_happened(self) -> str:
        """The arbiter's events, the VMs' VRRP lines, and each VM console's
        last lines (a VM whose agent never served says why there)."""
        out = [what_happened(self.aio, self.second, self.t, self.net.id)]
        # Where the guest and the edge send the router's addresses, against
        # each instance VM's MACs (an entry left on the backup's MAC sends new
        # connections through the instance without their state).
        for ns in (self.guest.netns, self.aio.edge_ns):
            out += [f"neighbours of {ns}: {line}"
                    for line in sh("ip", "-n", ns, "neigh", check=False).splitlines()]
        with contextlib.suppress(Exception):
            for host, role in instances(router(self.t, self.net.router_id)).values():
                vm = router_vm(self.aio, self.second, host, self.net.router_id)
                out.append(f"{role} on {host}: " + ", ".join(
                    f"{n.role} {n.mac}" for n in vm.nics))
        for state_dir in (self.aio.state_dir, self.second.compute.cfg.state_dir):
            path = os.path.join(state_dir, "compute", "routers", self.net.router_id,
                                "console.log")
            if not os.path.exists(path):
                path = os.path.join(state_dir, "routers", self.net.router_id, "console.log")
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                out += [f"{path}: {line.rstrip()[:300]}" for line in f.readlines()[-30:]]
        return "\n".join(out)


def _connects(lab: FaultLab) -> bool:
    try:
        connects(lab.guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def faults(pair: tuple[AllInOne, SecondHost]) -> Iterator[FaultLab]:
    lab = FaultLab(*pair)
    try:
        yield lab
    finally:
        lab.t.close()


def _fault_in_the_master(lab: FaultLab, fault: str) -> None:
    """A fault in the master VM: a daemon (``keepalived``, ``agent``) SIGKILLed
    inside it, or its ``uplink`` pulled from the host. The guest's lease, a new
    connection and the established stream are kept (keepalived killed or the
    uplink gone: the backup takes over; the agent killed: the master moves
    only if systemd's restart of the agent takes longer than keepalived's
    checks); the daemon comes back in the old master (a new pid), or the
    uplink is put back, and the pair settles."""
    flows: list[Flow] = []
    uplink: tuple[str, str] | None = None
    with lab.reported(flows):
        try:
            # The first wait covers both VMs' boots (slow at load under TCG).
            r = lab.settled(timeout=420)
            assert lab.guest.dhcp().ip == lab.port.ip
            before = master(r)
            assert before == 0
            dead_host, _ = instances(r)[before]
            sock = lab.socket(dead_host)
            vm_faults.wait_ready(sock)
            flows += lab.stream()
            time.sleep(SYNC_SETTLE)  # the stream synced to the backup first
            stream = flows[1]
            if fault == "uplink":
                vm = router_vm(lab.aio, lab.second, dead_host, lab.net.router_id)
                uplink = vm.domain, next(n.mac for n in vm.nics if n.role == "public")
                vm_faults.set_link(*uplink, up=False)
            else:
                old = vm_faults.pid(sock, fault)
                assert vm_faults.kill(sock, fault) == old

            if fault != "agent":
                # The backup VM is master (the old master's own report may lag).
                wait_router(lab.t, lab.net.router_id,
                            lambda r: instances(r).get(1 - before, ("", ""))[1] == "MASTER",
                            timeout=60)
            # A killed agent is restarted by systemd: back within keepalived's
            # two failed checks (about 4 s), the master stays where it is (no
            # failover needed); later, the backup takes over. Either way the
            # guest's lease, new connections and the stream must hold.
            assert lab.guest.dhcp().ip == lab.port.ip
            connects(lab.guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
            at_failover = stream.echoed()
            wait_for("echoes through the new master", lambda: stream.echoed() > at_failover,
                     STREAM_WAIT)

            if uplink is not None:
                vm_faults.set_link(*uplink, up=True)
                uplink = None
            else:
                # The killed daemon is back in the old master (the agent's health
                # pass restarts keepalived; systemd restarts the agent, which
                # adopts the router's daemons, which its unit left running).
                def back() -> bool:
                    try:
                        return vm_faults.pid(sock, fault) != old
                    except vm_faults.FaultChannelError:
                        return False
                wait_for(f"{fault} back in the old master VM", back, 120)
            lab.settled()
            connects(lab.guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
            at_failback = stream.echoed()
            wait_for("echoes through the master back", lambda: stream.echoed() > at_failback,
                     STREAM_WAIT)
            assert lab.guest.dhcp().ip == lab.port.ip
            client, server = flows[1].result(), flows[0].result()
            flows.clear()
            assert client["error"] == "", client
            assert client["sent"] == client["echoed"], client
            assert int(server["connections"]) >= 3, server  # type: ignore[call-overload]
        finally:
            if uplink is not None:
                with contextlib.suppress(Exception):
                    vm_faults.set_link(*uplink, up=True)


# The first one boots the pair (the module's cloud may be up already).
@pytest.mark.timeout(900)
def test_keepalived_killed_in_the_master_vm(faults: FaultLab) -> None:
    _fault_in_the_master(faults, "keepalived")


@pytest.mark.timeout(900)
def test_the_router_agent_killed_in_the_master_vm_leaves_its_daemons_to_adopt(
        faults: FaultLab) -> None:
    sock = faults.socket(instances(faults.settled(timeout=420))[0][0])
    daemons_before = _agent_children(sock)
    _fault_in_the_master(faults, "agent")
    # keepalived and conntrackd outlived the agent (its unit kills the agent
    # alone) and were adopted, not restarted.
    assert _agent_children(sock) == daemons_before


@pytest.mark.timeout(900)
def test_the_master_vms_uplink_pulled_from_the_host(faults: FaultLab) -> None:
    _fault_in_the_master(faults, "uplink")


@pytest.mark.timeout(900)
def test_the_compute_agent_of_the_master_vms_host_killed(faults: FaultLab) -> None:
    """The compute agent of the master VM's host killed: the VM runs on
    (libvirt's, not the agent's), so the master stays master and the stream,
    new connections and the lease go on; past the grace the host is DOWN and
    the VM, whose own agent still answers, is left where it runs (a copy
    elsewhere would put its MACs on the fabric twice); the agent back, the
    host is UP and the same VM (its QEMU pid) serves."""
    lab = faults
    flows: list[Flow] = []
    restart = None
    with lab.reported(flows):
        try:
            r = lab.settled(timeout=420)
            host, _ = instances(r)[0]
            assert lab.guest.dhcp().ip == lab.port.ip
            replacements = r.vm_replacements
            pid = router_vm_pid(lab.aio, lab.second, host, lab.net.router_id)
            flows += lab.stream()
            stream = flows[1]
            if host == lab.second.name:
                lab.second.kill_agent()
                restart = lab.second.start_agent
            else:
                os.kill(lab.aio.pids["compute"], signal.SIGKILL)
                restart = lambda: vm_backend.start_compute(lab.aio, lab.aio.compute_listen)  # noqa: E731
            wait_for("the master's host DOWN",
                     lambda: host_state(lab.aio, host) == "HOST_STATE_DOWN", 120)
            r = wait_router(lab.t, lab.net.router_id, lambda r: "still answers" in r.vm_detail,
                            timeout=60)
            assert (r.vm_host, r.vm_replacements) == (host, replacements), r
            assert instances(r)[0] == (host, "MASTER"), r
            assert lab.guest.dhcp().ip == lab.port.ip
            connects(lab.guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
            at = stream.echoed()
            wait_for("echoes through the master", lambda: stream.echoed() > at, STREAM_WAIT)

            restart()
            restart = None
            wait_for("the master's host UP", lambda: host_state(lab.aio, host) == "HOST_STATE_UP",
                     120)
            r = wait_router(lab.t, lab.net.router_id, lambda r: r.vm_detail == "", timeout=60)
            assert router_vm_pid(lab.aio, lab.second, host, lab.net.router_id) == pid
            assert instances(lab.settled())[0] == (host, "MASTER")
            connects(lab.guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
            client = flows[1].result()
            flows[0].result()
            flows.clear()
            assert client["error"] == "", client
            assert client["sent"] == client["echoed"], client
        finally:
            if restart is not None:
                with contextlib.suppress(Exception):
                    restart()


def _agent_children(sock: str) -> tuple[int, int]:
    return vm_faults.pid(sock, "keepalived"), vm_faults.pid(sock, "conntrackd")


@pytest.mark.timeout(900)
def test_the_router_agent_killed_in_a_single_router_vm_comes_back_and_adopts_it(
        pair: tuple[AllInOne, SecondHost]) -> None:
    """One router VM (one boot: what a loaded machine still runs): its agent
    SIGKILLed through the fault channel; dnsmasq, which its unit leaves
    running, answers the guest's DHCP; systemd starts a new agent, which
    adopts the router; the same VM serves again (no replacement) and a new
    connection works."""
    aio, second = pair
    t = Tenant(aio, "vmagent")
    net = t.network(name="solo", cidr="10.9.2.0/24", lease_seconds=600)
    server = None
    try:
        port = t.port(net.id, hostname="vm3")
        r = wait_router(t, net.router_id, serving, timeout=420)
        guest = t.guest(net, port)
        assert guest.dhcp().ip == port.ip
        prefix = f"cn-{vm_backend.host_name(aio.prefix)}-" \
            if r.vm_host == vm_backend.host_name(aio.prefix) else second.compute.cfg.domain_prefix
        sock = vm_faults.socket_of(prefix, net.router_id)
        vm_faults.wait_ready(sock)
        old = vm_faults.pid(sock, "agent")
        assert vm_faults.kill(sock, "agent") == old
        # The agent's start takes seconds under TCG: this DHCP exchange is
        # answered by the dnsmasq the dead agent started.
        assert guest.dhcp().ip == port.ip

        def back() -> bool:
            try:
                return vm_faults.pid(sock, "agent") != old
            except vm_faults.FaultChannelError:
                return False
        wait_for("a new agent in the VM", back, 120)
        after = wait_router(t, net.router_id, serving, timeout=240)
        assert after.vm_replacements == r.vm_replacements
        assert after.vm_boot_time == r.vm_boot_time
        server = Flow.start(aio.inet_ns, "tcp-server", str(SNAT_TCP_PORT))
        connects(guest.netns, INET_HOST_IP, SNAT_TCP_PORT)
        assert guest.dhcp().ip == port.ip
    except (AssertionError, TimeoutError):
        print(what_happened(aio, second, t, net.id))
        raise
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.result()
        t.close()
