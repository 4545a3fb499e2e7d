"""agent/core/mapping.py: source records -> desired state (attributes, identity, nesting, admins)."""

from __future__ import annotations

import pytest

from agent.core.expressions import Expression
from agent.core.expressions import lookup
from agent.core.mapping import MappingRules, map_directory
from agent.core.model import User
from agent.core.scope import Scope
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
    assert rules.user_attributes["email"] == Expression.parse("email")
    assert rules.user_attributes["title"] == Expression.parse("jobTitle")


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


# ------------------------------------------------------------------ expressions in the mapping


def test_expressions_of_every_kind_shape_the_user():
    rules = MappingRules.for_source(FileSource, {
        "userName": "{email | lower}",
        "displayName": ["{nick}", "{givenName} {familyName}"],
        "organization": {"constant": "Acme"},
        "title": "jobTitle",
        "department": ["ou", "department"],
    })
    user = mapped(person("u1", "Ann.Lee@EXAMPLE.org", givenName="Ann", familyName="Lee",
                         jobTitle="Lead", department="R&D"), rules=rules).users["u1"]
    assert user.user_name == "ann.lee@example.org"
    assert user.attributes["displayName"] == "Ann Lee"
    assert user.attributes["organization"] == "Acme"
    assert user.attributes["title"] == "Lead"
    assert user.attributes["department"] == "R&D"


def test_a_group_display_name_expression_meets_the_25_character_limit():
    rules = MappingRules.for_source(FileSource, group_attributes={
        "displayName": "{displayName | replace('Department of ', '') | truncate(24) | trim}"})
    desired = mapped(person("u1", "a@example.org"),
                     team("g1", "Department of Research and Development", "u1"),
                     team("g2", "Ops", "u1"), rules=rules)
    assert desired.groups["g1"].display_name == "Research and Development"
    assert desired.groups["g2"].display_name == "Ops"


def test_the_admin_group_is_still_found_by_its_source_name_under_a_name_expression():
    rules = MappingRules.for_source(FileSource, group_attributes={"displayName": "{displayName | upper}"},
                                    admin_group="IT Admins")
    desired = mapped(person("u1", "a@example.org"), team("g-it", "IT Admins", "u1"),
                     team("g-eng", "Engineering", "u1"), rules=rules)
    assert desired.groups["g-it"].display_name == "Split_Administrators"
    assert desired.groups["g-eng"].display_name == "ENGINEERING"


def test_raw_attributes_name_everything_the_mapping_and_the_scope_read():
    rules = MappingRules.for_source(
        FileSource, {"displayName": "{nick} {sn | upper}", "organization": {"constant": "x"}},
        group_attributes={"displayName": "{cn}"},
        scope=Scope.parse([{"action": "exclude", "attribute": "userType", "equals": "Guest"},
                           {"action": "exclude", "objects": "groups", "attribute": "description",
                            "present": True}]))
    names = rules.raw_attributes()
    assert {"nick", "sn", "cn", "userType", "description", "email", "displayName"} <= set(names)
    assert "organization" not in names and names == sorted(names)


# ------------------------------------------------------------------ bad data


@pytest.mark.parametrize("bad", ["Jos\ud800", "x" * 20_000, 10 ** 5000, b"\xff"],
                         ids=["surrogate", "huge-text", "huge-int", "binary"])
def test_bad_data_makes_one_problem_for_that_user_only(bad):
    desired = mapped(person("u1", "a@example.org", title=bad, department=bad),
                     person("u2", "b@example.org", title="ok"), team("g1", "Eng", "u1", "u2"))
    assert set(desired.users) == {"u2"}
    problems = [p for p in desired.problems if p.source_id == "u1"]
    assert len(problems) == 1
    assert problems[0].key == "a@example.org"
    assert "bad data in the source record (title: title is" in problems[0].reason
    assert "department: department is" in problems[0].reason
    assert desired.groups["g1"].members == {"u2"}


def test_a_disabled_user_with_bad_data_is_still_marked_disabled():
    desired = mapped(person("u1", "a@example.org", active=False, title="\udcff"))
    assert desired.problems[0].disabled is True


def test_bad_data_in_a_group_name_is_a_problem_for_that_group():
    desired = mapped(person("u1", "a@example.org"), team("g1", "Eng\ud800", "u1"),
                     team("g2", "Ops", "u1"))
    assert set(desired.groups) == {"g2"}
    assert problem_ids(desired, "group") == {"g1"}


# ------------------------------------------------------------------ scope


def scoped(*entries) -> MappingRules:
    return MappingRules.for_source(FileSource, scope=Scope.parse(list(entries)))


