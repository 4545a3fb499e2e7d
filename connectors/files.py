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

Complete reads only (:mod:`connectors.exports`): a file cut anywhere is refused (JSON that
does not parse; CSV that does not end with a newline, or ends inside a quoted field), and so
is a file padded with NUL bytes. A CSV file cut exactly at a line boundary cannot be told
from a smaller export, so scripts may prove completeness: a ``# rows: N`` trailer line
(``require_trailer`` makes it mandatory) or a ``sha256sum`` side file (``require_checksum``).

Any malformed record stops the read with one sentence naming the file and the record (a
lone surrogate, an id longer than :data:`MAX_ID_LENGTH`, a value of the wrong type, a key
given twice, nesting too deep to parse): a file that is half-right must not become half a
directory.
"""

from __future__ import annotations

import csv
import io
import json
import marshal
import math
import re
import sys
from collections.abc import Iterable, Mapping
from hashlib import blake2b
from itertools import chain, repeat
from operator import methodcaller
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from . import exports
from .base import (Directory, FullReadOnly, GroupRecord, LazyMembers, SettingError, SourceError,
                   UserRecord)

MAX_ID_LENGTH = 1024     # a stable id is a GUID, a DN or a number; more is a broken export

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
        require_trailer: bool = field(default=False, metadata={
            "help": "every CSV file must end with a '# rows: N' line (N data rows), so an "
                    "export cut at a line boundary is refused"})
        require_checksum: bool = field(default=False, metadata={
            "help": "every file must have a <file>.sha256 beside it, as sha256sum writes "
                    "it, matching the bytes read"})

        def validate(self) -> None:
            if self.require_trailer and self.path.suffix.lower() == ".json":
                raise SettingError("require_trailer", "is for CSV exports: a JSON export is "
                                   "complete when it parses (require_checksum binds it to "
                                   "its exporter)")

    def __init__(self, settings: "FileSource.Settings", *, attributes: Iterable[str] = ()):
        """A file holds every attribute it has: ``attributes`` is not needed."""
        self.settings = settings

    def read(self) -> Directory:
        path, s = self.settings.path, self.settings
        if path.is_dir():
            return _read_csv_folder(path, s.require_trailer, s.require_checksum)
        if s.require_trailer:
            raise SourceError(f"{path}: [source] require_trailer is for CSV exports; a JSON "
                              "export is complete when it parses")
        return _read_json(path, s.require_checksum)

    def check(self) -> dict[str, int | str]:
        directory = self.read()
        return {
            "users": len(directory.users),
            "groups": len(directory.groups),
            "inactive users": sum(1 for u in directory.users.values() if not u.active),
            "file": str(self.settings.path),
        }


def _read_json(path: Path, checksum: bool) -> Directory:
    data = exports.read_bytes(path)
    exports.check_whole(path, data, newline=False)
    if checksum:
        exports.verify_checksum(path, data)
    text = exports.decode(path, data)
    del data
    try:
        document = json.loads(text, object_pairs_hook=_no_twice, parse_constant=_no_constant,
                              parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): "
                          f"{exc.msg}") from None
    except _Refused as exc:
        raise SourceError(f"{path}: {exc}") from None
    except RecursionError:
        raise SourceError(f"{path}: nested too deeply to be a directory export") from None
    except ValueError as exc:        # an integer of thousands of digits
        raise SourceError(f"{path}: not a usable JSON document: {exc}".split("; use ")[0]) \
            from None
    # Decoded UTF-8 holds no lone surrogate: only a \uD800-\uDFFF escape can spell one. A
    # document without such an escape needs no check of every value (the common case).
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    del text
    if not isinstance(document, dict) or not isinstance(document.get("users", []), list) \
            or not isinstance(document.get("groups", []), list):
        raise SourceError(f'{path}: expected {{"users": [...], "groups": [...]}}')
    if "users" not in document:
        raise SourceError(f'{path}: no "users" list')
    # Objects sure to make a record are made into one only when the engine asks; any other
    # export becomes its records here, each parsed object let go as soon as it is one.
    lazy = None if surrogates else _Records.of(document["users"], path)
    users = lazy if lazy is not None else \
        _taken(document["users"], lambda r, i: _user(r, _Where(path, "users", i), surrogates))
    raw_groups = document.get("groups", [])
    ids = _id_strings(users, raw_groups)
    groups = (None if surrogates else _plain_groups(raw_groups, ids)) or \
        _taken(raw_groups, lambda r, i: _group(r, _Where(path, "groups", i), surrogates, ids))
    # No "groups" key is not "no groups": the export said nothing about them.
    return _directory(users, groups, path, groups_read="groups" in document,
                      digests=lazy.digests if lazy is not None else None, ids=ids,
                      group_digests=_group_digests(groups))


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


# What a user's digest is made of: the parsed object as marshal writes it (exact for JSON's
# values, its keys in their order; version 2 writes no back-references, so equal objects
# give equal bytes), under this reader's version and Python's. Raise RECORD_VERSION whenever
# _user may make another record of the same object.
RECORD_VERSION = 1
_DIGEST_PERSON = f"file{RECORD_VERSION}.py{sys.version_info[0]}{sys.version_info[1]}".encode()
_VALUE_TYPES = frozenset({str, bool, int, float, type(None)})
_user_hash = partial(blake2b, digest_size=16, person=_DIGEST_PERSON)
_CHUNK = 4096     # objects made bytes at a time (a lower peak than all at once)
# A group's digest (_group_digests): of the list its members were made from
_GROUP_PERSON = f"fgroup{RECORD_VERSION}.py{sys.version_info[0]}{sys.version_info[1]}".encode()


class _Records(Mapping):
    """The users of an export, each made into its :class:`UserRecord` only when asked for
    (the engine asks only for those whose digest says they changed). Made only from objects
    checked in bulk to make a record without error, each as :func:`_user` makes it. Each
    object is kept as the bytes its digest was made of (marshal gives the very object back),
    a fifth of the memory of the parsed object."""

    __slots__ = ("_parsed", "_made", "_path", "digests")

    def __init__(self, parsed: dict[str, bytes | None], path: Path, digests: dict[str, str]):
        self._parsed = parsed           # id -> the object's bytes (None once made a record)
        self._made: dict[str, UserRecord] = {}
        self._path = path
        self.digests = digests

    @classmethod
    def of(cls, objects: list, path: Path) -> "_Records | None":
        """None unless every object is sure to make a record as it is: an object whose id
        or userName is not plain text (or is too long, or is given twice), whose ``active``
        is not true or false, or which holds a list or an object, is read the long way,
        which says precisely what is wrong. (Lone surrogates are ruled out before.)"""
        if not set(map(type, objects)) <= {dict}:
            return None
        ids = [o.get("id") for o in objects]
        names = [o.get("userName") for o in objects]
        actives = [o.get("active", True) for o in objects]
        if not (set(map(type, ids)) | set(map(type, names)) <= {str}
                and set(map(type, actives)) <= {bool}
                and set(map(type, chain.from_iterable(map(dict.values, objects))))
                <= _VALUE_TYPES):
            return None
        if "" in ids or "" in names or list(map(str.strip, ids)) != ids \
                or list(map(str.strip, names)) != names \
                or max(map(len, ids), default=0) > MAX_ID_LENGTH or len(set(ids)) != len(ids):
            return None
        # Fresh copies of the ids, the only strings of the parsed objects that are kept: a
        # kept string holds on to the memory of every value parsed beside it
        ids = _fresh(ids)
        blobs: list[bytes] = []
        for start in range(0, len(objects), _CHUNK):   # each chunk let go once it is bytes
            blobs.extend(map(marshal.dumps, objects[start:start + _CHUNK], repeat(2)))
            objects[start:start + _CHUNK] = repeat(None, min(_CHUNK, len(objects) - start))
        digests = dict(zip(ids, map(methodcaller("hexdigest"), map(_user_hash, blobs))))
        return cls(dict(zip(ids, blobs)), path, digests)

    def __getitem__(self, uid: str) -> UserRecord:
        record = self._made.get(uid)
        if record is None:
            parsed = marshal.loads(self._parsed[uid])     # (a KeyError for another id)
            record = self._made[uid] = _user(parsed, f"{self._path}: the user {_shown(uid)}",
                                             False)
            self._parsed[uid] = None    # made once: then only the record is kept
        return record

    def __contains__(self, uid: object) -> bool:
        return uid in self._parsed

    def __iter__(self):
        return iter(self._parsed)

    def __len__(self) -> int:
        return len(self._parsed)

    def keys(self):
        return self._parsed.keys()


def _taken(items: list, convert) -> list:
    """``convert`` applied to each item, each item dropped from ``items`` once converted."""
    out = []
    for i in range(len(items)):
        out.append(convert(items[i], i))
        items[i] = None
    return out


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a record is, said only when something is wrong with it."""

    path: Path
    section: str
    index: int

    def __str__(self) -> str:
        return f"{self.path}: {self.section}[{self.index}]"


