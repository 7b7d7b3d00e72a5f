"""Pure parts of the VM router backend: tokens, settings, control addresses, API
fields, the console's scoping. (The host's side, spec validation and domain XML:
tests/unit/compute/router_vm/test_spec.py.)"""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import router_vm_pb2 as rvpb
from cloudnet.netmgr.v1 import router_vm_pb2_grpc as rvrpc

from common.control_relay import ControlNetwork
from netmgr import server
from netmgr.api.convert import fill_router_vms
from netmgr.reconcile.vm_backend.control_network import DirectControlNetwork
from netmgr.reconcile.vm_backend.credentials import (
    derive_token,
    load_key,
    router_vm_config,
    token_hash,
)
from netmgr.store.facade import Store
from netmgr.store.router_vms import RouterVmStore
from tests.lib.netmgr_cloud import bad_fields, rpc_error

RID = "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"


def test_tokens_differ_per_router_and_generation_and_need_the_key(tmp_path) -> None:
    key = load_key(str(tmp_path / "k"))
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert load_key(str(tmp_path / "k")) == key  # made once
    t1 = derive_token(key, RID, 1)
    assert t1 == derive_token(key, RID, 1)
    assert len({t1, derive_token(key, RID, 2), derive_token(key, RID[:-1] + "b", 1),
                derive_token(b"another key of enough length......", RID, 1)}) == 4
    assert token_hash(t1) != t1
    assert len(token_hash(t1)) == 64


def test_router_vm_settings_are_typed_and_named() -> None:
    cfg = router_vm_config({"memory_mib": "384", "grace_seconds": "2.5", "control_netns": "x"})
    assert (cfg.memory_mib, cfg.grace_seconds, cfg.control_netns) == (384, 2.5, "x")
    with pytest.raises(ValueError, match="memry_mib"):
        router_vm_config({"memry_mib": "1"})
    with pytest.raises(ValueError, match=r"router_vm\.vcpus"):
        router_vm_config({"vcpus": "two"})


def test_control_addresses_are_allocated_once_and_kept(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    t = store.create_tenant("acme")
    from netmgr.model.validation import NetworkSpec

    nets = [store.create_network(t.id, NetworkSpec(name=f"n{i}", cidr=f"10.{i}.0.0/24"))
            for i in range(3)]
    vms = RouterVmStore(store.db, "10.250.0.0/29")
    a = vms.ensure(nets[0].router_id)
    b = vms.ensure(nets[1].router_id)
    assert (a.control_ip, b.control_ip) == ("10.250.0.2", "10.250.0.3")
    assert vms.ensure(nets[0].router_id) == a
    assert a.control_mac != b.control_mac
    vms.update(nets[0].router_id, state="active", host="h1", boot_seconds=12.5)
    r = store.get_router(t.id, nets[0].router_id)
    assert r.host == "h1"
    routers = [pb.Router(id=r.id, backend="vm")]
    fill_router_vms(routers, store.router_vms_of)
    assert routers[0].vm_state == pb.ROUTER_VM_STATE_ACTIVE
    assert (routers[0].vm_host, routers[0].vm_boot_seconds) == ("h1", 12.5)
    assert routers[0].control_address == "10.250.0.2"
    small = RouterVmStore(store.db, "10.250.0.0/30")  # .1 netmgr, .2 taken: full
    with pytest.raises(Exception, match="control_cidr"):
        small.ensure(nets[2].router_id)
    store.close()


def test_control_network_without_a_namespace_connects_directly() -> None:
    assert ControlNetwork().target("r", "10.250.0.9", 50051) == "10.250.0.9:50051"
    assert DirectControlNetwork().target("r", "10.250.0.9", 50051) == "10.250.0.9:50051"
    cfg = router_vm_config({"control_netns": ""})
    direct = server.default_control_network(cfg)
    assert direct.target("r", "10.250.0.9", 50051) == "10.250.0.9:50051"


def test_netmgr_relays_out_of_a_configured_control_namespace() -> None:
    relay = server.default_control_network(router_vm_config({"control_netns": "x"}))
    assert isinstance(relay, ControlNetwork)
    relay.close()


def test_console_is_tenant_scoped_and_only_for_vm_routers(cloud, acme) -> None:
    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="n", cidr="10.9.0.0/24")))
    stub = rvrpc.RouterVmServiceStub(cloud.channel)
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id=net.router_id), metadata=api.metadata, timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # a netns router
    _, other = cloud.new_tenant("other")
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id=net.router_id), metadata=other.metadata, timeout=10))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id="x"), metadata=api.metadata, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err)
    err = rpc_error(lambda: stub.GetRouterConsole(
        rvpb.GetRouterConsoleRequest(id=net.router_id), timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cli_router_console_names_a_netns_router(cloud, acme, capsys) -> None:
    from netmgr.cli import main as cli

    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="n", cidr="10.9.0.0/24")))
    token = dict(api.metadata)["authorization"].removeprefix("Bearer ")
    rc = cli.main(["--server", cloud.target, "--token", token, "router", "console",
                   net.router_id])
    assert rc != 0
    assert "is not a VM" in capsys.readouterr().err


