"""The agent's sizing of the host's limits: raise what is low, never lower, say what failed."""

from __future__ import annotations

import os

import pytest

from router.agent import host_limits
from router.agent.host_limits import NOFILE, HostKnobs, HostLimits, Limit, capacity_for

INOTIFY = "fs.inotify.max_user_instances"
WATCHES = "fs.inotify.max_user_watches"


class FakeKnobs:
    """A host's limits in a dict; names in ``refuse`` cannot be written, and
    ``clamp`` is what the kernel keeps at most."""

    def __init__(self, values: dict[str, int], refuse: frozenset[str] = frozenset(),
                 clamp: dict[str, int] | None = None) -> None:
        self.values = dict(values)
        self.refuse = refuse
        self.clamp = clamp or {}
        self.writes: list[tuple[str, int]] = []

    def read(self, name: str) -> int | None:
        return self.values.get(name)

    def write(self, name: str, value: int) -> None:
        if name in self.refuse:
            raise PermissionError(13, "Permission denied")
        self.writes.append((name, value))
        self.values[name] = min(value, self.clamp.get(name, value))


STOCK = {  # a stock Debian 12 kernel on a small machine
    INOTIFY: 128, WATCHES: 60000, NOFILE: 1024, "kernel.pid_max": 32768,
    "net.ipv4.neigh.default.gc_thresh1": 128, "net.ipv4.neigh.default.gc_thresh2": 512,
    "net.ipv4.neigh.default.gc_thresh3": 1024, "net.ipv6.neigh.default.gc_thresh1": 128,
    "net.ipv6.neigh.default.gc_thresh2": 512, "net.ipv6.neigh.default.gc_thresh3": 1024,
    "net.netfilter.nf_conntrack_buckets": 65536,
}


def test_stock_limits_are_raised_for_the_planned_routers() -> None:
    knobs = FakeKnobs(STOCK)
    limits = HostLimits(knobs, planned=1000)
    changes = {c.name: (c.old, c.new) for c in limits.ensure(routers=3)}
    # 1,000 dnsmasq instances of one user need 1,000 inotify instances at least.
    assert changes[INOTIFY][0] == 128
    assert knobs.values[INOTIFY] >= 1000
    assert knobs.values[WATCHES] >= 2000
    assert knobs.values["net.ipv4.neigh.default.gc_thresh3"] > 1024
    assert knobs.values[NOFILE] > 1024
    assert limits.shortfall(1000) == []


def test_a_limit_already_higher_is_never_lowered() -> None:
    knobs = FakeKnobs({**STOCK, INOTIFY: 1_000_000, "kernel.pid_max": 4_194_304})
    changed = {c.name for c in HostLimits(knobs, planned=1000).ensure(routers=0)}
    assert INOTIFY not in changed
    assert "kernel.pid_max" not in changed
    assert knobs.values[INOTIFY] == 1_000_000
    assert knobs.values["kernel.pid_max"] == 4_194_304
    assert all(value > STOCK[name] for name, value in knobs.writes)


def test_an_absent_limit_is_skipped_and_looked_at_again_at_the_next_step() -> None:
    values = dict(STOCK)
    del values["net.netfilter.nf_conntrack_buckets"]  # nf_conntrack not loaded yet
    knobs = FakeKnobs(values)
    limits = HostLimits(knobs, planned=256)
    assert "net.netfilter.nf_conntrack_buckets" not in {c.name for c in limits.ensure(10)}
    knobs.values["net.netfilter.nf_conntrack_buckets"] = 1024
    assert limits.ensure(10) == []  # same step: nothing read again
    changed = {c.name for c in limits.ensure(300)}  # the next step looks again
    assert "net.netfilter.nf_conntrack_buckets" in changed


def test_capacity_grows_in_steps_past_the_plan() -> None:
    assert capacity_for(0, 1024) == 1024
    assert capacity_for(1024, 1024) == 1024
    assert capacity_for(1025, 1024) == 1536  # a quarter more, to a multiple of 256
    assert capacity_for(2000, 1024) == 2560
    knobs = FakeKnobs(STOCK)
    limits = HostLimits(knobs, planned=128)
    limits.ensure(100)
    first = knobs.values[INOTIFY]
    writes = len(knobs.writes)
    for n in range(100, 129):
        limits.ensure(n)
    assert len(knobs.writes) == writes  # within the step: no write at all
    limits.ensure(129)
    assert knobs.values[INOTIFY] > first >= 128


