"""Router hosts: two router agents (their routers in namespaces of their own
prefix, on the all-in-one's fabric) register with netmgr and heartbeat;
networks' routers are placed across them. One host dies (its agent killed
with SIGKILL, its routers' daemons and namespaces gone with it): netmgr marks
it DOWN after the grace and makes its routers again on the other host with
the same MACs and DHCP hosts, so a guest renews the same address. The host
comes back with its old state: its stale routers are removed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import hosts_pb2_grpc
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.allinone import AllInOne
from tests.lib.allinone import Tenant, free_port
from tests.lib.cli_runner import Cli
from tests.lib.router_hosts import RouterHost

pytestmark = pytest.mark.integration

GRACE = 3.0
HOSTS = ("ha", "hb")


@pytest.fixture(scope="module")
def hosts_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllInOne]:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    aio = AllInOne(insecure=True, prefix=prefix, state_dir=str(tmp_path_factory.mktemp("hosts")),
                   listen=f"127.0.0.1:{free_port()}", fabric_kind="linuxbridge",
                   health_interval=1.0, netmgr_args=("--host-grace", str(GRACE)))
    hosts = [RouterHost(aio, n) for n in HOSTS]
    try:
        aio.up()
        yield aio
    finally:
        aio.down()
        for h in hosts:
            h.stop_routers()
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        assert not leftovers, f"namespaces left behind: {leftovers}"
        # Every daemon of every router of every host, moved or removed as stale
        # included, ends with its host (the metadata nginx once did not).
        survivors = processes_naming(aio.state_dir)
        assert not survivors, f"processes left behind: {survivors}"


def processes_naming(path: str) -> list[str]:
    """The command lines of running processes that name ``path``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def wait_for(what: str, check: object, timeout: float = 90) -> object:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()  # type: ignore[operator]
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def host_states(aio: AllInOne) -> dict[str, tuple[str, int]]:
    with grpc.insecure_channel(aio.listen) as ch:
        hosts = hosts_pb2_grpc.HostServiceStub(ch).ListHosts(
            hpb.ListHostsRequest(), metadata=(("authorization", f"Bearer {aio.admin_token}"),),
            timeout=10).hosts
    return {h.name: (hpb.HostState.Name(h.state), len(h.router_ids)) for h in hosts}


def test_a_dead_router_host_is_replaced_and_cleaned_when_back(
        hosts_cloud: AllInOne, capsys: pytest.CaptureFixture[str]) -> None:
    aio = hosts_cloud
    ha, hb = (RouterHost(aio, n) for n in HOSTS)
    ha.start()
    hb.start()
    wait_for("both hosts UP", lambda: all(
        host_states(aio).get(n, ("", 0))[0] == "HOST_STATE_UP" for n in HOSTS))
    t = Tenant(aio, "hosts")
    try:
        nets = [t.network(name=f"n{i}", cidr=f"10.{60 + i}.0.0/24") for i in range(4)]
        routers = [t.api.call(t.api.routers.GetRouter, pb.GetRouterRequest(id=n.router_id))
                   for n in nets]
        placed = {r.id: r.host for r in routers}
        assert sorted(placed.values()) == ["ha", "ha", "hb", "hb"], placed
        on_a = next(n for n in nets if placed[n.router_id] == "ha")
        port = t.port(on_a.id)
        for n in nets:
            t.api.wait_router_active(n.router_id, timeout=90)
        guest = t.guest(on_a, port)
        assert guest.dhcp().ip == port.ip
        macs = ha.macs(on_a.router_id)
        assert len(macs) >= 2  # its public and guest interfaces

        ha.die()
        wait_for("ha DOWN", lambda: host_states(aio)["ha"][0] == "HOST_STATE_DOWN",
                 timeout=GRACE + 60)
        for n in nets:
            r = t.api.wait_router_active(n.router_id, timeout=90)
            assert r.host == "hb", (n.name, r.host)
        assert set(hb.held()) >= set(placed)
        assert host_states(aio)["hb"] == ("HOST_STATE_UP", 4)
        # The same router MACs and DHCP hosts: the guest keeps its address.
        assert hb.macs(on_a.router_id) == macs
        assert guest.dhcp().ip == port.ip

        cli = Cli(aio.listen, capsys, aio.admin_token)
        rc, out, _ = cli.run(aio.admin_token, "host", "list")
        assert rc == 0
        lines = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
        assert lines["ha"][2] == "DOWN"
        assert lines["hb"][2] == "UP"
        assert lines["hb"][4] == "4"

        # The host comes back with its old state: netmgr removes its stale routers.
        ha.start()
        wait_for("ha UP", lambda: host_states(aio)["ha"][0] == "HOST_STATE_UP")
        wait_for("ha's stale routers removed", lambda: not ha.held())
        assert guest.dhcp().ip == port.ip
    finally:
        t.close()


