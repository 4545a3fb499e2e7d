"""agent/core/guard.py: the user guard, the group guard and what a reconcile may record."""

from __future__ import annotations

import pytest

from agent.config import Threshold
from agent.core.guard import guard
from agent.core.model import DesiredState, Group, Snapshot, User
from agent.core.plan import Plan
from tests.plan_blocks import desired, group, plan, snapshot, user


def managed(count: int, active: bool = True) -> Snapshot:
    return snapshot(*(user(f"u{i}", f"user{i}@example.org", active) for i in range(count)))


def leaving(have: Snapshot, count: int) -> tuple[Plan, DesiredState]:
    """The plan when ``count`` of the snapshot's users are gone from the source."""
    stay = [User(u.source_id, u.user_name, True, u.attributes)
            for u in list(have.users.values())[count:]]
    want = desired(*stay)
    return plan(want, have), want


def test_guard_stops_an_empty_source_when_users_are_managed():
    have = managed(3)
    want = desired()
    stop = guard(plan(want, have), want, have, Threshold(100, True))
    assert stop is not None
    assert "no users" in stop.reason and "3" in stop.reason


def test_guard_lets_an_empty_source_through_on_the_first_run():
    want = desired()
    assert guard(plan(want, Snapshot.empty()), want, Snapshot.empty(), Threshold(0, False)) is None


def test_guard_lets_an_empty_source_through_when_nobody_is_active():
    have = managed(3, active=False)
    want = desired()
    assert guard(plan(want, have), want, have, Threshold(0, False)) is None


@pytest.mark.parametrize("leavers, stops", [(2, False), (3, False), (4, True)])
def test_guard_count_threshold_stops_only_above_the_limit(leavers, stops):
    have = managed(10)
    p, want = leaving(have, leavers)
    stop = guard(p, want, have, Threshold(3, False))
    assert (stop is not None) is stops
    if stops:
        assert "4 deactivations" in stop.reason and "max_deactivations" in stop.reason


@pytest.mark.parametrize("leavers, stops", [(1, False), (2, False), (3, True)])
def test_guard_percentage_threshold_rounds_up(leavers, stops):
    have = managed(11)             # 10% of 11 is 1.1: up to 2 may leave
    p, want = leaving(have, leavers)
    assert (guard(p, want, have, Threshold(10, True)) is not None) is stops


def test_guard_counts_users_disabled_in_the_source_too():
    have = managed(4)
    want = desired(*(User(u.source_id, u.user_name, False, u.attributes)
                     for u in have.users.values()))
    stop = guard(plan(want, have), want, have, Threshold(2, False))
    assert stop is not None and "4 deactivations" in stop.reason


def test_guard_passes_a_plan_without_deactivations():
    have = managed(2)
    want = desired(*(User(u.source_id, u.user_name, True, u.attributes)
                     for u in have.users.values()), user("u9", "new@example.org"))
    assert guard(plan(want, have), want, have, Threshold(0, False)) is None


# ------------------------------------------------------------------ the group guard

TEN = Threshold(10, True)
PEOPLE = tuple(user(f"p{i}", f"p{i}@example.org") for i in range(10))


def teams(n: int, *members_of_each: str) -> list[Group]:
    return [group(f"g{i}", f"Team {i}", *members_of_each) for i in range(n)]


def group_guard(want: DesiredState, have: Snapshot, limit=TEN):
    return guard(plan(want, have), want, have, Threshold(100, True), limit)


def test_group_guard_stops_a_source_that_returns_no_groups():
    have = snapshot(*PEOPLE, *teams(3, "p0"))
    stop = group_guard(desired(*PEOPLE), have)
    assert stop and "no groups while 3 are managed" in stop.reason


def test_group_guard_stops_a_source_whose_groups_all_came_back_empty():
    have = snapshot(*PEOPLE, *teams(3, "p0", "p1"))
    stop = group_guard(desired(*PEOPLE, *teams(3)), have)
    assert stop and "no group in the source has a single member" in stop.reason


def test_group_guard_counts_deletions_against_the_threshold():
    have = snapshot(*PEOPLE, *teams(20, "p0"))
    assert group_guard(desired(*PEOPLE, *teams(18, "p0")), have) is None      # 2 of 20
    stop = group_guard(desired(*PEOPLE, *teams(17, "p0")), have)              # 3 > 10% of 20
    assert stop and "3 group deletions" in stop.reason and "max_group_changes" in stop.reason
    assert group_guard(desired(*PEOPLE, *teams(17, "p0")), have, Threshold(3, False)) is None


def test_group_guard_counts_removals_of_people_who_stay_not_of_leavers():
    everyone = [p.source_id for p in PEOPLE]
    have = snapshot(*PEOPLE, group("g", "All", *everyone))
    shrunk = group("g", "All", *everyone[2:])
    stop = group_guard(desired(*PEOPLE, shrunk), have)            # 2 stay but lose the group
    assert stop and "2 member removals of people who stay" in stop.reason
    leavers = desired(*PEOPLE[2:], shrunk)                         # 2 leave: the user guard's
    assert group_guard(leavers, have) is None


def test_a_source_that_said_nothing_about_groups_leaves_them_alone():
    have = snapshot(*PEOPLE, *teams(3, "p0"))
    want = DesiredState(users={p.source_id: p for p in PEOPLE}, groups={}, groups_read=False)
    p = plan(want, have)
    assert p.is_empty
    assert guard(p, want, have, TEN, TEN) is None
