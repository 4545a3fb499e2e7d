"""The two ports: what sources yield and the target holds, the protocols, and the error tree.

Sources speak a vendor protocol and return plain records with the vendor's own attribute
names; they know nothing of SCIM attributes, the snapshot or the planner (``agent/`` decides
all of that). A source reads either a complete :class:`Directory` or, where the vendor has a
change feed, a :class:`ChangeSet` since a cursor it handed out earlier.

The target (the SCIM service provider) takes and returns plain records too:
:class:`TargetUser` and :class:`TargetGroup` carry the target's own id and *flat* attributes
(:data:`USER_ATTRIBUTES`), never a wire format. What a create or update puts on the wire is
the target implementation's business (``connectors/scim/``); what to create or update is the
planner's (``agent/core/``).

Errors are modelled by what the caller must do::

    ConnectorError                 base of everything raised on purpose by connectors/
    ├── SettingError               a source setting is wrong (``Settings.validate()``, run when
    │                              the config is loaded); names the key; fix the config (fatal)
    ├── Interrupted                a stop was requested: end quietly, record nothing more
    ├── SourceError                the source could not be read completely; abort the cycle
    │   ├── SourceAuthError        credentials rejected by the directory (fatal for the cycle)
    │   └── CursorExpired          the stored change cursor is no longer valid: read in full
    └── TargetError                an operation against the SCIM target failed
        ├── TransientError         timeouts, 5xx, 429: retried with backoff, then reported
        ├── ConflictError          409 uniqueness: look the object up and adopt it
        ├── NotFoundError          404: the object vanished on the target; recreate or forget
        ├── RejectedError          400 and friends: skip this object, report it, go on
        │   └── UnsupportedError   501: the target does not implement this request at all
        └── FatalTargetError       401/403 or a broken endpoint: stop the whole run now
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


# ---------------------------------------------------------------------------------------------
# Activity: proof of progress for a watchdog


_activity_listeners: list = []


def on_activity(callback) -> None:
    """Call ``callback()`` whenever a connector makes progress (an HTTP answer, an LDAP page),
    so a daemon can tell a long read from a hung one."""
    _activity_listeners.append(callback)


def activity() -> None:
    for callback in list(_activity_listeners):
        callback()


# ---------------------------------------------------------------------------------------------
# Secrets


class Secret:
    """A secret value. Its ``str``/``repr`` never show the value; use ``.reveal()``.

    A command that needs no secret (``plan`` needs no token, ``status`` no source password)
    loads the config with :meth:`unresolved` placeholders: the setting is known to be there,
    so ``Settings.validate()`` can check either-or rules, but there is no value to reveal.
    """

    __slots__ = ("_value", "origin")

    def __init__(self, value: str | None, origin: str = "literal"):
        self._value = value
        self.origin = origin  # e.g. "env SCIM_TOKEN": safe to show, helps operators

    @classmethod
    def unresolved(cls, origin: str = "the config file") -> "Secret":
        return cls(None, origin)

    @property
    def resolved(self) -> bool:
        return self._value is not None

    def reveal(self) -> str:
        if self._value is None:
            raise SettingError("", f"the secret from {self.origin} was not resolved for this "
                                   "command")
        return self._value

    def __repr__(self) -> str:
        if self._value is None:
            return f"Secret(<not resolved>, from {self.origin})"
        return f"Secret(<hidden>, from {self.origin})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickle a secret into a cache or a crash dump
        raise TypeError("secrets cannot be pickled")


# ---------------------------------------------------------------------------------------------
# Records


Value = str | int | float | bool | list[str] | None


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One account as the source sees it.

    ``id`` is the source's stable identifier (entryUUID, objectGUID, Okta id, Entra object
    id): it survives renames and moves. ``attributes`` keeps the vendor's own names.
    """

    id: str
    attributes: Mapping[str, Value]
    active: bool = True


