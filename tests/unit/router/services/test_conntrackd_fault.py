"""conntrackd's FAULT transition (``conntrackd.SyncWorker``): the kernel's
table is flushed (``-t``) only after FAULT_FLUSH_DELAY seconds of FAULT, so
a master back from a short FAULT keeps its connections. The commands are
recorded here (the integration test runs the real conntrackd)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from router.services import conntrackd
from router.services.base import Context, RouterPaths
from tests.lib.routerlab import wait_for


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    done: list[tuple[str, ...]] = []
    lock = threading.Lock()

    def ctl(ctx: object, *args: str) -> str:
        with lock:
            done.append(args)
        return ""

    monkeypatch.setattr(conntrackd, "ctl", ctl)
    monkeypatch.setattr(conntrackd, "FAULT_FLUSH_DELAY", 0.5)
    return done


def context(tmp_path: object) -> Context:
    return SimpleNamespace(router_id="r1",  # type: ignore[return-value]
                           paths=RouterPaths(str(tmp_path)))


def test_a_fault_that_ends_within_the_delay_flushes_nothing(
        commands: list[tuple[str, ...]], tmp_path: object) -> None:
    worker, ctx = conntrackd.SyncWorker(), context(tmp_path)
    worker.submit(ctx, "FAULT")
    time.sleep(0.1)
    worker.submit(ctx, "BACKUP")
    wait_for(lambda: ("-n",) in commands, 5, "the BACKUP transition")
    time.sleep(0.8)  # past the (shortened) delay
    worker.stop()
    assert commands == [("-n",)]


def test_a_fault_that_lasts_flushes_the_kernels_table(
        commands: list[tuple[str, ...]], tmp_path: object) -> None:
    worker, ctx = conntrackd.SyncWorker(), context(tmp_path)
    worker.submit(ctx, "FAULT")
    time.sleep(0.2)
    assert commands == []  # not yet
    wait_for(lambda: commands == [("-t",)], 5, "-t after the delay")
    worker.stop()


def test_a_stopped_worker_does_not_flush_later(
        commands: list[tuple[str, ...]], tmp_path: object) -> None:
    worker, ctx = conntrackd.SyncWorker(), context(tmp_path)
    worker.submit(ctx, "FAULT")
    worker.stop()
    time.sleep(0.8)
    assert commands == []


def test_the_delay_is_longer_than_a_fault_that_ends_by_itself() -> None:
    from router.services import keepalived

    assert conntrackd.FAULT_FLUSH_DELAY >= 30
    assert conntrackd.FAULT_FLUSH_DELAY > 2 * keepalived.CHECK_INTERVAL + keepalived.PREEMPT_DELAY
