"""The nftables table's part for the guests' metadata service: the set of
(interface, MAC, IP) each port owns. A request to the metadata ports
(HTTP 80, CloudStack's password server 8080) is accepted only when its
source address arrives from its port's MAC on its port's interface; a
spoofed source falls to the input chain's drop policy before nginx sees it."""

from __future__ import annotations

from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb

from router.lib.templating import nft_quote

METADATA_PORTS = (80, 8080)


def context(cfg: pb.RouterConfig) -> dict[str, Any]:
    """Template values from the verified guest metadata (the metadata
    service's verify checks interface, MAC and IP)."""
    clients = sorted({(g.interface, g.mac.lower(), g.ip) for g in cfg.guest_metadata})
    return {
        "metadata_clients": [f"{nft_quote(i)} . {mac} . {ip}" for i, mac, ip in clients],
        "metadata_ports": ", ".join(str(p) for p in METADATA_PORTS),
    }
