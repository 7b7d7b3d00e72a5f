"""A VPC router config applied by a real agent: two tiers, a private gateway,
network ACLs and a static route; the same config twice changes nothing, and
editing one rule reloads only the table (dnsmasq keeps running)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from cloudnet.router.v1 import agent_pb2 as pb

import router.lib.libnft
import router.lib.proc
from router.runtime import router_netns_name
from tests.lib.routerlab import InProcessAgent, Topology, make_config, sh

pytestmark = pytest.mark.integration

ACL = "acl-db"


def vpc_config(router_id: str, generation: int, deny_port: int = 80) -> pb.RouterConfig:
    cfg = make_config(router_id, generation, ["p1"])
    cfg.vpc_id = "vpc-1"
    cfg.interfaces.extend([
        pb.Interface(name="g-net2", role=pb.INTERFACE_ROLE_GUEST, mac="02:00:00:00:01:02",
                     addresses=["10.10.1.1/24"], segment_id=101, network_id="net2"),
        pb.Interface(name="p-gw1", role=pb.INTERFACE_ROLE_PRIVATE_GATEWAY,
                     mac="02:00:00:00:01:03", addresses=["192.168.50.2/24"], segment_id=2000,
                     network_id="gw1"),
    ])
    cfg.guest_networks.append(pb.GuestNetwork(
        network_id="net2", interface="g-net2", cidr="10.10.1.0/24", gateway="10.10.1.1",
        domain="db.tenant.test", lease_seconds=3600))
    cfg.source_nats.append(pb.SourceNat(network_id="net2", source_cidr="10.10.1.0/24",
                                        public_ip=cfg.source_nats[0].public_ip,
                                        public_interface="pub0"))
    cfg.routes.append(pb.Route(destination="10.200.0.0/16", gateway="192.168.50.1",
                               interface="p-gw1"))
    cfg.network_acls.append(pb.NetworkAcl(id=ACL, name="db", rules=[
        pb.AclRule(id="r100", number=100, action="deny", direction="ingress", protocol="tcp",
                   port_start=deny_port),
        pb.AclRule(id="r200", number=200, action="allow", direction="ingress", protocol="all"),
        pb.AclRule(id="r300", number=300, action="allow", direction="egress", protocol="all"),
    ]))
    cfg.tier_acls.extend([pb.TierAcl(network_id="net2", interface="g-net2", acl_id=ACL),
                          pb.TierAcl(network_id="gw1", interface="p-gw1", acl_id=ACL)])
    return cfg


def apply(agent: InProcessAgent, cfg: pb.RouterConfig) -> pb.RouterStatus:
    return agent.stub.ApplyConfig(pb.ApplyConfigRequest(config=cfg)).status


def test_vpc_config_applies_once_and_the_second_apply_is_a_no_op(
        topo: Topology, agent: InProcessAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    router_id = uuid.uuid4().hex
    status = apply(agent, vpc_config(router_id, 1))
    assert status.applied_generation == 1, status.last_error
    ns = router_netns_name(topo.prefix, router_id)
    table = sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "cloudnet")
    assert 'comment "cn:acl:r100:100"' in table
    assert "p-gw1" in table
    routes = sh("ip", "netns", "exec", ns, "ip", "route")
    assert "10.200.0.0/16 via 192.168.50.1 dev p-gw1" in routes
    pid_file = os.path.join(agent.agent.state_dir, "routers", router_id, "dnsmasq",
                            "dnsmasq.pid")
    with open(pid_file) as f:
        pid = f.read()

    commands: list[list[str]] = []
    real_run = router.lib.proc.run

    def spy_run(argv: list[str], *args: Any, **kwargs: Any) -> str:
        commands.append(argv)
        return real_run(argv, *args, **kwargs)

    real_nft = router.lib.libnft.run

    def spy_nft(netns: str, text: str, **kwargs: Any) -> str:
        # The table is loaded in-process: a write is any command but a listing.
        if not kwargs.get("dry_run") and not text.startswith("list "):
            commands.append(["nft", "-f", text])
        return real_nft(netns, text, **kwargs)

    monkeypatch.setattr(router.lib.proc, "run", spy_run)
    monkeypatch.setattr(router.lib.libnft, "run", spy_nft)
    assert apply(agent, vpc_config(router_id, 1)).applied_generation == 1
    assert not [c for c in commands if c[:2] == ["nft", "-f"] or (c[0] == "dnsmasq"
                and "--version" not in c)]

    # One rule edited: the table is replaced, dnsmasq is left alone.
    commands.clear()
    status = apply(agent, vpc_config(router_id, 2, deny_port=8080))
    assert status.applied_generation == 2, status.last_error
    assert [c for c in commands if c[:2] == ["nft", "-f"]]
    assert not [c for c in commands if c[0] == "dnsmasq" and "--version" not in c]
    with open(pid_file) as f:
        assert f.read() == pid
    table = sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "cloudnet")
    assert "tcp dport 8080" in table
    assert "tcp dport 80 " not in table


def test_a_config_with_a_bad_acl_is_rejected_whole_and_the_last_good_one_stays(
        topo: Topology, agent: InProcessAgent) -> None:
    router_id = uuid.uuid4().hex
    assert apply(agent, vpc_config(router_id, 1)).applied_generation == 1
    bad = vpc_config(router_id, 2)
    bad.network_acls[0].rules.append(pb.AclRule(id="r400", number=100, action="allow",
                                                direction="ingress", protocol="udp"))
    status = apply(agent, bad)
    assert status.applied_generation == 1
    assert status.rejected_generation == 2
    assert "used twice" in status.last_error
    ns = router_netns_name(topo.prefix, router_id)
    assert "r400" not in sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet",
                            "cloudnet")
