"""The arbiter of a redundant router's two instances, for when VRRP alone
cannot decide: the link between them broke, each hears nothing from the
other, and both are MASTER (split brain: both answer for the same addresses).

netmgr sees both agents. From what each reports (its VRRP state, its
priority, whether netmgr holds it demoted) and whether netmgr reached it at
all, ``arbitrate`` decides, as a pure function:

* both reachable and both MASTER: demote the one whose conntrackd has not
  resynced yet (an instance just made again that claimed the master role
  before it heard the other: the other holds the connections), else the
  lower priority (on a tie, the second instance): its agent holds it in
  FAULT (``RouterRedundancy.SetDemoted``), which drops its addresses, and
  the other stays the one master;
* an instance netmgr cannot reach is not demoted by netmgr (it cannot be):
  the other is released if netmgr held it, so that one instance serves; the
  unreachable one's own tracking (its agent's health, its uplink) takes it
  out if it is sick;
* an instance held demoted is released when the other is no longer MASTER
  (it must take over), or, after ``hold`` seconds, to try the link again: back
  in BACKUP it hears the master's adverts if the link healed and stays
  BACKUP; if not, it becomes MASTER within three adverts and the next round
  demotes it again (so two masters coexist at most one round).

Each decision carries an event (what was seen, what was done) for the
router's event log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceView:
    instance: int
    reachable: bool
    state: str = ""  # MASTER / BACKUP / FAULT / ""
    priority: int = 0
    demoted: bool = False
    demoted_at: float = 0.0  # when netmgr demoted it (its own clock)
    resync_pending: bool = False  # its conntrackd lacks the other's connections


@dataclass(frozen=True)
class Decision:
    demote: tuple[int, ...] = ()
    release: tuple[int, ...] = ()
    events: tuple[str, ...] = ()


NOTHING = Decision()


def arbitrate(views: Sequence[InstanceView], now: float, hold: float) -> Decision:
    if len(views) != 2:
        return NOTHING
    a, b = sorted(views, key=lambda v: v.instance)
    if not (a.reachable and b.reachable):
        up = a if a.reachable else b
        down = b if up is a else a
        if up.reachable and up.demoted:
            return Decision(release=(up.instance,), events=(
                f"instance {down.instance} unreachable: instance {up.instance} released "
                "to serve alone",))
        return NOTHING
    masters = [v for v in (a, b) if v.state == "MASTER" and not v.demoted]
    if len(masters) == 2:
        loser = min((a, b), key=lambda v: (not v.resync_pending, v.priority, -v.instance))
        winner = b if loser is a else a
        why = ", its conntrackd not resynced" if loser.resync_pending else ""
        return Decision(demote=(loser.instance,), events=(
            f"split brain: both instances MASTER (VRRP between them lost); instance "
            f"{loser.instance} (priority {loser.priority}{why}) demoted, instance "
            f"{winner.instance} (priority {winner.priority}) stays master",))
    release, events = [], []
    for held, other in ((a, b), (b, a)):
        if not held.demoted:
            continue
        if other.state != "MASTER":
            release.append(held.instance)
            events.append(f"instance {held.instance} released: instance {other.instance} is "
                          f"{other.state or 'without state'}")
        elif now - held.demoted_at >= hold:
            release.append(held.instance)
            events.append(f"instance {held.instance} released after {hold:g} s to try the "
                          "VRRP link again")
    return Decision(release=tuple(release), events=tuple(events))
