"""agent/core/mapping.py: source records -> desired state (attributes, identity, nesting, admins)."""

from __future__ import annotations

import pytest

from agent.core.mapping import MappingRules, lookup, map_directory
from agent.core.model import User
from connectors.base import Directory, GroupRecord, UserRecord
from connectors.files import FileSource

FILE_RULES = MappingRules.for_source(FileSource)


def person(uid: str, email: str, active: bool = True, **attributes) -> UserRecord:
    return UserRecord(uid, {"userName": email, "email": email, **attributes}, active)


def team(gid: str, name: str, *members: str) -> GroupRecord:
    return GroupRecord(gid, {"displayName": name}, frozenset(members))


def mapped(*records, rules: MappingRules = FILE_RULES):
    users = [r for r in records if isinstance(r, UserRecord)]
    groups = [r for r in records if isinstance(r, GroupRecord)]
    return map_directory(Directory.of(users, groups), rules)


def members_of(desired, name: str) -> set[str]:
    group = next(g for g in desired.groups.values() if g.display_name == name)
    return {desired.users[m].user_name for m in group.members}


def problem_ids(desired, kind: str = "user") -> set[str]:
    return {p.source_id for p in desired.problems if p.kind == kind}


# ------------------------------------------------------------------ attributes


def test_default_file_mapping():
    record = UserRecord("u1", {
        "userName": "alice@example.org", "email": "alice@example.org", "givenName": "Alice",
        "familyName": "Archer", "displayName": "Alice A.", "title": "Engineer",
        "department": "R&D", "employeeNumber": "42", "shoeSize": "38",
    })
    user = mapped(record).users["u1"]
    assert user == User("u1", "alice@example.org", True, {
        "userName": "alice@example.org", "email": "alice@example.org",
        "name.givenName": "Alice", "name.familyName": "Archer", "displayName": "Alice A.",
        "title": "Engineer", "department": "R&D", "employeeNumber": "42",
    })


def test_values_are_trimmed_and_empty_values_dropped():
    user = mapped(person("u1", "a@example.org", title="  Lead  ", department="")).users["u1"]
    assert user.attributes["title"] == "Lead"
    assert "department" not in user.attributes


def test_override_replaces_the_default_source_attribute():
    rules = MappingRules.for_source(FileSource, {"title": "jobTitle"})
    user = mapped(person("u1", "a@example.org", title="Old", jobTitle="New"), rules=rules).users["u1"]
    assert user.attributes["title"] == "New"


def test_override_list_takes_the_first_non_empty_attribute():
    rules = MappingRules.for_source(FileSource, {"department": ["department", "ou"]})
    first = mapped(person("u1", "a@example.org", department="", ou="Ops"), rules=rules)
    both = mapped(person("u1", "a@example.org", department="Eng", ou="Ops"), rules=rules)
    assert first.users["u1"].attributes["department"] == "Ops"
    assert both.users["u1"].attributes["department"] == "Eng"


def test_override_keeps_the_other_defaults():
    rules = MappingRules.for_source(FileSource, {"title": "jobTitle"})
    assert rules.user_attributes["email"] == ("email",)
    assert rules.user_attributes["title"] == ("jobTitle",)


def test_user_name_falls_back_to_email():
    record = UserRecord("u1", {"email": "bob@example.org"})
    user = mapped(record).users["u1"]
    assert user.user_name == "bob@example.org"
    assert user.attributes["userName"] == "bob@example.org"


def test_email_falls_back_to_an_address_like_user_name():
    user = mapped(UserRecord("u1", {"userName": "carol@example.org"})).users["u1"]
    assert user.attributes["email"] == "carol@example.org"


def test_a_user_name_that_is_no_address_gives_no_email():
    user = mapped(UserRecord("u1", {"userName": "carol"})).users["u1"]
    assert user.user_name == "carol"
    assert "email" not in user.attributes


def test_display_name_falls_back_to_given_and_family_names():
    user = mapped(person("u1", "d@example.org", givenName="Dana", familyName="Diaz")).users["u1"]
    assert user.attributes["displayName"] == "Dana Diaz"


def test_display_name_from_a_given_name_alone():
    user = mapped(person("u1", "d@example.org", givenName="Dana")).users["u1"]
    assert user.attributes["displayName"] == "Dana"


def test_no_display_name_without_any_name():
    assert "displayName" not in mapped(person("u1", "d@example.org")).users["u1"].attributes


