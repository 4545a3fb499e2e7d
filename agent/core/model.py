"""The desired state in SCIM terms: users and groups as frozen values with a canonical digest.

Attributes are kept flat, with dotted names for sub-attributes (``name.givenName``) and
``email`` for the one primary work e-mail: the planner diffs them key by key, the plan shows
them as they are, and the target (``connectors/scim/``) alone turns them into a wire format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from connectors.base import LazyMembers

# The flat attribute names are the target port's vocabulary (connectors/base.py). Anything
# else a source maps is dropped with a warning: a SCIM server in strict mode rejects unknown
# attributes, and one bad key would fail every user.

# Split's rule: a group name must be shorter than 25 characters.
MAX_GROUP_NAME = 24
RESERVED_GROUP_NAMES = frozenset({"administrators"})


def digest_of(payload: Any) -> str:
    """A stable digest of JSON-able data: same content, same digest, on every machine."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class User:
    source_id: str                     # the source's stable id; sent as externalId
    user_name: str                     # Split keys users on it: the e-mail
    active: bool
    attributes: Mapping[str, str]      # flat SCIM attributes, userName and email included
    digest: str = field(default="", compare=False)
    # What it was mapped from (mapping.py: the source record, the mapping, the manager it
    # names); "" when unknown. Recorded with the pushed row, it lets the next cycle take an
    # unchanged record's value from the snapshot instead of mapping it again.
    source_digest: str = field(default="", compare=False)
    # The record's own manager reference (an id, an e-mail, a DN; "" for none), recorded
    # beside source_digest: an unchanged record's reference is resolved again from it.
    manager_reference: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.digest:
            object.__setattr__(self, "digest", user_digest(self.attributes, self.active))

    @property
    def key(self) -> str:
        return self.user_name


@dataclass(frozen=True, slots=True)
class Group:
    source_id: str
    display_name: str
    members: frozenset[str]            # source ids of member users (nesting already flattened)
    digest: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.digest:
            object.__setattr__(self, "digest", group_digest(self.display_name))

    @property
    def key(self) -> str:
        return self.display_name


def user_digest(attributes: Mapping[str, str], active: bool) -> str:
    return digest_of({"a": dict(attributes), "active": active})


def group_digest(display_name: str) -> str:
    """Membership is compared as a set on its own; the digest covers what a rename changes.
    ``digest_of({"displayName": display_name})``, written out directly: there is one for
    each group of every plan."""
    blob = '{"displayName":' + encode_basestring(display_name) + "}"
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Problem:
    """A source object the agent will not push this cycle, and why."""

    kind: str          # "user" | "group"
    source_id: str
    key: str
    reason: str
    disabled: bool = False     # a user the source marks disabled: deactivated all the same


@dataclass(frozen=True)
class DesiredState:
    """What the target should hold according to the source, after mapping.

    ``held`` lists source ids of objects that could not be mapped this cycle: the planner
    leaves whatever it pushed for them earlier alone, rather than treating them as gone.
    """

    users: Mapping[str, User]
    groups: Mapping[str, Group]
    problems: tuple[Problem, ...] = ()
    groups_read: bool = True       # False: the source said nothing about groups (a file with
                                   # no groups section); every group is left as it is
    # agent/core/stamps.py: the stamp each group may be recorded with once its pushed members
    # are its desired ones (group id -> stamp), and the snapshot's member epoch they hold for
    group_stamps: Mapping[str, str] = field(default_factory=dict, compare=False)
    stamps_epoch: int | None = field(default=None, compare=False)

    def digest(self) -> str:
        """The desired state in one value: a saved plan records it, and applying the plan
        later refuses a source that has changed since."""
        users = self.users.digests() if isinstance(self.users, DesiredUsers) else \
            ((sid, u.digest) for sid, u in self.users.items())
        return digest_of([sorted(users),
                          sorted((sid, g.digest, sorted(g.members))
                                 for sid, g in self.groups.items()),
                          sorted((p.kind, p.source_id, p.reason) for p in self.problems),
                          self.groups_read])

    # Held: objects read but not pushed. A problem about no one object (no source id: the
    # config's admin_group names no group, the source said nothing about groups) holds nothing;
    # counted as held, it would make an empty read look like one that held something back.
    @property
    def held_users(self) -> frozenset[str]:
        return frozenset(p.source_id for p in self.problems if p.kind == "user" and p.source_id)

    @property
    def held_groups(self) -> frozenset[str]:
        return frozenset(p.source_id for p in self.problems
                         if p.kind == "group" and p.source_id)


# ---------------------------------------------------------------------------------------------
# What the target holds, as the snapshot remembers it


@dataclass(frozen=True, slots=True)
class PushedUser:
    source_id: str
    scim_id: str
    user_name: str
    active: bool
    attributes: Mapping[str, str]
    digest: str
    source_digest: str = field(default="", compare=False)   # User.source_digest, when known
    manager_reference: str | None = field(default=None, compare=False)   # None: not known