class LazyMembers(Set):
    """A group's member ids, made a frozenset only when first used as a set: a frozenset in
    every way that matters (set operations give frozensets; equal to a frozenset of the same
    ids; an object is equal to itself without being made). ``count``: the number of members,
    when known without making them (else ``len`` makes them). ``listed``: the ids as the
    source listed them, when it did (each a member; any may be given twice), for what needs
    only to look at each (agent/core/stamps.py)."""

    __slots__ = ("_load", "_count", "_members", "listed")

    def __init__(self, load: Callable[[], frozenset[str]], count: int | None = None,
                 listed: Sequence[str] | None = None):
        self._load = load
        self._count = count
        self._members: frozenset[str] | None = None
        self.listed = listed

    @property
    def members(self) -> frozenset[str]:
        if self._members is None:
            self._members = frozenset(self._load())
            self._load = self.listed = None
        return self._members

    @classmethod
    def _from_iterable(cls, it) -> frozenset[str]:
        return frozenset(it)

    def __len__(self) -> int:
        if self._members is None and self._count is not None:
            return self._count
        return len(self.members)

    def __contains__(self, member: object) -> bool:
        return member in self.members

    def __iter__(self):
        return iter(self.members)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, LazyMembers):
            other = other.members
        return self.members == other if isinstance(other, Set) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.members)

    @staticmethod
    def _set(other) -> frozenset:
        return other.members if isinstance(other, LazyMembers) else frozenset(other)

    def __sub__(self, other):
        return self.members - self._set(other)

    def __rsub__(self, other):
        return frozenset(other) - self.members

    def __and__(self, other):
        return self.members & self._set(other)

    __rand__ = __and__

    def __or__(self, other):
        return self.members | self._set(other)

    __ror__ = __or__

    def __xor__(self, other):
        return self.members ^ self._set(other)

    __rxor__ = __xor__

    def __le__(self, other):
        return self.members <= self._set(other)

    def __ge__(self, other):
        return self.members >= self._set(other)

    def __lt__(self, other):
        return self.members < self._set(other)

    def __gt__(self, other):
        return self.members > self._set(other)

    def isdisjoint(self, other) -> bool:
        return self.members.isdisjoint(other.members if isinstance(other, LazyMembers)
                                       else other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} members)"


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """One group. ``members`` holds direct members: ids of users *or* of other groups
    (nested groups are flattened by the engine, not here)."""

    id: str
    attributes: Mapping[str, Value]
    members: "frozenset[str] | LazyMembers" = frozenset()


@dataclass(frozen=True)
class Directory:
    """A complete read of the source: every user and group in its scope.

    ``cursor`` is where a later :meth:`Source.read_changes` may continue from (None when the
    source has no change feed). ``groups_read`` is False when the source said nothing about
    groups at all (an export without a groups section): that is not an empty directory of
    groups, and the engine leaves every group as it is.

    ``user_digests`` (optional; None: the engine digests each record itself) is a source's
    own digest of each user, by id, over everything that user's record is made from: two
    reads that give an id the same digest give it equal records. A source that has one
    cheaply (the file source: of each parsed object) may then make ``users`` a mapping that
    builds a record only when it is asked for: the engine asks only for records whose digest
    differs from the one their pushed value was mapped from. Its ``keys()`` and ``in`` must
    not build records; building one must not fail (check the records while reading).

    ``group_digests`` (optional, likewise): a source's own digest of each group's member
    list, by id: two reads that give a group id the same digest give it equal members.
    """

    users: Mapping[str, UserRecord]
    groups: Mapping[str, GroupRecord]
    cursor: str | None = None
    groups_read: bool = True
    user_digests: Mapping[str, str] | None = None
    group_digests: Mapping[str, str] | None = None

    @classmethod
    def of(cls, users=(), groups=(), cursor: str | None = None,
           groups_read: bool = True) -> "Directory":
        return cls({u.id: u for u in users}, {g.id: g for g in groups}, cursor, groups_read)


@dataclass(frozen=True)
class ChangeSet:
    """What changed since a cursor: records to upsert and ids that left the source."""

    users: Mapping[str, UserRecord] = field(default_factory=dict)
    groups: Mapping[str, GroupRecord] = field(default_factory=dict)
    removed_users: frozenset[str] = frozenset()
    removed_groups: frozenset[str] = frozenset()
    cursor: str | None = None

    def apply_to(self, view: Directory) -> Directory:
        """The complete view after this change set (explicit removals included)."""
        users = dict(view.users)
        groups = dict(view.groups)
        users.update(self.users)
        groups.update(self.groups)
        for uid in self.removed_users:
            users.pop(uid, None)
        for gid in self.removed_groups:
            groups.pop(gid, None)
        return Directory(users, groups, self.cursor)

    def __len__(self) -> int:
        return (len(self.users) + len(self.groups)
                + len(self.removed_users) + len(self.removed_groups))