def test_a_limit_that_cannot_be_raised_is_named_with_the_reason() -> None:
    knobs = FakeKnobs(STOCK, refuse=frozenset({INOTIFY}))
    limits = HostLimits(knobs, planned=1000)
    changed = {c.name for c in limits.ensure(0)}
    assert INOTIFY not in changed
    assert "net.ipv4.neigh.default.gc_thresh3" in changed  # the others are still raised
    assert limits.shortfall(128) == []  # 128 routers fit under 128
    [short] = limits.shortfall(129)
    assert short.name == INOTIFY
    assert (short.value, short.needed) == (128, 129)
    assert str(short) == ("host limit fs.inotify.max_user_instances is 128, 129 routers need 129 "
                          "(cannot raise it: Permission denied)")


def test_a_value_the_kernel_clamps_is_reported_not_counted_as_raised() -> None:
    knobs = FakeKnobs(STOCK, clamp={INOTIFY: 200})
    limits = HostLimits(knobs, planned=1000)
    assert INOTIFY not in {c.name for c in limits.ensure(0)}
    [short] = limits.shortfall(300)
    assert short.error == "the kernel kept 200"


def test_check_only_changes_nothing_and_says_why() -> None:
    knobs = FakeKnobs(STOCK)
    limits = HostLimits(knobs, planned=1000, raise_limits=False)
    assert limits.ensure(500) == []
    assert knobs.writes == []
    short = {s.name: s for s in limits.shortfall(500)}
    # 500 dnsmasqs, and 500 routers' idle IPv6 neighbour entries (8 each).
    assert set(short) == {INOTIFY, "net.ipv6.neigh.default.gc_thresh3"}
    assert (short[INOTIFY].value, short[INOTIFY].needed) == (128, 500)
    assert "--no-raise-host-limits" in short[INOTIFY].error


def test_every_limit_plans_at_least_its_strict_need() -> None:
    for limit in host_limits.LIMITS:
        assert limit.per_router >= limit.need_per_router, limit.name
        assert limit.planned(1000) >= limit.needed(1000), limit.name


def test_host_knobs_read_and_write_sysctl_files(tmp_path: object) -> None:
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "fs", "inotify"))
    with open(os.path.join(root, "fs", "inotify", "max_user_instances"), "w") as f:
        f.write("128\n")
    knobs = HostKnobs(root)
    assert knobs.read(INOTIFY) == 128
    assert knobs.read("net.netfilter.nf_conntrack_buckets") is None
    knobs.write(INOTIFY, 2000)
    assert knobs.read(INOTIFY) == 2000
    assert knobs.read(NOFILE) is not None  # this process's own


@pytest.mark.parametrize("limit", host_limits.LIMITS, ids=lambda lim: lim.name)
def test_every_sysctl_exists_on_linux(limit: Limit) -> None:
    """The names are the kernel's (conntrack's only once its module is loaded)."""
    if limit.name == NOFILE or "nf_conntrack" in limit.name:
        pytest.skip("not a sysctl, or needs nf_conntrack loaded")
    assert HostKnobs().read(limit.name) is not None


class NoFabric:
    def setup(self) -> None:
        pass


def test_every_routers_status_names_a_limit_its_host_lacks(tmp_path: object) -> None:
    """129 routers on a host whose inotify instances stay at 128: each status says so."""
    from router.agent.registry import RouterRegistry
    from router.services.base import KnownHost

    knobs = FakeKnobs({**STOCK, "net.ipv6.neigh.default.gc_thresh3": 65536},
                      refuse=frozenset({INOTIFY}))
    # A prefix no host namespace has: delete() removes the (absent) namespace.
    registry = RouterRegistry(str(tmp_path), f"u{os.getpid()}x", fabric=NoFabric(),  # type: ignore[arg-type]
                              host=KnownHost(), limits=HostLimits(knobs, planned=16))
    ids = [f"{i:032x}" for i in range(129)]
    for router_id in ids[:128]:
        registry.runtime(router_id)
    assert [s.name for s in registry.status(ids[0]).services] == []
    registry.runtime(ids[128])
    for router_id in (ids[0], ids[128]):
        [host] = registry.status(router_id).services
        assert (host.name, host.healthy) == ("host", False)
        assert host.detail == ("host limit fs.inotify.max_user_instances is 128, 129 routers "
                               "need 129 (cannot raise it: Permission denied)")
    registry.delete(ids[128], keep_leases=False)
    assert [s.name for s in registry.status(ids[0]).services] == []