class _Refused(ValueError):
    """Raised from inside the JSON parser: a document no export should be."""


def _no_twice(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Refused(f"an object gives the key {_shown(key)} twice; which one is "
                               "meant?")
            seen.add(key)
    return out


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not a value a directory export holds")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is too large")
    return value


def _read_csv_folder(folder: Path, trailer: bool, checksum: bool) -> Directory:
    users_file, groups_file = folder / "users.csv", folder / "groups.csv"
    users = [_user(row, f"{users_file}: line {line}")
             for line, row in _csv_rows(users_file, ("id", "userName"), trailer, checksum)]
    has_groups = groups_file.exists() or groups_file.is_symlink()
    if not has_groups and checksum and exports.checksum_file(groups_file).exists():
        raise SourceError(f"{groups_file}: missing, but {groups_file.name}.sha256 is there: "
                          "the export is incomplete")
    groups: dict[str, dict[str, Any]] = {}
    if has_groups:
        for line, row in _csv_rows(groups_file, ("group_id", "displayName", "member_id"),
                                   trailer, checksum):
            where = f"{groups_file}: line {line}"
            gid, name = row["group_id"].strip(), row["displayName"].strip()
            if not gid or not name:
                raise SourceError(f"{where}: group_id and displayName are required")
            group = groups.setdefault(gid, {"id": gid, "displayName": name, "members": []})
            if group["displayName"] != name:
                raise SourceError(f"{where}: group {_shown(gid)} has two names "
                                  f"({_shown(group['displayName'])} and {_shown(name)})")
            if row["member_id"].strip():
                group["members"].append(row["member_id"].strip())
    group_records = [_group(g, f"{groups_file}: group {_shown(gid)}") for gid, g in groups.items()]
    return _directory(users, group_records, folder, groups_read=has_groups)


