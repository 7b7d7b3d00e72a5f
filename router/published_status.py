"""A router's status as of its last completed change, readable without its lock.

A router's runtime serialises every change on one lock, and an apply can
hold it for seconds (daemon checks, reloads). A listing of every router on
the agent (``ListRouterStatus``, netmgr's resync every 2 s, and at once on
a shard takeover) must not wait for each busy router in turn: it reads what
the runtime published instead.

The runtime publishes, under its lock, at the end of every change (a full
apply, a rejected config, an edge delta, a repair, an adoption, a health
check, a delete): so a reader never sees an older applied generation than
the router had completed when the read began, and never a generation the
router has not finished applying. What is published is immutable (the
serialised message) and swapped in by one assignment, so a reader needs no
lock and gets a message of its own.

Two kinds of fields: the runtime's own state (generation, errors, objects),
always fresh in each publication; and what was last observed of the daemons
(services' health, load balancer members, VPN SAs, BGP sessions, the VRRP
role), which only a status computed under the lock observes: a publication
that did not observe them carries over the previous one's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from cloudnet.router.v1 import agent_pb2 as pb

Field = Literal["router_id", "applied_generation", "rejected_generation", "last_error",
                "objects", "apply_seconds", "awaiting_secrets", "services"]
# The runtime's own fields of a RouterStatus: fresh in every publication.
STATE_FIELDS: tuple[Field, ...] = (
    "router_id", "applied_generation", "rejected_generation", "last_error", "objects",
    "apply_seconds", "awaiting_secrets")


class PublishedStatus:
    """The last status a runtime published (None: nothing to report)."""

    def __init__(self) -> None:
        self._status: bytes | None = None

    def read(self) -> pb.RouterStatus | None:
        """A copy of the last status published; never waits."""
        published = self._status  # one read: a publication swaps it whole
        return None if published is None else pb.RouterStatus.FromString(published)

    def publish(self, status: pb.RouterStatus | None) -> None:
        """A status computed whole (state and observations), or None."""
        self._status = None if status is None else status.SerializeToString()

    def publish_state(self, status: pb.RouterStatus,
                      fresh: Iterable[Field] = STATE_FIELDS) -> None:
        """``status``'s ``fresh`` fields, with every other field as last published."""
        previous = self._status
        if previous is None:
            self._status = status.SerializeToString()
            return
        merged = pb.RouterStatus.FromString(previous)
        for field in fresh:
            merged.ClearField(field)
        merged.MergeFrom(status)
        self._status = merged.SerializeToString()
