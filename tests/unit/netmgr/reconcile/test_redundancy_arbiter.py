"""The split-brain arbiter: which instance of a redundant router netmgr
demotes or releases, from what the two agents report."""

from __future__ import annotations

from netmgr.reconcile.redundancy_arbiter import InstanceView, arbitrate

HOLD = 10.0


def view(i: int, state: str, priority: int, reachable: bool = True, demoted: bool = False,
         at: float = 0.0) -> InstanceView:
    return InstanceView(i, reachable, state, priority, demoted, at)


def test_two_masters_the_lower_priority_is_demoted() -> None:
    d = arbitrate([view(0, "MASTER", 200), view(1, "MASTER", 100)], 5.0, HOLD)
    assert d.demote == (1,)
    assert d.release == ()
    assert "split brain" in d.events[0]
    assert "instance 1 (priority 100) demoted" in d.events[0]
    # The other way round (a failover moved the preference).
    assert arbitrate([view(0, "MASTER", 100), view(1, "MASTER", 200)], 5.0, HOLD).demote == (0,)


def test_two_masters_the_one_not_resynced_yields_whatever_its_priority() -> None:
    """The preferred instance made again claimed the master role before it
    heard the other (which holds the connections): it is the one demoted."""
    new = InstanceView(0, True, "MASTER", 200, resync_pending=True)
    d = arbitrate([new, view(1, "MASTER", 100)], 5.0, HOLD)
    assert d.demote == (0,)
    assert "instance 0 (priority 200, its conntrackd not resynced) demoted" in d.events[0]


def test_a_tie_demotes_the_second_instance() -> None:
    assert arbitrate([view(1, "MASTER", 150), view(0, "MASTER", 150)], 0, HOLD).demote == (1,)


def test_one_master_is_left_alone() -> None:
    for other in ("BACKUP", "FAULT", ""):
        assert arbitrate([view(0, "MASTER", 200), view(1, other, 100)], 5.0, HOLD).demote == ()


def test_an_unreachable_instance_is_never_demoted_and_the_other_is_freed() -> None:
    # netmgr cannot reach instance 0: whatever it last said, nothing to demote.
    d = arbitrate([view(0, "MASTER", 200, reachable=False),
                   view(1, "MASTER", 100, demoted=True, at=1.0)], 2.0, HOLD)
    assert d.demote == ()
    assert d.release == (1,)
    assert "unreachable" in d.events[0]
    assert arbitrate([view(0, "MASTER", 200, reachable=False),
                      view(1, "BACKUP", 100)], 2.0, HOLD).demote == ()


def test_a_demoted_instance_is_released_when_the_other_stops_being_master() -> None:
    d = arbitrate([view(0, "FAULT", 200), view(1, "FAULT", 100, demoted=True, at=4.0)],
                  5.0, HOLD)
    assert d.release == (1,)


def test_a_demoted_instance_is_released_after_the_hold_to_try_the_link() -> None:
    held = [view(0, "MASTER", 200), view(1, "FAULT", 100, demoted=True, at=4.0)]
    assert arbitrate(held, 4.0 + HOLD - 0.1, HOLD).release == ()
    assert arbitrate(held, 4.0 + HOLD, HOLD).release == (1,)
    # Still split (it became MASTER again): demoted again by the next round.
    again = [view(0, "MASTER", 200), view(1, "MASTER", 100)]
    assert arbitrate(again, 20.0, HOLD).demote == (1,)


def test_a_demoted_master_report_is_not_a_second_master() -> None:
    # Its report may lag the demotion by a round.
    d = arbitrate([view(0, "MASTER", 200), view(1, "MASTER", 100, demoted=True, at=9.0)],
                  10.0, HOLD)
    assert d.demote == ()
    assert d.release == ()
