"""agent/core/explain.py and `plan --explain`: one object from its record to the plan."""

from __future__ import annotations

import json

import pytest

from agent.cli.main import main
from agent.core.explain import explain
from agent.core.mapping import MappingRules, map_directory
from agent.core.model import PushedGroup, PushedUser, Snapshot, group_digest, user_digest
from agent.core.plan import make_plan
from agent.core.scope import Scope
from connectors.base import Directory, GroupRecord, UserRecord
from connectors.files import FileSource
from tests.conftest import group, user

RULES = MappingRules.for_source(
    FileSource,
    {"userName": "{email | lower}", "organization": {"constant": "Acme"},
     "title": ["jobTitle", "title"]},
    group_attributes={"displayName": "{displayName | replace('Department of ', '')}"},
    scope=Scope.parse([
        {"action": "exclude", "attribute": "userType", "equals": "Guest"},
        {"action": "exclude", "objects": "groups", "attribute": "displayName",
         "regex": "^tmp-"}]))

ANN = UserRecord("u1", {"userName": "ann", "email": "Ann@Example.org", "givenName": "Ann",
                        "familyName": "Lee", "title": "Engineer",
                        "dn": "uid=ann,ou=people,dc=example"})
BEN = UserRecord("u2", {"userName": "ben", "email": "ben@example.org", "manager": "u1"})
GUS = UserRecord("u3", {"userName": "gus", "email": "gus@partner.example", "userType": "Guest"})
BAD = UserRecord("u4", {"userName": "bad", "email": "bad@example.org", "title": "x\ud800"})
LONG = GroupRecord("g1", {"displayName": "Department of Customer Success EMEA"},
                   frozenset({"u1", "u3"}))
TMP = GroupRecord("g2", {"displayName": "tmp-old"}, frozenset({"u1"}))
DIRECTORY = Directory.of([ANN, BEN, GUS, BAD], [LONG, TMP])


def pushed_user(sid: str, user_name: str, attributes: dict, active: bool = True) -> PushedUser:
    return PushedUser(sid, f"scim-{sid}", user_name, active, attributes,
                      user_digest(attributes, active))


def explained(key: str, snapshot: Snapshot = Snapshot.empty()):
    desired = map_directory(DIRECTORY, RULES)
    plan = make_plan(desired, snapshot)
    return explain(key, DIRECTORY, RULES, desired, snapshot, plan)


def one(key: str, snapshot: Snapshot = Snapshot.empty()):
    found = explained(key, snapshot)
    assert len(found) == 1, found
    return found[0]


def test_a_new_user_shows_each_attribute_and_its_create():
    e = one("ann@example.org")
    assert (e.kind, e.key, e.source_id, e.active) == ("user", "ann@example.org", "u1", True)
    assert e.record["title"] == "Engineer"
    assert e.scope.in_scope and e.scope.rule is None
    steps = {s.name: s for s in e.steps}
    assert steps["userName"].expression == "'{email | lower}'"
    assert steps["userName"].value == "ann@example.org"
    assert steps["organization"].value == "Acme"
    assert steps["title"].value == "Engineer" and steps["title"].note == "from alternative 2 of 2"
    assert steps["displayName"].note == "empty: given name and family name are used"
    assert steps["nickName"].value is None
    assert [p.op.kind.value for p in e.planned] == ["create_user", "add_members"]
    assert e.related == ("Customer Success EMEA",)
    assert e.verdict.startswith("not pushed before (no snapshot entry): the plan creates it")


def test_any_key_finds_the_user():
    for key in ("u1", "ANN@example.org", "Ann@Example.org", "UID=ann, ou=People,dc=example"):
        assert [e.source_id for e in explained(key)] == ["u1"], key


def test_the_manager_reference_is_explained():
    step = next(s for s in one("ben@example.org").steps if s.name == "manager")
    assert step.value == "u1"
    assert step.note.startswith("refers to ann@example.org (source id u1)")


