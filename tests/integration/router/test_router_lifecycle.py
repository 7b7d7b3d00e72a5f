"""Config changes over a router's life: no-op re-applies, ports added and removed
without restarts, rejected configs, deletion."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

import router.lib.libnft
import router.lib.proc
from router.runtime import router_netns_name
from tests.lib.routerlab import (
    HOSTS,
    InProcessAgent,
    Topology,
    make_config,
    sh,
    wait_for,
)

pytestmark = pytest.mark.integration


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> pb.RouterStatus:
    return agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status


def router_dir(agent: InProcessAgent, router_id: str) -> str:
    return os.path.join(agent.agent.state_dir, "routers", router_id)


def dnsmasq_pid(agent: InProcessAgent, router_id: str) -> int:
    with open(os.path.join(router_dir(agent, router_id), "dnsmasq", "dnsmasq.pid")) as f:
        return int(f.read())


def file_stamps(top: str) -> dict[str, tuple[int, int]]:
    """path -> (inode, mtime_ns) of every file the agent wrote (not dnsmasq's log/leases)."""
    out = {}
    for root, _, names in os.walk(top):
        for name in names:
            if name in ("dnsmasq.log", "leases"):
                continue
            st = os.stat(os.path.join(root, name))
            out[os.path.join(root, name)] = (st.st_ino, st.st_mtime_ns)
    return out


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def dig(ns: str, name: str) -> list[str]:
    return sh("ip", "netns", "exec", ns, "dig", "+short", "+time=2", "+tries=2",
              "@10.10.0.1", name).split()


def test_applying_the_same_config_twice_changes_nothing(
    topo: Topology, agent: InProcessAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    router_id = uuid.uuid4().hex
    assert apply(agent, make_config(router_id, 1, ["p1", "p2"])).applied_generation == 1
    pid = dnsmasq_pid(agent, router_id)
    before = file_stamps(router_dir(agent, router_id))
    applies = dict(agent.agent.runtime(router_id).service_applies)
    commands: list[list[str]] = []
    signals: list[tuple[int, int]] = []
    real_run, real_kill = router.lib.proc.run, router.lib.proc.os_kill

    def spy_run(argv: list[str], *args: Any, **kwargs: Any) -> str:
        commands.append(argv)
        return real_run(argv, *args, **kwargs)

    real_nft = router.lib.libnft.run

    def spy_nft(netns: str, text: str, **kwargs: Any) -> str:
        # The table is loaded in-process: a write is any command but a listing.
        if not kwargs.get("dry_run") and not text.startswith("list "):
            commands.append(["nft", "-f", text])
        return real_nft(netns, text, **kwargs)

    def spy_kill(pid: int, sig: int) -> None:
        signals.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr(router.lib.proc, "run", spy_run)
    monkeypatch.setattr(router.lib.libnft, "run", spy_nft)
    monkeypatch.setattr(router.lib.proc, "os_kill", spy_kill)

    status = apply(agent, make_config(router_id, 1, ["p1", "p2"]))

    assert status.applied_generation == 1
    assert not status.last_error
    assert dnsmasq_pid(agent, router_id) == pid
    assert file_stamps(router_dir(agent, router_id)) == before
    assert signals == []
    assert agent.agent.runtime(router_id).service_applies == applies
    # Only status probes ran (nft list, --version); nothing was loaded or started.
    assert not [c for c in commands if c[:2] == ["nft", "-f"] or (c[0] == "dnsmasq"
                and "--version" not in c)]


def test_ports_come_and_go_without_restarting_dnsmasq_and_leases_stay(
    topo: Topology, agent: InProcessAgent, tmp_path: object
) -> None:
    router_id = uuid.uuid4().hex
    assert apply(agent, make_config(router_id, 1, ["p1", "p2"])).applied_generation == 1
    g1 = topo.guest("p1")
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]
    topo.configure_guest(g1, HOSTS["p1"][1])
    pid = dnsmasq_pid(agent, router_id)
    leases = os.path.join(router_dir(agent, router_id), "dnsmasq", "leases")
    assert HOSTS["p1"][0] in read(leases)

    # A new port: one new file, picked up by dnsmasq's inotify; no restart.
    assert apply(agent, make_config(router_id, 2, ["p1", "p2", "p3"])).applied_generation == 2
    assert dnsmasq_pid(agent, router_id) == pid
    g3 = topo.guest("p3")
    assert topo.dhcp(g3, str(tmp_path))["ip"] == HOSTS["p3"][1]
    assert dig(g1, "vm3.tenant.test") == [HOSTS["p3"][1]]

    # Removed ports: their files go, dnsmasq gets a SIGHUP (same pid), the
    # leased one is released (address and name free again), other leases stay.
    assert apply(agent, make_config(router_id, 3, ["p1"])).applied_generation == 3
    assert dnsmasq_pid(agent, router_id) == pid
    wait_for(lambda: HOSTS["p3"][0] not in read(leases), what="p3's lease released")
    assert dig(g1, "vm2.tenant.test") == []
    assert dig(g1, "vm3.tenant.test") == []
    assert HOSTS["p1"][0] in read(leases)

    # An option change needs a restart; the lease file survives it.
    status = apply(agent, make_config(router_id, 4, ["p1"], lease_seconds=7200))
    assert status.applied_generation == 4
    assert dnsmasq_pid(agent, router_id) != pid
    assert HOSTS["p1"][0] in read(leases)
    assert topo.dhcp(g1, str(tmp_path))["lease"] == "7200"


@pytest.mark.parametrize("bad_hostname", ["vm\nserver=/evil/1.2.3.4", "a,b", "a b", "'q'"])
def test_a_refused_port_is_left_out_and_the_rest_keeps_serving(
    topo: Topology, agent: InProcessAgent, tmp_path: object, bad_hostname: str
) -> None:
    router_id = uuid.uuid4().hex
    assert apply(agent, make_config(router_id, 1, ["p1", "p2"])).applied_generation == 1
    pid = dnsmasq_pid(agent, router_id)
    top = router_dir(agent, router_id)
    before = file_stamps(top)
    bad = make_config(router_id, 2, ["p1", "p2", "p3"])
    bad.guest_networks[0].hosts[2].hostname = bad_hostname

    status = apply(agent, bad)

    assert (status.applied_generation, status.rejected_generation, status.last_error) == \
        (2, 0, "")
    errors = {(o.kind, o.id): o.error for o in status.objects if not o.ok}
    assert list(errors) == [("port", "p3")]
    assert "hostname" in errors[("port", "p3")]
    assert ("port", "p1") in {(o.kind, o.id) for o in status.objects if o.ok}
    # Nothing of p3 reached dnsmasq; only the record of what runs changed.
    after = file_stamps(top)
    for name in ("config.pb", "refused.json"):
        before.pop(os.path.join(top, name), None)
        after.pop(os.path.join(top, name), None)
    assert after == before
    assert dnsmasq_pid(agent, router_id) == pid
    g1 = topo.guest("p1")
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]

    # The next good config clears the error.
    status = apply(agent, make_config(router_id, 3, ["p1", "p2"]))
    assert (status.applied_generation, status.rejected_generation, status.last_error) == (3, 0, "")
    assert [o for o in status.objects if not o.ok] == []