def test_dotted_lookup_reaches_into_nested_dicts():
    rules = MappingRules({"userName": ("profile.login",), "email": ("profile.email",)})
    record = UserRecord("u1", {"profile": {"login": "eve@example.org", "email": "eve@corp.example"}})
    user = mapped(record, rules=rules).users["u1"]
    assert user.user_name == "eve@example.org"
    assert user.attributes["email"] == "eve@corp.example"


def test_flat_key_with_a_dot_wins_over_nesting():
    attributes = {"profile.email": "flat@example.org", "profile": {"email": "nested@example.org"}}
    assert lookup(attributes, "profile.email") == "flat@example.org"


def test_dotted_lookup_of_a_missing_path_is_empty():
    assert lookup({"profile": {"login": "x"}}, "profile.email") == ""
    assert lookup({"profile": "not a dict"}, "profile.email") == ""


def test_list_values_take_the_first_non_empty():
    assert lookup({"mail": ["", None, "first@example.org", "second@example.org"]}, "mail") \
        == "first@example.org"
    assert lookup({"mail": ["", None]}, "mail") == ""


@pytest.mark.parametrize("value, expected", [(True, "true"), (False, "false"), (42, "42"),
                                             ({"a": 1}, ""), (None, "")])
def test_lookup_renders_scalars_as_text(value, expected):
    assert lookup({"x": value}, "x") == expected


# ------------------------------------------------------------------ problems


def test_record_without_user_name_or_email_is_a_problem():
    desired = mapped(UserRecord("u1", {"givenName": "Nobody"}), person("u2", "ok@example.org"))
    assert set(desired.users) == {"u2"}
    assert problem_ids(desired) == {"u1"}
    assert desired.held_users == {"u1"}


def test_duplicate_user_names_are_problems_for_every_duplicate():
    desired = mapped(person("u1", "Sam@example.org"), person("u2", "sam@EXAMPLE.org"),
                     person("u3", "other@example.org"))
    assert set(desired.users) == {"u3"}
    assert problem_ids(desired) == {"u1", "u2"}
    assert all("share the name" in p.reason for p in desired.problems)


def test_duplicate_group_names_are_problems_for_every_duplicate():
    desired = mapped(person("u1", "a@example.org"), team("g1", "Eng", "u1"),
                     team("g2", "ENG", "u1"), team("g3", "Ops"))
    assert {g.display_name for g in desired.groups.values()} == {"Ops"}
    assert problem_ids(desired, "group") == {"g1", "g2"}


def test_group_without_a_name_is_a_problem():
    desired = mapped(GroupRecord("g1", {}, frozenset()))
    assert not desired.groups
    assert problem_ids(desired, "group") == {"g1"}


# ------------------------------------------------------------------ groups and nesting


def test_nested_groups_are_flattened():
    desired = mapped(person("u1", "a@example.org"), person("u2", "b@example.org"),
                     person("u3", "c@example.org"),
                     team("g-all", "All", "u1", "g-eng"), team("g-eng", "Eng", "u2", "g-sre"),
                     team("g-sre", "SRE", "u3"))
    assert members_of(desired, "All") == {"a@example.org", "b@example.org", "c@example.org"}
    assert members_of(desired, "Eng") == {"b@example.org", "c@example.org"}
    assert members_of(desired, "SRE") == {"c@example.org"}


def test_group_cycles_are_tolerated():
    desired = mapped(person("u1", "a@example.org"), person("u2", "b@example.org"),
                     person("u3", "c@example.org"),
                     team("g1", "One", "u1", "g2"), team("g2", "Two", "u2", "g3"),
                     team("g3", "Three", "u3", "g1"))
    everyone = {"a@example.org", "b@example.org", "c@example.org"}
    assert members_of(desired, "One") == members_of(desired, "Two") \
        == members_of(desired, "Three") == everyone


def test_a_group_that_contains_itself_is_tolerated():
    desired = mapped(person("u1", "a@example.org"), team("g1", "Self", "u1", "g1"))
    assert members_of(desired, "Self") == {"a@example.org"}


def test_unknown_member_ids_are_ignored():
    desired = mapped(person("u1", "a@example.org"), team("g1", "Eng", "u1", "ghost", "g-gone"))
    assert desired.groups["g1"].members == {"u1"}
    assert not desired.problems


