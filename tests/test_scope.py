"""agent/core/scope.py: include/exclude rules on raw attributes, their semantics and errors."""

from __future__ import annotations

import pytest

from agent.core.scope import Objects, Scope, ScopeError

USERS, GROUPS = Objects.USERS, Objects.GROUPS


def scope(*entries) -> Scope:
    return Scope.parse(list(entries))


def admitted(s: Scope, attributes, objects=USERS) -> bool:
    return s.decide(objects, attributes).in_scope


# ------------------------------------------------------------------ operators


@pytest.mark.parametrize("condition, attributes, expected", [
    ({"equals": "Guest"}, {"userType": "Guest"}, True),
    ({"equals": "Guest"}, {"userType": "guest"}, True),                 # case ignored
    ({"equals": "Guest"}, {"userType": "Member"}, False),
    ({"equals": "Guest"}, {}, False),                                   # missing: no match
    ({"equals": "Guest"}, {"userType": ["Member", "GUEST"]}, True),     # any value
    ({"equals": True}, {"userType": True}, True),                       # booleans as text
    ({"equals": 7}, {"userType": "7"}, True),
    ({"in": ["Contractor", "Intern"]}, {"userType": "intern"}, True),
    ({"in": ["Contractor", "Intern"]}, {"userType": "Employee"}, False),
    ({"regex": "^svc-"}, {"userType": "SVC-backup"}, True),             # case ignored
    ({"regex": "(?-i)^svc-"}, {"userType": "SVC-backup"}, False),
    ({"regex": "svc"}, {"userType": "the-svc-account"}, True),          # searched anywhere
    ({"regex": "^svc-"}, {}, False),
    ({"present": True}, {"userType": "x"}, True),
    ({"present": True}, {"userType": ""}, False),
    ({"present": True}, {"userType": [None, ""]}, False),
    ({"present": False}, {}, True),
    ({"absent": True}, {}, True),
    ({"absent": True}, {"userType": ["", "x"]}, False),
    ({"absent": False}, {"userType": "x"}, True),
])
def test_operators(condition, attributes, expected):
    s = scope({"action": "include", "attribute": "userType", **condition})
    assert admitted(s, attributes) is expected


def test_dotted_attributes_reach_nested_objects():
    s = scope({"action": "exclude", "attribute": "profile.userType", "equals": "Contractor"})
    assert not admitted(s, {"profile.userType": "Contractor"})
    assert not admitted(s, {"profile": {"userType": "Contractor"}})
    assert admitted(s, {"profile": {"userType": "Employee"}})


# ------------------------------------------------------------------ semantics


def test_no_rules_admit_everything():
    decision = Scope().decide(USERS, {"x": "y"})
    assert decision.in_scope and decision.rule is None
    assert "no scope rules" in decision.reason


def test_some_include_rule_must_match_and_any_exclude_rule_wins():
    s = scope({"action": "include", "attribute": "department", "in": ["Sales", "R&D"]},
              {"action": "include", "attribute": "title", "regex": "^Director"},
              {"action": "exclude", "attribute": "employeeType", "equals": "Contractor"})
    assert admitted(s, {"department": "Sales"})
    assert admitted(s, {"title": "Director of Finance", "department": "Finance"})
    assert not admitted(s, {"department": "Finance"})
    assert not admitted(s, {"department": "Sales", "employeeType": "contractor"})
    decision = s.decide(USERS, {"department": "Finance"})
    assert decision.rule is None
    assert decision.reason == "out of scope: matches no include rule for users (scope rules 1, 2)"
    excluded = s.decide(USERS, {"department": "Sales", "employeeType": "Contractor"})
    assert excluded.rule is not None and excluded.rule.number == 3
    assert excluded.reason == ('excluded by scope rule 3 (exclude users where employeeType '
                               'equals "Contractor")')
    included = s.decide(USERS, {"title": "Director"})
    assert included.rule is not None and included.rule.number == 2
    assert included.reason.startswith("included by scope rule 2 (include users where title "
                                      "matches")