# ---------------------------------------------------------------------------------------------
# Target records

# The flat attribute names a user has on the target: core User attributes (RFC 7643 §4.1),
# dotted sub-attributes of ``name``, ``email`` and ``phoneNumber`` for the one primary work
# value, and the enterprise extension (§4.3; ``manager`` holds the manager's target id).
CORE_USER_ATTRIBUTES = (
    "userName", "displayName", "nickName", "title", "userType", "preferredLanguage",
    "locale", "timezone", "profileUrl",
    "name.givenName", "name.familyName", "name.middleName", "name.formatted",
    "name.honorificPrefix", "name.honorificSuffix",
    "email", "phoneNumber",
)
ENTERPRISE_USER_ATTRIBUTES = (
    "employeeNumber", "costCenter", "organization", "division", "department", "manager",
)
USER_ATTRIBUTES = frozenset(CORE_USER_ATTRIBUTES + ENTERPRISE_USER_ATTRIBUTES)

# The request dialects a target can speak (``[target] dialect``): the shapes Microsoft Entra's
# or Okta's SCIM client sends, or RFC 7644 read literally. What each sends is the target
# implementation's business (connectors/scim/dialects.py); the first is the default.
TARGET_DIALECTS = ("entra", "okta", "rfc")


@dataclass(frozen=True, slots=True)
class TargetUser:
    """A user as the target holds it: its id there, flat attributes, and whether it is active."""

    id: str
    user_name: str
    active: bool
    attributes: Mapping[str, str]          # flat names (USER_ATTRIBUTES), userName included
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class TargetGroup:
    """A group as the target holds it; ``members`` are the target ids of its member users."""

    id: str
    display_name: str
    members: frozenset[str] = frozenset()
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Created:
    """The answer to a create. ``existed``: the target already held the object (a 409, an
    answer lost after sending, a group name Split links instead of creating), so ``record`` is
    what it holds, not what was sent; the engine decides what to make of it."""

    record: TargetUser | TargetGroup
    existed: bool = False


# ---------------------------------------------------------------------------------------------
# The protocols


@runtime_checkable
class Target(Protocol):
    """The service provider the agent writes to. Every method raises the TargetError tree.

    Creates cost one request; a create whose outcome is unknown (a timeout after sending) or
    that meets a 409 is looked up, never sent twice, and answered as ``Created(existed=True)``
    when found. Member changes may be split into several requests: ``on_chunk`` is told each
    confirmed part, so a failure later loses nothing already done.
    """

    cancel: "threading.Event | None"       # once set: send nothing new, cut waits short
    requests_sent: int
    write_requests: int

    def probe(self) -> None:
        """One cheap authenticated read: a rejected token shows even with nothing to send."""

    def check(self) -> Mapping[str, int | str]:
        """Read-only counts for ``scim-agent check``."""

    def users(self) -> Iterator[TargetUser]:
        """Every user (paged)."""

    def groups(self) -> Iterator[TargetGroup]:
        """Every group with its members (paged)."""

    def find_user(self, user_name: str) -> TargetUser | None:
        """The user with this userName (case-insensitive), if any."""

    def find_group(self, display_name: str) -> TargetGroup | None:
        """The group with this name (case-insensitive), if any."""

    def create_user(self, attributes: Mapping[str, str], active: bool,
                    external_id: str) -> Created: ...

    def update_user(self, user_id: str, changed: Mapping[str, str | None],
                    active: bool | None = None) -> None:
        """Set the changed attributes (None removes one) and, unless None, ``active``."""

    def create_group(self, display_name: str, external_id: str) -> Created:
        """Create an empty group, or link one of that name if the target has it."""

    def rename_group(self, group_id: str, display_name: str) -> None: ...

    def add_members(self, group_id: str, member_ids: Sequence[str],
                    on_chunk: Callable[[Sequence[str]], None] = ...) -> None: ...

    def remove_members(self, group_id: str, member_ids: Sequence[str],
                       on_chunk: Callable[[Sequence[str]], None] = ...) -> None:
        """Members already absent count as removed."""

    def delete_group(self, group_id: str) -> None:
        """A group already gone counts as deleted."""

    def close(self) -> None: ...


