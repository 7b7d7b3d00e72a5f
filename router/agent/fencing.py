"""Fencing of pushes from netmgr replicas.

Several netmgr replicas may believe, for a moment, that they own a router
(one lost its database session and has not noticed yet; a push was slow
and arrived after the lease moved). Each push carries the pushing replica's
lease epoch on the router's shard, a counter netmgr bumps in its database
whenever the shard's lease is taken: a later lease always has a higher
epoch, whatever the clocks say. The agent remembers, per router, the
highest epoch it has accepted (persisted, so a restarted agent keeps it)
and refuses:

* a push from an older epoch than that;
* a config of an older generation than the router runs (a slow push of the
  same epoch, or of a newer lease built from an older snapshot).

Each router's check and apply run under one lock, so two racing pushes are
ordered: the second sees what the first left.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from common.private_files import ensure_private_dir
from router.errors import FencedPush
from router.lib import files

FENCES_DIR = "fences"


class Fences:
    """The highest lease epoch accepted per router, under ``<state_dir>/fences/``."""

    def __init__(self, state_dir: str) -> None:
        self._dir = os.path.join(state_dir, FENCES_DIR)
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._epochs: dict[str, int] = {}

    @contextlib.contextmanager
    def held(self, router_id: str) -> Iterator[None]:
        """The router's pushes one at a time (its check, then its apply)."""
        with self._lock:
            lock = self._locks.setdefault(router_id, threading.Lock())
        with lock:
            yield

    def epoch(self, router_id: str) -> int:
        with self._lock:
            known = self._epochs.get(router_id)
        if known is not None:
            return known
        text = files.read_text(self._path(router_id))
        try:
            value = int(text.strip()) if text else 0
        except ValueError:
            value = 0  # a torn file cannot happen (atomic writes); a hand-edited one reads as 0
        with self._lock:
            return self._epochs.setdefault(router_id, value)

    def admit(self, router_id: str, epoch: int, generation: int | None,
              applied_generation: int) -> None:
        """Raise FencedPush unless a push of ``generation`` (None: a delete)
        from ``epoch`` may proceed; persist ``epoch`` when it is the highest yet.
        Call under ``held(router_id)``."""
        seen = self.epoch(router_id)
        if epoch < seen:
            raise FencedPush(
                f"router {router_id}: push from lease epoch {epoch} refused: epoch {seen} "
                f"has pushed since (generation {generation or 0}, running {applied_generation})")
        if generation is not None and generation < applied_generation:
            raise FencedPush(
                f"router {router_id}: generation {generation} (lease epoch {epoch}) refused: "
                f"the router runs generation {applied_generation} (lease epoch {seen})")
        if epoch > seen:
            ensure_private_dir(self._dir)
            files.write_atomic(self._path(router_id), f"{epoch}\n".encode(), mode=0o600)
            with self._lock:
                self._epochs[router_id] = epoch

    def forget(self, router_id: str) -> None:
        """The router was deleted for good."""
        files.remove(self._path(router_id))
        with self._lock:
            self._epochs.pop(router_id, None)

    def _path(self, router_id: str) -> str:
        return os.path.join(self._dir, router_id)
