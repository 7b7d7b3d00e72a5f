"""The router's one nftables table, ``inet cloudnet``, and what this agent
last loaded into it (per router: ``TableState``)."""

from __future__ import annotations

from dataclasses import dataclass

from common.netns import run_in_netns
from router.lib import libnft, nftshape
from router.services.nftables import edge as nft_edge

FAMILY, NAME = "inet", "cloudnet"


@dataclass(frozen=True, eq=False)
class Loaded:
    """A table this agent loaded: its text without the edge elements, and the
    elements (kept current by ``delta`` as it changes them in place)."""

    skeleton: str
    elements: nft_edge.Elements


class TableState:
    """What one router's table holds, as far as this agent knows.

    ``loaded`` is None when it does not know (nothing loaded yet, a failed
    update, a table deleted behind its back): the next apply loads the whole
    table. Shared by the nftables service and its edge deltas, under the
    router's lock.
    """

    def __init__(self) -> None:
        self.loaded: Loaded | None = None
        # shape() of the table right after this agent last loaded it (None:
        # not known), compared by the health check.
        self.shape: str | None = None
        # The namespace's ruleset generation when the table last had that
        # shape (None: not known): while it stands, the shape is not read.
        self.generation: int | None = None

    def forget(self) -> None:
        """Nothing known of what the table holds: the next apply loads it whole."""
        self.loaded = self.shape = self.generation = None


def listed(netns: str) -> bool:
    """Whether the table exists (in-process). Not by `list tables`: nft 1.0
    fetches every set's elements for it (0.6 s at 10,000 rules, under the
    router's lock); one small set, without its elements, costs the same at
    any size."""
    try:
        libnft.run(netns, f"list set {FAMILY} {NAME} edge_ips", terse=True)
    except libnft.NftError:
        return False
    return True


def shape(netns: str) -> tuple[int, str | None]:
    """The namespace's ruleset generation, then a fingerprint of the table's
    chains and rules (without counter values or set elements: those change
    by design, with traffic and edge deltas; None if the table does not
    exist). Read over netlink: its cost follows the number of rules, not of
    edge elements (``nftshape``). The generation is read first: a change
    made after it moves it on, so the next check reads the shape again."""
    return run_in_netns(netns, lambda: (nftshape.generation(), nftshape.fingerprint(NAME)))


def generation(netns: str) -> int:
    """The namespace's ruleset generation (one small netlink request)."""
    return run_in_netns(netns, nftshape.generation)
