"""The LDAP source: complete reads, change reads and ``check``, from records to scope.

* **Stable identity.** Records are keyed by ``objectGUID`` (AD) or ``entryUUID`` (OpenLDAP);
  a rename or move (modrdn) keeps either one, so it is an update, never delete + create. An
  entry without its id attribute fails the read rather than looking deleted.
* **Disabled accounts** are whatever ``disabled_filter`` matches, evaluated by the server
  (AD default: the ACCOUNTDISABLE bit via the bitwise rule ``1.2.840.113556.1.4.803``).
* **Nested groups.** Groups list their direct member DNs, resolved to ids (user or group);
  the engine flattens and drops ids it does not know. ``scope_group`` keeps only its direct
  and nested members: walked in the client (cycles tolerated) or, for AD with ``in_chain``,
  asked of the server with ``LDAP_MATCHING_RULE_IN_CHAIN`` (``1.2.840.113556.1.4.1941``).
* **Change reads.** A membership change may not touch the member's own timestamp (the
  memberof overlay does not; AD's ``memberOf`` is a back-link), so changed *groups* are
  re-read too, and so are the groups that list an object new to the view (a move into the
  base changes the object, not its groups). AD also reports what left: deleted objects and
  those moved out of the bases (:meth:`.changes.UsnMarker.departures`), or reads in full when
  the bind account cannot list deleted objects. OpenLDAP's feed shows neither: the engine's
  periodic full read (``full_read_every``) catches them.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import ClassVar

import ldap3
from ldap3.utils.conv import escape_filter_chars

from ..base import ChangeSet, CursorExpired, Directory, GroupRecord, SourceError, UserRecord
from .changes import ChangeMarker, change_marker, parse_cursor
from .connect import Connector, quietly_unbind
from .decoding import MEMBER_ATTRIBUTES, AttributeDecoder, id_decoder, member_dns
from .dn import normalise_dn
from .errors import ldap_errors
from .filters import and_, member_of_in_chain, wrap
from .projection import Projected, Projection
from .session import NO_ATTRIBUTES, RANGE_SIZE, Session
from .settings import FLAVORS, Settings

log = logging.getLogger(__name__)

# A change read looks up at most this many member DNs it does not know (one base search
# each, a few milliseconds on a LAN); past it, the whole directory is read instead (an OU of
# thousands renamed, say).
MAX_MEMBER_LOOKUPS = 1000


class LdapSource:
    """Users and groups from OpenLDAP or Active Directory."""

    type_name: ClassVar[str] = "ldap"
    supports_changes: ClassVar[bool] = True
    # Fallbacks cover both flavors: AD accounts often have no ``mail`` but always a UPN;
    # inetOrgPerson has ``departmentNumber`` where AD has ``department``.
    default_mapping: ClassVar[dict[str, tuple[str, ...]]] = {
        "userName": ("mail", "userPrincipalName"),
        "email": ("mail", "userPrincipalName"),
        "name.givenName": ("givenName",),
        "name.familyName": ("sn",),
        "displayName": ("displayName", "cn"),
        "title": ("title",),
        "department": ("department", "departmentNumber"),
        "employeeNumber": ("employeeNumber",),
    }
    group_name_attributes: ClassVar[tuple[str, ...]] = ("cn",)

    Settings: ClassVar[type[Settings]] = Settings

    def __init__(self, settings: Settings, *,
                 attributes: Iterable[str] = (),
                 connection_factory: Callable[[str], ldap3.Connection] | None = None,
                 on_page: Callable[[str, int], None] | None = None,
                 on_search: Callable[[str, str], None] | None = None):
        """``settings`` have passed :meth:`Settings.validate` (the config loader runs it;
        it is not run again here). ``attributes``: extra raw attribute names to read, for
        users and groups (the engine passes every name its expressions and scope rules use). The rest are seams for
        tests and benchmarks: ``connection_factory`` gives an unopened ldap3 Connection for
        a URL (e.g. MOCK_SYNC); ``on_search(what, filter)`` is called as each paged search
        starts and ``on_page(what, entries so far)`` after each of its pages. The two hooks
        are public attributes too, read when a read starts, so they can be set later."""
        self.settings = settings
        self._connector = Connector(settings, connection_factory)
        self.on_page: Callable[[str, int], None] = on_page or _ignore
        self.on_search: Callable[[str, str], None] = on_search or _ignore
        flavor = FLAVORS[settings.flavor]
        self.flavor = flavor
        self.id_attribute = settings.id_attribute or flavor.id_attribute
        self.user_filter = wrap(settings.user_filter or flavor.user_filter)
        self.group_filter = wrap(settings.group_filter or flavor.group_filter)
        disabled = settings.disabled_filter or flavor.disabled_filter
        self.disabled_filter = wrap(disabled) if disabled else None
        self.group_base = settings.group_base or settings.user_base
        self.in_chain = (settings.in_chain if settings.in_chain is not None
                         else settings.flavor == "ad") and bool(settings.scope_group)
        attributes = list(attributes)
        wanted = [n for names in self.default_mapping.values() for n in names]
        wanted += list(self.group_name_attributes) + attributes
        self.user_attributes = _unique([self.id_attribute, flavor.change_attribute, *wanted])
        # the engine's names serve group expressions and group scope rules too; a name a
        # group entry does not have costs nothing. Members are asked for per session (in
        # ranges for AD), never as a record attribute.
        members = {name.lower() for name in MEMBER_ATTRIBUTES}
        self.group_record_attributes = [
            name for name in _unique([self.id_attribute, flavor.change_attribute,
                                      *self.group_name_attributes, *attributes])
            if name.lower() not in members]
        self._users = Projection(self.user_attributes, self.id_attribute,
                                 flavor.change_attribute)
        self._group_values = AttributeDecoder(self.group_record_attributes,
                                              flavor.change_attribute)
        self._decode_id = id_decoder(self.id_attribute)
        self.range_size = RANGE_SIZE      # values per range-retrieval window (AD)
        self._conn: ldap3.Connection | None = None  # its repr shows the password: never log it
        # member DNs a change read looked up and found to be no user we sync (computers,
        # accounts outside the filter): not asked again until the next full read
        self._not_synced: set[str] = set()

    # -----------------------------------------------------------------------------------
    # Public API

    def read(self) -> Directory:
        started = time.monotonic()
        self._not_synced.clear()
        with self._session() as session, _collector_paused():
            marker = change_marker(session, self._bases())
            groups = session.search_all("groups", self.group_base, self.group_filter,
                                        self._group_attributes(session), base_key="group_base")
            scope = self._scope(session, groups) if self.settings.scope_group else None
            user_filter = self._scoped_user_filter()
            disabled = session.dns("disabled users", self.user_base,
                                   and_(user_filter, self.disabled_filter),
                                   base_key="user_base") if self.disabled_filter else set()
            users: dict[str, UserRecord] = {}
            index: dict[str, str] = {}
            for uid, key, dn in self._user_records(session, user_filter, disabled, marker,
                                                   users, scope):
                index[key] = uid
                index[dn] = uid               # as spelt: most member DNs match it exactly
            resolved = self._group_records(session, groups, index, marker)
            cursor = marker.cursor(time.monotonic() - started)
        log.info("read %d users (%d disabled) and %d groups from %s in %.1fs",
                 len(users), sum(not u.active for u in users.values()), len(resolved),
                 session.host, time.monotonic() - started)
        return Directory(users, resolved, cursor)

    @property
    def user_base(self) -> str:
        return self.settings.user_base

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        """Users and groups changed since ``cursor``, and, where the flavor can tell (AD),
        the known ones that were deleted, moved out of the bases or stopped matching the
        filters. Objects new to the view (created, or moved in) also have the groups that
        hold them re-read: a move changes the object, not the groups that list it."""
        started = time.monotonic()
        state = parse_cursor(cursor, self.settings.flavor)
        with self._session() as session:
            if session.url != state["url"]:
                raise CursorExpired(f"connected to {session.host}, not to the server the change "
                                    f"cursor came from; reading in full")
            marker = change_marker(session, self._bases())
            changed = marker.changed_filter(state)
            # first, so that whatever changes during the searches below is read, not removed
            departures = marker.departures(state, self.id_attribute)
            index = {normalise_dn(str(r.attributes["dn"])): r.id
                     for r in (*known.users.values(), *known.groups.values())
                     if r.attributes.get("dn")}
            group_attributes = self._group_attributes(session)
            groups = session.search_all("changed groups", self.group_base,
                                        and_(self.group_filter, changed), group_attributes,
                                        base_key="group_base")
            user_filter = self._scoped_user_filter()
            disabled = session.dns("changed disabled users", self.user_base,
                                   and_(user_filter, changed, self.disabled_filter),
                                   base_key="user_base") if self.disabled_filter else set()
            users: dict[str, UserRecord] = {}
            user_keys = {uid: key for uid, key, _ in self._user_records(
                session, and_(user_filter, changed), disabled, marker, users)}
            removed: set[str] = set()
            if self.settings.scope_group:
                removed = self._rescope(session, known, users, user_keys)
            for uid, key in user_keys.items():
                if uid in users:
                    index[key] = uid
            newcomers = [str(u.attributes["dn"]) for uid, u in users.items()
                         if uid not in known.users]
            newcomers += [dn for dn, attrs in groups
                          if self._id_of(dn, attrs, session.host) not in known.groups]
            groups += self._groups_holding(session, newcomers, group_attributes,
                                           have={normalise_dn(dn) for dn, _ in groups})
            if not self.settings.scope_group:    # (a scope re-read fetches whoever entered it)
                self._moved_members(session, groups, index, users)
            changed_groups = self._group_records(session, groups, index, marker)
            removed_groups: set[str] = set()
            if departures is not None:
                # deleted, or changed and no longer under the base matching the filter
                gone = departures.deleted | (departures.changed - set(users) - set(changed_groups))
                removed |= gone & set(known.users)
                removed_groups = gone & set(known.groups)
            new_cursor = marker.cursor(time.monotonic() - started, previous=state)
        log.info("change read from %s: %d users and %d groups changed, %d users and %d groups "
                 "left (%.2fs)", session.host, len(users), len(changed_groups), len(removed),
                 len(removed_groups), time.monotonic() - started)
        return ChangeSet(users=users, groups=changed_groups, removed_users=frozenset(removed),
                         removed_groups=frozenset(removed_groups), cursor=new_cursor)

    def check(self) -> dict[str, int | str]:
        with self._session() as session:
            user_filter = self._scoped_user_filter()
            users = session.dns("users", self.user_base, user_filter, base_key="user_base")
            report: dict[str, int | str] = {"server": session.host, "flavor": self.settings.flavor}
            if self.settings.scope_group and not self.in_chain:
                scope = self._walk_scope(session, {})
                report["scope_group_members"] = len(scope)
                users &= set(scope)
            report["users"] = len(users)
            report["disabled"] = len(session.dns("disabled users", self.user_base, and_(
                user_filter, self.disabled_filter), base_key="user_base") & users) \
                if self.disabled_filter else 0
            report["groups"] = len(session.dns("groups", self.group_base, self.group_filter,
                                               base_key="group_base"))
            report["deletions"] = change_marker(session, self._bases()).deletions()
        return report

    def __repr__(self) -> str:
        return f"LdapSource({', '.join(self.settings.url)})"

    def close(self) -> None:
        if self._conn is not None:
            quietly_unbind(self._conn)
            self._conn = None

    # -----------------------------------------------------------------------------------
    # Records

    def _user_records(self, session: Session, flt: str, disabled: set[str],
                      marker: ChangeMarker, users: dict[str, UserRecord],
                      scope: set[str] | None = None) -> list[tuple[str, str, str]]:
        """The users' search: each entry's record into ``users`` (a later copy of an entry
        replaces an earlier one) and the newest change stamp to ``marker``; returns (id,
        normalised DN, DN) per record, in the order read. What :meth:`_user_record` does
        for one entry, inlined: this runs once per user of a full read."""
        decode = self._decode_id
        built = []
        add = built.append
        newest = None
        for dn, (values, ident, stamp) in session.search(
                "users", self.user_base, flt, self.user_attributes, base_key="user_base",
                projection=self._users):
            key = normalise_dn(dn)
            if scope is not None and key not in scope:
                continue
            if ident is None:
                self._id(dn, None, session.host)            # raises
            uid = decode(ident)
            values["dn"] = dn
            users[uid] = UserRecord(uid, values, key not in disabled)
            add((uid, key, dn))
            if stamp and (newest is None or stamp > newest):
                newest = stamp
        marker.seen_stamp(newest)       # the markers keep the newest stamp they are shown
        return built

    def _user_record(self, dn: str, projected: Projected, active: bool,
                     host: str) -> UserRecord:
        values, ident, _ = projected
        values["dn"] = dn
        return UserRecord(self._id(dn, ident, host), values, active)

    def _group_attributes(self, session: Session) -> list[str]:
        return [*self.group_record_attributes, *session.member_attributes]

    def _bases(self) -> list[str]:
        return _unique([self.user_base, self.group_base])

    def _group_record(self, dn: str, attrs: Mapping[str, list[bytes]], host: str) -> GroupRecord:
        values = self._group_values(attrs)
        values["dn"] = dn
        return GroupRecord(self._id_of(dn, attrs, host), values)

    def _id_of(self, dn: str, attrs: Mapping[str, list[bytes]], host: str) -> str:
        raw = attrs.get(self.id_attribute.lower())
        return self._id(dn, raw[0] if raw else None, host)

    def _id(self, dn: str, raw: bytes | None, host: str) -> str:
        if raw is None:
            # Skipping the entry would make it look deleted: refuse the whole read instead.
            raise SourceError(f"entry {dn!r} on {host} has no {self.id_attribute} attribute "
                              f"(check source.id_attribute and the bind account's read rights)")
        return self._decode_id(raw)

    def _group_records(self, session: Session, groups: list[tuple[str, dict]],
                       index: dict[str, str], marker: ChangeMarker) -> dict[str, GroupRecord]:
        """Group records with member DNs resolved to ids. ``index`` maps normalised DNs of
        the users read to their ids; the groups' own DNs are added first, so a nested group
        resolves whatever the order."""
        records = []
        for dn, attrs in groups:
            record = self._group_record(dn, attrs, session.host)
            index[normalise_dn(dn)] = record.id
            index[dn] = record.id
            marker.seen(attrs)
            records.append((record, attrs))
        missed: list[str] = []
        resolved, holding = {}, 0
        for record, attrs in records:
            before = len(missed)
            resolved[record.id] = _with_members(record, self._member_ids(attrs, index, missed))
            holding += len(missed) > before
        if missed:
            # Not an error: computers, service accounts and anyone outside the bases, filters
            # or scope are no one to sync. But a DN that names no entry at all (OpenLDAP
            # without the refint overlay keeps a renamed OU's old DNs) shows up only here.
            log.info("%d member DN(s) of %d group(s) name no user or group read (outside the "
                     "bases, the filters or the scope, or no such entry); not synced. For "
                     "example: %s", len(missed), holding,
                     "; ".join(missed[:3]))
        return resolved

    @staticmethod
    def _member_ids(attrs: Mapping[str, list[bytes]], index: Mapping[str, str],
                    missed: list[str]) -> frozenset[str]:
        ids = set()
        for dn in member_dns(attrs):
            # the DN as spelt first (most member DNs are spelt as the entry's own): a key it
            # matches, as spelt or normalised, is that entry's, since normalising is
            # idempotent; only a miss pays for normalising
            member_id = index.get(dn) or index.get(normalise_dn(dn))
            if member_id is not None:
                ids.add(member_id)
            else:                           # outside the user/group scope: not ours to sync
                missed.append(dn)
        return frozenset(ids)

    def _moved_members(self, session: Session, groups: list[tuple[str, dict]],
                       index: dict[str, str], users: dict[str, UserRecord]) -> None:
        """In a change read: member DNs of the changed groups under ``user_base`` that name
        no user of the view. An OU renamed or moved changes the DNs of the users below it but
        not their change stamps (AD and OpenLDAP alike), so they are not read again, and a
        group that lists them by their new DNs would lose them all. Each such DN is looked
        up: a user we sync is read again (its record brings the new DN into the view), anyone
        else (a computer, an account outside the filter) is not ours. Past
        :data:`MAX_MEMBER_LOOKUPS`, a full read is cheaper and sure."""
        base = normalise_dn(self.user_base)
        own = {normalise_dn(dn) for dn, _ in groups}
        unknown: dict[str, str] = {}
        for _dn, attrs in groups:
            for dn in member_dns(attrs):
                if dn in index:
                    continue
                key = normalise_dn(dn)
                if key not in index and key not in own and key not in self._not_synced and (
                        key == base or key.endswith("," + base)):
                    unknown.setdefault(key, dn)
        if len(unknown) > MAX_MEMBER_LOOKUPS:
            raise CursorExpired(f"{len(unknown)} members of changed groups are users the view "
                                f"does not know by that DN (an OU renamed or moved?); reading "
                                f"in full")
        flt = self._scoped_user_filter()
        for key, dn in unknown.items():
            record = self._read_user(session, dn, flt)
            if record is None:
                self._not_synced.add(key)   # no such entry, or not a user we sync
                continue
            users[record.id] = record
            index[key] = index[dn] = record.id
        if unknown:
            log.info("change read: %d member DN(s) new to the view looked up, %d of them users "
                     "we sync (moved, or renamed with their OU)", len(unknown),
                     sum(1 for key in unknown if key in index))

    def _read_user(self, session: Session, dn: str, flt: str) -> UserRecord | None:
        """The record of the user at ``dn``, read by itself; None if no entry there matches
        ``flt``."""
        attrs = session.read_entry(dn, flt, self.user_attributes)
        if attrs is None:
            return None
        disabled = self.disabled_filter and session.read_entry(dn, self.disabled_filter,
                                                               (NO_ATTRIBUTES,)) is not None
        return self._user_record(dn, self._users.from_attrs(attrs), not disabled, session.host)

    def _groups_holding(self, session: Session, dns: list[str], attributes: list[str], *,
                        have: set[str]) -> list[tuple[str, dict]]:
        """The groups (under group_base) that list any of ``dns`` as a member, except those in
        ``have``; asked in batches of 50 DNs per search."""
        found: list[tuple[str, dict]] = []
        names = ["member"] if self.settings.flavor == "ad" else ["member", "uniqueMember"]
        for start in range(0, len(dns), 50):
            batch = dns[start:start + 50]
            either = "(|" + "".join(f"({name}={escape_filter_chars(dn)})"
                                    for dn in batch for name in names) + ")"
            for dn, attrs in session.search("groups of users and groups new to the view",
                                            self.group_base, and_(self.group_filter, either),
                                            attributes, base_key="group_base"):
                if normalise_dn(dn) not in have:
                    have.add(normalise_dn(dn))
                    found.append((dn, attrs))
        return found

    # -----------------------------------------------------------------------------------
    # Scope group

    def _scoped_user_filter(self) -> str:
        if self.in_chain:
            return and_(self.user_filter, member_of_in_chain(self.settings.scope_group))
        return self.user_filter

    def _scope(self, session: Session, groups: list[tuple[str, dict]]) -> set[str] | None:
        """Normalised DNs of the scope group's direct and nested members, or None when the
        server filters by scope itself (in-chain)."""
        if self.in_chain:
            return None
        return set(self._walk_scope(session, {normalise_dn(dn): attrs for dn, attrs in groups}))

    def _walk_scope(self, session: Session, groups: Mapping[str, Mapping]) -> dict[str, str]:
        """Walk member DNs from scope_group down. Groups already read come from ``groups``;
        others (nested groups outside group_base) are read one by one. Cycles end the walk."""
        root = self.settings.scope_group
        members: dict[str, str] = {}
        visited: set[str] = set()
        stack = [root]
        while stack:
            dn = stack.pop()
            key = normalise_dn(dn)
            if key in visited:
                continue
            visited.add(key)
            attrs = groups.get(key)
            if attrs is None:
                attrs = session.read_entry(dn, self.group_filter, session.member_attributes)
                if attrs is None:
                    if dn is root:
                        raise SourceError(f"source.scope_group {root!r} is not a group matching "
                                          f"group_filter on {session.host}")
                    members[key] = dn       # a user, or anything that is not a group
                    continue
            for member in member_dns(attrs):
                stack.append(member)
        log.debug("scope group %s: %d member DNs through %d groups", root, len(members),
                  len(visited) - len(members))
        return members

    def _rescope(self, session: Session, known: Directory, users: dict[str, UserRecord],
                 user_keys: dict[str, str]) -> set[str]:
        """In a change read: users that entered the scope group are fetched, users that left
        it are removed (membership of the scope group does not touch their timestamps)."""
        if self.in_chain:
            scope = {key: key for key in session.dns("users in the scope group", self.user_base,
                                                     self._scoped_user_filter(),
                                                     base_key="user_base")}
        else:
            scope = self._walk_scope(session, {})
        removed = set()
        for uid in list(users):
            if user_keys[uid] not in scope:
                del users[uid]
                removed.add(uid)
        known_keys = {normalise_dn(str(u.attributes.get("dn", ""))): uid
                      for uid, u in known.users.items()}
        for key, uid in known_keys.items():
            if key not in scope and uid not in users:
                removed.add(uid)
        have = set(known_keys) | set(user_keys.values())
        entered = [key for key in scope if key not in have]
        for key in entered:
            record = self._read_user(session, scope[key], self.user_filter)
            if record is None:
                continue                    # a member that is not a user in our filter
            users[record.id] = record
            user_keys[record.id] = key
        removed -= set(users)
        return removed

    # -----------------------------------------------------------------------------------
    # Connections

    @contextmanager
    def _session(self) -> Iterator[Session]:
        conn, url = self._connector.connect()
        self._conn = conn
        session = Session(conn, url, page_size=self.settings.page_size,
                          flavor=self.settings.flavor, on_page=self.on_page,
                          on_search=self.on_search, range_size=self.range_size)
        try:
            with ldap_errors(session.host, "read", ca_file=self.settings.ca_file):
                yield session
        finally:
            self.close()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a full read runs: the read makes hundreds of
    thousands of small objects (values, lists, dicts, records) and no cycles, and the
    collector walking the growing heap again and again was a sixth of a 50 000-user read.
    Whatever it would have found is collected when it is switched back on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def _with_members(record: GroupRecord, members: frozenset[str]) -> GroupRecord:
    return GroupRecord(record.id, record.attributes, members)


def _ignore(*args: object) -> None:
    pass
