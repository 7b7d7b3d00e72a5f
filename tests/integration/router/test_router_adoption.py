"""An agent killed with SIGKILL and started again takes its routers over untouched:
no daemon restarted or reloaded, no table reloaded (watched with `nft monitor`),
no lease lost; a change cut short, or new rendering code, applies a router again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

import router.lib.proc
from router.runtime import router_netns_name
from router.services.base import RouterPaths
from tests.lib.agentprocess import AgentProcess, apply_all, wait_listed
from tests.lib.routerlab import HOSTS, Topology, make_config

pytestmark = pytest.mark.integration

LB_IP = "203.0.113.20"


def lb_config(router_id: str, generation: int, segment: int) -> pb.RouterConfig:
    """make_config() on its own guest segment, with a public IP and a load balancer."""
    cfg = make_config(router_id, generation, ["p1", "p2"])
    cfg.interfaces[1].segment_id = segment
    cfg.interfaces[0].addresses.append(f"{LB_IP}/32")
    cfg.public_addresses.append(pb.PublicAddress(public_ip_id="ip1", ip=LB_IP, interface="pub0"))
    cfg.load_balancers.append(pb.LoadBalancerRule(
        id="lb1", public_ip=LB_IP, public_port=80, protocol="tcp", algorithm="roundrobin",
        members=[pb.LbBackend(port_id="p1", ip=HOSTS["p1"][1], port=8080)]))
    return cfg


class Monitor:
    """`nft monitor` in a router's namespace: every change made to its ruleset."""

    def __init__(self, netns: str, path: str) -> None:
        self.path = path
        self.out = open(path, "wb")  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, "nft", "monitor"],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        time.sleep(0.3)  # subscribed before anything is changed

    def events(self) -> list[str]:
        with open(self.path, errors="replace") as f:
            return [line for line in f.read().splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.out.close()


@pytest.fixture
def agent_process(topo: Topology, tmp_path: object) -> Iterator[AgentProcess]:
    a = AgentProcess(topo, f"{tmp_path}/agent.sock")
    try:
        yield a
    finally:
        a.kill()


@pytest.fixture
def monitors() -> Iterator[list[Monitor]]:
    made: list[Monitor] = []
    try:
        yield made
    finally:
        for m in made:
            m.stop()


def haproxy_pids(paths: RouterPaths) -> set[int]:
    """HAProxy's master and its workers (the master's children)."""
    master = router.lib.proc.read_pidfile(paths.haproxy("haproxy.pid"))
    assert master is not None
    children = set()
    for task in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{task}/children") as f:
            children |= {int(p) for p in f.read().split()}
    return {master} | children


def all_active(want: dict[str, int]) -> Callable[[list[pb.RouterStatus]], bool]:
    def done(routers: list[pb.RouterStatus]) -> bool:
        got = {r.router_id: r for r in routers}
        return set(got) == set(want) and all(
            got[i].applied_generation == g and not got[i].last_error
            and all(s.healthy for s in got[i].services) for i, g in want.items())
    return done


def test_a_restarted_agent_takes_its_routers_over_untouched(
    topo: Topology, agent_process: AgentProcess, monitors: list[Monitor], tmp_path: object
) -> None:
    stub = agent_process.start()
    ids = [uuid.uuid4().hex for _ in range(3)]
    configs = [make_config(ids[0], 4, ["p1", "p3"])] + [
        lb_config(r, 4, 200 + i) for i, r in enumerate(ids[1:])]
    configs[0].guest_networks[0].hosts[1].hostname = "a b"  # refused, the rest applied
    for s in apply_all(stub, configs):
        assert s.applied_generation == 4, s.last_error
    g1 = topo.guest("p1")  # on router 0's guest segment
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]
    paths = {r: RouterPaths(os.path.join(agent_process.state_dir, "routers", r)) for r in ids}
    dnsmasq = {r: router.lib.proc.read_pidfile(paths[r].dnsmasq("dnsmasq.pid")) for r in ids}
    haproxy = {r: haproxy_pids(paths[r]) for r in ids[1:]}
    with open(paths[ids[0]].dhcp_leases) as f:
        leases = f.read()
    assert HOSTS["p1"][0] in leases
    monitors += [Monitor(router_netns_name(topo.prefix, r), f"{tmp_path}/{r}.nft")
                 for r in ids]

    agent_process.kill(signal.SIGKILL)
    stub = agent_process.start()
    wait_listed(stub, all_active(dict.fromkeys(ids, 4)))
    time.sleep(1.5)  # the start's background repair pass, and a health pass, are done

    assert {m.path: m.events() for m in monitors} == {m.path: [] for m in monitors}
    assert {r: router.lib.proc.read_pidfile(paths[r].dnsmasq("dnsmasq.pid")) for r in ids} \
        == dnsmasq
    assert {r: haproxy_pids(paths[r]) for r in ids[1:]} == haproxy  # no reload: same workers
    with open(paths[ids[0]].dhcp_leases) as f:
        assert f.read() == leases
    assert "3 adopted untouched" in agent_process.log()
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]
    # What the previous agent refused is still reported, before any push.
    status = stub.GetRouterStatus(pb.GetRouterStatusRequest(router_id=ids[0]), timeout=30)
    assert [(o.kind, o.id) for o in status.objects if not o.ok] == [("port", "p3")]

    # The same configs pushed again (netmgr's resync after a failed push, say): a no-op.
    for s in apply_all(stub, configs):
        assert s.applied_generation == 4, s.last_error
    assert {m.path: m.events() for m in monitors} == {m.path: [] for m in monitors}
    assert {r: haproxy_pids(paths[r]) for r in ids[1:]} == haproxy

    # A change: the table taken over is updated in place, not reloaded.
    changed = lb_config(ids[1], 5, 201)
    changed.port_forwards.append(pb.PortForwardRule(
        id="pf1", public_ip=LB_IP, protocol="tcp", public_port_start=22, public_port_end=22,
        private_ip=HOSTS["p2"][1], private_port_start=22, private_port_end=22))
    [s] = apply_all(stub, [changed])
    assert s.applied_generation == 5, s.last_error
    events = monitors[1].events()
    assert events, "the port forward reached the kernel"
    assert not [e for e in events if " table " in f" {e} " or e.startswith(("add chain",
                                                                           "delete chain"))]
    assert all(e.startswith(("add element", "delete element")) or e.startswith("# ")
               for e in events), events


