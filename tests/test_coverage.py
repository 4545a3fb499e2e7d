"""agent/core/coverage.py and the `mapping` line of `check`: names no record carries."""

from __future__ import annotations

from agent.cli.main import main
from agent.core.coverage import configured_names, unseen_attributes
from agent.core.expressions import Expression
from agent.core.scope import Scope
from connectors.base import Directory, GroupRecord, UserRecord
from tests.conftest import group, user

DIRECTORY = Directory.of(
    [UserRecord("u1", {"mail": "a@example.org", "userType": "Member", "profile": {"x": "1"}}),
     UserRecord("u2", {"mail": "b@example.org"})],
    [GroupRecord("g1", {"cn": "Eng"})])


def names(attributes=None, groups=None, scope=()):
    return configured_names({k: Expression.parse(v) for k, v in (attributes or {}).items()},
                            {k: Expression.parse(v) for k, v in (groups or {}).items()},
                            Scope.parse(list(scope)))


def test_names_no_record_has_are_reported_with_their_config_key():
    found = unseen_attributes(DIRECTORY, names(
        {"email": "{mail | lower}", "title": ["jobTitle", "mail"], "department": "profile.x"},
        {"displayName": "{description}"},
        [{"action": "exclude", "attribute": "usertype", "equals": "Guest"},
         {"action": "exclude", "objects": "groups", "attribute": "cn", "regex": "^tmp"}]))
    assert [u.describe() for u in found] == [
        "[source.attributes] title reads 'jobTitle', which no user record has",
        "[source.group_attributes] displayName reads 'description', which no group record has",
        "[[source.scope]] #1 reads 'usertype', which no user record has (the records have "
        "'userType')",
    ]


def test_nothing_is_reported_for_a_kind_with_no_records():
    assert unseen_attributes(Directory.of([], []), names({"title": "jobTitle"})) == []


def test_check_warns_about_a_misspelt_attribute(split_ws, capsys):
    split_ws.write_directory([user("1", "a@example.org", userType="Guest")],
                             [group("g", "Team", ["1"])])
    split_ws.write_config(extra="""
        [source.attributes]
        title = "jobTitel"

        [[source.scope]]
        action = "exclude"
        attribute = "usertype"
        equals = "Guest"
        """)
    code = main(["--config", str(split_ws.config), "check"])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(l for l in out.splitlines() if " mapping: " in l)
    assert line.startswith("warn") and "'jobTitel'" in line and "(the records have 'userType')" \
        in line


def test_check_says_ok_when_every_name_is_seen(split_ws, capsys):
    split_ws.write_directory([user("1", "a@example.org", title="Lead")], [])
    split_ws.write_config(extra='[source.attributes]\ntitle = "{title | upper}"\n')
    assert main(["--config", str(split_ws.config), "check"]) == 0
    out = capsys.readouterr().out
    assert "ok   mapping: every attribute the config reads is on some record (1 name)" in out
