"""Helpers for netmgr replicas under load (the replicas tests and
bench/control_plane.py): who holds the shard leases, a write load that
records what was acknowledged, an agent watch that counts rollbacks."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from dataclasses import dataclass, field

import grpc
import psycopg
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.router.v1 import agent_pb2 as apb
from cloudnet.router.v1 import agent_pb2_grpc

from aio.demo import Api
from netmgr.store.leases import SHARD_LOCKS, libpq_url


def lease_holders(db_url: str) -> dict[int, int]:
    """OS PID of each netmgr replica -> shards it holds (from pg_locks)."""
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name, count(*) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
            "AND l.objsubid = 2 GROUP BY a.application_name", (SHARD_LOCKS,)).fetchall()
    return {int(name.rsplit(" ", 1)[1]): int(n) for name, n in rows}


@dataclass
class Acked:
    """What the API acknowledged: network id -> its port ids; and the latencies."""

    networks: dict[str, list[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class WriteLoad:
    """Threads creating networks with ports, each call to the next replica
    that answers (a refused or unanswered call is retried on the next one,
    with the same request ID: it is never acknowledged twice)."""

    def __init__(self, targets: list[str], token: str, *, threads: int, networks: int,
                 ports: int, cidr_base: int = 0) -> None:
        self.apis = [Api(t, token) for t in targets]
        self.acked = Acked()
        self._threads = threads
        self._ports = ports
        self._todo = iter(range(networks))
        self._todo_lock = threading.Lock()
        self._cidr_base = cidr_base
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._turn = itertools.count()

    def start(self) -> None:
        for i in range(self._threads):
            t = threading.Thread(target=self._run, name=f"writer-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self) -> None:
        for t in self._workers:
            t.join(timeout=600)

    def close(self) -> None:
        for api in self.apis:
            api.close()

    def _next(self) -> int | None:
        with self._todo_lock:
            return next(self._todo, None)

    def _call(self, name: str, request: object, request_id: str) -> object:
        """The call on the next replica that answers."""
        last: grpc.RpcError | None = None
        for _ in range(10 * len(self.apis)):
            if self._stop.is_set() and last is not None:
                break
            api = self.apis[next(self._turn) % len(self.apis)]
            method = {"network": api.networks.CreateNetwork, "port": api.ports.CreatePort}[name]
            started = time.monotonic()
            try:
                reply = method(request, metadata=(*api.metadata, ("x-request-id", request_id)),
                               timeout=30)
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                last = e
                with self.acked.lock:
                    self.acked.failures += 1
                time.sleep(0.2)  # a replica reconnecting to its database
                continue
            with self.acked.lock:
                self.acked.latencies.append(time.monotonic() - started)
            return reply
        assert last is not None
        raise last

    def _run(self) -> None:
        while not self._stop.is_set():
            i = self._next()
            if i is None:
                return
            n = self._cidr_base + i
            try:
                net = self._call("network", pb.CreateNetworkRequest(network=pb.Network(
                    name=f"load-{n}", cidr=f"10.{100 + n // 256}.{n % 256}.0/24")),
                    f"net-{n}")
            except grpc.RpcError:
                continue
            with self.acked.lock:
                self.acked.networks[net.id] = []  # type: ignore[attr-defined]
            for p in range(self._ports):
                try:
                    port = self._call("port", pb.CreatePortRequest(port=pb.Port(
                        network_id=net.id, name=f"p{p}")),  # type: ignore[attr-defined]
                        f"port-{n}-{p}")
                except grpc.RpcError:
                    continue
                with self.acked.lock:
                    self.acked.networks[net.id].append(port.id)  # type: ignore[attr-defined]


class AgentWatch:
    """Samples every router's applied generation on one agent until stopped;
    a router seen at a lower generation than before is a rollback.
    ``interval``: seconds between samples (the agent has no watch stream: a
    sample is a ListRouterStatus, which costs the agent CPU per router)."""

    def __init__(self, agent_target: str, interval: float = 0.02) -> None:
        self._interval = interval
        self._channel = grpc.insecure_channel(agent_target)
        self._stub = agent_pb2_grpc.RouterAgentStub(self._channel)
        self.highest: dict[str, int] = {}
        self.rollbacks: list[tuple[str, int, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self._stub.ListRouterStatus(apb.ListRouterStatusRequest(), timeout=10)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            for s in reply.routers:
                before = self.highest.get(s.router_id, 0)
                if s.applied_generation < before:
                    self.rollbacks.append((s.router_id, before, s.applied_generation))
                else:
                    self.highest[s.router_id] = s.applied_generation
            self.samples += 1
            time.sleep(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._channel.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free on loopback."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65536:
            continue
        try:
            for i in range(1, n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
    raise RuntimeError("no free run of ports")


def shards_of(db_url: str, pid: int) -> set[int]:
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT l.objid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
            "AND l.objsubid = 2 AND a.application_name = %s",
            (SHARD_LOCKS, f"cloudnet-netmgr leases {pid}")).fetchall()
    return {int(r[0]) for r in rows}