def test_a_redundant_routers_second_vm_has_its_own_row_address_mac_and_host(tmp_path) -> None:
    from netmgr.model.validation import NetworkSpec

    store = Store(f"sqlite:///{tmp_path / 'db'}")
    t = store.create_tenant("acme")
    net = store.create_network(t.id, NetworkSpec(name="n", cidr="10.0.0.0/24"))
    store.redundancy.set_redundancy(t.id, net.id, "", True, hosts=["local", "h2"])
    vms = RouterVmStore(store.db, "10.250.0.0/28")
    first, second = vms.ensure(net.router_id), vms.ensure(net.router_id, 1)
    # Addresses and MACs unique across both instances.
    assert first.control_ip != second.control_ip
    assert first.control_mac != second.control_mac
    assert vms.ensure(net.router_id, 1) == second
    vms.update(net.router_id, 0, host="c1")
    vms.update(net.router_id, 1, host="c2", state="active")
    # Instance 1's host is the redundancy's peer host (Router.instances shows it).
    red = store.redundancy.get(net.router_id)
    assert red is not None
    assert red.hosts == ("c1", "c2")
    assert vms.count_by_host() == {"c1": 1, "c2": 1}
    assert vms.get(net.router_id, 1).state == "active"  # type: ignore[union-attr]
    assert vms.get(net.router_id).state == "deploying"  # type: ignore[union-attr]
    # Made single: the second VM's row and its MAC's claim go.
    gone = vms.drop_peer(net.router_id)
    assert gone is not None
    assert (gone.host, gone.control_ip) == ("c2", second.control_ip)
    assert vms.get(net.router_id, 1) is None
    assert vms.drop_peer(net.router_id) is None
    again = vms.ensure(net.router_id, 1)
    assert again.control_ip == second.control_ip  # the lowest free address again
    store.close()


def test_placement_never_puts_a_vm_on_the_other_instances_host() -> None:
    from types import SimpleNamespace

    from netmgr.reconcile.vm_backend.tender import RouterVmBackend, vm_key

    hosts = [SimpleNamespace(name=n, role="compute", state="up") for n in ("c1", "c2")]
    backend = SimpleNamespace(hosts=SimpleNamespace(list=lambda: hosts),
                              vms=SimpleNamespace(count_by_host=lambda: {"c1": 0, "c2": 5}))
    place = RouterVmBackend._place
    vm = SimpleNamespace(host="")
    assert place(backend, vm) == "c1"  # type: ignore[arg-type]  # the least loaded
    assert place(backend, vm, avoid="c1") == "c2"  # type: ignore[arg-type]
    # Its current host is kept, unless it is the other instance's.
    assert place(backend, SimpleNamespace(host="c2")) == "c2"  # type: ignore[arg-type]
    assert place(backend, SimpleNamespace(host="c2"), avoid="c2") == "c1"  # type: ignore[arg-type]
    hosts[1].state = "down"
    with pytest.raises(LookupError, match="other than c1"):
        place(backend, vm, avoid="c1")  # type: ignore[arg-type]
    assert (vm_key(RID, 0), vm_key(RID, 1)) == (RID, f"{RID}.1")


class _Vms:
    """The router VMs' rows: one VM, its updates applied."""

    def __init__(self, **fields: object) -> None:
        import datetime as dt

        from netmgr.store.router_vms import RouterVm

        self.vm = RouterVm(router_id=RID, host="c1", control_ip="169.254.64.2",
                           control_mac="02:00:00:00:00:01", cred_generation=1,
                           token_sha256="", state="active", detail="", replacements=0,
                           defined_at=dt.datetime.now(dt.UTC), healthy_at=None,
                           boot_seconds=0.0)
        self.update(RID, 0, **fields)

    def ensure(self, router_id: str, instance: int) -> object:
        return self.vm

    def update(self, router_id: str, instance: int, **fields: object) -> None:
        import dataclasses

        self.vm = dataclasses.replace(self.vm, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "answers", "replaced"), [
    ("active", True, False),    # its host's agent fell silent, not the VM
    ("active", False, True),    # the VM is silent too: made again elsewhere
    ("booting", True, True),    # never proved itself: made again
])
def test_a_vm_on_a_down_host_is_made_again_only_if_it_is_silent_too(
        state: str, answers: bool, replaced: bool) -> None:
    """A copy of a VM that still runs would put a second VM with the same MACs
    and addresses on the fabric (a third VRRP speaker for a redundant pair)."""
    from types import SimpleNamespace

    from netmgr.reconcile.vm_backend.tender import RouterVmBackend, _Live

    deployed: list[str] = []
    backend = RouterVmBackend.__new__(RouterVmBackend)
    backend.vms = _Vms(state=state)  # type: ignore[assignment]
    hosts = [SimpleNamespace(name="c1", role="compute", state="down"),
             SimpleNamespace(name="c2", role="compute", state="up")]
    backend.hosts = SimpleNamespace(list=lambda: hosts)  # type: ignore[assignment]
    backend._alive = lambda live: answers  # type: ignore[method-assign]
    backend._status = lambda live: None  # type: ignore[method-assign]
    backend._deploy = (  # type: ignore[method-assign]
        lambda router, live, vm, red, *, replacing, why: deployed.append(why))
    live = _Live(0, token="t", serving=True)
    router = SimpleNamespace(id=RID, desired_generation=1)
    backend._tend(router, live, None)  # type: ignore[arg-type]
    assert deployed == (["its host c1 is down"] if replaced else [])
    if not replaced:
        assert "c1 is down" in backend.vms.vm.detail  # type: ignore[attr-defined]
        # Its host back: the VM tended as before, the note gone.
        hosts[0].state = "up"
        backend._domain = lambda vm: SimpleNamespace(  # type: ignore[method-assign]
            state=1, nics=[])
        backend._nics_changed = lambda *a: False  # type: ignore[method-assign]
        backend._tend(router, live, None)  # type: ignore[arg-type]
        assert deployed == []
        assert backend.vms.vm.detail == ""  # type: ignore[attr-defined]
