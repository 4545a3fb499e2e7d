"""Source records -> desired state: scope, attribute expressions, identity, nested groups.

Pure: no I/O. Every source goes through the same rules, so an LDAP group and an Okta group
flatten the same way, a scope rule means the same on a file and on Entra, and a missing
e-mail is handled the same way everywhere.

Order: scope rules (``scope.py``) pick the records first, on their raw attributes; each user
in scope is then mapped attribute by attribute (``expressions.py``); bad data in a record
makes that record a *problem* (reported once, held, never a crash); names shared by two
records make both problems; last, ``manager`` references are resolved to the manager's
source id (see :func:`resolve_managers`), and groups are flattened to their active members.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress, filterfalse, repeat
from operator import attrgetter, is_, itemgetter, not_

from connectors.base import USER_ATTRIBUTES, Directory, GroupRecord, UserRecord

from .expressions import BadValue, Expression
from .model import (ROW_ACTIVE, ROW_MANAGER_REFERENCE,
                    ROW_SOURCE_DIGEST, ROW_USER_NAME, DesiredState, DesiredUsers, Group, Problem,
                    PushedUser, PushedUsers, Snapshot, User)
from .reuse import (Reused, manager_digest, mapping_fingerprint, record_digest, reusable,
                    source_record_digest, standing_users)
from .scope import Objects, Scope
from .stamps import changed_users, clean, group_stamps, member_digests

log = logging.getLogger(__name__)

DEFAULT_ADMIN_GROUP_NAME = "Split_Administrators"
GROUP_ATTRIBUTES = frozenset({"displayName"})      # what [source.group_attributes] may set


def as_expression(value: object) -> Expression:
    """An Expression as is; a name, a list or a tuple of names parsed like the config."""
    return value if isinstance(value, Expression) else Expression.parse(value)


@dataclass(frozen=True)
class MappingRules:
    """How raw records become SCIM values, and which records are in scope.

    ``user_attributes``: flat SCIM name -> expression. ``userName`` falls back to ``email``
    and the other way round, so one of them is enough; ``displayName`` falls back to the
    given and family names. ``group_name`` is the expression of a group's ``displayName``
    on the target; ``source_group_name`` the source's own name attributes (what
    ``admin_group`` may name). ``admin_group`` names a source group (by id or name) whose
    members become Split's administrators, pushed as ``admin_group_name``. Plain names and
    lists are accepted wherever an expression is, and parsed as the config would.
    """

    user_attributes: Mapping[str, Expression]
    group_name: Expression = Expression.parse("displayName")
    admin_group: str = ""
    admin_group_name: str = DEFAULT_ADMIN_GROUP_NAME
    scope: Scope = Scope()
    source_group_name: Expression | None = None

    def __post_init__(self):
        object.__setattr__(self, "user_attributes",
                           {k: as_expression(v) for k, v in dict(self.user_attributes).items()})
        object.__setattr__(self, "group_name", as_expression(self.group_name))
        if self.source_group_name is None:
            object.__setattr__(self, "source_group_name", self.group_name)
        if not isinstance(self.scope, Scope):
            object.__setattr__(self, "scope", Scope(tuple(self.scope)))

    @classmethod
    def for_source(cls, source_cls: type, overrides: Mapping[str, object] = (),
                   group_attributes: Mapping[str, object] = (), **kwargs) -> "MappingRules":
        """The source's defaults, with ``[source.attributes]`` (``overrides``) and
        ``[source.group_attributes]`` on top."""
        mapping: dict[str, Expression] = {k: Expression.parse(tuple(v))
                                          for k, v in source_cls.default_mapping.items()}
        for scim_name, expression in dict(overrides).items():
            mapping[scim_name] = as_expression(expression)
        own_name = Expression.parse(tuple(source_cls.group_name_attributes))
        group_name = dict(group_attributes).get("displayName", own_name)
        return cls(user_attributes=mapping, group_name=as_expression(group_name),
                   source_group_name=own_name, **kwargs)

    def raw_attributes(self) -> list[str]:
        """Every raw attribute name the mapping and the scope rules read, sorted: what a
        source that fetches named attributes must fetch."""
        names = set(self.scope.attributes()) | self.group_name.attributes()
        for expression in self.user_attributes.values():
            names |= expression.attributes()
        assert self.source_group_name is not None
        names |= self.source_group_name.attributes()
        return sorted(names)

    def unknown_attributes(self) -> list[str]:
        return sorted(set(self.user_attributes) - USER_ATTRIBUTES)


def complete(attributes: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The fallbacks every source shares, and a note for each one used: userName from the
    e-mail and the other way round, displayName from the given and family names."""
    attrs = dict(attributes)
    notes: dict[str, str] = {}
    user_name = attrs.get("userName") or attrs.get("email", "")
    if user_name and not attrs.get("userName"):
        notes["userName"] = "empty: the e-mail is used"
    email = attrs.get("email") or (user_name if "@" in user_name else "")
    if email and not attrs.get("email"):
        notes["email"] = "empty: userName is used (it is an e-mail address)"
    if user_name:
        attrs["userName"] = user_name
    if email:
        attrs["email"] = email
    if "displayName" not in attrs:
        full = " ".join(v for v in (attrs.get("name.givenName"), attrs.get("name.familyName"))
                        if v)
        if full:
            attrs["displayName"] = full
            notes["displayName"] = "empty: given name and family name are used"
    return attrs, notes


