"""One background loop for work repeated every few seconds until a stop
event (hosts' heartbeats to netmgr, in either room's agent)."""
from __future__ import annotations

import threading
from collections.abc import Callable


def run_every(interval: float, stop: threading.Event, work: Callable[[], object], *,
              name: str, finally_: Callable[[], None] | None = None) -> threading.Thread:
    """Call ``work`` now and then every ``interval`` seconds until ``stop`` is
    set, in a daemon thread; ``finally_`` runs once the loop ends."""

    def loop() -> None:
        while not stop.is_set():
            work()
            stop.wait(interval)
        if finally_ is not None:
            finally_()

    t = threading.Thread(target=loop, name=name, daemon=True)
    t.start()
    return t