def test_users_out_of_scope_are_not_desired_nor_members():
    rules = scoped({"action": "exclude", "attribute": "userType", "equals": "Guest"},
                   {"action": "exclude", "attribute": "userName", "regex": "^svc-"})
    desired = mapped(person("u1", "a@example.org"),
                     person("u2", "guest@partner.example", userType="Guest"),
                     person("u3", "svc-backup@example.org"),
                     team("g1", "Eng", "u1", "u2", "u3"), rules=rules)
    assert set(desired.users) == {"u1"}
    assert desired.groups["g1"].members == {"u1"}
    assert not desired.problems                  # out of scope is not a problem: it is gone


def test_out_of_scope_users_are_not_checked_for_bad_data():
    rules = scoped({"action": "include", "attribute": "department", "equals": "Sales"})
    desired = mapped(person("u1", "a@example.org", department="Sales"),
                     person("u2", "b@example.org", title="\ud800"), rules=rules)
    assert set(desired.users) == {"u1"} and not desired.problems


def test_groups_can_be_scoped_by_name_pattern_and_nesting_still_counts():
    rules = scoped({"action": "exclude", "objects": "groups", "attribute": "displayName",
                    "regex": "^tmp-"})
    desired = mapped(person("u1", "a@example.org"), person("u2", "b@example.org"),
                     team("g-all", "All", "u1", "g-tmp"), team("g-tmp", "tmp-migration", "u2"),
                     rules=rules)
    assert set(desired.groups) == {"g-all"}
    assert members_of(desired, "All") == {"a@example.org", "b@example.org"}


def test_an_admin_group_out_of_scope_is_reported():
    rules = MappingRules.for_source(FileSource, admin_group="IT Admins", scope=Scope.parse([
        {"action": "include", "objects": "groups", "attribute": "displayName", "equals": "Eng"}]))
    desired = mapped(person("u1", "a@example.org"), team("g-it", "IT Admins", "u1"),
                     team("g-eng", "Eng", "u1"), rules=rules)
    assert set(desired.groups) == {"g-eng"}
    assert [p.reason for p in desired.problems] == [
        "sync.admin_group names no group in the source or its scope"]


# ------------------------------------------------------------------ manager


def test_manager_references_resolve_to_the_managers_source_id():
    records = [person("u-boss", "Boss@example.org"),
               UserRecord("u-dn", {"userName": "dn@example.org",
                                   "dn": "uid=dn, OU=People,dc=example,dc=org"}),
               person("u1", "a@example.org", manager="u-boss"),                 # a source id
               person("u2", "b@example.org", manager="boss@EXAMPLE.org"),       # a userName
               person("u3", "c@example.org", manager="UID=dn,ou=people,DC=example,DC=org"),
               person("u4", "d@example.org", manager="nobody@example.org"),     # unknown
               person("u5", "e@example.org", manager="u5")]                     # oneself
    desired = mapped(*records)
    managers = {sid: u.attributes.get("manager") for sid, u in desired.users.items()}
    assert managers == {"u-boss": None, "u-dn": None, "u1": "u-boss", "u2": "u-boss",
                        "u3": "u-dn", "u4": None, "u5": None}
    assert not desired.problems


def test_a_manager_out_of_scope_is_left_unset():
    rules = MappingRules.for_source(FileSource, scope=Scope.parse([
        {"action": "exclude", "attribute": "userType", "equals": "Contractor"}]))
    desired = mapped(person("u-boss", "boss@example.org", userType="Contractor"),
                     person("u1", "a@example.org", manager="u-boss"), rules=rules)
    assert "manager" not in desired.users["u1"].attributes


def test_manager_from_an_expression():
    rules = MappingRules.for_source(FileSource, {"manager": "{managerMail | lower}"})
    desired = mapped(person("u-boss", "boss@example.org"),
                     person("u1", "a@example.org", managerMail="BOSS@example.org"), rules=rules)
    assert desired.users["u1"].attributes["manager"] == "u-boss"


def test_member_references_to_nobody_read_are_counted_where_info_is_logged(caplog):
    rules = MappingRules.for_source(FileSource)
    ann = UserRecord("u1", {"userName": "ann@example.org"})
    directory = Directory.of([ann], [GroupRecord("g1", {"displayName": "Eng"},
                                                 frozenset({"u1", "gone", "g-gone"}))])
    with caplog.at_level("INFO", logger="agent.core.mapping"):
        desired = map_directory(directory, rules)
    assert desired.groups["g1"].members == {"u1"}
    assert "2 group member reference(s) name no user or group read" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="agent.core.mapping"):
        assert map_directory(directory, rules).groups["g1"].members == {"u1"}
    assert "member reference" not in caplog.text
