"""connectors/files.py: the JSON and CSV file source, its contract and its error messages."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from agent.core.mapping import MappingRules, map_directory
from connectors.base import SourceError
from connectors.files import FileSource
from tests.source_contract import PEOPLE, TEAMS, SourceContract

REPO = Path(__file__).resolve().parent.parent
CSV_USER_COLUMNS = ["id", "userName", "email", "givenName", "familyName", "title", "department",
                    "active"]


def source(path: Path) -> FileSource:
    return FileSource(FileSource.Settings(path=path))


def people_document() -> dict:
    users = [{"id": f"u-{p.key}", "userName": p.email, "email": p.email, "givenName": p.given,
              "familyName": p.family, "displayName": p.display, "title": p.title,
              "department": p.department, "active": p.active} for p in PEOPLE]
    groups = [{"id": f"g-{t.key}", "displayName": t.name,
               "members": [f"u-{k}" for k in t.people] + [f"g-{k}" for k in t.teams]}
              for t in TEAMS]
    return {"users": users, "groups": groups}


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_people_csv(folder: Path) -> Path:
    # No displayName column: the mapping builds it from the given and family names.
    write_csv(folder / "users.csv", CSV_USER_COLUMNS,
              [[f"u-{p.key}", p.email, p.email, p.given, p.family, p.title, p.department,
                "true" if p.active else "false"] for p in PEOPLE])
    rows = []
    for t in TEAMS:
        members = [f"u-{k}" for k in t.people] + [f"g-{k}" for k in t.teams]
        rows += [[f"g-{t.key}", t.name, m] for m in members] or [[f"g-{t.key}", t.name, ""]]
    write_csv(folder / "groups.csv", ["group_id", "displayName", "member_id"], rows)
    return folder


# ------------------------------------------------------------------ the shared contract


class TestJsonFileSource(SourceContract):
    source_cls = FileSource

    @pytest.fixture
    def seeded_source(self, tmp_path):
        return source(write_json(tmp_path / "directory.json", people_document()))

    @pytest.fixture
    def failing_source(self, tmp_path):
        text = json.dumps(people_document())
        path = tmp_path / "directory.json"
        path.write_text(text[: len(text) * 2 // 3], encoding="utf-8")    # export cut short
        return source(path)


class TestCsvFileSource(SourceContract):
    source_cls = FileSource

    @pytest.fixture
    def seeded_source(self, tmp_path):
        return source(write_people_csv(tmp_path))

    @pytest.fixture
    def failing_source(self, tmp_path):
        folder = write_people_csv(tmp_path)
        users = folder / "users.csv"
        text = users.read_text(encoding="utf-8")
        cut = text.index("o.brien@example.org") + len("o.brien@exam")
        users.write_text(text[:cut], encoding="utf-8")                # export cut short
        return source(folder)

    def test_a_failure_part_way_raises_instead_of_returning_a_partial_view(self, failing_source):
        super().test_a_failure_part_way_raises_instead_of_returning_a_partial_view(failing_source)


# ------------------------------------------------------------------ malformed JSON


def json_error(tmp_path: Path, document) -> str:
    """The SourceError message for a JSON export; it must name the file."""
    path = write_json(tmp_path / "directory.json", document)
    with pytest.raises(SourceError) as info:
        source(path).read()
    message = str(info.value)
    assert str(path) in message
    return message


def users(*records: dict) -> dict:
    return {"users": list(records), "groups": []}


OK_USER = {"id": "u-1", "userName": "a@example.org"}


def test_json_user_without_id(tmp_path):
    message = json_error(tmp_path, users(OK_USER, {"userName": "b@example.org"}))
    assert "users[1]" in message and "id is required" in message


def test_json_user_without_user_name(tmp_path):
    message = json_error(tmp_path, users(OK_USER, {"id": "u-2", "email": "b@example.org"}))
    assert "users[1]" in message and "userName is required" in message


@pytest.mark.parametrize("value", ["maybe", 2])
def test_json_bad_active_value(tmp_path, value):
    message = json_error(tmp_path, users({**OK_USER, "active": value}))
    assert "users[0]" in message and "active must be true or false" in message


def test_json_duplicate_user_ids(tmp_path):
    message = json_error(tmp_path, users(OK_USER, {"id": "u-1", "userName": "b@example.org"}))
    assert "'u-1'" in message and "two users" in message


def test_json_duplicate_group_ids(tmp_path):
    group = {"id": "g-1", "displayName": "Eng", "members": []}
    message = json_error(tmp_path, {"users": [OK_USER], "groups": [group, group]})
    assert "'g-1'" in message and "two groups" in message


@pytest.mark.parametrize("members", ["u-1", {"u-1": True}, [["u-1"]]])
def test_json_members_not_a_list_of_ids(tmp_path, members):
    group = {"id": "g-1", "displayName": "Eng", "members": members}
    message = json_error(tmp_path, {"users": [OK_USER], "groups": [group]})
    assert "groups[0]" in message and "members must be a list" in message


@pytest.mark.parametrize("members, expected", [
    (["u-1", "u-2"], {"u-1", "u-2"}),               # every one a user's id: the fast path
    (["u-1", "nobody"], {"u-1", "nobody"}),         # an id that names nothing read, kept
    (["u-1", 7], {"u-1", "7"}),                     # a number is an id
    ([" u-1 ", "u-2"], {"u-1", "u-2"}),             # spaces around an id
    (["u-1", "g-0"], {"u-1", "g-0"}),               # a nested group
    (["u-1", True], "members[1] is true/false"),
    (["u-1", None], "members[1] is null"),
    (["u-1", {"id": "u-2"}], "members[1] is an object"),
    (["u-1", ["u-2"]], "members[1] is a list"),
    (["u-1", ""], "members[1] is required"),
])
def test_json_group_members_of_every_kind(tmp_path, members, expected):
    """A group whose members are all users' ids takes a shortcut; each other kind of member
    must still read as the long way reads it, or be refused as precisely."""
    people = [OK_USER, {"id": "u-2", "userName": "b@example.org"}]
    groups = [{"id": "g-0", "displayName": "Zero", "members": []},
              {"id": "g-1", "displayName": "Eng", "members": members}]
    document = {"users": people, "groups": groups}
    if isinstance(expected, str):
        message = json_error(tmp_path, document)
        assert "groups[1]" in message and expected in message
        return
    directory = source(write_json(tmp_path / "directory.json", document)).read()
    assert directory.groups["g-1"].members == expected
    for member in directory.groups["g-1"].members & directory.users.keys():
        assert any(member is uid for uid in directory.users)     # one string per id


def test_json_group_without_name(tmp_path):
    message = json_error(tmp_path, {"users": [OK_USER], "groups": [{"id": "g-1"}]})
    assert "groups[0]" in message and "displayName is required" in message


def test_json_nested_attribute_value(tmp_path):
    message = json_error(tmp_path, users({**OK_USER, "title": {"en": "Lead"}}))
    assert "users[0]" in message and "title" in message


@pytest.mark.parametrize("document", [[], {"groups": []}, {"users": {}}])
def test_json_wrong_shape(tmp_path, document):
    message = json_error(tmp_path, document)
    assert "users" in message


def test_json_not_utf8(tmp_path):
    path = tmp_path / "directory.json"
    path.write_bytes('{"users": [{"id": "u-1", "userName": "zoë@example.org"}]}'.encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8") as info:
        source(path).read()
    assert str(path) in str(info.value)


def test_json_missing_file(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        source(tmp_path / "absent.json").read()


def test_json_invalid_syntax_names_line_and_column(tmp_path):
    path = tmp_path / "directory.json"
    path.write_text('{"users": [\n  {"id": "u-1",, }\n]}', encoding="utf-8")
    with pytest.raises(SourceError, match=r"line 2, column") as info:
        source(path).read()
    assert str(path) in str(info.value)


def test_json_ids_may_be_numbers(tmp_path):
    document = {"users": [{"id": 7, "userName": "a@example.org"}],
                "groups": [{"id": 9, "displayName": "Eng", "members": [7]}]}
    directory = source(write_json(tmp_path / "d.json", document)).read()
    assert set(directory.users) == {"7"}
    assert directory.groups["9"].members == {"7"}


def test_json_active_accepts_text_forms(tmp_path):
    document = users({"id": "u-1", "userName": "a@example.org", "active": "FALSE"},
                     {"id": "u-2", "userName": "b@example.org", "active": "yes"},
                     {"id": "u-3", "userName": "c@example.org"})
    directory = source(write_json(tmp_path / "d.json", document)).read()
    assert {uid: u.active for uid, u in directory.users.items()} == \
        {"u-1": False, "u-2": True, "u-3": True}


# ------------------------------------------------------------------ digests, records on demand


def test_json_records_made_on_demand_are_those_made_at_once(tmp_path):
    """An export whose objects are sure to make records has its records made when asked for;
    they are exactly those an export read the long way gets (a surrogate pair's escape,
    anywhere, makes every record at once)."""
    document = users({"id": "u-1", "userName": "a@example.org", "title": "  Dev ", "n": 7,
                      "f": 1.5, "b": False, "gone": None, "empty": "", "active": False},
                     {"userName": "b@example.org", "id": "u-2", "manager": "u-1"})
    lazy = source(write_json(tmp_path / "lazy.json", document)).read()
    document["groups"] = [{"id": "g", "displayName": "\U0001f600", "members": []}]
    path = tmp_path / "eager.json"
    path.write_text(json.dumps(document))            # ensure_ascii: \ud83d\ude00
    eager = source(path).read()
    assert lazy.user_digests is not None and eager.user_digests is None
    assert list(lazy.users) == ["u-1", "u-2"] and "u-2" in lazy.users
    assert dict(lazy.users) == dict(eager.users)
    assert lazy.users["u-1"] is lazy.users["u-1"]     # made once


def test_json_user_digests_change_with_anything_a_record_is_made_of(tmp_path):
    base = [{"id": f"u-{i}", "userName": f"p{i}@example.org", "title": "Dev", "active": True,
             "manager": "u-0"} for i in range(3)]

    def digests(objects) -> dict:
        return source(write_json(tmp_path / "d.json", users(*objects))).read().user_digests

    first = digests(base)
    assert digests(base) == first and len(set(first.values())) == 3
    for key, value in (("title", "Ops"), ("title", "Dev "), ("active", False),
                       ("manager", "u-2"), ("userName", "q@example.org"), ("extra", "x"),
                       ("title", 7), ("title", None)):
        again = digests([base[0], {**base[1], key: value}, base[2]])
        assert again["u-1"] != first["u-1"], (key, value)
        assert {k: v for k, v in again.items() if k != "u-1"} == \
            {k: v for k, v in first.items() if k != "u-1"}


@pytest.mark.parametrize("odd", [{"id": 7}, {"id": " u-1"}, {"active": "yes"},
                                 {"title": ["a"]}, {"userName": ""}])
def test_json_objects_not_sure_to_make_a_record_are_read_the_long_way(tmp_path, odd):
    document = users({"id": "u-1", "userName": "a@example.org", **odd})
    try:
        directory = source(write_json(tmp_path / "d.json", document)).read()
    except SourceError:
        return                      # said as before, at once
    assert directory.user_digests is None and type(directory.users) is dict


# ------------------------------------------------------------------ malformed CSV


def csv_error(folder: Path) -> str:
    with pytest.raises(SourceError) as info:
        source(folder).read()
    return str(info.value)


def test_csv_missing_column(tmp_path):
    users_file = write_csv(tmp_path / "users.csv", ["id", "email"], [["u-1", "a@example.org"]])
    message = csv_error(tmp_path)
    assert str(users_file) in message and "userName" in message


def test_csv_groups_missing_column(tmp_path):
    write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    groups_file = write_csv(tmp_path / "groups.csv", ["group_id", "displayName"], [["g-1", "Eng"]])
    message = csv_error(tmp_path)
    assert str(groups_file) in message and "member_id" in message


def test_csv_extra_fields(tmp_path):
    users_file = write_csv(tmp_path / "users.csv", ["id", "userName"],
                           [["u-1", "a@example.org"], ["u-2", "b@example.org", "stray"]])
    message = csv_error(tmp_path)
    assert str(users_file) in message and "line 3" in message and "more fields" in message


def test_csv_missing_fields(tmp_path):
    users_file = write_csv(tmp_path / "users.csv", ["id", "userName", "email", "active"],
                           [["u-1", "a@example.org", "a@example.org", "true"],
                            ["u-2", "b@example.org"]])
    message = csv_error(tmp_path)
    assert str(users_file) in message and "line 3" in message


@pytest.mark.parametrize("body, line", [
    # a record spanning lines (a quoted newline) is named by the line it begins on
    ('id,userName,givenName\r\nu-1,a@example.org,"Ann\r\nMarie"\r\nu-2,b@example.org\r\n', 4),
    ('id,userName,givenName\r\nu-1,a@example.org,"Ann\r\nMarie",x\r\n', 2),
    # blank lines hold no record, but they are lines
    ('id,userName,givenName\r\nu-1,a@example.org,A\r\n\r\n\r\nu-2,b@example.org\r\n', 5),
    ('\r\nid,userName,givenName\r\nu-1,a@example.org,A,x\r\n', 3),
    # an export cut inside a quoted value: the record that was left open
    ('id,userName,givenName\r\nu-1,a@example.org,A\r\nu-2,"b@example.org,B\r\n', 3),
])
def test_csv_errors_name_the_line_the_record_begins_on(tmp_path, body, line):
    (tmp_path / "users.csv").write_bytes(body.encode())
    write_csv(tmp_path / "groups.csv", ["group_id", "displayName", "member_id"], [])
    message = csv_error(tmp_path)
    assert f"users.csv: line {line}:" in message, message


def test_csv_bad_active_value(tmp_path):
    users_file = write_csv(tmp_path / "users.csv", ["id", "userName", "active"],
                           [["u-1", "a@example.org", "true"], ["u-2", "b@example.org", "maybe"]])
    message = csv_error(tmp_path)
    assert str(users_file) in message and "line 3" in message and "active" in message


def test_csv_user_without_user_name(tmp_path):
    users_file = write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", ""]])
    message = csv_error(tmp_path)
    assert str(users_file) in message and "line 2" in message and "userName" in message


def test_csv_duplicate_ids(tmp_path):
    write_csv(tmp_path / "users.csv", ["id", "userName"],
              [["u-1", "a@example.org"], ["u-1", "b@example.org"]])
    message = csv_error(tmp_path)
    assert str(tmp_path) in message and "'u-1'" in message


def test_csv_group_with_two_names(tmp_path):
    write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    groups_file = write_csv(tmp_path / "groups.csv", ["group_id", "displayName", "member_id"],
                            [["g-1", "Eng", "u-1"], ["g-1", "Engineering", ""]])
    message = csv_error(tmp_path)
    assert str(groups_file) in message and "line 3" in message
    assert "'Eng'" in message and "'Engineering'" in message


def test_csv_group_row_without_id(tmp_path):
    write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    groups_file = write_csv(tmp_path / "groups.csv", ["group_id", "displayName", "member_id"],
                            [["", "Eng", "u-1"]])
    message = csv_error(tmp_path)
    assert str(groups_file) in message and "line 2" in message


def test_csv_not_utf8(tmp_path):
    users_file = tmp_path / "users.csv"
    users_file.write_bytes("id,userName,givenName\nu-1,a@example.org,Zoë\n".encode("latin-1"))
    message = csv_error(tmp_path)
    assert str(users_file) in message and "UTF-8" in message


def test_csv_without_users_file(tmp_path):
    message = csv_error(tmp_path)
    assert str(tmp_path / "users.csv") in message and "not found" in message


def test_csv_groups_file_is_optional(tmp_path):
    write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    directory = source(tmp_path).read()
    assert set(directory.users) == {"u-1"} and not directory.groups


def test_csv_with_byte_order_mark(tmp_path):
    (tmp_path / "users.csv").write_bytes(b"\xef\xbb\xbfid,userName\nu-1,a@example.org\n")
    assert set(source(tmp_path).read().users) == {"u-1"}


def test_csv_group_without_members_is_one_row_with_empty_member(tmp_path):
    write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    write_csv(tmp_path / "groups.csv", ["group_id", "displayName", "member_id"],
              [["g-1", "Empty", ""]])
    assert source(tmp_path).read().groups["g-1"].members == frozenset()


def test_a_missing_groups_section_is_not_an_empty_one(tmp_path):
    users = [{"id": "u-1", "userName": "a@example.org"}]
    silent = source(write_json(tmp_path / "silent.json", {"users": users})).read()
    empty = source(write_json(tmp_path / "empty.json", {"users": users, "groups": []})).read()
    assert silent.groups_read is False and empty.groups_read is True
    folder = tmp_path / "csv"
    folder.mkdir()
    write_csv(folder / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    assert source(folder).read().groups_read is False
    write_csv(folder / "groups.csv", ["group_id", "displayName", "member_id"], [])
    assert source(folder).read().groups_read is True


# ------------------------------------------------------------------ the bundled examples


def test_bundled_json_example_loads_and_maps_cleanly():
    directory = source(REPO / "examples" / "directory.json").read()
    desired = map_directory(directory, MappingRules.for_source(FileSource,
                                                               admin_group="IT Admins"))
    assert len(directory.users) >= 30
    assert not desired.problems
    names = {g.display_name for g in desired.groups.values()}
    assert "Split_Administrators" in names
    assert any(u.active is False for u in desired.users.values())
    assert all(len(name) < 25 for name in names)


def test_bundled_json_example_has_a_nested_group():
    directory = source(REPO / "examples" / "directory.json").read()
    assert any(m in directory.groups for g in directory.groups.values() for m in g.members)


def test_bundled_csv_example_loads_and_maps_cleanly():
    directory = source(REPO / "examples" / "csv").read()
    desired = map_directory(directory, MappingRules.for_source(FileSource))
    assert not desired.problems
    assert len(directory.users) >= 5
    by_name = {g.display_name: g for g in desired.groups.values()}
    assert by_name["Platform Team"].members <= by_name["Engineering"].members   # nested


def test_check_reports_the_counts_and_the_file(tmp_path):
    path = write_json(tmp_path / "directory.json", people_document())
    report = source(path).check()
    assert report == {"users": len(PEOPLE), "groups": len(TEAMS),
                      "inactive users": sum(not p.active for p in PEOPLE), "file": str(path)}


# ------------------------------------------------------------------ odd input: one sentence each


def write_raw(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "directory.json"
    path.write_text(text, encoding="utf-8")
    return path


ODD_JSON = {
    "lone surrogate in a userName":
        ('{"users": [{"id": "u-1", "userName": "a\\ud800@example.org"}]}',
         r"users\[0\]: userName holds a lone surrogate \(\\ud800\)"),
    "lone surrogate in an id":
        ('{"users": [{"id": "\\udfff", "userName": "a@example.org"}]}',
         r"users\[0\]: id holds a lone surrogate"),
    "lone surrogate in an attribute": (
        '{"users": [{"id": "u-1", "userName": "a@example.org", "title": "\\ud83d"}]}',
        r"users\[0\]: title holds a lone surrogate"),
    "lone surrogate in an attribute name": (
        '{"users": [{"id": "u-1", "userName": "a@example.org", "ti\\ud800tle": "x"}]}',
        r"users\[0\]: an attribute name holds a lone surrogate"),
    "lone surrogate in a member": (
        '{"users": [], "groups": [{"id": "g", "displayName": "G", "members": ["\\ud800"]}]}',
        r"groups\[0\]: members\[0\] holds a lone surrogate"),
    "an enormous id": (
        json.dumps({"users": [{"id": "x" * 5000, "userName": "a@example.org"}]}),
        r"users\[0\]: id is 5000 characters long; an id longer than 1024 is not an id"),
    "an id of thousands of digits": (
        '{"users": [{"id": ' + "9" * 5000 + ', "userName": "a@example.org"}]}',
        r"not a usable JSON document: Exceeds the limit \(4300 digits\)"),
    "an id of two thousand digits": (
        '{"users": [{"id": ' + "9" * 2000 + ', "userName": "a@example.org"}]}',
        r"users\[0\]: id is 2000 characters long"),
    "an enormous member id": (
        json.dumps({"users": [], "groups": [{"id": "g", "displayName": "G",
                                             "members": ["m" * 2000]}]}),
        r"groups\[0\]: members\[0\] is 2000 characters long"),
    "deep nesting": ('{"users": ' + "[" * 100_000 + "]" * 100_000 + "}",
                     r"nested too deeply to be a directory export"),
    "nesting inside a record": (
        json.dumps({"users": [{"id": "u", "userName": "a@example.org", "title": [[["x"]]]}]}),
        r"users\[0\]: 'title' must be a single value, not a list"),
    "an id with a fraction": ('{"users": [{"id": 1.5, "userName": "a@example.org"}]}',
                              r"users\[0\]: id must be text or a whole number, not a number "
                              r"with a fraction"),
    "an id that is true": ('{"users": [{"id": true, "userName": "a@example.org"}]}',
                           r"users\[0\]: id must be text or a whole number, not true/false"),
    "an id that is an object": ('{"users": [{"id": {"v": 1}, "userName": "a@example.org"}]}',
                                r"users\[0\]: id must be text or a whole number, not an object"),
    "a userName that is a list": ('{"users": [{"id": "u", "userName": ["a@example.org"]}]}',
                                  r"users\[0\]: userName must be text or a whole number, "
                                  r"not a list"),
    "a user that is a string": ('{"users": ["a@example.org"]}',
                                r"users\[0\]: expected an object, not text"),
    "members that are an object": (
        '{"users": [], "groups": [{"id": "g", "displayName": "G", "members": {"u": 1}}]}',
        r"groups\[0\]: members must be a list of ids, not an object"),
    "a member that is true": (
        '{"users": [], "groups": [{"id": "g", "displayName": "G", "members": [true]}]}',
        r"groups\[0\]: members must be a list of ids \(members\[0\] is true/false\)"),
    "active that is an object": (
        '{"users": [{"id": "u", "userName": "a@example.org", "active": {}}]}',
        r"users\[0\]: active must be true or false, not an object"),
    "NaN": ('{"users": [{"id": "u", "userName": "a@example.org", "title": NaN}]}',
            r"NaN is not a value a directory export holds"),
    "a number too large": ('{"users": [{"id": "u", "userName": "a@example.org", "x": 1e999}]}',
                           r"the number 1e999 is too large"),
    "a key given twice": ('{"users": [{"id": "u-1", "id": "u-2", "userName": "a@example.org"}]}',
                          r"an object gives the key 'id' twice"),
    "an empty file": ("", r"the file is empty"),
    "NUL bytes": ('{"users": []}\n\0\0\0', r"line 2: NUL bytes"),
    "a control character in an id is shown escaped": (
        json.dumps({"users": [{"id": "u\n1", "userName": "a@example.org"},
                              {"id": "u\n1", "userName": "b@example.org"}]}),
        r"two users have the id 'u\\n1'"),
}


@pytest.mark.parametrize("what", list(ODD_JSON))
def test_odd_json_input_is_one_sentence_naming_the_file_and_the_record(tmp_path, what):
    text, expected = ODD_JSON[what]
    path = write_raw(tmp_path, text)
    with pytest.raises(SourceError) as info:
        source(path).read()
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(expected, message), message
    assert "\n" not in message and len(message) < 400, message


def test_a_bad_byte_names_its_line(tmp_path):
    path = tmp_path / "directory.json"
    path.write_bytes(b'{"users": [\n{"id": "u", "userName": "z\xe9@example.org"}]}')
    with pytest.raises(SourceError, match=r"directory.json: line 2: not UTF-8 text \(byte 0xe9\)"):
        source(path).read()
    (tmp_path / "users.csv").write_bytes(b"id,userName\nu-1,a@example.org\nu-2,\xff@x.org\n")
    with pytest.raises(SourceError, match=r"users.csv: line 3: not UTF-8 text"):
        source(tmp_path).read()


def test_a_folder_where_a_file_was_expected(tmp_path):
    (tmp_path / "users.csv").mkdir()
    with pytest.raises(SourceError, match=r"users.csv: is a folder, not a file"):
        source(tmp_path).read()
    (tmp_path / "users.csv").rmdir()
    write_csv(tmp_path / "users.csv", ["id", "userName"], [["u-1", "a@example.org"]])
    (tmp_path / "groups.csv").mkdir()
    with pytest.raises(SourceError, match=r"groups.csv: is a folder, not a file"):
        source(tmp_path).read()


def test_a_pipe_is_refused_rather_than_read_for_ever(tmp_path):
    import os
    fifo = tmp_path / "directory.json"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"directory.json: is not a regular file"):
        source(fifo).read()


def test_an_unreadable_file_is_named(tmp_path):
    path = write_json(tmp_path / "directory.json", users(OK_USER))
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    with pytest.raises(SourceError, match=r"loop.json: cannot read the source file: Too many "
                                          r"levels of symbolic links"):
        source(tmp_path / "loop.json").read()
    assert source(path).read().users


def test_duplicate_csv_columns_are_refused_and_unnamed_ones_ignored(tmp_path):
    (tmp_path / "users.csv").write_text("id,userName,id\nu-1,a@example.org,u-2\n")
    with pytest.raises(SourceError, match=r"users.csv: line 1: the column\(s\) id appear twice"):
        source(tmp_path).read()
    (tmp_path / "users.csv").write_text("id,userName,\nu-1,a@example.org,\n")
    assert dict(source(tmp_path).read().users["u-1"].attributes) == {"userName": "a@example.org"}


@pytest.mark.parametrize("content", [
    '{"users": [{"id": "u", "userName": "a\\ud800@example.org"}]}',
    '{"users": ' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"users": [{"id": ' + "7" * 5000 + ', "userName": "a@example.org"}]}',
    '{"users": [{"id": 2.5, "userName": "a@example.org"}]}',
])
def test_plan_on_odd_input_prints_one_line_and_no_traceback(tmp_path, capsys, content):
    from agent.cli.main import main
    from tests.conftest import Workspace
    ws = Workspace(tmp_path, "http://127.0.0.1:9/scim/v2")
    ws.source.write_text(content, encoding="utf-8")
    assert main(["--config", str(ws.config), "plan"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {ws.source}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "unexpected" not in err


from hypothesis import given, settings, strategies as st  # noqa: E402

_IDS = st.sampled_from(["u1", "u2", "g1", "g2", " u1", "", "x" * 1100, "n"]) | st.integers(0, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"id": st.sampled_from(["g1", "g2", "g3", " g4", 7, ""]),
     "displayName": st.sampled_from(["Eng", "Ops ", "", 3])},
    optional={"members": st.lists(_IDS, max_size=5) | st.just("u1")}), max_size=4))
def test_groups_made_in_bulk_are_those_made_one_by_one(raw):
    """connectors.files._plain_groups: the groups it makes (when it makes them) are the very
    ones _group makes one by one, and an export it leaves reads as before."""
    from connectors.files import _group, _id_strings, _plain_groups
    known = _id_strings([], raw)
    known.update({"u1": "u1", "u2": "u2"})
    bulk = _plain_groups(json.loads(json.dumps(raw)), dict(known))
    if bulk is None:
        return
    one_by_one = [_group(g, f"groups[{i}]", False, dict(known))
                  for i, g in enumerate(json.loads(json.dumps(raw)))]
    assert [(g.id, dict(g.attributes), set(g.members)) for g in bulk] == \
        [(g.id, dict(g.attributes), set(g.members)) for g in one_by_one]
    assert all(isinstance(g.id, str) for g in bulk)