def _check_header(path: Path, header: list[str], required: tuple[str, ...]) -> None:
    names = [n for n in header if n]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(f"{path}: line 1: the column(s) {', '.join(twice)} appear twice")
    missing = [c for c in required if c not in names]
    if missing:
        raise SourceError(f"{path}: missing column(s) {', '.join(missing)}")


def _csv_rows(path: Path, required: tuple[str, ...], trailer: bool, checksum: bool):
    """(line, row) for each data row of a CSV file read whole and checked complete."""
    data = exports.read_bytes(path)
    exports.check_whole(path, data, newline=True)
    if checksum:
        exports.verify_checksum(path, data)
    text, announced = exports.split_trailer(path, exports.decode(path, data), trailer)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    header: list[str] | None = None
    start = 1                           # the line the record being read begins on
    try:
        for fields in reader:
            if not fields:              # a blank line holds no record
                pass
            elif header is None:
                header = fields
                _check_header(path, header, required)
            elif len(fields) > len(header):
                raise SourceError(f"{path}: line {start}: more fields than columns")
            elif len(fields) < len(header):     # a cut-off export must not read as a smaller one
                raise SourceError(f"{path}: line {start}: fewer fields than columns")
            else:
                rows.append((start, {k: v for k, v in zip(header, fields) if k}))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SourceError(f"{path}: line {start}: malformed CSV ({exc}); an export "
                          "cut inside a quoted value ends like this") from None
    if header is None:
        _check_header(path, [], required)
    exports.check_row_count(path, len(rows), announced)
    return rows


def _user(record: Any, where: object, surrogates: bool = True) -> UserRecord:
    """``surrogates``: whether text may hold a lone surrogate and must be checked."""
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected an object, not {_kind(record)}")
    uid, name = record.get("id"), record.get("userName")
    if surrogates or not (_plain(uid) and len(uid) <= MAX_ID_LENGTH and _plain(name)):
        uid = _text(uid, where, "id", limit=MAX_ID_LENGTH, surrogates=surrogates)
        name = _text(name, where, "userName", surrogates=surrogates)
    active = record.get("active", True)
    if type(active) is not bool:
        active = _active(active, where)
    rest = record                       # the parsed object is not used again: taken apart
    rest.pop("id", None)
    rest.pop("active", None)
    if not surrogates and set(map(type, rest.values())) <= {str}:   # the common case, cheap
        attributes = {key: value.strip() for key, value in rest.items() if value}
    else:
        attributes = {}
        for key, value in rest.items():
            if surrogates:
                _check_text(key, where, "an attribute name")
            if value is None or value == "":
                continue
            if isinstance(value, (dict, list)):
                raise SourceError(f"{where}: {_shown(key)} must be a single value, not "
                                  f"{_kind(value)}")
            if isinstance(value, str):
                if surrogates:
                    _check_text(value, where, key)
                attributes[key] = value.strip()
            else:
                attributes[key] = str(value)
    attributes["userName"] = name
    return UserRecord(id=uid, attributes=attributes, active=active)


