"""What the routers' password servers cost an agent at rest, by design, at N
routers: the agent's threads, its CPU while no guest asks (share of one
core), and a guest's ask (one HTTP request on the unix socket, as nginx
makes it), median over the routers.

* ``thread_per_router``: the earlier design: each router's server loops on
  a thread of its own (``serve_forever``, waking every 0.5 s to look for its
  shutdown flag);
* ``accept_loop`` (the one kept: ``router.services.password_server``): one
  thread accepts for every router's socket in epoll.

Ratios are ``accept_loop`` against ``thread_per_router``, measured in the
same run.

    .venv/bin/python bench/password_servers.py [--sizes 100,500] [--idle 10]
        [--out bench/out]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from router.services import password_server
from router.services.password_server import GUEST_HEADER, REQUEST_HEADER, GuestPasswords

GUEST = "10.0.0.5"


def ask(path: str) -> float:
    """One guest's ``send_my_password``, in seconds."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(f"GET /password/ HTTP/1.0\r\n{GUEST_HEADER}: {GUEST}\r\n"
                  f"{REQUEST_HEADER}: send_my_password\r\n\r\n".encode())
        while s.recv(4096):
            pass
    return time.perf_counter() - start


def router_passwords(i: int) -> GuestPasswords:
    """Router ``i``'s passwords: one guest, with a password waiting."""
    p = GuestPasswords()
    p.guests({GUEST: f"port{i}"})
    p.set(f"port{i}", "x" * 12)
    return p


def accept_loop(paths: list[str]) -> Callable[[], None]:
    servers = []
    for i, path in enumerate(paths):
        p = router_passwords(i)
        p.serve(path, os.getgid())
        servers.append(p)

    def stop() -> None:
        for p in servers:
            p.stop()
    return stop


def thread_per_router(paths: list[str]) -> Callable[[], None]:
    servers = []
    for i, path in enumerate(paths):
        p = router_passwords(i)
        server = password_server._Server(path, password_server._Handler)
        server.passwords, server.tokens = p, p.tokens
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                         daemon=True).start()
        servers.append(server)

    def stop() -> None:
        for server in servers:
            server.shutdown()
            server.server_close()
    return stop


DESIGNS: dict[str, Callable[[list[str]], Callable[[], None]]] = {
    "thread_per_router": thread_per_router, "accept_loop": accept_loop}


def measure(design: str, n: int, idle: float) -> dict[str, Any]:
    where = tempfile.mkdtemp(prefix="cn-pwbench-")
    paths = [os.path.join(where, f"{i}.sock") for i in range(n)]
    threads = threading.active_count()
    stop = DESIGNS[design](paths)
    try:
        time.sleep(1)  # past the start
        added = threading.active_count() - threads
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(idle)
        idle_cpu = (time.process_time() - cpu) / (time.monotonic() - wall)
        asks = [ask(path) for path in paths]
        return {"threads_added": added,
                "idle_cpu_share_of_a_core": round(idle_cpu, 5),
                "ask_median_ms": round(statistics.median(asks) * 1000, 3)}
    finally:
        stop()
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(where)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,500")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds at rest per design")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    runs = []
    for n in map(int, args.sizes.split(",")):
        run: dict[str, Any] = {"routers": n}
        for design in DESIGNS:
            run[design] = measure(design, n, args.idle)
        base, kept = run["thread_per_router"], run["accept_loop"]
        run["ratios"] = {
            "idle_cpu": round(kept["idle_cpu_share_of_a_core"]
                              / max(base["idle_cpu_share_of_a_core"], 1e-6), 4),
            "threads": round(kept["threads_added"] / max(base["threads_added"], 1), 4),
            "ask": round(kept["ask_median_ms"] / base["ask_median_ms"], 3),
        }
        runs.append(run)
    result: dict[str, Any] = {
        "bench": "password_servers",
        "date": started, "loadavg_start": load_start, "idle_s": args.idle, "runs": runs,
    }
    result["loadavg_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "password_servers.json"), "w") as f:
        json.dump(result, f, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [r["routers"] for r in runs]
    for design in DESIGNS:
        ax.plot(sizes, [100 * r[design]["idle_cpu_share_of_a_core"] for r in runs], "o-",
                label=design)
    ax.set_xlabel("routers on the agent")
    ax.set_ylabel("agent CPU at rest, % of a core")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "password_servers.png"), dpi=110)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
