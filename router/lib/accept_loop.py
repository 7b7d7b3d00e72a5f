"""One thread that accepts the connections of many listening sockets (the
password servers of every router an agent holds); each connection is then
handled by its own server, on a thread of its own (``ThreadingMixIn``).

A server looping on its own thread wakes twice a second to look for its
shutdown flag: 500 idle routers cost 2 % of a core in those wake-ups alone,
and 500 threads to the agent. Here an idle agent's one thread sleeps in epoll
until a guest connects; a server comes and goes with one ``epoll_ctl``, which
the kernel applies to the waiting thread at once, so nothing needs waking.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socketserver
import threading

log = logging.getLogger(__name__)


class AcceptLoop:
    """Listening sockets polled by one daemon thread, started with the first."""

    def __init__(self, name: str) -> None:
        self._name = name
        # Held while the loop handles an event: once ``remove`` has it, the
        # loop never touches that server again.
        self._lock = threading.Lock()
        self._servers: dict[int, socketserver.TCPServer] = {}
        self._epoll: select.epoll | None = None

    def add(self, server: socketserver.TCPServer) -> None:
        """Accept ``server``'s connections from now on (its socket listening)."""
        fd = server.fileno()
        # A readiness seen for a socket since closed can reach the server
        # that got its number: accept must not block on it.
        server.socket.setblocking(False)
        with self._lock:
            if self._epoll is None:
                self._epoll = select.epoll()
                threading.Thread(target=self._run, args=(self._epoll,), name=self._name,
                                 daemon=True).start()
            self._servers[fd] = server
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except FileExistsError:  # a server closed without remove had the number
                self._epoll.modify(fd, select.EPOLLIN)

    def remove(self, server: socketserver.TCPServer) -> None:
        """No more connections for ``server``; the caller closes it after."""
        fd = server.fileno()
        with self._lock:
            if self._servers.get(fd) is server and self._epoll is not None:
                del self._servers[fd]
                with contextlib.suppress(OSError):  # already closed: out of the set
                    self._epoll.unregister(fd)

    def serving(self) -> int:
        with self._lock:
            return len(self._servers)

    def _run(self, epoll: select.epoll) -> None:
        while True:
            try:
                events = epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                with self._lock:
                    server = self._servers.get(fd)
                    if server is None:
                        continue
                    try:
                        _accept(server)
                    except Exception:  # the loop serves every router: it goes on
                        log.exception("accept on %s", server.server_address)


def _accept(server: socketserver.TCPServer) -> None:
    try:
        request, address = server.get_request()
    except (BlockingIOError, InterruptedError):
        return  # another server's readiness, or a client gone before accept
    except OSError as e:
        log.warning("accept on %s: %s", server.server_address, e)
        return
    request.setblocking(True)
    try:
        if server.verify_request(request, address):
            server.process_request(request, address)  # a thread of its own
        else:
            server.shutdown_request(request)
    except Exception:
        server.handle_error(request, address)
        server.shutdown_request(request)
