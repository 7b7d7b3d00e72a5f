"""bench/control_plane.py keeps what it measured: the JSON and the plot are
written after every phase, so a long run that is stopped or crashes (the
issue's full size takes over half an hour) leaves its figures behind."""

from __future__ import annotations

import json
import os

from bench.control_plane import Results

CREATE = {"calls_per_s": 90.0, "p50_ms": 100.0, "p99_ms": 400.0}


def read(out: str) -> dict[str, object]:
    with open(os.path.join(out, "control_plane.json")) as f:
        return dict(json.load(f))


def test_each_phase_is_written_as_soon_as_it_ends(tmp_path: object) -> None:
    out = str(tmp_path)
    results = Results(out, {"networks": 2, "ports": 1, "threads": 1, "agents": 1})
    results.phase("baseline", {"replicas": 1, "create": CREATE})
    partial = read(out)
    assert partial["complete"] is False
    assert partial["baseline"] == {"replicas": 1, "create": CREATE}
    assert "replicated" not in partial
    assert os.path.getsize(os.path.join(out, "control_plane.png")) > 0
    rep = {"replicas": 3, "create": {**CREATE, "calls_per_s": 45.0, "p99_ms": 800.0}}
    results.phase("replicated", rep)
    assert read(out)["ratio_calls_per_s"] == 0.5
    rep["replica_kill"] = {"shards_held_again_s": 0.8, "acked_writes_lost": 0}
    rep["routers_rolled_back"] = 0
    results.phase("replicated", rep)  # the host phase never ran: the run died here
    kept = read(out)
    assert kept["replicated"]["replica_kill"]["shards_held_again_s"] == 0.8  # type: ignore[index]
    assert kept["complete"] is False
    results.result["complete"] = True
    results.write()
    assert read(out)["complete"] is True
    assert not os.path.exists(os.path.join(out, "control_plane.json.tmp"))
