"""Calls one function from many threads released at the same instant, to
race clients against one server (the store's concurrency tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def run_in_parallel(fn: Callable[[int], list[Any]], threads: int) -> list[Any]:
    start = threading.Barrier(threads)

    def worker(i: int) -> list[Any]:
        start.wait()  # all threads hit the server at once
        return fn(i)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [x for chunk in pool.map(worker, range(threads)) for x in chunk]
