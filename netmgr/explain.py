"""Model check: is a flow allowed, and which object decides (no packets)."""

from __future__ import annotations

from cloudnet.netmgr.v1 import debug_pb2

from netmgr.errors import InvalidArgument
from netmgr.store import Store


def explain(store: Store, tenant_id: str, request: debug_pb2.ExplainRequest
            ) -> debug_pb2.ExplainResponse:
    raise InvalidArgument.one("from", "explain is not implemented yet")
