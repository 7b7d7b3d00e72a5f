"""netmgr's way to the router VMs' agents: the control network, as the VM backend uses it.

Every router VM's agent listens on its control address only. How netmgr
reaches that address is the deployment's business, injected by the
composition root: directly when netmgr itself is on the control network
(``DirectControlNetwork``), or through a relay out of a control namespace
(``common.control_relay.ControlNetwork``, which the all-in-one needs).
"""

from __future__ import annotations

from typing import Protocol


class ControlNetwork(Protocol):
    def target(self, key: str, ip: str, port: int) -> str:
        """The gRPC target reaching `ip:port` on the control network, for the
        router VM `key`."""
        ...

    def forget(self, key: str) -> None:
        """The router VM `key` is gone: release what reaching it held."""
        ...

    def close(self) -> None: ...


class DirectControlNetwork:
    """netmgr is on the control network: connect to the address itself."""

    def target(self, key: str, ip: str, port: int) -> str:
        return f"{ip}:{port}"

    def forget(self, key: str) -> None:
        pass

    def close(self) -> None:
        pass
