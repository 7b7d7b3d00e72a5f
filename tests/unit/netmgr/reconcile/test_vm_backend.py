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