def _group(record: Any, where: object, surrogates: bool = True,
           known: dict[str, str] | None = None) -> GroupRecord:
    """``known`` (:func:`_id_strings`): each member id is made that very string."""
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected an object, not {_kind(record)}")
    gid = _text(record.get("id"), where, "id", limit=MAX_ID_LENGTH)
    name = _text(record.get("displayName"), where, "displayName")
    members = record.get("members", [])
    if not isinstance(members, list):
        raise SourceError(f"{where}: members must be a list of ids, not {_kind(members)}")
    ids = None
    if known is not None:       # (fresh copies: see _Records.of)
        gid, name = known.get(gid) or _fresh([gid])[0], _fresh([name])[0]
    if not surrogates and known is not None and _listed_plainly(members):
        # the commonest case, cheapest: ids as they are, made a set when first used as one
        # (a group whose members a stamp stands for never is: agent/core/stamps.py)
        return GroupRecord(id=gid, attributes={"displayName": name},
                           members=LazyMembers(partial(_members_of, members, known),
                                               listed=members))
    if not surrogates and known is not None:
        # the commonest case, cheapest: every member is a known id, so plain text as it is
        # (anything else, an unknown id, a number or an object, is for the checks below)
        try:
            shared = set(map(known.__getitem__, members))
        except (KeyError, TypeError):
            pass
        else:
            # (a frozenset made from a set has half the table of one made from a list)
            return GroupRecord(id=gid, attributes={"displayName": name},
                               members=frozenset(shared))
    if not surrogates and set(map(type, members)) <= {str}:      # the common case, kept cheap
        ids = list(map(str.strip, members))
        if not all(ids) or (ids and max(map(len, ids)) > MAX_ID_LENGTH):
            ids = None                                             # said below, precisely
    if ids is None:
        for i, member in enumerate(members):
            if isinstance(member, bool) or not isinstance(member, (str, int)):
                raise SourceError(f"{where}: members must be a list of ids (members[{i}] is "
                                  f"{_kind(member)})")
        ids = [_text(m, where, f"members[{i}]", limit=MAX_ID_LENGTH)
               for i, m in enumerate(members)]
    if known is not None:
        ids = map(known.get, ids, ids)
    return GroupRecord(id=gid, attributes={"displayName": name}, members=frozenset(ids))


def _plain_groups(raw: list, known: dict[str, str]) -> list[GroupRecord] | None:
    """Every group at once, as :func:`_group` makes each, where every one is plainly a group
    (an object whose id and displayName are plain text, whose members are ids each as it is;
    checked in bulk); else None, and each is made one by one, which says what is wrong."""
    if not raw or not set(map(type, raw)) <= {dict}:
        return None
    gids = [g.get("id") for g in raw]
    names = [g.get("displayName") for g in raw]
    lists = [g.get("members", []) for g in raw]
    if not (set(map(type, gids)) | set(map(type, names)) <= {str}
            and set(map(type, lists)) <= {list}):
        return None
    every = list(chain.from_iterable(lists))
    if not set(map(type, every)) <= {str}:
        return None
    for texts in (gids, names, every):
        if "" in texts or list(map(str.strip, texts)) != texts:
            return None
    if max(map(len, chain(gids, every)), default=0) > MAX_ID_LENGTH:
        return None
    # (fresh copies: see _Records.of; a plain group id is one of known's)
    names = _fresh(names)
    return [GroupRecord(id=known[gid], attributes={"displayName": name},
                        members=LazyMembers(partial(_members_of, members, known),
                                            listed=members))
            for gid, name, members in zip(gids, names, lists)]


def _listed_plainly(members: Any) -> bool:
    """A list of ids each a member as it is: text, not empty, nothing to strip, not too
    long (checked in bulk: no Python code runs per member)."""
    return type(members) is list and set(map(type, members)) <= {str} \
        and "" not in members and list(map(str.strip, members)) == members \
        and max(map(len, members), default=0) <= MAX_ID_LENGTH


def _members_of(members: list[str], known: dict[str, str]) -> frozenset[str]:
    """A group's members, each id made the very string of the user's or group's id where
    it is one (a frozenset made from a set has half the table of one made from a list)."""
    return frozenset(set(map(known.get, members, members)))