def test_a_cut_short_change_or_new_rendering_code_applies_again(
    topo: Topology, agent_process: AgentProcess, monitors: list[Monitor], tmp_path: object
) -> None:
    stub = agent_process.start()
    ids = [uuid.uuid4().hex for _ in range(2)]
    configs = [make_config(r, 3, ["p1", "p2"]) for r in ids]
    configs[1].interfaces[1].segment_id = 300
    for s in apply_all(stub, configs):
        assert s.applied_generation == 3, s.last_error
    paths = {r: RouterPaths(os.path.join(agent_process.state_dir, "routers", r)) for r in ids}
    agent_process.kill(signal.SIGKILL)
    # Router 0 was killed in the middle of a change: its mark is left, and a
    # host file it had removed (the change half made) is missing.
    with open(paths[ids[0]].path("applying"), "w"):
        pass
    os.unlink(paths[ids[0]].dnsmasq("dhcp-hosts", "p2"))
    # Router 1's dnsmasq died while no agent watched.
    dead = router.lib.proc.read_pidfile(paths[ids[1]].dnsmasq("dnsmasq.pid"))
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    stub = agent_process.start()
    wait_listed(stub, all_active(dict.fromkeys(ids, 3)))
    assert os.path.exists(paths[ids[0]].dnsmasq("dhcp-hosts", "p2"))  # applied again
    assert not os.path.exists(paths[ids[0]].path("applying"))
    assert "1 adopted untouched, 1 applied again" in agent_process.log()
    assert "1 sick" in agent_process.log()  # router 1, repaired
    again = router.lib.proc.read_pidfile(paths[ids[1]].dnsmasq("dnsmasq.pid"))
    assert again not in (None, dead)
    assert router.lib.proc.is_alive(again)

    # An agent with other rendering code (an upgrade) applies every router again.
    agent_process.kill(signal.SIGKILL)
    with open(os.path.join(agent_process.state_dir, "render-version"), "w") as f:
        f.write("an older agent\n")
    monitors += [Monitor(router_netns_name(topo.prefix, r), f"{tmp_path}/{r}.nft") for r in ids]
    stub = agent_process.start()
    wait_listed(stub, all_active(dict.fromkeys(ids, 3)))
    assert "0 adopted untouched, 2 applied again" in agent_process.log()
    for m in monitors:  # the table was loaded again, with this agent's templates
        assert any(e.startswith("add table inet cloudnet") for e in m.events()), m.events()
