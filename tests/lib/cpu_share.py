"""CPU seconds spent by each part of a run between two snapshots, from /proc.

What bounds a throughput on a small shared machine is CPU: these figures
say whose (netmgr, PostgreSQL, the router agents with the daemons they
start, the bench's own client threads, everything else on the machine).
A process that ended between the snapshots is not counted in its part
(short-lived commands: ``ip``, ``nft``); the machine's total counts it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: str) -> tuple[float, int, str]:
    """(user + system seconds, parent PID, command name) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[1]), name


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting on I/O)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def snapshot(part_of: Callable[[int, str], str | None]) -> dict[tuple[str, int], float]:
    """(part, pid) -> CPU seconds for every process ``part_of(pid, name)``
    (or its parent's part) names; ("machine", 0) -> the machine's total."""
    procs: dict[int, tuple[float, int, str]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                procs[int(d)] = _proc_cpu(d)
            except (OSError, ValueError):
                continue
    out: dict[tuple[str, int], float] = {("machine", 0): machine_busy()}
    for pid, (cpu, _, _) in procs.items():
        seen: set[int] = set()
        p: int | None = pid
        while p is not None and p in procs and p not in seen:
            seen.add(p)
            part = part_of(p, procs[p][2])
            if part is not None:
                out[(part, pid)] = cpu
                break
            p = procs[p][1]
    return out


def spent(before: dict[tuple[str, int], float],
          after: dict[tuple[str, int], float]) -> dict[str, float]:
    """CPU seconds per part between two snapshots, and "other" (the machine's rest)."""
    parts: dict[str, float] = {}
    for key, cpu in after.items():
        parts[key[0]] = parts.get(key[0], 0.0) + cpu - before.get(key, 0.0)
    machine = parts.pop("machine", 0.0)
    parts["other"] = machine - sum(parts.values())
    parts["machine"] = machine
    return {k: round(v, 1) for k, v in parts.items()}


def cloud_parts(pids: Mapping[str, int]) -> Callable[[int, str], str | None]:
    """Which part of an all-in-one a process is (``AllInOne.pids``): netmgr's
    replicas, the router agents, PostgreSQL, or the calling bench's client
    threads (this process)."""
    netmgr = {pid for name, pid in pids.items() if name.startswith("netmgr")}
    agents = {pid for name, pid in pids.items() if name.startswith("agent")}
    me = os.getpid()

    def part(pid: int, name: str) -> str | None:
        if pid in netmgr:
            return "netmgr"
        if pid in agents:
            return "router_agents"
        if pid == me:
            return "bench_client"
        if name == "postgres" or name.startswith("postgres:"):
            return "postgresql"
        return None

    return part