def test_an_excluded_user_names_the_rule():
    e = one("gus@partner.example")
    assert not e.scope.in_scope and e.scope.rule.number == 1
    assert e.planned == ()
    assert e.verdict == ('excluded by scope rule 1 (exclude users where userType equals '
                         '"Guest"): it was never pushed: nothing to do')


def test_a_pushed_user_who_leaves_the_scope_is_deactivated_and_says_why():
    snapshot = Snapshot({"u3": pushed_user("u3", "gus@partner.example",
                                           {"userName": "gus@partner.example"})}, {})
    e = one("gus@partner.example", snapshot)
    assert [p.op.kind.value for p in e.planned] == ["deactivate_user"]
    assert e.verdict.endswith(": the plan deactivates its Split account")
    assert e.verdict.startswith("excluded by scope rule 1")


def test_an_update_lists_what_changed():
    desired = map_directory(DIRECTORY, RULES).users["u1"]
    old = dict(desired.attributes, title="Intern")
    e = one("u1", Snapshot({"u1": pushed_user("u1", "ann@example.org", old)}, {}))
    assert [p.op.kind.value for p in e.planned][0] == "update_user"
    assert e.verdict == "changed since the last push: title 'Intern' -> 'Engineer'"


def test_an_unchanged_user_has_nothing_to_do():
    desired = map_directory(DIRECTORY, RULES)
    ann = desired.users["u1"]
    groups = {"g1": PushedGroup("g1", "scim-g1", "Customer Success EMEA",
                                group_digest("Customer Success EMEA"), frozenset({"u1"}))}
    e = one("u1", Snapshot({"u1": pushed_user("u1", ann.user_name, dict(ann.attributes))},
                           groups))
    assert e.planned == () and e.verdict.startswith("nothing to do")


def test_bad_data_is_the_reason_it_is_not_pushed():
    e = one("bad@example.org")
    title = next(s for s in e.steps if s.name == "title")
    assert title.value is None and title.note.startswith("bad data: title is not valid Unicode")
    assert e.problems and e.problems[0].startswith("bad data in the source record")
    assert e.verdict.startswith("not pushed: bad data")
    json.dumps(e.to_dict(), ensure_ascii=False).encode("utf-8")      # printable as it is


def test_a_user_gone_from_the_source_is_found_in_the_snapshot():
    snapshot = Snapshot({"u9": pushed_user("u9", "old@example.org",
                                           {"userName": "old@example.org"})}, {})
    e = one("old@example.org", snapshot)
    assert e.record is None and e.scope is None
    assert [p.op.kind.value for p in e.planned] == ["deactivate_user"]
    assert e.verdict.startswith("not in the source")


def test_a_group_shows_its_name_expression_members_and_refusal():
    e = one("Department of Customer Success EMEA")
    assert (e.kind, e.key) == ("group", "Customer Success EMEA")
    assert e.steps[0].value == "Customer Success EMEA"
    assert e.related == ("ann@example.org",)
    assert e.notes == ("1 direct member(s) are not members on Split (out of scope, disabled, or "
                       "not pushed)",)
    # 21 characters: accepted; the same group under its source name would be refused
    assert [p.op.kind.value for p in e.planned] == ["create_group", "add_members"]
    assert all(not p.op.refused for p in e.planned)


def test_a_refused_group_name_says_so():
    rules = MappingRules.for_source(FileSource)
    desired = map_directory(DIRECTORY, rules)
    plan = make_plan(desired, Snapshot.empty())
    [e] = explain("g1", DIRECTORY, rules, desired, Snapshot.empty(), plan)
    assert e.verdict.startswith("create_group is planned but refused, not sent: Split group "
                                "names must be shorter than 25 characters")


def test_an_excluded_group_names_the_rule():
    e = one("tmp-old")
    assert not e.scope.in_scope and e.scope.rule.number == 2
    assert e.verdict.endswith("it was never pushed: nothing to do")