def test_inactive_users_are_not_group_members():
    desired = mapped(person("u1", "a@example.org"), person("u2", "b@example.org", active=False),
                     team("g-outer", "Outer", "g-inner"), team("g-inner", "Inner", "u1", "u2"))
    assert members_of(desired, "Inner") == {"a@example.org"}
    assert members_of(desired, "Outer") == {"a@example.org"}
    assert desired.users["u2"].active is False        # still mapped, so it can be deactivated


def test_unmappable_users_are_not_group_members():
    desired = mapped(person("u1", "a@example.org"), UserRecord("u2", {}),
                     team("g1", "Eng", "u1", "u2"))
    assert desired.groups["g1"].members == {"u1"}


# ------------------------------------------------------------------ the admin group


@pytest.mark.parametrize("admin_group", ["g-it", "IT Admins", "it admins"])
def test_admin_group_by_id_or_name_is_renamed(admin_group):
    rules = MappingRules.for_source(FileSource, admin_group=admin_group)
    desired = mapped(person("u1", "a@example.org"), team("g-it", "IT Admins", "u1"),
                     team("g-eng", "Engineering", "u1"), rules=rules)
    assert desired.groups["g-it"].display_name == "Split_Administrators"
    assert desired.groups["g-eng"].display_name == "Engineering"
    assert not desired.problems


def test_admin_group_takes_the_configured_target_name():
    rules = MappingRules.for_source(FileSource, admin_group="g-it", admin_group_name="_fme_admins")
    desired = mapped(person("u1", "a@example.org"), team("g-it", "IT Admins", "u1"), rules=rules)
    assert desired.groups["g-it"].display_name == "_fme_admins"


def test_unknown_admin_group_is_reported():
    rules = MappingRules.for_source(FileSource, admin_group="Domain Admins")
    desired = mapped(person("u1", "a@example.org"), team("g-it", "IT Admins", "u1"), rules=rules)
    assert [p.key for p in desired.problems] == ["Domain Admins"]
    assert "admin_group" in desired.problems[0].reason
    assert desired.groups["g-it"].display_name == "IT Admins"


@pytest.mark.parametrize("admin_group", ["", "g-it"])
@pytest.mark.parametrize("look_alike", ["Split_Administrators", "SPLIT_administrators"])
def test_a_group_that_merely_has_the_admin_name_never_makes_admins(admin_group, look_alike):
    rules = MappingRules.for_source(FileSource, admin_group=admin_group)
    desired = mapped(person("u1", "a@example.org"), person("u2", "b@example.org"),
                     team("g-it", "IT Admins", "u1"), team("g-fake", look_alike, "u2"),
                     rules=rules)
    assert "g-fake" not in desired.groups
    problem = next(p for p in desired.problems if p.source_id == "g-fake")
    assert problem.kind == "group" and "sync.admin_group" in problem.reason
    admins = [g for g in desired.groups.values() if g.display_name == "Split_Administrators"]
    assert [g.members for g in admins] == ([{"u1"}] if admin_group else [])


# ------------------------------------------------------------------ digests


def test_digest_is_independent_of_attribute_order():
    forward = User("u1", "a@example.org", True, {"userName": "a@example.org", "title": "X"})
    backward = User("u1", "a@example.org", True, {"title": "X", "userName": "a@example.org"})
    assert forward.digest == backward.digest


def test_digest_changes_with_any_attribute_or_the_active_flag():
    base = User("u1", "a@example.org", True, {"userName": "a@example.org", "title": "X"})
    retitled = User("u1", "a@example.org", True, {"userName": "a@example.org", "title": "Y"})
    disabled = User("u1", "a@example.org", False, {"userName": "a@example.org", "title": "X"})
    assert len({base.digest, retitled.digest, disabled.digest}) == 3


def test_mapping_the_same_directory_twice_gives_the_same_digests():
    records = [person("u1", "a@example.org", givenName="Ann", title="Lead"),
               team("g1", "Eng", "u1")]
    first, second = mapped(*records), mapped(*reversed(records))
    assert first.users["u1"].digest == second.users["u1"].digest
    assert first.groups["g1"].digest == second.groups["g1"].digest


def test_digest_is_pinned():
    # A change here makes every stored snapshot look stale and re-sends every user.
    user = User("u1", "a@example.org", True,
                {"userName": "a@example.org", "email": "a@example.org"})
    assert user.digest == "cb7a4dbb90caf33198b3d2a2e3516d85"
