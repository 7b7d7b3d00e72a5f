"""The nftables service's full load against a real kernel: the check dry-runs
the table without its edge elements, the load is one transaction (a refused
element leaves the running table as it was), and a bad table is refused by
the check before anything runs."""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterator

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

from common.netns import ensure_netns, remove_netns
from router.errors import ApplyError, CheckError
from router.lib import libnft
from router.services.base import Context
from router.services.host import KernelProbe
from router.services.nftables import service as nftables

pytestmark = pytest.mark.integration


def config(forwards: int, generation: int = 1) -> pb.RouterConfig:
    pub = "203.0.113.200"
    return pb.RouterConfig(
        router_id="nftload", generation=generation,
        interfaces=[pb.Interface(name="pub0", role=pb.INTERFACE_ROLE_PUBLIC,
                                 addresses=["203.0.113.10/24", f"{pub}/32"]),
                    pb.Interface(name="g-1", role=pb.INTERFACE_ROLE_GUEST,
                                 addresses=["10.90.0.1/24"], network_id="net")],
        source_nats=[pb.SourceNat(network_id="net", source_cidr="10.90.0.0/24",
                                  public_ip="203.0.113.10", public_interface="pub0")],
        public_addresses=[pb.PublicAddress(public_ip_id="ip0", ip=pub, interface="pub0")],
        port_forwards=[pb.PortForwardRule(id=f"pf{k}", public_ip=pub, protocol="tcp",
                                          public_port_start=10000 + k,
                                          public_port_end=10000 + k, private_ip="10.90.0.5",
                                          private_port_start=8080, private_port_end=8080)
                       for k in range(forwards)])


@pytest.fixture
def ctx() -> Iterator[Context]:
    ns = f"cnt-nft-{uuid.uuid4().hex[:8]}"
    ensure_netns(ns)
    try:
        yield Context(router_id="nftload", netns=ns, state_dir=tempfile.mkdtemp(),
                      fabric=None)  # type: ignore[arg-type]  # nftables needs no fabric
    finally:
        remove_netns(ns)


@pytest.fixture
def service() -> nftables.NftablesService:
    return nftables.NftablesService(KernelProbe())


def load(service: nftables.NftablesService, ctx: Context,
         cfg: pb.RouterConfig) -> dict[str, str]:
    service.verify(cfg)
    rendered = service.render(cfg, ctx.paths)
    service.check(ctx, rendered)
    service.apply(ctx, cfg, rendered, None)
    return rendered


def forwarded_ports(ctx: Context) -> set[int]:
    listing = libnft.run(ctx.netns, "list map inet cloudnet pf_dnat")
    return {int(p) for p in re.findall(r"tcp \. (\d+)", listing)}


def test_full_load_puts_every_element_in_the_kernel(
        service: nftables.NftablesService, ctx: Context) -> None:
    load(service, ctx, config(300))
    assert forwarded_ports(ctx) == set(range(10000, 10300))
    # A full reload (nothing loaded known to the agent) replaces it whole.
    service.forget_loaded()
    load(service, ctx, config(5, generation=2))
    assert forwarded_ports(ctx) == set(range(10000, 10005))


def test_a_refused_element_leaves_the_running_table_as_it_was(
        service: nftables.NftablesService, ctx: Context) -> None:
    load(service, ctx, config(20))
    service.forget_loaded()
    cfg = config(40, generation=2)
    rendered = service.render(cfg, ctx.paths)
    # An element the kernel refuses (its value is not an address), appended
    # to the full text only: the check (without elements) passes.
    rendered[nftables.RULESET] += (
        "add element inet cloudnet pf_dnat { 203.0.113.200 . tcp . 9 : 10.90.0.5 . 99999 }\n")
    service.check(ctx, rendered)
    with pytest.raises(ApplyError):
        service.apply(ctx, cfg, rendered, None)
    assert forwarded_ports(ctx) == set(range(10000, 10020))


def test_a_table_the_kernel_refuses_is_stopped_by_the_check(
        service: nftables.NftablesService, ctx: Context) -> None:
    load(service, ctx, config(20))
    rendered = service.render(config(30, generation=2), ctx.paths)
    bad = "add rule inet cloudnet forward ip saddr @no_such_set accept\n"
    rendered = {k: v + bad for k, v in rendered.items()}
    with pytest.raises(CheckError, match=r"no_such_set|No such file"):
        service.check(ctx, rendered)
    assert forwarded_ports(ctx) == set(range(10000, 10020))
