"""Router notices between netmgr replicas: PostgreSQL NOTIFY / LISTEN.

A replica's API commits a change to a router whose shard another replica
holds: it sends ``notify <router id>`` (or ``restart <router id>``) on the
channel (``move <router id>`` for a router the resync moved off a dead host:
pushed after the changes clients made), and the holder's listener pushes the
router at once. A notice is a
hint, never the record: a lost one (a listener reconnecting, a replica
killed between its commit and its notice) is made up by the holder's resync,
which compares every agent's generations with the store every few seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from netmgr.store.leases import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "cloudnet_routers"
KINDS = ("notify", "move", "restart")


class RouterNotices:
    def __init__(self, url: str) -> None:
        self._url = libpq_url(url)
        self._send_conn: Any = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listen_conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                               application_name="cloudnet-netmgr notices")

    def send(self, kind: str, router_id: str) -> None:
        """Best effort (the resync catches up on a notice not sent)."""
        with self._send_lock:
            try:
                if self._send_conn is None:
                    self._send_conn = self._connect()
                self._send_conn.execute("SELECT pg_notify(%s, %s)",
                                        (CHANNEL, f"{kind} {router_id}"))
            except Exception as e:
                log.info("router notice not sent (%s): the resync catches up", e)
                conn, self._send_conn = self._send_conn, None
                if conn is not None:
                    conn.close()

    def listen(self, on_notice: Callable[[str, str], None]) -> None:
        """Call ``on_notice(kind, router_id)`` for every notice, from a thread."""
        self._thread = threading.Thread(target=self._listen_loop, args=(on_notice,),
                                        name="router-notices", daemon=True)
        self._thread.start()

    def _listen_loop(self, on_notice: Callable[[str, str], None]) -> None:
        while not self._stop.is_set():
            try:
                conn = self._listen_conn = self._connect()
                conn.execute(f"LISTEN {CHANNEL}")
                while not self._stop.is_set():
                    for n in conn.notifies(timeout=1.0):
                        kind, _, router_id = n.payload.partition(" ")
                        if kind in KINDS and router_id:
                            on_notice(kind, router_id)
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("router notices: %s (reconnecting)", e)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in (self._send_conn, self._listen_conn):
            if conn is not None:
                conn.close()