@runtime_checkable
class Source(Protocol):
    """A directory the agent reads from, built as ``cls(settings, attributes=names)``.

    ``attributes`` lists every raw attribute name the engine's mapping reads (overrides
    included), so a source that asks its server for named attributes asks for those too;
    a source that always reads everything ignores it.

    Class attributes:

    ``type_name``
        the ``[source] type`` value that selects this source.
    ``Settings``
        a frozen dataclass of the source's own config keys; ``agent/config.py`` validates the
        ``[source]`` table against its fields and types (``Secret`` fields accept the secret
        forms of the config contract). If it has a ``validate()`` method, the loader calls it
        at once; it raises :class:`SettingError` naming the key, and the loader adds the file.
        Checks that need a secret's value skip secrets that are not ``resolved``. If it has a
        ``mapping_overrides()`` method, its entries replace ``default_mapping``'s (a setting
        that picks one of the source's own mappings); ``[source.attributes]`` still wins.
    ``supports_changes``
        True when :meth:`read_changes` is a real change feed; such a source's ``Settings``
        has ``full_read_every`` (a timedelta), how often a complete read replaces change reads.
    ``default_mapping``
        SCIM attribute name -> raw attribute names tried in order (the first non-empty wins);
        ``[source.attributes]`` overrides entries.
    ``group_name_attributes``
        raw attribute names for a group's display name, tried in order.
    """

    type_name: ClassVar[str]
    Settings: ClassVar[type]
    supports_changes: ClassVar[bool]
    default_mapping: ClassVar[Mapping[str, tuple[str, ...]]]
    group_name_attributes: ClassVar[tuple[str, ...]]

    def read(self) -> Directory:
        """A complete read. Raises SourceError rather than returning a partial view."""

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        """Changes since ``cursor``; ``known`` is the last complete view (for resolving
        references such as member DNs). Sources without a change feed raise CursorExpired."""

    def check(self) -> Mapping[str, int | str]:
        """Read-only connectivity and credential test; returns counts to show the operator."""

    def close(self) -> None:
        """Release connections."""


class FullReadOnly:
    """Mixin for sources with no change feed: every cycle is a complete read."""

    supports_changes: ClassVar[bool] = False

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        raise CursorExpired(f"the {self.type_name} source has no change feed")  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Errors


class ConnectorError(Exception):
    """Base class for every error connectors/ raises on purpose."""


class SettingError(ConnectorError):
    """A source setting is wrong. ``key`` names it (``""``: the section as a whole); the
    config loader turns it into its own error naming the file: ``<file>: [source] key: ...``."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class SourceError(ConnectorError):
    """The source could not be read completely; the cycle must not plan from it."""


class SourceAuthError(SourceError):
    """The directory rejected the credentials."""


class CursorExpired(SourceError):
    """The stored change cursor is no longer valid; the caller must read in full."""


class Interrupted(ConnectorError):
    """A stop was requested (SIGTERM): nothing new is sent, waits are cut short."""


class TargetError(ConnectorError):
    """An operation against the SCIM target failed."""

    def __init__(self, message: str, status: int | None = None, scim_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.scim_type = scim_type


class TransientError(TargetError):
    """Worth retrying: timeout, connection error, 5xx, 429."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None,
                 sent: bool = False, unreachable: bool = False):
        super().__init__(message, status)
        self.retry_after = retry_after
        self.sent = sent                # the request may have reached the server: outcome unknown
        self.unreachable = unreachable  # no connection at all: every other request will fail too


class ConflictError(TargetError):
    """409: the object already exists on the target."""


class NotFoundError(TargetError):
    """404: the object is not on the target."""


class RejectedError(TargetError):
    """The target refused this object (400 and similar); skip it, report it."""


class UnsupportedError(RejectedError):
    """501 Not Implemented (RFC 7644 §3.12): the target does not support this kind of request.
    Permanent: never retried; it says what was refused so the operator can tell the target's
    limit from a bad record."""


class FatalTargetError(TargetError):
    """Stop the run: the token was rejected or the endpoint is unusable."""


def is_loopback(host: str | None) -> bool:
    """A loopback host: the one place where a cleartext connection cannot be overheard."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