def test_a_killed_compute_agent_is_down_with_an_event_and_up_again(
        hosts_cloud: AllInOne, guest_image: str, tmp_path: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A compute agent heartbeats like a router host's; killed with SIGKILL,
    its host is DOWN after the grace (an event in the audit log, its guests'
    ports marked); started again, it is UP."""
    import signal
    import subprocess
    import sys

    from cloudnet.netmgr.v1 import events_pb2 as evpb
    from cloudnet.netmgr.v1 import events_pb2_grpc as evrpc

    from common.fabric.ovs import OvsFabric

    aio = hosts_cloud
    name = f"{aio.prefix}-cmp"
    bridge = OvsFabric(f"{aio.prefix}-cb")
    log = open(os.path.join(str(tmp_path), "compute.log"), "ab")  # noqa: SIM115
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    env = {**os.environ, "PYTHONPATH": f"{repo}:{repo}/proto"}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "compute.agent.server", "--name", name,
             "--listen", "127.0.0.1:0", "--netmgr", aio.listen,
             "--admin-token-file", os.path.join(aio.state_dir, "admin.token"),
             "--fabric", "ovs", "--ovs-bridge", bridge.bridge, "--accel", "qemu",
             "--image", f"tiny={guest_image}", "--state-dir", str(tmp_path),
             "--heartbeat-interval", "0.5", "--insecure"],
            stdout=log, stderr=log, env=env)

    md = (("authorization", f"Bearer {aio.admin_token}"),)
    t = Tenant(aio, "cmp")
    agent = start()
    try:
        wait_for("the compute host UP",
                 lambda: host_states(aio).get(name, ("", 0))[0] == "HOST_STATE_UP", timeout=60)
        net = t.network(name="g", cidr="10.70.0.0/24")
        port = t.api.call(t.api.ports.CreatePort, pb.CreatePortRequest(
            port=pb.Port(network_id=net.id, binding_host=name)))
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        wait_for("the compute host DOWN",
                 lambda: host_states(aio)[name][0] == "HOST_STATE_DOWN", timeout=GRACE + 60)
        with grpc.insecure_channel(aio.listen) as ch:
            host_id = next(h.id for h in hosts_pb2_grpc.HostServiceStub(ch).ListHosts(
                hpb.ListHostsRequest(), metadata=md, timeout=10).hosts if h.name == name)
            events = evrpc.EventServiceStub(ch).ListEvents(evpb.ListEventsRequest(
                filter=evpb.EventFilter(kind="host", object_id=host_id)), metadata=md,
                timeout=10).events
        assert [e.code for e in events] == ["UP", "DOWN"], events
        assert "1 guest ports stay" in events[-1].detail
        got = t.api.call(t.api.ports.GetPort, pb.GetPortRequest(id=port.id))
        assert (got.binding_host, got.binding_host_state) == (name, "down")
        rc, out, _ = Cli(aio.listen, capsys, aio.admin_token).run(aio.admin_token, "host",
                                                                  "list")
        assert rc == 0
        row = next(line.split() for line in out.splitlines() if f" {name} " in f" {line} ")
        assert row[2] == "DOWN", out

        agent = start()
        wait_for("the compute host UP again",
                 lambda: host_states(aio)[name][0] == "HOST_STATE_UP", timeout=60)
        got = t.api.call(t.api.ports.GetPort, pb.GetPortRequest(id=port.id))
        assert got.binding_host_state == "up"
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGKILL)
            agent.wait()
        log.close()
        t.close()
        bridge.teardown()