@dataclass
class _Mapper:
    rules: MappingRules
    problems: list[Problem] = field(default_factory=list)

    def user(self, record: UserRecord, digest: str = "") -> User | None:
        """``digest``: the record's (``record_digest``); a user naming a manager is given
        the rest of its source_digest once the manager is resolved."""
        attrs: dict[str, str] = {}
        bad: list[str] = []
        for scim_name, expression in self.rules.user_attributes.items():
            if scim_name not in USER_ATTRIBUTES:
                continue
            try:
                value = expression.evaluate(record.attributes)
            except BadValue as exc:
                bad.append(f"{scim_name}: {exc}")
                continue
            if value:
                attrs[scim_name] = value
        attrs, _notes = complete(attrs)
        user_name = attrs.get("userName", "")
        if bad:
            self.problems.append(Problem("user", record.id, user_name or record.id,
                                         f"bad data in the source record ({'; '.join(bad)})",
                                         disabled=not record.active))
            return None
        if not user_name:
            self.problems.append(Problem("user", record.id, record.id,
                                         "no userName or e-mail in the source record",
                                         disabled=not record.active))
            return None
        if digest and "manager" not in attrs:
            digest += manager_digest(None)
        return User(source_id=record.id, user_name=user_name, active=record.active,
                    attributes=attrs, source_digest=digest,
                    manager_reference=attrs.get("manager", ""))

    def group_name(self, record: GroupRecord) -> str:
        """The group's name on the target; "" (and a problem) when it has none, when its
        data is bad, or when it merely has the administrators group's name: only
        ``sync.admin_group`` feeds Split's administrators, so a look-alike never makes its
        members admins."""
        try:
            name = self.rules.group_name.evaluate(record.attributes)
        except BadValue as exc:
            self.problems.append(Problem("group", record.id, record.id,
                                         f"bad data in the source record (displayName: {exc})"))
            return ""
        wanted = self.rules.admin_group
        if wanted and is_admin_group(record, name, self.rules):
            return self.rules.admin_group_name
        if name.casefold() == self.rules.admin_group_name.casefold():
            where = (f"sync.admin_group is {wanted!r}" if wanted else "sync.admin_group is not set")
            self.problems.append(Problem(
                "group", record.id, name,
                f"its name is that of Split's administrators group, but {where}: only "
                "the group named by sync.admin_group makes people administrators"))
            return ""
        if not name:
            self.problems.append(Problem("group", record.id, record.id, "the group has no name"))
        return name


