"""What plugging a namespace into each fabric costs: N ports plugged into a
fresh fabric, one after the other, then unplugged; per plug, the calling
process's CPU, its children's (``ovs-vsctl``) and the wall time. Ratio: the
OVS fabric against the Linux bridge fabric, measured in the same run.

    .venv/bin/python bench/fabric_plug.py [--ports 40] [--out bench/out]

Needs Open vSwitch running (``scripts/host-services.sh start``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.fabric.linuxbridge import LinuxBridgeFabric
from common.fabric.ovs import OvsFabric
from common.netns import ensure_netns, remove_netns

SEGMENT = 10


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def measure(kind: str, ports: int) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:5]
    target = f"fp{uid}-ns"
    ensure_netns(target)
    fabric: LinuxBridgeFabric | OvsFabric = (
        OvsFabric(f"fp{uid}") if kind == "ovs" else LinuxBridgeFabric(f"fp{uid}-fab"))
    fabric.setup()
    try:
        fabric.plug("warm", SEGMENT, target, "w0", "02:00:00:00:01:00")
        fabric.unplug("warm")
        (me0, kids0), t0 = _cpu(), time.monotonic()
        for i in range(ports):
            fabric.plug(f"x{i}", SEGMENT, target, f"e{i}", f"02:00:00:00:{i // 256:02x}:"
                        f"{i % 256:02x}")
        (me1, kids1), t1 = _cpu(), time.monotonic()
        for i in range(ports):
            fabric.unplug(f"x{i}")
    finally:
        fabric.teardown()
        remove_netns(target)
    return {"cpu_ms_per_plug": round((me1 - me0) / ports * 1000, 2),
            "children_cpu_ms_per_plug": round((kids1 - kids0) / ports * 1000, 2),
            "wall_ms_per_plug": round((t1 - t0) / ports * 1000, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", type=int, default=40)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    started, load = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg()
    runs = {kind: measure(kind, args.ports) for kind in ("linuxbridge", "ovs")}
    result: dict[str, Any] = {
        "bench": "fabric_plug", "date": started, "loadavg_start": load, "ports": args.ports,
        **runs,
        "ratios_ovs_vs_linuxbridge": {
            k: round(runs["ovs"][k] / max(runs["linuxbridge"][k], 1e-6), 2)
            for k in ("cpu_ms_per_plug", "wall_ms_per_plug")},
        "loadavg_end": os.getloadavg(),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fabric_plug.json"), "w") as f:
        json.dump(result, f, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    kinds = list(runs)
    parts = ("cpu_ms_per_plug", "children_cpu_ms_per_plug")
    bottom = [0.0] * len(kinds)
    for part in parts:
        values = [runs[k][part] for k in kinds]
        ax.bar(kinds, values, bottom=bottom, label=part.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("CPU per plug, ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fabric_plug.png"), dpi=110)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
