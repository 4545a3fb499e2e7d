"""agent/core/plan.py: make_plan and the guard, as unit tests and as a property of a whole sync."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import Threshold
from agent.core.mapping import MappingRules, map_directory
from agent.core.model import (DesiredState, Group, Problem, PushedGroup, PushedUser, Snapshot, User,
                         group_digest, user_digest)
from agent.core.guard import guard
from agent.core.plan import PHASES, OpKind, Plan, PlanOptions, make_plan
from connectors.base import Directory, GroupRecord, UserRecord
from connectors.files import FileSource

ADMINS = "Split_Administrators"


# ------------------------------------------------------------------ building blocks


def user(sid: str, email: str, active: bool = True, **attributes: str) -> User:
    return User(sid, email, active, {"userName": email, "email": email, **attributes})


def pushed(u: User, active: bool | None = None) -> PushedUser:
    """What the snapshot holds after ``u`` was pushed (optionally with another active flag)."""
    active = u.active if active is None else active
    return PushedUser(u.source_id, f"scim-{u.source_id}", u.user_name, active,
                      dict(u.attributes), user_digest(u.attributes, active))


def group(sid: str, name: str, *members: str) -> Group:
    return Group(sid, name, frozenset(members))


def pushed_group(g: Group) -> PushedGroup:
    return PushedGroup(g.source_id, f"scim-{g.source_id}", g.display_name, g.digest, g.members)


def desired(*objects, problems: tuple[Problem, ...] = ()) -> DesiredState:
    return DesiredState(users={o.source_id: o for o in objects if isinstance(o, User)},
                        groups={o.source_id: o for o in objects if isinstance(o, Group)},
                        problems=problems)


def snapshot(*objects) -> Snapshot:
    return Snapshot(
        users={o.source_id: pushed(o) if isinstance(o, User) else o
               for o in objects if isinstance(o, (User, PushedUser))},
        groups={o.source_id: pushed_group(o) if isinstance(o, Group) else o
                for o in objects if isinstance(o, (Group, PushedGroup))})


def plan(want: DesiredState, have: Snapshot, **options) -> Plan:
    return make_plan(want, have, PlanOptions(**options))


def ops(p: Plan) -> list[tuple[str, str]]:
    return [(op.kind.value, op.key) for op in p.ops]


def the_op(p: Plan, kind: OpKind):
    matching = [op for op in p.ops if op.kind == kind]
    assert len(matching) == 1, ops(p)
    return matching[0]


ALICE = user("u1", "alice@example.org", displayName="Alice Archer", title="Engineer")
BOB = user("u2", "bob@example.org", displayName="Bob Baker")
CAROL = user("u3", "carol@example.org", displayName="Carol Chen")


# ------------------------------------------------------------------ users


def test_new_active_user_is_created_with_all_attributes():
    p = plan(desired(ALICE), Snapshot.empty())
    op = the_op(p, OpKind.CREATE_USER)
    assert (op.key, op.source_id) == ("alice@example.org", "u1")
    assert op.attributes == ALICE.attributes
    assert op.user == ALICE
    assert len(p.ops) == 1


def test_inactive_user_never_pushed_is_not_created():
    p = plan(desired(user("u1", "gone@example.org", active=False)), Snapshot.empty())
    assert p.is_empty


def test_nothing_changed_gives_an_empty_plan():
    eng = group("g1", "Engineering", "u1", "u2")
    state = (ALICE, BOB, eng)
    assert plan(desired(*state), snapshot(*state)).is_empty


def test_email_change_is_one_update_with_old_and_new():
    moved = user("u1", "alice.archer@example.org", displayName="Alice Archer", title="Engineer")
    p = plan(desired(moved), snapshot(ALICE))
    assert ops(p) == [("update_user", "alice.archer@example.org")]
    assert the_op(p, OpKind.UPDATE_USER).changed == {
        "email": ("alice@example.org", "alice.archer@example.org"),
        "userName": ("alice@example.org", "alice.archer@example.org"),
    }


def test_name_change_is_an_update():
    renamed = user("u1", "alice@example.org", displayName="Alice Baker", title="Engineer")
    p = plan(desired(renamed), snapshot(ALICE))
    assert ops(p) == [("update_user", "alice@example.org")]
    assert the_op(p, OpKind.UPDATE_USER).changed == {"displayName": ("Alice Archer", "Alice Baker")}


def test_removed_attribute_is_an_update_to_none():
    untitled = user("u1", "alice@example.org", displayName="Alice Archer")
    p = plan(desired(untitled), snapshot(ALICE))
    assert the_op(p, OpKind.UPDATE_USER).changed == {"title": ("Engineer", None)}


def test_user_disabled_in_the_source_is_deactivated_with_a_reason():
    disabled = user("u1", "alice@example.org", active=False, displayName="Alice Archer",
                    title="Engineer")
    p = plan(desired(disabled), snapshot(ALICE))
    op = the_op(p, OpKind.DEACTIVATE_USER)
    assert len(p.ops) == 1
    assert op.reason == "disabled in the source"
    assert op.user == disabled


def test_user_removed_from_the_source_is_deactivated():
    p = plan(desired(BOB), snapshot(ALICE, BOB))
    op = the_op(p, OpKind.DEACTIVATE_USER)
    assert len(p.ops) == 1
    assert (op.key, op.source_id) == ("alice@example.org", "u1")
    assert "no longer in the source" in op.reason


def test_a_leaver_already_deactivated_is_left_alone():
    p = plan(desired(BOB), snapshot(pushed(ALICE, active=False), BOB))
    assert p.is_empty


def test_returning_user_is_reactivated():
    p = plan(desired(ALICE), snapshot(pushed(ALICE, active=False)))
    op = the_op(p, OpKind.REACTIVATE_USER)
    assert len(p.ops) == 1
    assert op.user == ALICE


def test_returning_user_with_changes_is_reactivated_with_them():
    back = user("u1", "alice@example.org", displayName="Alice Archer", title="Director")
    p = plan(desired(back), snapshot(pushed(ALICE, active=False)))
    assert ops(p) == [("reactivate_user", "alice@example.org")]
    assert the_op(p, OpKind.REACTIVATE_USER).changed == {"title": ("Engineer", "Director")}


def test_deactivate_false_leaves_leavers_alone():
    p = plan(desired(BOB), snapshot(ALICE, BOB), deactivate=False)
    assert p.is_empty


def test_held_user_is_not_deactivated():
    problem = Problem("user", "u1", "u1", "no userName or e-mail in the source record")
    p = plan(desired(BOB, problems=(problem,)), snapshot(ALICE, BOB))
    assert p.is_empty
    assert p.problems == (problem,)


@pytest.mark.parametrize("reason", ["no userName or e-mail in the source record",
                                    "2 source users share the name 'alice@example.org'"])
def test_an_explicit_disable_wins_over_a_hold(reason):
    problem = Problem("user", "u1", "alice@example.org", reason, disabled=True)
    team = group("g", "Team", "u1", "u2")
    p = plan(desired(BOB, group("g", "Team", "u2"), problems=(problem,)),
             snapshot(ALICE, BOB, team))
    assert ops(p) == [("remove_members", "Team"), ("deactivate_user", "alice@example.org")]
    off = the_op(p, OpKind.DEACTIVATE_USER)
    assert off.source_id == "u1" and "disabled in the source" in off.reason and reason in off.reason
    assert the_op(p, OpKind.REMOVE_MEMBERS).members == ("u1",)


def test_a_disabled_held_user_is_deactivated_even_when_leavers_are_not():
    problem = Problem("user", "u1", "u1", "no userName or e-mail", disabled=True)
    p = plan(desired(BOB, problems=(problem,)), snapshot(ALICE, BOB), deactivate=False)
    assert ops(p) == [("deactivate_user", "alice@example.org")]


def test_held_user_is_not_removed_from_groups():
    problem = Problem("user", "u1", "u1", "no userName or e-mail in the source record")
    p = plan(desired(BOB, group("g1", "Eng", "u2"), problems=(problem,)),
             snapshot(ALICE, BOB, group("g1", "Eng", "u1", "u2")))
    assert p.is_empty


# ------------------------------------------------------------------ groups


def test_new_group_is_created_and_then_given_its_members():
    p = plan(desired(ALICE, BOB, group("g1", "Eng", "u1", "u2")), snapshot(ALICE, BOB))
    assert ops(p) == [("create_group", "Eng"), ("add_members", "Eng")]
    assert the_op(p, OpKind.CREATE_GROUP).attributes == {"displayName": "Eng"}
    added = the_op(p, OpKind.ADD_MEMBERS)
    assert added.members == ("u1", "u2")
    assert added.member_keys == ("alice@example.org", "bob@example.org")


def test_new_empty_group_is_created_without_member_ops():
    p = plan(desired(group("g1", "Eng")), Snapshot.empty())
    assert ops(p) == [("create_group", "Eng")]


def test_group_rename_is_update_group():
    p = plan(desired(ALICE, group("g1", "Platform", "u1")),
             snapshot(ALICE, group("g1", "Infra", "u1")))
    assert ops(p) == [("update_group", "Platform")]
    assert the_op(p, OpKind.UPDATE_GROUP).changed == {"displayName": ("Infra", "Platform")}


def test_member_added_and_member_removed():
    p = plan(desired(ALICE, BOB, CAROL, group("g1", "Eng", "u1", "u3")),
             snapshot(ALICE, BOB, CAROL, group("g1", "Eng", "u1", "u2")))
    assert ops(p) == [("add_members", "Eng"), ("remove_members", "Eng")]
    assert the_op(p, OpKind.ADD_MEMBERS).members == ("u3",)
    assert the_op(p, OpKind.REMOVE_MEMBERS).member_keys == ("bob@example.org",)


def test_leaver_is_removed_from_groups_before_being_deactivated():
    p = plan(desired(BOB, group("g1", "Eng", "u2")),
             snapshot(ALICE, BOB, group("g1", "Eng", "u1", "u2")))
    assert ops(p) == [("remove_members", "Eng"), ("deactivate_user", "alice@example.org")]
    assert the_op(p, OpKind.REMOVE_MEMBERS).member_keys == ("alice@example.org",)


def test_group_removed_from_the_source_is_deleted():
    p = plan(desired(ALICE), snapshot(ALICE, group("g1", "Eng", "u1")))
    assert ops(p) == [("delete_group", "Eng")]
    assert the_op(p, OpKind.DELETE_GROUP).refused == ""


@pytest.mark.parametrize("length, refused", [(24, False), (25, True), (40, True)])
def test_group_names_of_25_characters_or_more_are_refused_on_create(length, refused):
    name = "G" * length
    p = plan(desired(ALICE, group("g1", name, "u1")), snapshot(ALICE))
    create = the_op(p, OpKind.CREATE_GROUP)
    assert bool(create.refused) is refused
    if refused:
        assert "25" in create.refused
        assert ops(p) == [("create_group", name)]     # no members for a group never created
    else:
        assert ops(p) == [("create_group", name), ("add_members", name)]


def test_rename_to_a_long_name_is_refused_and_members_keep_the_old_name():
    long_name = "Engineering and Operations"           # 26 characters
    p = plan(desired(ALICE, BOB, group("g1", long_name, "u1", "u2")),
             snapshot(ALICE, BOB, group("g1", "Eng", "u1")))
    rename = the_op(p, OpKind.UPDATE_GROUP)
    assert rename.refused and "25" in rename.refused
    assert the_op(p, OpKind.ADD_MEMBERS).key == "Eng"


@pytest.mark.parametrize("name", ["Administrators", "administrators", "ADMINISTRATORS"])
def test_the_reserved_name_administrators_is_refused(name):
    p = plan(desired(ALICE, group("g1", name, "u1")), snapshot(ALICE))
    assert "reserved" in the_op(p, OpKind.CREATE_GROUP).refused


def test_rename_to_administrators_is_refused():
    p = plan(desired(group("g1", "Administrators")), snapshot(group("g1", "Admins")))
    assert "reserved" in the_op(p, OpKind.UPDATE_GROUP).refused


def test_split_administrators_itself_is_not_refused():
    p = plan(desired(ALICE, group("g1", ADMINS, "u1")), snapshot(ALICE))
    assert all(not op.refused for op in p.ops)


@pytest.mark.parametrize("admin_name", [ADMINS, "_fme_admins"])
def test_the_admin_group_is_never_deleted(admin_name):
    p = plan(desired(ALICE), snapshot(ALICE, group("g1", admin_name, "u1")),
             admin_group_name=admin_name)
    delete = the_op(p, OpKind.DELETE_GROUP)
    assert "never deleted" in delete.refused


def test_the_admin_group_is_never_emptied():
    p = plan(desired(ALICE, group("g1", ADMINS)), snapshot(ALICE, group("g1", ADMINS, "u1")))
    remove = the_op(p, OpKind.REMOVE_MEMBERS)
    assert "at least one member" in remove.refused


def test_the_admin_group_may_lose_some_members():
    p = plan(desired(ALICE, BOB, group("g1", ADMINS, "u1")),
             snapshot(ALICE, BOB, group("g1", ADMINS, "u1", "u2")))
    assert the_op(p, OpKind.REMOVE_MEMBERS).refused == ""


def test_the_only_admin_can_be_handed_over():
    p = plan(desired(ALICE, BOB, group("g1", ADMINS, "u2")),
             snapshot(ALICE, BOB, group("g1", ADMINS, "u1")))
    assert ops(p) == [("add_members", ADMINS), ("remove_members", ADMINS)]
    assert the_op(p, OpKind.REMOVE_MEMBERS).refused == ""


def test_the_admin_group_is_never_renamed_away():
    p = plan(desired(ALICE, group("g1", "IT Admins", "u1")),
             snapshot(ALICE, group("g1", ADMINS, "u1")))
    assert "Split_Administrators" in the_op(p, OpKind.UPDATE_GROUP).refused


def test_groups_false_produces_no_group_ops():
    p = plan(desired(ALICE, group("g1", "New", "u1"), group("g2", "Renamed", "u1")),
             snapshot(group("g2", "Old"), group("g3", "Gone")), groups=False)
    assert ops(p) == [("create_user", "alice@example.org")]


# ------------------------------------------------------------------ order and output


def test_ops_are_ordered_by_phase():
    want = desired(
        ALICE,                                                     # new
        user("u2", "bob@example.org", displayName="Robert Baker"),  # renamed
        user("u4", "dan@example.org"),                              # returns
        group("g-new", "New", "u1"),
        group("g-ren", "Renamed", "u2"),
        group("g-eng", "Eng", "u1", "u4"),
    )
    have = snapshot(
        BOB, CAROL, pushed(user("u4", "dan@example.org"), active=False),
        group("g-ren", "Old name", "u2"),
        group("g-eng", "Eng", "u3"),
        group("g-gone", "Gone"),
    )
    assert ops(plan(want, have)) == [
        ("create_user", "alice@example.org"),
        ("reactivate_user", "dan@example.org"),
        ("update_user", "bob@example.org"),
        ("create_group", "New"),
        ("update_group", "Renamed"),
        ("add_members", "Eng"),
        ("add_members", "New"),
        ("remove_members", "Eng"),
        ("delete_group", "Gone"),
        ("deactivate_user", "carol@example.org"),
    ]


def test_a_rename_runs_before_the_hire_that_takes_its_old_name():
    alice = user("u1", "alice@example.org")
    have = snapshot(alice)
    want = desired(user("u1", "alice.old@example.org"), user("u9", "Alice@example.org"))
    p = plan(want, have)
    rename, hire = the_op(p, OpKind.UPDATE_USER), the_op(p, OpKind.CREATE_USER)
    assert rename.phase < hire.phase and not rename.refused and not hire.refused
    assert [op.kind for op in p.ops] == [OpKind.UPDATE_USER, OpKind.CREATE_USER]


def test_a_chain_of_renames_runs_from_its_free_end():
    have = snapshot(user("a", "x@example.org"), user("b", "y@example.org"))
    want = desired(user("a", "y@example.org"), user("b", "z@example.org"),
                   user("c", "x@example.org"))
    waves = {op.source_id: op.phase for op in plan(want, have).ops}
    assert waves["b"] < waves["a"] < waves["c"]      # y is freed by b, x by a


def test_user_names_that_would_swap_are_refused_naming_both_and_nothing_else_waits():
    have = snapshot(user("a", "x@example.org"), user("b", "y@example.org"), CAROL)
    want = desired(user("a", "y@example.org"), user("b", "x@example.org"),
                   user("u3", "carol@example.org", displayName="Carol C."))
    p = plan(want, have)
    refused = {op.source_id: op.refused for op in p.ops if op.refused}
    assert set(refused) == {"a", "b"}
    assert all("x@example.org" in r and "y@example.org" in r and "swap" in r
               for r in refused.values())
    carol = next(op for op in p.ops if op.source_id == "u3")
    assert not carol.refused and carol.phase == (0, 0)


def test_a_rename_into_a_name_a_leaver_still_holds_is_refused_but_a_hire_may_take_it():
    have = snapshot(user("gone", "cy@example.org"), user("b", "ben@example.org"))
    rename = plan(desired(user("b", "cy@example.org")), have)
    refused = next(op for op in rename.ops if op.source_id == "b")
    assert "cy@example.org" in refused.refused and "source id gone" in refused.refused
    hire = plan(desired(user("b", "ben@example.org"), user("new", "cy@example.org")), have)
    assert not any(op.refused for op in hire.ops)       # adopt.found_user hands it over


def test_phase_table_puts_creates_before_members_and_deactivations_last():
    phase = {kind: i for i, kinds in enumerate(PHASES) for kind in kinds}
    assert set(phase) == set(OpKind)
    assert phase[OpKind.CREATE_USER] < phase[OpKind.ADD_MEMBERS]
    assert phase[OpKind.CREATE_GROUP] < phase[OpKind.ADD_MEMBERS]
    assert max(phase.values()) == phase[OpKind.DEACTIVATE_USER]
    assert list(phase.values()).count(phase[OpKind.DEACTIVATE_USER]) == 1


def test_plan_json_matches_the_contract():
    bob_renamed = user("u2", "bob@example.org", displayName="Robert Baker")
    p = plan(desired(ALICE, bob_renamed, group("g1", "Engineering", "u1", "u2")),
             snapshot(BOB, group("g1", "Engineering")))
    document = p.to_dict()
    assert list(document) == ["summary", "changes"]
    assert list(document["summary"]) == [
        "create_user", "update_user", "deactivate_user", "reactivate_user",
        "create_group", "update_group", "delete_group", "add_members", "remove_members"]
    assert document == {
        "summary": {"create_user": 1, "update_user": 1, "deactivate_user": 0,
                    "reactivate_user": 0, "create_group": 0, "update_group": 0,
                    "delete_group": 0, "add_members": 2, "remove_members": 0},
        "changes": [
            {"op": "create_user", "key": "alice@example.org", "source_id": "u1",
             "attributes": {"userName": "alice@example.org", "email": "alice@example.org",
                            "displayName": "Alice Archer", "title": "Engineer"}},
            {"op": "update_user", "key": "bob@example.org", "source_id": "u2",
             "changed": {"displayName": ["Bob Baker", "Robert Baker"]}},
            {"op": "add_members", "key": "Engineering",
             "members": ["alice@example.org", "bob@example.org"]},
        ],
    }


def test_plan_json_lists_problems_and_reasons():
    problem = Problem("user", "u9", "u9", "no userName or e-mail in the source record")
    p = plan(desired(BOB, problems=(problem,)), snapshot(ALICE, BOB))
    document = p.to_dict()
    assert document["changes"] == [{"op": "deactivate_user", "key": "alice@example.org",
                                    "source_id": "u1",
                                    "reason": "no longer in the source or its scope"}]
    assert document["problems"] == [{"kind": "user", "key": "u9", "source_id": "u9",
                                     "reason": "no userName or e-mail in the source record"}]


def test_summary_counts_member_references_not_requests():
    p = plan(desired(ALICE, BOB, CAROL, group("g1", "A", "u1", "u2", "u3"), group("g2", "B")),
             snapshot(ALICE, BOB, CAROL, group("g1", "A"), group("g2", "B", "u1", "u2")))
    assert p.summary()["add_members"] == 3
    assert p.summary()["remove_members"] == 2
    assert p.count(OpKind.ADD_MEMBERS) == 3


def test_only_keeps_the_named_users_and_groups_case_insensitively():
    p = plan(desired(ALICE, BOB, group("g1", "Eng", "u1")), Snapshot.empty())
    assert ops(p.only(["ALICE@example.org", "eng"])) == [
        ("create_user", "alice@example.org"), ("create_group", "Eng"), ("add_members", "Eng")]


def test_only_with_unknown_keys_is_empty():
    p = plan(desired(ALICE), Snapshot.empty())
    assert p.only(["nobody@example.org"]).is_empty


# ------------------------------------------------------------------ the guard


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


# =====================================================================================
# Property: after applying each plan to a target, the target is the source's projection and
# planning again yields nothing.

USER_IDS = tuple(f"u{i}" for i in range(6))
GROUP_IDS = tuple(f"g{i}" for i in range(4))
RULES = MappingRules.for_source(FileSource)


@st.composite
def user_records(draw, uid: str) -> UserRecord:
    # The id inside the userName keeps names unique (no duplicate-name problems); the random
    # local part makes renames happen.
    local = draw(st.sampled_from(["ann", "ben", "cy"]))
    user_name = f"{local}.{uid}@example.org"
    attributes = {"userName": user_name}
    if draw(st.booleans()):
        attributes["email"] = user_name.upper() if draw(st.booleans()) else user_name
    for key, choices in (("givenName", ["Ann", "Ben"]), ("familyName", ["Ng", "Li"]),
                         ("displayName", ["A. N.", "B. L."]), ("title", ["Dev", "Ops"])):
        value = draw(st.sampled_from([None, *choices]))
        if value:
            attributes[key] = value
    return UserRecord(uid, attributes, draw(st.booleans()))


@st.composite
def directories(draw) -> Directory:
    users = [draw(user_records(uid)) for uid in sorted(draw(st.sets(st.sampled_from(USER_IDS))))]
    groups = []
    for gid in sorted(draw(st.sets(st.sampled_from(GROUP_IDS)))):
        name = f"{draw(st.sampled_from(['Eng', 'Ops', 'Sales']))} {gid}"
        members = draw(st.frozensets(st.sampled_from(USER_IDS + GROUP_IDS + ("ghost",))))
        groups.append(GroupRecord(gid, {"displayName": name}, members))
    return Directory.of(users, groups)


@dataclass
class TargetUser:
    attributes: dict[str, str]
    active: bool
    managed: bool = True


@dataclass
class TargetGroup:
    name: str
    members: set[str] = field(default_factory=set)
    managed: bool = True


@dataclass
class InMemoryTarget:
    """What a SCIM target holds, keyed by source id; only what the ops say reaches it."""

    users: dict[str, TargetUser] = field(default_factory=dict)
    groups: dict[str, TargetGroup] = field(default_factory=dict)

    @classmethod
    def with_foreign_objects(cls) -> "InMemoryTarget":
        # Objects someone else created on the target: the agent must never touch them.
        return cls(users={"ext-1": TargetUser({"userName": "ceo@example.org"}, True, False)},
                   groups={"ext-g": TargetGroup("Board", {"ext-1"}, False)})

    def apply(self, plan: Plan) -> None:
        phases = [op.phase for op in plan.ops]
        assert phases == sorted(phases), "ops out of phase order"
        for op in plan.ops:
            assert not op.refused, op
            assert op.source_id not in self.foreign_ids(), op
            getattr(self, op.kind.value)(op)

    def foreign_ids(self) -> set[str]:
        return ({sid for sid, u in self.users.items() if not u.managed}
                | {sid for sid, g in self.groups.items() if not g.managed})

    def create_user(self, op):
        assert op.source_id not in self.users
        self.users[op.source_id] = TargetUser(dict(op.attributes), True)

    def _patch(self, op, active: bool | None):
        target = self.users[op.source_id]
        for key, (_, new) in op.changed.items():
            if new is None:
                target.attributes.pop(key, None)
            else:
                target.attributes[key] = new
        if active is not None:
            target.active = active

    def update_user(self, op):
        self._patch(op, None)

    def reactivate_user(self, op):
        self._patch(op, True)

    def deactivate_user(self, op):
        self._patch(op, False)

    def create_group(self, op):
        assert op.source_id not in self.groups
        self.groups[op.source_id] = TargetGroup(op.attributes["displayName"])

    def update_group(self, op):
        self.groups[op.source_id].name = op.changed["displayName"][1]

    def add_members(self, op):
        group = self.groups[op.source_id]
        for member in op.members:
            assert self.users[member].active, "an inactive or missing user added to a group"
        group.members |= set(op.members)

    def remove_members(self, op):
        self.groups[op.source_id].members -= set(op.members)

    def delete_group(self, op):
        del self.groups[op.source_id]

    def snapshot(self) -> Snapshot:
        users = {sid: PushedUser(sid, f"scim-{sid}", u.attributes["userName"], u.active,
                                 dict(u.attributes), user_digest(u.attributes, u.active))
                 for sid, u in self.users.items() if u.managed}
        groups = {sid: PushedGroup(sid, f"scim-{sid}", g.name, group_digest(g.name),
                                   frozenset(g.members))
                  for sid, g in self.groups.items() if g.managed}
        return Snapshot(users, groups)


def assert_target_is_the_projection(target: InMemoryTarget, want: DesiredState,
                                    ever_active: set[str]) -> None:
    for sid, u in want.users.items():
        if u.active or sid in ever_active:
            assert sid in target.users, sid
            assert target.users[sid].active is u.active, sid
            assert target.users[sid].attributes == dict(u.attributes), sid
        else:
            assert sid not in target.users, "an inactive user was created"
    for sid, u in target.users.items():
        if u.managed and sid not in want.users:
            assert not u.active, f"{sid} left the source but is still active"
    managed_groups = {sid: g for sid, g in target.groups.items() if g.managed}
    assert set(managed_groups) == set(want.groups)
    for sid, g in want.groups.items():
        assert managed_groups[sid].name == g.display_name
        assert managed_groups[sid].members == set(g.members)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(directories(), min_size=1, max_size=5))
def test_applied_plans_make_the_target_the_source_projection(steps):
    target = InMemoryTarget.with_foreign_objects()
    foreign = copy.deepcopy((target.users, target.groups))
    ever_active: set[str] = set()
    for directory in steps:
        want = map_directory(directory, RULES)
        assert not want.problems
        target.apply(make_plan(want, target.snapshot()))
        ever_active |= {sid for sid, u in want.users.items() if u.active}

        assert_target_is_the_projection(target, want, ever_active)
        assert make_plan(want, target.snapshot()).is_empty

    assert {k: target.users[k] for k in foreign[0]} == foreign[0]
    assert {k: target.groups[k] for k in foreign[1]} == foreign[1]