def test_to_dict_is_json():
    data = one("ben@example.org").to_dict()
    assert data["kind"] == "user" and data["in_source"] is True
    assert data["scope"] == {"in_scope": True, "rule": None,
                             "reason": "in scope: no exclude rule for users matches"}
    names = {a["name"]: a for a in data["attributes"]}
    assert names["userName"]["expression"] == "{email | lower}"
    assert names["organization"]["expression"] == {"constant": "Acme"}
    assert names["title"]["expression"] == ["jobTitle", "title"]
    assert data["plan"][0]["op"] == "create_user" and data["plan"][0]["why"]


# ------------------------------------------------------------------ the command line


def test_cli_explains_a_user_and_a_group_as_text_and_json(split_ws, capsys):
    split_ws.write_directory([user("1", "Ann@Example.org", "Ann", "Lee"),
                              user("2", "gus@partner.example", userType="Guest")],
                             [group("g", "Department of Engineering", ["1", "2"])])
    split_ws.write_config(extra="""
        [source.attributes]
        userName = "{email | lower}"

        [source.group_attributes]
        displayName = "{displayName | replace('Department of ', '')}"

        [[source.scope]]
        action = "exclude"
        attribute = "userType"
        equals = "Guest"
        """)
    assert main(["--config", str(split_ws.config), "plan", "--explain", "gus@partner.example"]) == 0
    out = capsys.readouterr().out
    assert "user gus@partner.example  (source id 2)" in out
    assert 'scope: excluded by scope rule 1 (exclude users where userType equals "Guest")' in out
    assert "verdict: excluded by scope rule 1" in out

    assert main(["--config", str(split_ws.config), "plan", "--explain", "Engineering",
                 "--output", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [group_e] = data["objects"]
    assert data["key"] == "Engineering" and group_e["kind"] == "group"
    assert group_e["members"] == ["ann@example.org"]
    assert [p["op"] for p in group_e["plan"]] == ["create_group", "add_members"]
    assert not split_ws.state.exists()                    # plan --explain writes nothing


def test_cli_explain_of_an_unknown_key_is_an_error(split_ws, capsys):
    split_ws.write_directory([user("1", "ann@example.org")], [])
    assert main(["--config", str(split_ws.config), "plan", "--explain", "nobody"]) == 1
    assert "names no user" in capsys.readouterr().err


def test_cli_explains_an_update_and_an_unchanged_user_after_a_sync(split_ws, fake_split, capsys):
    split_ws.write_directory([user("1", "ann@example.org", title="Engineer"),
                              user("2", "bob@example.org", title="Analyst")], [])
    assert main(["--config", str(split_ws.config), "sync"]) == 0
    split_ws.write_directory([user("1", "ann@example.org", title="Director"),
                              user("2", "bob@example.org", title="Analyst")], [])
    capsys.readouterr()
    assert main(["--config", str(split_ws.config), "plan", "--explain", "ann@example.org",
                 "--output", "json"]) == 0
    [ann] = json.loads(capsys.readouterr().out)["objects"]
    assert [p["op"] for p in ann["plan"]] == ["update_user"]
    assert "Engineer" in json.dumps(ann["plan"]) and "Director" in json.dumps(ann["plan"])
    assert main(["--config", str(split_ws.config), "plan", "--explain", "bob@example.org"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "title: Analyst" in out


def test_the_snapshot_a_plan_read_stays_readable_inside_planning_and_only_there(split_ws,
                                                                               fake_split):
    """A plan reads a pushed user's attributes from the file when first needed: inside
    ``Agent.planning`` (what ``plan --explain`` uses) every one can be read; after
    ``Agent.plan`` returns, one the plan did not read is a plain error, not a wrong value."""
    from agent.app import build_agent
    from agent.config import load
    split_ws.write_directory([user("1", "ann@example.org"), user("2", "bob@example.org")], [])
    assert main(["--config", str(split_ws.config), "sync"]) == 0
    agent = build_agent(load(split_ws.config, resolve_target_secrets=False))
    with agent.planning(basis=False) as result:
        assert result.plan.is_empty
        assert result.snapshot.users["2"].attributes["email"] == "bob@example.org"
    result = agent.plan(basis=False)
    with pytest.raises(RuntimeError, match="after the snapshot was closed"):
        dict(result.snapshot.users["2"].attributes)
