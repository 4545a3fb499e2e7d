"""agent/core/plan.py: make_plan, as unit tests (users, groups, order, output)."""

from __future__ import annotations

import pytest

from agent.core.model import Problem, Snapshot
from agent.core.plan import PHASES, OpKind
from tests.plan_blocks import (ADMINS, ALICE, BOB, CAROL, desired, group, ops, plan, pushed,
                               snapshot, the_op, user)


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
