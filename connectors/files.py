"""A directory export as a file: JSON, or a folder of CSV files.

The built-in example, and the way to onboard any system that can export a file.

JSON: ``{"users": [...], "groups": [...]}``; a user is ``{"id", "userName", "email",
"givenName", "familyName", "displayName", "active", ...}`` (``id`` and ``userName`` required;
other SCIM attributes such as ``title`` pass through); a group is ``{"id", "displayName",
"members": [user or group ids]}``.

CSV: ``path`` is a folder holding ``users.csv`` (a header row with the user keys above) and,
optionally, ``groups.csv`` with ``group_id,displayName,member_id`` rows (one row per member;
a group with no members is one row with an empty ``member_id``).

An export without groups (no ``"groups"`` key, no ``groups.csv``) says nothing about groups:
the engine then leaves every group as it is. An *empty* groups section says there are none,
and the safety guard stops a cycle that would delete every managed group because of it.

Any malformed record stops the read with an error naming the file and the record: a file
that is half-right must not become half a directory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .base import Directory, FullReadOnly, GroupRecord, SourceError, UserRecord

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}

# SCIM attributes a file may carry under their own names.
_PASS_THROUGH = (
    "nickName", "title", "userType", "preferredLanguage", "locale", "timezone", "profileUrl",
    "phoneNumber", "employeeNumber", "costCenter", "organization", "division", "department",
    "manager",
)


class FileSource(FullReadOnly):
    type_name: ClassVar[str] = "file"
    default_mapping: ClassVar[dict[str, tuple[str, ...]]] = {
        "userName": ("userName",),
        "email": ("email",),
        "name.givenName": ("givenName",),
        "name.familyName": ("familyName",),
        "displayName": ("displayName",),
        **{name: (name,) for name in _PASS_THROUGH},
    }
    group_name_attributes: ClassVar[tuple[str, ...]] = ("displayName",)

    @dataclass(frozen=True)
    class Settings:
        path: Path = field(metadata={"help": "a JSON export, or a folder with users.csv "
                                             "and groups.csv"})

    def __init__(self, settings: "FileSource.Settings", *, attributes: Iterable[str] = ()):
        """A file holds every attribute it has: ``attributes`` is not needed."""
        self.settings = settings

    def read(self) -> Directory:
        path = self.settings.path
        if path.is_dir():
            return _read_csv_folder(path)
        return _read_json(path)

    def check(self) -> dict[str, int | str]:
        directory = self.read()
        return {
            "users": len(directory.users),
            "groups": len(directory.groups),
            "inactive users": sum(1 for u in directory.users.values() if not u.active),
            "file": str(self.settings.path),
        }


def _read_json(path: Path) -> Directory:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: source file not found")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the source file: {exc.strerror}")
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text")
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): "
                          f"{exc.msg}")
    if not isinstance(data, dict) or not isinstance(data.get("users", []), list) \
            or not isinstance(data.get("groups", []), list):
        raise SourceError(f'{path}: expected {{"users": [...], "groups": [...]}}')
    if "users" not in data:
        raise SourceError(f'{path}: no "users" list')
    users = [_user(record, f"{path}: users[{i}]") for i, record in enumerate(data["users"])]
    groups = [_group(record, f"{path}: groups[{i}]")
              for i, record in enumerate(data.get("groups", []))]
    # No "groups" key is not "no groups": the export said nothing about them.
    return _directory(users, groups, path, groups_read="groups" in data)


def _read_csv_folder(folder: Path) -> Directory:
    users_file, groups_file = folder / "users.csv", folder / "groups.csv"
    users = [_user(row, f"{users_file}: line {line}")
             for line, row in _csv_rows(users_file, required=("id", "userName"))]
    groups: dict[str, dict[str, Any]] = {}
    if groups_file.exists():
        for line, row in _csv_rows(groups_file, required=("group_id", "displayName", "member_id")):
            where = f"{groups_file}: line {line}"
            gid, name = row["group_id"].strip(), row["displayName"].strip()
            if not gid or not name:
                raise SourceError(f"{where}: group_id and displayName are required")
            group = groups.setdefault(gid, {"id": gid, "displayName": name, "members": []})
            if group["displayName"] != name:
                raise SourceError(f"{where}: group {gid!r} has two names "
                                  f"({group['displayName']!r} and {name!r})")
            if row["member_id"].strip():
                group["members"].append(row["member_id"].strip())
    group_records = [_group(g, f"{groups_file}: group {gid!r}") for gid, g in groups.items()]
    return _directory(users, group_records, folder, groups_read=groups_file.exists())


def _csv_rows(path: Path, required: tuple[str, ...]):
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, strict=True)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceError(f"{path}: missing column(s) {', '.join(missing)}")
            for row in reader:
                if None in row:
                    raise SourceError(f"{path}: line {reader.line_num}: more fields than columns")
                if None in row.values():    # a cut-off export must not read as a smaller one
                    raise SourceError(f"{path}: line {reader.line_num}: fewer fields than columns")
                yield reader.line_num, {k: (v or "") for k, v in row.items()}
    except FileNotFoundError:
        raise SourceError(f"{path}: source file not found")
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text")
    except csv.Error as exc:
        raise SourceError(f"{path}: malformed CSV: {exc}")


def _user(record: Any, where: str) -> UserRecord:
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected an object")
    uid = _text(record.get("id"), where, "id")
    name = _text(record.get("userName"), where, "userName")
    active = _active(record.get("active", True), where)
    attributes = {}
    for key, value in record.items():
        if key in ("id", "active") or value is None or value == "":
            continue
        if isinstance(value, (dict, list)):
            raise SourceError(f"{where}: {key} must be a single value")
        attributes[key] = str(value) if not isinstance(value, str) else value.strip()
    attributes["userName"] = name
    return UserRecord(id=uid, attributes=attributes, active=active)


def _group(record: Any, where: str) -> GroupRecord:
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected an object")
    gid = _text(record.get("id"), where, "id")
    name = _text(record.get("displayName"), where, "displayName")
    members = record.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, (str, int)) for m in members):
        raise SourceError(f"{where}: members must be a list of ids")
    return GroupRecord(id=gid, attributes={"displayName": name},
                       members=frozenset(str(m) for m in members))


def _text(value: Any, where: str, key: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise SourceError(f"{where}: {key} is required")
    return value.strip()


def _active(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "" or text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SourceError(f"{where}: active must be true or false, not {value!r}")


def _directory(users: list[UserRecord], groups: list[GroupRecord], origin: Path,
               groups_read: bool) -> Directory:
    for kind, records in (("user", users), ("group", groups)):
        seen: set[str] = set()
        for record in records:
            if record.id in seen:
                raise SourceError(f"{origin}: two {kind}s have the id {record.id!r}")
            seen.add(record.id)
    return Directory.of(users, groups, groups_read=groups_read)
