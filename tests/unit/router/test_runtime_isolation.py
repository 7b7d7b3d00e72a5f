"""One refused object never stalls the rest of a router (router/runtime.py):
the object is left out (or kept as it ran before) and reported, every other
object moves on. Fake services stand for the daemons (pure logic of the
runtime; the real daemons: tests/integration/router/test_router_isolation.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import edge_pb2 as epb

from router import runtime
from router.errors import CheckError, ConfigError
from router.runtime import RouterRuntime, load_config
from router.services.base import NO_CAPABILITIES, Capabilities, Context, Rendered, RouterPaths


class Balancer:
    """A daemon serving the load balancers: its check refuses those whose
    health-check path holds a quote (as haproxy -c does), naming them when
    ``names`` (else it refuses the whole file)."""

    name = "balancer"
    capabilities: Capabilities = NO_CAPABILITIES

    def __init__(self, names: bool = True) -> None:
        self.names = names
        self.checks = 0
        self.applied: list[Rendered] = []

    def verify(self, cfg: pb.RouterConfig) -> None:
        for lb in cfg.load_balancers:
            if lb.public_port == 0:
                raise ConfigError(f"load balancer {lb.id}: port 0", "loadbalancer", lb.id)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return {lb.id: lb.health_check.path for lb in cfg.load_balancers}

    def check(self, ctx: Context, rendered: Rendered) -> None:
        self.checks += 1
        for lb_id, path in sorted(rendered.items()):
            if "'" in path:
                if self.names:
                    raise CheckError(f"{lb_id}: unmatched quote", "loadbalancer", lb_id)
                raise CheckError("unmatched quote somewhere")

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        self.applied.append(dict(rendered))

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        return pb.ServiceStatus(name=self.name, healthy=True)

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        pass


class Hosts(Balancer):
    """A daemon serving the ports; verify refuses a hostname with a space."""

    name = "hosts"

    def verify(self, cfg: pb.RouterConfig) -> None:
        for net in cfg.guest_networks:
            if not net.cidr:
                raise ConfigError(f"network {net.network_id}: no CIDR", "network",
                                  net.network_id)
            for h in net.hosts:
                if " " in h.hostname:
                    raise ConfigError(f"port {h.port_id}: bad hostname", "port", h.port_id)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return {h.port_id: h.hostname for n in cfg.guest_networks for h in n.hosts}

    def check(self, ctx: Context, rendered: Rendered) -> None:
        self.checks += 1


Make = Callable[..., RouterRuntime]


@pytest.fixture
def make(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Make:
    monkeypatch.setattr(runtime, "ensure_netns", lambda name: None)
    monkeypatch.setattr(runtime, "remove_netns", lambda name: None)

    def build(*services: object) -> RouterRuntime:
        ctx = Context(router_id="r1", netns="cn-test-r1", state_dir=f"{tmp_path}/r1",
                      fabric=None)  # type: ignore[arg-type]  # the fakes plug nothing
        return RouterRuntime(ctx, services)  # type: ignore[arg-type]

    return build


def lb(lb_id: str, path: str, port: int = 80) -> pb.LoadBalancerRule:
    return pb.LoadBalancerRule(id=lb_id, public_port=port,
                               health_check=pb.LbHealthCheck(type="http", path=path))


def config(generation: int, lbs: list[pb.LoadBalancerRule],
           hosts: dict[str, str] | None = None) -> pb.RouterConfig:
    return pb.RouterConfig(
        router_id="r1", generation=generation, load_balancers=lbs,
        guest_networks=[pb.GuestNetwork(network_id="n1", cidr="10.0.0.0/24", hosts=[
            pb.DhcpHost(port_id=p, hostname=h) for p, h in (hosts or {"p1": "vm1"}).items()])])


def errors(status: pb.RouterStatus) -> dict[tuple[str, str], str]:
    return {(o.kind, o.id): o.error for o in status.objects if not o.ok}


def test_a_refused_object_is_left_out_and_the_rest_moves_on(make: Make) -> None:
    balancer, hosts = Balancer(), Hosts()
    rt = make(balancer, hosts)
    status = rt.apply(config(1, [lb("lb1", "/a'b"), lb("lb2", "/ok")],
                             {"p1": "vm1", "p2": "vm2"}))
    assert (status.applied_generation, status.rejected_generation, status.last_error) == \
        (1, 0, "")
    assert errors(status) == {("loadbalancer", "lb1"): "lb1: unmatched quote"}
    assert balancer.applied == [{"lb2": "/ok"}]
    assert hosts.applied == [{"p1": "vm1", "p2": "vm2"}]  # the new port is served
    assert ("port", "p2") in {(o.kind, o.id) for o in status.objects if o.ok}


def test_a_refused_change_keeps_the_object_as_it_ran(make: Make) -> None:
    balancer = Balancer()
    rt = make(balancer, Hosts())
    rt.apply(config(1, [lb("lb1", "/old"), lb("lb2", "/ok")]))
    status = rt.apply(config(2, [lb("lb1", "/a'b"), lb("lb2", "/ok2")], {"p1": "web1"}))
    assert status.applied_generation == 2
    assert errors(status) == {("loadbalancer", "lb1"): "lb1: unmatched quote"}
    # lb1 as it ran before, lb2's change applied; what runs is what is persisted.
    assert balancer.applied[-1] == {"lb1": "/old", "lb2": "/ok2"}
    persisted = load_config(rt.ctx.paths.config)
    assert [(x.id, x.health_check.path) for x in persisted.load_balancers] == \
        [("lb2", "/ok2"), ("lb1", "/old")]
    # Fixed in the next generation: no error left.
    status = rt.apply(config(3, [lb("lb1", "/fixed"), lb("lb2", "/ok2")]))
    assert errors(status) == {}
    assert balancer.applied[-1] == {"lb1": "/fixed", "lb2": "/ok2"}
    assert not os.path.exists(rt.ctx.paths.refused)


def test_a_refusal_that_names_no_object_holds_only_that_service(make: Make) -> None:
    balancer, hosts = Balancer(names=False), Hosts()
    rt = make(balancer, hosts)
    rt.apply(config(1, [lb("lb1", "/ok")]))
    status = rt.apply(config(2, [lb("lb1", "/a'b")], {"p1": "vm1", "p2": "vm2"}))
    assert status.applied_generation == 2
    assert status.rejected_generation == 0
    assert "balancer keeps its last good config: unmatched quote" in status.last_error
    assert balancer.applied == [{"lb1": "/ok"}]
    assert hosts.applied[-1] == {"p1": "vm1", "p2": "vm2"}


def test_verify_refusals_leave_out_ports_and_load_balancers_only(make: Make) -> None:
    hosts = Hosts()
    rt = make(Balancer(), hosts)
    status = rt.apply(config(1, [lb("lb1", "/ok", port=0), lb("lb2", "/ok")],
                             {"p1": "vm1", "p2": "bad name"}))
    assert status.applied_generation == 1
    assert set(errors(status)) == {("loadbalancer", "lb1"), ("port", "p2")}
    assert hosts.applied == [{"p1": "vm1"}]
    # A network cannot be left out: the whole config is rejected.
    bad = config(2, [lb("lb2", "/ok")])
    bad.guest_networks[0].cidr = ""
    status = rt.apply(bad)
    assert (status.applied_generation, status.rejected_generation) == (1, 2)
    assert errors(status) == {("network", "n1"): "network n1: no CIDR",
                              ("loadbalancer", "lb1"): "load balancer lb1: port 0",
                              ("port", "p2"): "port p2: bad hostname"}


def test_the_same_refused_config_again_runs_no_check(make: Make) -> None:
    balancer = Balancer()
    rt = make(balancer, Hosts())
    rt.apply(config(1, [lb("lb1", "/a'b"), lb("lb2", "/ok")]))
    checks, applies = balancer.checks, len(balancer.applied)
    status = rt.apply(config(1, [lb("lb1", "/a'b"), lb("lb2", "/ok")]))
    assert (balancer.checks, len(balancer.applied)) == (checks, applies)
    assert set(errors(status)) == {("loadbalancer", "lb1")}


def test_a_restarted_agent_reports_what_was_refused(make: Make) -> None:
    rt = make(Balancer(), Hosts())
    rt.apply(config(1, [lb("lb1", "/a'b")]))
    again = make(Balancer(), Hosts())
    status = again.restore()
    assert status is not None
    assert errors(status) == {("loadbalancer", "lb1"): "lb1: unmatched quote"}
    # A repair pass keeps reporting it too.
    assert again.repair() == []
    assert set(errors(again.status())) == {("loadbalancer", "lb1")}


class Rules(Balancer):
    """Port forwards with edge deltas: verify refuses port 0."""

    name = "rules"

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = Capabilities(edge_rules=self)

    def verify(self, cfg: pb.RouterConfig) -> None:
        for f in cfg.port_forwards:
            if f.public_port_start == 0:
                raise ConfigError(f"port forward {f.id}: port 0", "portforward", f.id)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        return {f.id: str(f.public_port_start) for f in cfg.port_forwards}

    # EdgeRules
    def restore(self, paths: RouterPaths, cfg: pb.RouterConfig) -> pb.RouterConfig:
        return cfg

    def full_applied(self, ctx: Context, running: object) -> None:
        pass

    def wait_ready(self) -> None:
        pass

    def apply_delta(self, ctx: Context, cfg: pb.RouterConfig | None,
                    delta: epb.EdgeDelta) -> list[tuple[str, str]]:
        assert cfg is not None
        cfg.port_forwards.extend(delta.port_forwards)
        return [("portforward", f.id) for f in delta.port_forwards]

    def journal(self, ctx: Context, running: object, delta: epb.EdgeDelta) -> None:
        pass


def test_an_edge_delta_replacing_a_refused_object_clears_its_error(make: Make) -> None:
    rt = make(Rules())
    cfg = pb.RouterConfig(router_id="r1", generation=1, port_forwards=[
        pb.PortForwardRule(id="pf1", public_port_start=0),
        pb.PortForwardRule(id="pf2", public_port_start=80)])
    assert set(errors(rt.apply(cfg))) == {("portforward", "pf1")}
    reply = rt.apply_edge_delta(epb.EdgeDelta(
        router_id="r1", base_generation=1, generation=2,
        removed=[epb.EdgeObjectRef(kind="portforward", id="pf1")],
        port_forwards=[pb.PortForwardRule(id="pf1", public_port_start=81)]))
    assert not reply.stale
    assert errors(rt.status()) == {}
    assert not os.path.exists(rt.ctx.paths.refused)
