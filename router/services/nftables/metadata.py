"""The nftables table's part for the guests' metadata service. A request to
the metadata ports (HTTP 80, CloudStack's password server 8080) is accepted
only when its source address arrives from its port's MAC on its port's
interface: the input chain looks it up in port security's set ``port_sec``
(``router.services.nftables.port_security``: one element per port), so a
spoofed source falls to the input chain's drop policy before nginx sees it.
One set serves both checks: a port's element is added, changed and removed
in place with the port, never by a table reload."""

from __future__ import annotations

from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb

METADATA_PORTS = (80, 8080)


def context(cfg: pb.RouterConfig) -> dict[str, Any]:
    return {"metadata_ports": ", ".join(str(p) for p in METADATA_PORTS)}