def test_rejected_config_keeps_the_last_good_one_serving(
    topo: Topology, agent: InProcessAgent, tmp_path: object
) -> None:
    router_id = uuid.uuid4().hex
    assert apply(agent, make_config(router_id, 1, ["p1", "p2"])).applied_generation == 1
    pid = dnsmasq_pid(agent, router_id)
    before = file_stamps(router_dir(agent, router_id))
    # A network cannot be left out: the whole config is rejected.
    bad = make_config(router_id, 2, ["p1", "p2", "p3"], gateway="10.10.0.254")

    status = apply(agent, bad)

    assert status.applied_generation == 1
    assert status.rejected_generation == 2
    assert "network net1" in status.last_error
    errors = {(o.kind, o.id) for o in status.objects if not o.ok}
    assert errors == {("network", "net1")}
    assert file_stamps(router_dir(agent, router_id)) == before
    assert dnsmasq_pid(agent, router_id) == pid
    g1 = topo.guest("p1")
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]

    # The next good config clears the error.
    status = apply(agent, make_config(router_id, 3, ["p1", "p2"]))
    assert (status.applied_generation, status.rejected_generation, status.last_error) == (3, 0, "")


def test_delete_router_keeps_leases_only_when_asked(
    topo: Topology, agent: InProcessAgent, tmp_path: object
) -> None:
    router_id = uuid.uuid4().hex
    assert apply(agent, make_config(router_id, 1, ["p1"])).applied_generation == 1
    g1 = topo.guest("p1")
    topo.dhcp(g1, str(tmp_path))
    pid = dnsmasq_pid(agent, router_id)
    top = router_dir(agent, router_id)
    netns = router_netns_name(topo.prefix, router_id)

    agent.stub.DeleteRouter(pb.DeleteRouterRequest(router_id=router_id, keep_leases=True))
    assert not router.lib.proc.is_alive(pid)
    assert netns not in sh("ip", "netns", "list")
    assert os.listdir(top) == ["dnsmasq"]
    assert os.listdir(os.path.join(top, "dnsmasq")) == ["leases"]
    assert HOSTS["p1"][0] in read(os.path.join(top, "dnsmasq", "leases"))
    listed = agent.stub.ListRouterStatus(pb.ListRouterStatusRequest())
    assert router_id not in [r.router_id for r in listed.routers]

    # Rebuilt (netmgr's "restart"): the guest keeps its address.
    assert apply(agent, make_config(router_id, 2, ["p1"])).applied_generation == 2
    assert topo.dhcp(g1, str(tmp_path))["ip"] == HOSTS["p1"][1]

    agent.stub.DeleteRouter(pb.DeleteRouterRequest(router_id=router_id))
    agent.stub.DeleteRouter(pb.DeleteRouterRequest(router_id=router_id))  # idempotent
    assert not os.path.exists(top)
