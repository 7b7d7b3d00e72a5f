"""The README's demo, run twice on one all-in-one: the second run finds the
demo's tenant, network and ports again and still shows everything working."""

from __future__ import annotations

import pytest

from aio.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_succeeds_and_can_run_again(cloud, capsys):
    assert run_demo(cloud)
    first = capsys.readouterr().out
    assert run_demo(cloud)
    second = capsys.readouterr().out
    # Same network, same addresses: found again, not made anew.
    line = next(x for x in first.splitlines() if x.startswith("network "))
    assert line in second
    for x in first.splitlines():
        if x.startswith(("vm1: lease", "vm2: lease")):
            assert x in second
    assert "internet host saw the connection from 203.0.113." in second