def is_admin_group(record: GroupRecord, name: str, rules: MappingRules) -> bool:
    """``sync.admin_group`` names this group: by id, by its name on the target, or by the
    source's own name for it (before a displayName expression reshaped it)."""
    wanted = rules.admin_group.casefold()
    if not wanted:
        return False
    assert rules.source_group_name is not None
    own = rules.source_group_name.trace(record.attributes).value
    return record.id == rules.admin_group or wanted in (name.casefold(), own.casefold())


def flatten_members(groups: Mapping[str, GroupRecord], user_ids: set[str],
                    keep: set[str] | None = None,
                    only: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
    """Transitive user members of every group. Cycles are tolerated (a group reached twice is
    not walked twice); ids that are neither a known user nor a known group are ignored; an
    id that is both a user's and a group's is the user. Set operations: a group's members
    are never walked one by one. ``keep`` (some of ``user_ids``): only those users are
    members (the same as intersecting each result with it, in one pass less). ``only``: the
    groups worked out (those nested in them are walked, not given)."""
    flat: dict[str, frozenset[str]] = {}
    group_ids = set(groups) - user_ids
    if keep is not None:
        user_ids = keep
    for gid in groups if only is None else only:
        current = groups[gid].members
        if not current & group_ids:         # nothing nested (most groups): one intersection
            direct = frozenset(current) & user_ids
            # the group's own set when every member stays: no second copy of it (else one
            # made from a set, which has half the table of one made by adding members)
            flat[gid] = current if len(direct) == len(current) and \
                type(current) is frozenset else frozenset(set(direct))
            continue
        seen_groups = {gid}
        stack = [gid]
        members: set[str] = set()
        while stack:
            current = groups[stack.pop()].members
            members |= current & user_ids
            for member in current & group_ids:
                if member in seen_groups:
                    continue
                seen_groups.add(member)
                if member in flat:           # already flattened: reuse it
                    members |= flat[member]
                else:
                    stack.append(member)
        flat[gid] = frozenset(members)
    return flat


def _drop_duplicates(objects: dict[str, object], key_of, kind: str, problems: list[Problem],
                     folded: dict[str, str] | None = None, made=None):
    """``folded``: each object's key casefolded, by id, when known; ``made(sid)``: the
    object of an entry held as None."""
    if folded is None:
        folded = {sid: key_of(obj).casefold() for sid, obj in objects.items()}
    if len(set(folded.values())) == len(folded):
        return                          # no name is shared (the common case: one pass)
    by_key: dict[str, list[str]] = {}
    for sid in objects:                 # (in the objects' order)
        by_key.setdefault(folded[sid], []).append(sid)
    for sids in by_key.values():
        if len(sids) > 1:
            for sid in sids:
                obj = objects.pop(sid)
                if obj is None:
                    obj = made(sid)
                key = key_of(obj)
                problems.append(Problem(kind, sid, key,
                                        f"{len(sids)} source {kind}s share the name {key!r}",
                                        disabled=getattr(obj, "active", True) is False))


# ---------------------------------------------------------------------------------------------
# manager: a reference to another user, resolved to that user's source id


def normalise_dn(dn: str) -> str:
    """A DN compared by value: attribute types lower-cased, values case-folded, spaces
    around separators dropped. Escaped commas are kept; hex escapes are not decoded (the
    source's own spelling of a DN is consistent within one directory)."""
    rdns, current, i = [], [], 0
    while i < len(dn):
        c = dn[i]
        if c == "\\" and i + 1 < len(dn):
            current.append(dn[i:i + 2])
            i += 2
            continue
        if c in ",;":
            rdns.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    rdns.append("".join(current))
    out = []
    for rdn in rdns:
        kind, _sep, value = rdn.partition("=")
        out.append(f"{kind.strip().lower()}={value.strip().casefold()}")
    return ",".join(out)


class ManagerIndex:
    """Finds the user a ``manager`` value refers to: a source id, a DN (LDAP records carry
    their ``dn``), or a userName / e-mail (case-insensitive), among the users in scope."""

    def __init__(self, records: Mapping[str, UserRecord], users: Mapping[str, User]):
        self.records = records
        self.users = users
        self._dns: dict[str, str] | None = None
        self._names: dict[str, str] | None = None

    def resolve(self, reference: str) -> str | None:
        if reference in self.records:
            return reference
        if "=" in reference:
            if self._dns is None:
                self._dns = {}
                for sid, record in self.records.items():
                    dn = record.attributes.get("dn")
                    if isinstance(dn, str) and dn:
                        self._dns[normalise_dn(dn)] = sid
            found = self._dns.get(normalise_dn(reference))
            if found is not None:
                return found
        if self._names is None:
            self._names = {}
            for sid, user in self.users.items():
                for key in (user.attributes.get("email", ""), user.user_name):
                    if key:
                        self._names.setdefault(key.casefold(), sid)
        return self._names.get(reference.casefold())


def resolve_managers(users: dict[str, User], records: Mapping[str, UserRecord],
                     reused: Mapping[str, "Reused"] = {}, todo: Iterable[str] | None = None,
                     digests: dict[str | None, str] | None = None,
                     everyone: Mapping[str, User] | None = None) -> int:
    """Replace each ``manager`` value by the source id of the user it names, in place; a
    reference to nobody in scope (or to oneself) is dropped. Returns how many were dropped.
    Each user is given its ``source_digest`` (its record's digest and the manager it names).

    ``reused`` users were taken from the snapshot (their record did not change): theirs is
    the manager they named when pushed; it is resolved again from the record's reference,
    since the user it named may have left or another may have taken that name.

    ``todo``: only these users (default: every one); the others are known to name the very
    manager they named when pushed. ``digests``: manager -> its part of a source digest,
    as far as known. ``everyone``: the users as Users, where ``users`` holds some as None
    (:class:`~.model.DesiredUsers`; the ``todo`` ones are Users there).

    Why a source id: the core speaks source ids everywhere (group members too); only the
    snapshot knows which SCIM id Split gave the manager, and the engine turns the source id
    into that target id as it sends (``agent/core/references.py``)."""
    index = ManagerIndex(records, users if everyone is None else everyone)
    ids = records.keys()                    # (asks for no record)
    dropped = 0
    digests = {} if digests is None else digests
    for sid in list(users) if todo is None else [sid for sid in todo if sid in users]:
        user = users[sid]
        again = reused.get(sid)
        reference = again[1] if again is not None else user.attributes.get("manager")
        if reference is None and again is None:
            continue                # names no manager: its source_digest says so already
        if reference is None:
            manager = None
        else:
            manager = reference if reference in ids else index.resolve(reference)
        if manager == sid:
            manager = None
        if reference is not None and manager is None:
            dropped += 1
        named = digests.get(manager)
        if named is None:
            named = digests[manager] = manager_digest(manager)
        if again is not None:
            pushed_as = user.source_digest
            if pushed_as.endswith(named) and len(pushed_as) == again[0] + len(named):
                continue                               # exactly the value pushed
            attributes = dict(user.attributes)
            attributes.pop("manager", None)
            if manager is not None:
                attributes["manager"] = manager
            users[sid] = User(sid, user.user_name, user.active, attributes,
                              source_digest=pushed_as[:again[0]] + named,
                              manager_reference=reference or "")
            continue
        attributes = user.attributes
        if manager != reference:
            attributes = dict(attributes)
            if manager is None:
                del attributes["manager"]
            else:
                attributes["manager"] = manager
        users[sid] = User(sid, user.user_name, user.active, attributes,
                          user.digest if attributes is user.attributes else "",
                          source_digest=user.source_digest and user.source_digest + named,
                          manager_reference=user.manager_reference)
    return dropped


# ---------------------------------------------------------------------------------------------


def in_scope(directory: Directory, scope: Scope) -> tuple[Mapping[str, UserRecord],
                                                          Mapping[str, GroupRecord]]:
    """The user and group records the scope rules admit."""
    users: Mapping[str, UserRecord] = directory.users      # read only: no copy
    groups: Mapping[str, GroupRecord] = directory.groups
    if scope.has_rules(Objects.USERS):
        users = {k: r for k, r in users.items() if scope.admits(Objects.USERS, r.attributes)}
    if scope.has_rules(Objects.GROUPS):
        groups = {k: r for k, r in groups.items() if scope.admits(Objects.GROUPS, r.attributes)}
    return users, groups


def map_directory(directory: Directory, rules: MappingRules,
                  pushed: Mapping[str, PushedUser] | None = None, *,
                  stamps: Snapshot | None = None) -> DesiredState:
    """The desired state. ``pushed`` (the snapshot's users): a record unchanged since its
    value was pushed takes that value instead of being mapped again (see reuse.py); the result
    is the same either way. ``stamps`` (the snapshot whose users ``pushed`` is): a group
    whose stamp holds takes its pushed members (see stamps.py), and the stamps each group
    may be recorded with are worked out; the result is the same either way."""
    mapper = _Mapper(rules)
    records, group_records = in_scope(directory, rules.scope)
    left_users = len(directory.users) - len(records)
    left_groups = len(directory.groups) - len(group_records)
    if left_users or left_groups:
        log.info("scope rules leave out %d of %d users and %d of %d groups", left_users,
                 len(directory.users), left_groups, len(directory.groups))
    reused: dict[str, Reused] = {}
    fingerprint = mapping_fingerprint(rules)
    manager = rules.user_attributes.get("manager")
    pushed_users = PushedUsers.of(pushed) if pushed else PushedUsers({})
    rows = pushed_users.rows                # (no PushedUser is made)
    ids = records.keys()                    # (asks for no record)
    # a source's own digests: a record is built only when its value cannot be the pushed one
    given = directory.user_digests
    # The users whose row stands for them, found all at once (nearly every one, in a cycle
    # that changed little); each of the others is tested in the loop below, which finds
    # the same of any of them that stands (see standing_users), and mapped if it does not.
    # digests: manager -> its part of a source digest
    standing, digests = standing_users(ids, given, rows, fingerprint, manager is not None) \
        if given is not None and rows else (set(), {})
    # source id -> its User, or None where it is exactly its pushed row (see DesiredUsers),
    # in the records' order
    users: dict[str, User | None] = dict.fromkeys(ids)
    desired = DesiredUsers(users, pushed_users, manager is not None)
    record: UserRecord | None = None
    todo: list[str] = []                    # users whose manager resolve_managers works out
    named_nobody: list[str] = []            # ... and those it need not (themselves, by id)
    for sid in filterfalse(standing.__contains__, ids) if standing else ids:
        row = rows.get(sid)
        again = None
        if given is None:
            record = records[sid]
            digest = record_digest(record, fingerprint)
            if row is not None and digest and row[ROW_SOURCE_DIGEST].startswith(digest):
                again = reusable(record, digest, row, manager)
        else:       # (the record is built only if it is mapped)
            digest = source_record_digest(given.get(sid, ""), fingerprint)
            again = reusable(None, digest, row, manager)
        if again is not None:
            # resolve_managers, at once, for a reference by id or none (nearly everyone's):
            # naming the manager it named when pushed, the user is exactly the pushed value
            reference = again[1]
            if reference is None or reference in ids:
                boss = reference if reference != sid else None
                named = digests.get(boss)
                if named is None:
                    named = digests[boss] = manager_digest(boss)
                pushed_as = row[ROW_SOURCE_DIGEST]
                if pushed_as.endswith(named) and len(pushed_as) == again[0] + len(named):
                    if reference is not None and boss is None:
                        named_nobody.append(sid)
                    # no User made: the row stands for it (DesiredUsers), when it records
                    # the reference (as it does for a source's own digests)
                    users[sid] = None if (reference or "") == (
                        (row[ROW_MANAGER_REFERENCE] or "") if manager is not None else "") \
                        else desired.kept(sid, reference or "")
                    continue
            users[sid] = desired.kept(sid, again[1] or "")
            reused[sid] = again
            todo.append(sid)
            continue
        user = mapper.user(records[sid] if record is None else record, digest)
        if user is None:
            del users[sid]
            continue
        users[sid] = user
        todo.append(sid)
    # the users held as their rows (read from the rows, in bulk) and those made Users
    nones = list(map(is_, users.values(), repeat(None)))
    held, made = list(compress(users, nones)), list(compress(users, map(not_, nones)))
    held_rows = list(map(rows.__getitem__, held))
    folded = dict(zip(held, map(str.casefold, map(itemgetter(ROW_USER_NAME), held_rows))))
    folded.update((sid, users[sid].user_name.casefold()) for sid in made)
    _drop_duplicates(users, attrgetter("user_name"), "user", mapper.problems, folded,
                     desired.kept)
    dropped = resolve_managers(users, records, reused, todo, digests, everyone=desired) \
        + sum(1 for sid in named_nobody if sid in users)
    if dropped:
        log.info("%d manager reference(s) name no user in scope; manager is left unset for "
                 "them", dropped)

    # Only active users are members on the target: a deactivated account keeps no access.
    active = set(compress(held, map(itemgetter(ROW_ACTIVE), held_rows)))
    active.update(sid for sid in made if sid in users and users[sid].active)
    if len(users) != len(held) + len(made):        # names shared: some were dropped
        active.intersection_update(users)
    del held, made, held_rows, folded
    # Groups whose stamp holds: their pushed members are their desired ones (stamps.py)
    stamped: dict[str, str] = {}
    kept: set[str] = set()
    if stamps is not None:
        assert stamps.users is pushed, "stamps are of the snapshot whose users are pushed"
        clash = not directory.groups.keys().isdisjoint(directory.users.keys())
        stamped = group_stamps(directory.groups, member_digests(
            directory.groups, directory.group_digests), group_records,
            changed_users(active, rows), clash)
        kept = clean(stamped, stamps.groups)
    # Nesting runs through every group read, in scope or not: leaving a group out of what
    # is pushed does not take its members out of the groups it is nested in.
    flat = flatten_members(directory.groups, set(records), keep=active,
                           only=filterfalse(kept.__contains__, group_records) if kept else None)
    # (counted only to be said: every member of every group looked at once more)
    known = directory.users.keys() | directory.groups.keys() \
        if log.isEnabledFor(logging.INFO) else None
    strangers = sum(len(g.members - known) for g in directory.groups.values()) \
        if known is not None else 0
    if strangers:
        log.info("%d group member reference(s) name no user or group read from the source "
                 "(outside its scope, or deleted); they are ignored", strangers)
    groups: dict[str, Group] = {}
    for gid, record in group_records.items():
        name = mapper.group_name(record)
        if not name:
            continue
        members = stamps.groups[gid].members if gid in kept else frozenset(flat.pop(gid))
        groups[gid] = Group(source_id=gid, display_name=name, members=members)
    del flat
    _drop_duplicates(groups, attrgetter("display_name"), "group", mapper.problems)

    if rules.admin_group and not any(g.display_name == rules.admin_group_name
                                     for g in groups.values()):
        mapper.problems.append(Problem("group", "", rules.admin_group,
                                       "sync.admin_group names no group in the source or "
                                       "its scope"))
    for name in rules.unknown_attributes():
        log.warning("attribute mapping %r is not a SCIM user attribute this agent sends; ignored",
                    name)
    if not directory.groups_read:
        mapper.problems.append(Problem("group", "", "(every group)",
                                       "the source said nothing about groups (no groups section "
                                       "in the export); groups are left as they are"))
    return DesiredState(users=desired, groups=groups, problems=tuple(mapper.problems),
                        groups_read=directory.groups_read,
                        group_stamps={gid: stamped[gid] for gid in groups if gid in stamped},
                        stamps_epoch=stamps.epoch if stamps is not None else None)