def _group_digests(groups: list[GroupRecord]) -> dict[str, str]:
    """Each group's digest of its member list (``Directory.group_digests``): of the list
    as the file gave it where it was kept, else of its members in order."""
    return {g.id: blake2b(marshal.dumps(g.members.listed if isinstance(g.members, LazyMembers)
                                        and g.members.listed is not None
                                        else sorted(g.members), 2),
                          digest_size=16, person=_GROUP_PERSON).hexdigest() for g in groups}


def _plain(value: Any) -> bool:
    """Text that ``_text`` would take as it is (not empty, nothing to strip)."""
    return type(value) is str and value != "" and not value[0].isspace() \
        and not value[-1].isspace()


def _text(value: Any, where: object, key: str, limit: int | None = None,
          surrogates: bool = True) -> str:
    """A required text value: a string or a whole number, stripped, not empty."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif value is not None and not isinstance(value, str):
        raise SourceError(f"{where}: {key} must be text or a whole number, not {_kind(value)}")
    if value is None or not value.strip():
        raise SourceError(f"{where}: {key} is required")
    if surrogates:
        _check_text(value, where, key)
    value = value.strip()
    if limit is not None and len(value) > limit:
        raise SourceError(f"{where}: {key} is {len(value)} characters long; an id longer than "
                          f"{limit} is not an id")
    return value


def _check_text(value: str, where: object, key: str) -> None:
    """Refuse a lone surrogate (JSON can spell one, ``"\\ud800"``; it is not text, and neither
    the snapshot nor the target could store it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SourceError(f"{where}: {key if key.isprintable() else 'a key'} holds a lone "
                          f"surrogate (\\u{ord(value[exc.start]):04x}), which is not text") \
            from None


def _active(value: Any, where: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        raise SourceError(f"{where}: active must be true or false, not {_kind(value)}")
    text = str(value).strip().lower()
    if text == "" or text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SourceError(f"{where}: active must be true or false, not {_shown(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", float: "a number with a fraction",
            type(None): "null", str: "text", int: "a number"}.get(type(value), "a value")


def _shown(value: Any) -> str:
    """A value as an error message may quote it: short, escaped, one line."""
    text = value if isinstance(value, str) else str(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return ascii(text) if not text.isprintable() else repr(text)


def _id_strings(users: "list[UserRecord] | _Records", raw_groups: list) -> dict[str, str]:
    """Each user id, and each group id given as plain text, mapped to itself: the strings
    a group's member ids are made (:func:`_group`). Only ids as they will be read are
    here (plain, not too long), so a member id found here is one as it is."""
    user_ids = users.keys() if isinstance(users, _Records) else [u.id for u in users]
    ids = dict(zip(user_ids, user_ids))
    plain = [gid for gid in (raw.get("id") if type(raw) is dict else None for raw in raw_groups)
             if _plain(gid) and len(gid) <= MAX_ID_LENGTH]
    plain = _fresh(plain)
    ids.update(zip(plain, plain))
    return ids


def _fresh(strings: list[str]) -> list[str]:
    """New string objects equal to ``strings`` (marshal makes each anew, in bulk)."""
    return marshal.loads(marshal.dumps(strings, 2))


def _directory(users: "list[UserRecord] | _Records", groups: list[GroupRecord], origin: Path,
               groups_read: bool, digests: dict[str, str] | None = None,
               ids: dict[str, str] | None = None,
               group_digests: dict[str, str] | None = None) -> Directory:
    """``ids``: the groups' member ids were made those strings (:func:`_id_strings`)."""
    for kind, records in (("user", users), ("group", groups)):
        if isinstance(records, _Records) or len({r.id for r in records}) == len(records):
            continue                    # (_Records holds no id twice)
        seen: set[str] = set()
        for record in records:
            if record.id in seen:
                raise SourceError(f"{origin}: two {kind}s have the id {_shown(record.id)}")
            seen.add(record.id)
    # A member id is the very string of the user's id: one copy of each in memory, and the
    # engine's set operations on members find each by identity.
    if ids is None:
        user_ids = users.keys() if isinstance(users, _Records) else [u.id for u in users]
        ids = dict(zip(user_ids, user_ids))
        ids.update((g.id, g.id) for g in groups)
        groups = [GroupRecord(g.id, g.attributes, frozenset(map(ids.get, g.members, g.members)))
                  for g in groups]
    by_id = users if isinstance(users, _Records) else {u.id: u for u in users}
    return Directory(by_id, {g.id: g for g in groups}, None, groups_read, digests,
                     group_digests)