def test_order_does_not_matter():
    a = {"action": "include", "attribute": "department", "equals": "Sales"}
    b = {"action": "exclude", "attribute": "uid", "regex": "^svc-"}
    records = [{"department": "Sales", "uid": "svc-x"}, {"department": "Sales", "uid": "ann"},
               {"department": "Ops", "uid": "bob"}]
    assert [admitted(scope(a, b), r) for r in records] == \
        [admitted(scope(b, a), r) for r in records] == [False, True, False]


def test_user_rules_and_group_rules_are_separate():
    s = scope({"action": "exclude", "objects": "groups", "attribute": "cn", "regex": "^tmp-"},
              {"action": "include", "attribute": "department", "equals": "Sales"})
    assert admitted(s, {"cn": "tmp-project"}, USERS) is False          # no Sales department
    assert admitted(s, {"cn": "tmp-project", "department": "Sales"}, USERS)
    assert not admitted(s, {"cn": "tmp-project"}, GROUPS)
    assert admitted(s, {"cn": "Engineering"}, GROUPS)                  # no group include rule
    assert s.attributes(GROUPS) == {"cn"} and s.attributes(USERS) == {"department"}
    assert s.attributes() == {"cn", "department"}


def test_evaluation_never_raises_on_odd_data():
    s = scope({"action": "include", "attribute": "x", "regex": "^a"},
              {"action": "exclude", "attribute": "x", "in": ["b"]})
    for odd in ["a\ud800", 10 ** 5000, {"nested": "a"}, [["a"]], None, 1.5, b"\xff", object(),
                "a" * 1_000_000]:
        s.decide(USERS, {"x": odd})
    assert admitted(s, {"x": "a\ud800"})                                 # matched as U+FFFD


# ------------------------------------------------------------------ errors at load


@pytest.mark.parametrize("entry, number, key, words", [
    ({"attribute": "x", "equals": "y"}, 1, "action", "is required"),
    ({"action": "drop", "attribute": "x", "equals": "y"}, 1, "action", "must be \"include\""),
    ({"action": "include", "objects": "people", "attribute": "x", "equals": "y"}, 1, "objects",
     "must be \"users\" or \"groups\""),
    ({"action": "include", "equals": "y"}, 1, "attribute", "is required"),
    ({"action": "include", "attribute": "x"}, 1, "", "needs exactly one of equals, in, regex"),
    ({"action": "include", "attribute": "x", "equals": "a", "regex": "b"}, 1, "regex",
     "(it has equals and regex)"),
    ({"action": "include", "attribute": "x", "regex": "("}, 1, "regex",
     "not a regular expression"),
    ({"action": "include", "attribute": "x", "in": "a"}, 1, "in", "a non-empty list"),
    ({"action": "include", "attribute": "x", "in": []}, 1, "in", "a non-empty list"),
    ({"action": "include", "attribute": "x", "in": [["a"]]}, 1, "in", "a list of strings"),
    ({"action": "include", "attribute": "x", "equals": ""}, 1, "equals", "absent = true"),
    ({"action": "include", "attribute": "x", "present": "yes"}, 1, "present", "true or false"),
    ({"action": "include", "attribute": "x", "equal": "a"}, 1, "equal", "unknown key"),
])
def test_a_bad_rule_names_its_number_and_key(entry, number, key, words):
    with pytest.raises(ScopeError) as caught:
        Scope.parse([{"action": "include", "attribute": "ok", "present": True}, entry])
    assert (caught.value.number, caught.value.key) == (number + 1, key)
    assert words in caught.value.message


def test_scope_must_be_a_list_of_tables():
    with pytest.raises(ScopeError):
        Scope.parse({"action": "include"})
    with pytest.raises(ScopeError):
        Scope.parse(["x"])
