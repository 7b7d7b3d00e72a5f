"""netmgr's way to the router VMs' agents: the control network.

Each router VM has a control NIC on the control segment (a VLAN of the
fabric reserved for it, outside the zone's range) with an address of the
control CIDR; its agent listens there only. netmgr's side of that segment is
an address in a network namespace (`--control-netns`, e.g. the all-in-one's
`<prefix>-ctl`, plugged into the fabric like a router NIC), so the host's
own namespace gets no address and no route, and tenant segments never reach
it. A gRPC channel cannot be told to connect from another namespace, so
netmgr relays: one unix socket per router VM (0600, netmgr's run directory)
whose connections are forwarded to the VM's control address by a TCP socket
created in the control namespace (common.netns.create_socket: a thread that
setns(2)s, no fork). Without a control namespace (netmgr already on the
control network) the channel connects directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading

from common import netns

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0
BUFSIZE = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(BUFSIZE)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class _Relay:
    def __init__(self, path: str, control_netns: str, ip: str, port: int) -> None:
        self.path, self.netns, self.ip, self.port = path, control_netns, ip, port
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is 0600 from the start
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.closed = False
        threading.Thread(target=self._accept, name=f"ctl-relay-{ip}", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = netns.create_socket(self.netns)
            upstream.settimeout(CONNECT_TIMEOUT)
            upstream.connect((self.ip, self.port))
            upstream.settimeout(None)
        except OSError as e:
            log.debug("control relay to %s:%d: %s", self.ip, self.port, e)
            client.close()
            return
        t = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        t.start()
        _pump(client, upstream)
        t.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class ControlNetwork:
    """gRPC targets for the agents on the control network."""

    def __init__(self, control_netns: str = "", run_dir: str = "") -> None:
        self.netns = control_netns
        self.run_dir = run_dir
        self._relays: dict[str, _Relay] = {}
        self._lock = threading.Lock()
        if control_netns:
            os.makedirs(run_dir, mode=0o700, exist_ok=True)

    def target(self, key: str, ip: str, port: int) -> str:
        """The gRPC target reaching `ip:port` on the control network."""
        if not self.netns:
            return f"{ip}:{port}"
        with self._lock:
            relay = self._relays.get(key)
            if relay is None or (relay.ip, relay.port) != (ip, port):
                if relay is not None:
                    relay.close()
                relay = self._relays[key] = _Relay(
                    os.path.join(self.run_dir, f"{key}.sock"), self.netns, ip, port)
            return f"unix://{relay.path}"

    def forget(self, key: str) -> None:
        with self._lock:
            relay = self._relays.pop(key, None)
        if relay is not None:
            relay.close()

    def close(self) -> None:
        with self._lock:
            relays, self._relays = list(self._relays.values()), {}
        for r in relays:
            r.close()
