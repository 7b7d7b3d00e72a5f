"""A 10 kB or 1 MB value in a string field of any request, of every service
(netmgr, the compute agent, the router agent), is INVALID_ARGUMENT naming the
field, with a short message: the status travels in trailing metadata, which a
client caps at 8 KiB (past it the client sees RESOURCE_EXHAUSTED, "metadata
size exceeds", and no field at all). Table-driven over the descriptors: every
RPC with a string field, in its first and last string field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cloudnet.compute.v1 import compute_pb2, router_vm_pb2
from cloudnet.netmgr.v1 import (
    debug_pb2,
    edge_pb2,
    hosts_pb2,
    netmgr_pb2,
    vpc_pb2,
    vpn_pb2,
)
from cloudnet.netmgr.v1 import router_vm_pb2 as netmgr_router_vm_pb2
from cloudnet.router.v1 import agent_pb2, diag_pb2
from cloudnet.router.v1 import edge_pb2 as router_edge_pb2

from compute.agent.server import create_server as compute_server
from compute.agent.service import Compute
from compute.host import HostConfig
from compute.images import Image
from router.agent.registry import RouterRegistry
from router.agent.server import create_server as agent_server
from router.errors import ConfigError
from router.runtime import verify
from router.services.base import KnownHost
from router.services.registry import router_services
from tests.lib.grpc_methods import invoke, method_id, methods, string_paths, with_value
from tests.lib.netmgr_cloud import ADMIN, Cloud, bad_fields, rpc_error, start_cloud
from tests.lib.routerconfigs import good_config

SIZES = {"10kB": 10_000, "1MB": 1_000_000}
MAX_DETAILS = 600  # the status message a client sees
MAX_TRAILERS = 4096  # every trailer (message and BadRequest detail), far under 8 KiB


def _cases(*modules) -> list[tuple[object, str]]:
    out = []
    for m in methods(*modules):
        paths = string_paths(m.input_type)
        for p in dict.fromkeys(paths[:1] + paths[-1:]):
            out.append((m, p))
    return out


NETMGR = _cases(netmgr_pb2, edge_pb2, vpc_pb2, vpn_pb2, hosts_pb2, debug_pb2,
                netmgr_router_vm_pb2)
COMPUTE = _cases(compute_pb2, router_vm_pb2)
# ApplyConfig and ApplyEdgeDelta carry a router's whole config: their values
# are checked by the services' verify (test_a_long_value_in_a_config_is_...).
AGENT = [(m, p) for m, p in _cases(agent_pb2, diag_pb2, router_edge_pb2)
         if m.name not in ("ApplyConfig", "ApplyEdgeDelta")]


def _ids(cases: list[tuple[object, str]]) -> list[str]:
    return [f"{method_id(m)}:{p}" for m, p in cases]


def _assert_refused_briefly(err: grpc.RpcError, path: str, size: int) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, err.code(),
                                                             err.details()[:200])
    assert path in bad_fields(err), (path, err.details()[:200])
    assert len(err.details()) <= MAX_DETAILS, len(err.details())
    assert str(size) in err.details()  # says how long the value was
    trailers = sum(len(k) + len(v) for k, v in err.trailing_metadata() or ())
    assert trailers <= MAX_TRAILERS, trailers


# ---- netmgr -------------------------------------------------------------------


@pytest.fixture(scope="module")
def netmgr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cloud = start_cloud(tmp_path_factory.mktemp("netmgr") / "netmgr.db")
    yield cloud
    cloud.stop()


def test_the_table_covers_every_service() -> None:
    covered = {m.containing_service.full_name for m, _ in NETMGR + COMPUTE + AGENT}
    every = {m.containing_service.full_name for m in methods(
        netmgr_pb2, edge_pb2, vpc_pb2, vpn_pb2, hosts_pb2, debug_pb2, netmgr_router_vm_pb2,
        compute_pb2, router_vm_pb2, agent_pb2, diag_pb2, router_edge_pb2)}
    assert covered == every


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("method", "path"), NETMGR, ids=_ids(NETMGR))
def test_netmgr(netmgr: Cloud, method, path: str, size: int) -> None:
    md = (("authorization", f"Bearer {ADMIN}"),
          ("x-cloudnet-tenant", "6f1c1a3e-7d3b-4a4c-9a55-0c1f5e1d2b3a"))
    err = rpc_error(lambda: invoke(netmgr.channel, method, with_value(method, path, "x" * size),
                                   md))
    _assert_refused_briefly(err, path, size)


# ---- compute agent ------------------------------------------------------------


@pytest.fixture(scope="module")
def compute(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    class _Fabric:
        def setup(self) -> None: ...

    state = tmp_path_factory.mktemp("compute")
    image = Path(state) / "img"
    image.mkdir()
    cfg = HostConfig(name="h", state_dir=str(state), netmgr="x", admin_token="t",
                     fabric_kind="ovs", fabric=_Fabric(), images={},  # type: ignore[arg-type]
                     accel="qemu", vcpus=2, memory_mib=1024)
    host = Compute(cfg, netmgr=None)  # type: ignore[arg-type]
    host.images = {"tiny": Image(name="tiny", kernel="/k", initrd="/i", disk="/d",
                                 cmdline="", min_memory_mib=64, kernel_release="x")}
    server, port = compute_server(host, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server.stop(0)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("method", "path"), COMPUTE, ids=_ids(COMPUTE))
def test_compute_agent(compute: grpc.Channel, method, path: str, size: int) -> None:
    err = rpc_error(lambda: invoke(compute, method, with_value(method, path, "x" * size),
                                   (("authorization", "Bearer t"),)))
    _assert_refused_briefly(err, path, size)


# ---- router agent -------------------------------------------------------------


class _NoFabric:
    def setup(self) -> None: ...
    def plug(self, *a: object, **kw: object) -> None: ...
    def unplug(self, port: str) -> None: ...
    def ports(self) -> set[str]:
        return set()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    registry = RouterRegistry(str(tmp_path_factory.mktemp("agent")), fabric=_NoFabric())
    server, port = agent_server("127.0.0.1:0", registry)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server.stop(0)
    # A config the agent took made its router's namespace: leave none behind.
    for status in registry.list_status():
        registry.delete(status.router_id, False)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("method", "path"), AGENT, ids=_ids(AGENT))
def test_router_agent(agent: grpc.Channel, method, path: str, size: int) -> None:
    err = rpc_error(lambda: invoke(agent, method, with_value(method, path, "x" * size)))
    _assert_refused_briefly(err, path, size)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_a_long_value_in_a_config_is_refused_naming_the_object_briefly(size: int) -> None:
    # The router refuses the port (and, applying, leaves just it out: the
    # runtime's isolation tests): the error names it, briefly.
    cfg = good_config()
    cfg.guest_networks[0].hosts[0].hostname = "h" * size
    with pytest.raises(ConfigError) as refused:
        verify(cfg, router_services(KnownHost()))
    assert (refused.value.kind, refused.value.object_id) == ("port", "p1")
    assert "hostname" in str(refused.value)
    assert len(str(refused.value)) <= MAX_DETAILS