class PushedUsers(Mapping):
    """The snapshot's users by source id, kept as rows: each becomes a :class:`PushedUser`
    only when looked up (a plan looks up those it changes; mapping and planning read the
    rest of them through ``rows``). ``rows``: source id -> the fields of a
    :class:`PushedUser` in order (the ``ROW_*`` indexes), as stored: ``active`` may be 0 or
    1, and ``attributes`` what ``read_attributes(source_id, attributes)`` makes a mapping of
    (the store's text, or None where the store reads it when asked; without
    ``read_attributes``: a mapping already). Further fields may follow."""

    __slots__ = ("rows", "_made", "_read", "_attributes")

    def __init__(self, rows: dict[str, tuple],
                 read_attributes: "Callable[[str, Any], Mapping[str, str]] | None" = None):
        self.rows = rows
        self._made: dict[str, PushedUser] = {}
        self._read = read_attributes
        self._attributes: dict[str, Mapping[str, str]] = {}

    @classmethod
    def of(cls, users: Mapping[str, PushedUser]) -> "PushedUsers":
        """``users`` as rows (as it is when it already is)."""
        if isinstance(users, PushedUsers):
            return users
        return cls({sid: (sid, u.scim_id, u.user_name, u.active, u.attributes, u.digest,
                          u.source_digest, u.manager_reference) for sid, u in users.items()})

    def attributes(self, source_id: str) -> Mapping[str, str]:
        """The attributes of one row, made a mapping once (the same object every time)."""
        made = self._attributes.get(source_id)
        if made is None:
            stored = self.rows[source_id][ROW_ATTRIBUTES]
            made = stored if self._read is None else self._read(source_id, stored)
            self._attributes[source_id] = made
        return made

    def __getitem__(self, source_id: str) -> PushedUser:
        user = self._made.get(source_id)
        if user is None:
            row = self.rows[source_id]
            user = self._made[source_id] = PushedUser(
                source_id, row[ROW_SCIM_ID], row[ROW_USER_NAME], bool(row[ROW_ACTIVE]),
                self.attributes(source_id), row[ROW_DIGEST], row[ROW_SOURCE_DIGEST],
                row[ROW_MANAGER_REFERENCE])
        return user

    def __contains__(self, source_id: object) -> bool:
        return source_id in self.rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def keys(self):
        return self.rows.keys()


ROW_SCIM_ID, ROW_USER_NAME, ROW_ACTIVE, ROW_ATTRIBUTES, ROW_DIGEST, ROW_SOURCE_DIGEST, \
    ROW_MANAGER_REFERENCE = range(1, 8)


class DesiredUsers(Mapping):
    """The desired users by source id (``map_directory``). A user whose value is exactly
    its pushed row in ``basis`` (nearly every one, in a cycle that changed little) is held
    as None and becomes a :class:`User` only when looked up; ``changed`` skips those.
    ``keep_reference``: such a user names the manager reference its row recorded (the
    mapping has a manager), else none."""

    __slots__ = ("users", "basis", "keep_reference", "_made")

    def __init__(self, users: dict[str, "User | None"], basis: "PushedUsers",
                 keep_reference: bool):
        self.users = users
        self.basis = basis
        self.keep_reference = keep_reference
        self._made: dict[str, User] = {}

    def kept(self, source_id: str, reference: str | None = None) -> User:
        """The User the pushed row of ``source_id`` stands for; ``reference``: its manager
        reference, where it is not the row's."""
        row = self.basis.rows[source_id]
        if reference is None:
            reference = (row[ROW_MANAGER_REFERENCE] or "") if self.keep_reference else ""
        return User(source_id, row[ROW_USER_NAME], bool(row[ROW_ACTIVE]),
                    self.basis.attributes(source_id), row[ROW_DIGEST], row[ROW_SOURCE_DIGEST],
                    reference)

    def changed(self, rows: Mapping[str, tuple]):
        """(source id, User) for each user, but those that are exactly their row in
        ``rows`` when those are the rows they were kept from."""
        if rows is not self.basis.rows:
            return self.items()
        return ((sid, user) for sid, user in self.users.items() if user is not None)

    def digests(self):
        """(source id, digest) of each user, none made a User."""
        rows = self.basis.rows
        return ((sid, user.digest if user is not None else rows[sid][ROW_DIGEST])
                for sid, user in self.users.items())

    def __getitem__(self, source_id: str) -> User:
        user = self.users[source_id]
        if user is None:
            user = self._made.get(source_id)
            if user is None:
                user = self._made[source_id] = self.kept(source_id)
        return user

    def __contains__(self, source_id: object) -> bool:
        return source_id in self.users

    def __iter__(self):
        return iter(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def keys(self):
        return self.users.keys()


@dataclass(frozen=True, slots=True)
class PushedGroup:
    source_id: str
    scim_id: str
    display_name: str
    digest: str
    members: "frozenset[str] | StoredMembers"     # source ids of member users
    # agent/core/stamps.py: the stamp recorded with these members, when it holds for the
    # snapshot as it is now ("" otherwise)
    stamp: str = field(default="", compare=False)


class StoredMembers(LazyMembers):
    """A pushed group's members, read from the store only when first used: a plan that
    finds the group's desired members to be these very ones (agent/core/stamps.py) never
    reads them. ``len`` and truth are known without reading them."""

    __slots__ = ()


@dataclass(frozen=True)
class Snapshot:
    users: Mapping[str, PushedUser]
    groups: Mapping[str, PushedGroup]
    # the store's member epoch when read (agent/core/stamps.py); None: no store
    epoch: int | None = field(default=None, compare=False)

    @classmethod
    def empty(cls) -> "Snapshot":
        return cls({}, {})

    @property
    def is_empty(self) -> bool:
        return not self.users and not self.groups

    @property
    def active_users(self) -> int:
        return sum(1 for row in PushedUsers.of(self.users).rows.values() if row[ROW_ACTIVE])
