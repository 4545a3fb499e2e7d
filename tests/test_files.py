"""connectors/files.py: the JSON and CSV file source, its contract and its error messages."""

from __future__ import annotations

import csv
import json
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
