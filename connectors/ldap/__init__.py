"""LDAP and Active Directory source (ldap3).

Reads users and groups with paged searches and yields plain records keyed by a stable id.
The vendor traps handled here, each one a way a naive reader silently loses or mangles data
(details and sources: shared/reference/sources.md §3):

* **Size limits.** Every search is an RFC 2696 paged search with the control marked
  *critical*: a server that cannot page fails loudly instead of truncating at its size limit
  (AD stops plain searches at 1000 entries). A size limit, time limit, referral result or a
  dropped connection anywhere aborts the read with :class:`SourceError`; a partial view
  would look like mass deletion.
* **Range retrieval (AD).** A ``member`` attribute longer than AD's MaxValRange comes back as
  ``member;range=0-1499``; the rest is fetched with base searches ``member;range=1500-*``
  until the high bound is ``*``.
* **Stable identity.** ``objectGUID`` is 16 bytes whose first three fields are little-endian
  (``uuid.UUID(bytes_le=...)``); OpenLDAP's ``entryUUID`` is operational and must be asked for.
  A rename or move (modrdn) keeps either one, so it is an update, never delete + create.
* **DNs compare by value, not by spelling**: ``CN=Alice,OU=People`` and ``cn=alice, ou=people``
  are the same entry, and ``\\2C`` is ``\\,``. Member DNs are matched in normalised form.
* **Disabled accounts** are whatever ``disabled_filter`` matches, evaluated by the server
  (AD default: the ACCOUNTDISABLE bit via the bitwise rule ``1.2.840.113556.1.4.803``).
* **Nested groups.** Groups list their direct member DNs, resolved to ids (user or group);
  the engine flattens and drops ids it does not know. ``scope_group`` keeps only its direct
  and nested members: walked in the client (cycles tolerated) or, for AD with ``in_chain``,
  asked of the server with ``LDAP_MATCHING_RULE_IN_CHAIN`` (``1.2.840.113556.1.4.1941``).
* **TLS.** ldap3 does not verify certificates unless told to: every TLS connection here uses
  an SSLContext with CERT_REQUIRED and host-name checking, trusting ``ca_file`` or the
  operating system's store (never ``SSL_CERT_FILE``-style variables). Nothing turns it off.
* **Filter injection.** Values placed into filters are escaped (``escape_filter_chars``).
* **Incremental reads.** OpenLDAP: ``modifyTimestamp``; AD: ``uSNChanged`` on the same domain
  controller, bounded by ``highestCommittedUSN`` read *before* the search, with a full read
  when the controller or its ``invocationId`` (a restore) changed. A membership change may
  not touch the member's own timestamp (the memberof overlay does not; AD's ``memberOf`` is
  a back-link), so changed *groups* are re-read too. Deletions and moves out of the base are
  invisible to both feeds: the engine's periodic full read (``full_read_every``) catches them.
* **Speed.** ldap3's generic BER decoding, per-value str conversion and case-insensitive
  result dictionaries cost more than the network; search result entries are decoded by
  :func:`decode_entry` into plain dicts of bytes, and only the attributes a mapping needs
  are requested.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from ..base import (ChangeSet, SettingError, CursorExpired, Directory, GroupRecord, Secret,
                   SourceAuthError, SourceError, UserRecord, Value, activity, is_loopback)

log = logging.getLogger(__name__)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
BIT_AND_RULE = "1.2.840.113556.1.4.803"
IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"
AD_DISABLED_FILTER = f"(userAccountControl:{BIT_AND_RULE}:=2)"
NO_ATTRIBUTES = "1.1"          # RFC 4511: ask for the DN only
MEMBER_ATTRIBUTES = ("member", "uniqueMember")
GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid"})
EPOCH_TIMESTAMP = "19700101000000Z"
CURSOR_VERSION = 1


@dataclass(frozen=True)
class Flavor:
    id_attribute: str
    user_filter: str
    group_filter: str
    disabled_filter: str | None
    change_attribute: str          # what read_changes filters on


FLAVORS = {
    "openldap": Flavor("entryUUID", "(objectClass=inetOrgPerson)",
                       "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
                       None, "modifyTimestamp"),
    "ad": Flavor("objectGUID", "(&(objectCategory=person)(objectClass=user))",
                 "(objectClass=group)", AD_DISABLED_FILTER, "uSNChanged"),
}


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

    @dataclass(frozen=True)
    class Settings:
        url: tuple[str, ...] = field(metadata={
            "help": "ldap:// or ldaps:// URL of the directory; several are tried in order"})
        user_base: str = field(metadata={"help": "DN under which users are searched"})
        group_base: str | None = field(default=None, metadata={
            "help": "DN under which groups are searched (default: user_base)"})
        bind_dn: str | None = field(default=None, metadata={
            "help": "DN (or AD user@domain) to bind as; anonymous when unset"})
        password: Secret | None = field(default=None, metadata={
            "help": "password of bind_dn (a secret)"})
        start_tls: bool = field(default=False, metadata={
            "help": "upgrade an ldap:// connection with StartTLS before binding"})
        ca_file: Path | None = field(default=None, metadata={
            "help": "PEM file of the CA that signed the server certificate "
                    "(default: the operating system's trust store)"})
        flavor: str = field(default="openldap", metadata={
            "help": "\"openldap\" or \"ad\": sets the defaults of the filters and the id"})
        user_filter: str | None = field(default=None, metadata={
            "help": "LDAP filter selecting users (default per flavor)"})
        group_filter: str | None = field(default=None, metadata={
            "help": "LDAP filter selecting groups (default per flavor)"})
        id_attribute: str | None = field(default=None, metadata={
            "help": "stable id attribute (default: objectGUID for AD, entryUUID for OpenLDAP)"})
        disabled_filter: str | None = field(default=None, metadata={
            "help": "filter matching disabled users (AD default: userAccountControl bit 2)"})
        scope_group: str | None = field(default=None, metadata={
            "help": "DN of a group: only its direct or nested members are in scope"})
        in_chain: bool | None = field(default=None, metadata={
            "help": "let AD resolve scope_group nesting with the in-chain matching rule "
                    "(default: on for AD, unavailable for OpenLDAP)"})
        page_size: int = field(default=500, metadata={
            "help": "entries per page of a paged search"})
        full_read_every: dt.timedelta = field(default=dt.timedelta(hours=24), metadata={
            "help": "how often a complete read replaces change reads (catches deletions)"})
        timeout: float = field(default=30.0, metadata={
            "help": "seconds to wait for a connection or a response"})

    def __init__(self, settings: "LdapSource.Settings", *,
                 attributes: Iterable[str] = (),
                 connection_factory: Callable[[str], ldap3.Connection] | None = None,
                 on_page: Callable[[str, int], None] | None = None,
                 on_search: Callable[[str, str], None] | None = None):
        """``attributes``: extra raw attribute names to read (the engine passes the names
        used in ``[source.attributes]``). The rest are seams for tests and benchmarks:
        ``connection_factory`` gives an unopened ldap3 Connection for a URL (e.g. MOCK_SYNC);
        ``on_search(what, filter)`` is called as each paged search starts and
        ``on_page(what, entries so far)`` after each of its pages. The two hooks are public
        attributes too, read when a read starts, so they can be set after construction."""
        self.settings = settings
        self._factory = connection_factory
        self.on_page: Callable[[str, int], None] = on_page or _ignore
        self.on_search: Callable[[str, str], None] = on_search or _ignore
        self._validate()
        flavor = FLAVORS[settings.flavor]
        self.flavor = flavor
        self.id_attribute = settings.id_attribute or flavor.id_attribute
        self.user_filter = _wrap(settings.user_filter or flavor.user_filter)
        self.group_filter = _wrap(settings.group_filter or flavor.group_filter)
        disabled = settings.disabled_filter or flavor.disabled_filter
        self.disabled_filter = _wrap(disabled) if disabled else None
        self.group_base = settings.group_base or settings.user_base
        self.in_chain = (settings.in_chain if settings.in_chain is not None
                         else settings.flavor == "ad") and bool(settings.scope_group)
        wanted = [n for names in self.default_mapping.values() for n in names]
        wanted += list(self.group_name_attributes) + list(attributes)
        self.user_attributes = _unique([self.id_attribute, flavor.change_attribute, *wanted])
        self.group_attributes = _unique([self.id_attribute, flavor.change_attribute,
                                         *self.group_name_attributes, *MEMBER_ATTRIBUTES])
        self._tls_context: ssl.SSLContext | None = None
        self._conn: ldap3.Connection | None = None  # its repr shows the password: never log it

    def _validate(self) -> None:
        s = self.settings
        if s.flavor not in FLAVORS:
            raise SettingError("", f"source.flavor must be \"openldap\" or \"ad\", not {s.flavor!r}")
        if not s.url:
            raise SettingError("", "source.url needs at least one ldap:// or ldaps:// URL")
        for url in s.url:
            parts = urlsplit(url)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise SettingError("", f"source.url {url!r} is not an ldap:// or ldaps:// URL")
            if parts.scheme == "ldaps" and s.start_tls:
                raise SettingError("", f"source.start_tls cannot be combined with ldaps:// ({url})")
        if s.password is not None and not s.bind_dn:
            raise SettingError("", "source.password is set but source.bind_dn is not")
        if s.in_chain and s.flavor != "ad":
            raise SettingError("", "source.in_chain works only with Active Directory (flavor = \"ad\"):"
                              " OpenLDAP answers the in-chain rule with no entries")
        if not 1 <= s.page_size <= 100_000:
            raise SettingError("", f"source.page_size must be between 1 and 100000, not {s.page_size}")
        if s.timeout <= 0:
            raise SettingError("", "source.timeout must be positive")
        if s.ca_file is not None and not Path(s.ca_file).is_file():
            raise SettingError("", f"source.ca_file {s.ca_file} is not a readable file")

    # -----------------------------------------------------------------------------------
    # Public API

    def read(self) -> Directory:
        started = time.monotonic()
        with self._session() as session:
            marker = session.change_marker()
            groups = session.search_all("groups", self.group_base, self.group_filter,
                                        self.group_attributes)
            scope = self._scope(session, groups) if self.settings.scope_group else None
            user_filter = self._scoped_user_filter()
            disabled = session.dns(self.user_base, _and(user_filter, self.disabled_filter)) \
                if self.disabled_filter else set()
            users: dict[str, UserRecord] = {}
            index: dict[str, str] = {}
            for dn, attrs in session.search("users", self.user_base, user_filter,
                                            self.user_attributes):
                key = normalise_dn(dn)
                if scope is not None and key not in scope:
                    continue
                record = self._user_record(dn, attrs, key not in disabled, session.host)
                users[record.id] = record
                index[key] = record.id
                marker.seen(attrs)
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
        started = time.monotonic()
        state = self._parse_cursor(cursor)
        with self._session() as session:
            if session.url != state["url"]:
                raise CursorExpired(f"connected to {session.host}, not to the server the change "
                                    f"cursor came from; reading in full")
            marker = session.change_marker()
            changed = marker.changed_filter(state)
            index = {normalise_dn(str(r.attributes["dn"])): r.id
                     for r in (*known.users.values(), *known.groups.values())
                     if r.attributes.get("dn")}
            groups = session.search_all("groups", self.group_base,
                                        _and(self.group_filter, changed), self.group_attributes)
            user_filter = self._scoped_user_filter()
            disabled = session.dns(self.user_base, _and(user_filter, changed,
                                                        self.disabled_filter)) \
                if self.disabled_filter else set()
            users: dict[str, UserRecord] = {}
            user_keys: dict[str, str] = {}
            for dn, attrs in session.search("users", self.user_base, _and(user_filter, changed),
                                            self.user_attributes):
                key = normalise_dn(dn)
                record = self._user_record(dn, attrs, key not in disabled, session.host)
                users[record.id] = record
                user_keys[record.id] = key
                marker.seen(attrs)
            removed: set[str] = set()
            if self.settings.scope_group:
                removed = self._rescope(session, known, users, user_keys)
            for uid, key in user_keys.items():
                if uid in users:
                    index[key] = uid
            changed_groups = self._group_records(session, groups, index, marker)
            new_cursor = marker.cursor(time.monotonic() - started, previous=state)
        log.info("change read from %s: %d users, %d groups changed, %d left the scope (%.2fs)",
                 session.host, len(users), len(changed_groups), len(removed),
                 time.monotonic() - started)
        return ChangeSet(users=users, groups=changed_groups,
                         removed_users=frozenset(removed), cursor=new_cursor)

    def check(self) -> dict[str, int | str]:
        with self._session() as session:
            user_filter = self._scoped_user_filter()
            users = session.dns(self.user_base, user_filter)
            report: dict[str, int | str] = {"server": session.host, "flavor": self.settings.flavor}
            if self.settings.scope_group and not self.in_chain:
                scope = self._walk_scope(session, {})
                report["scope_group_members"] = len(scope)
                users &= set(scope)
            report["users"] = len(users)
            report["disabled"] = len(session.dns(self.user_base, _and(
                user_filter, self.disabled_filter)) & users) if self.disabled_filter else 0
            report["groups"] = len(session.dns(self.group_base, self.group_filter))
        return report

    def __repr__(self) -> str:
        return f"LdapSource({', '.join(self.settings.url)})"

    def close(self) -> None:
        if self._conn is not None:
            _quietly_unbind(self._conn)
            self._conn = None

    # -----------------------------------------------------------------------------------
    # Records

    def _user_record(self, dn: str, attrs: Mapping[str, list[bytes]], active: bool,
                     host: str) -> UserRecord:
        values = _decode_attributes(attrs, self.user_attributes, self.flavor.change_attribute)
        values["dn"] = dn
        return UserRecord(self._id_of(dn, attrs, host), values, active)

    def _group_record(self, dn: str, attrs: Mapping[str, list[bytes]], host: str) -> GroupRecord:
        names = [a for a in self.group_attributes if a not in MEMBER_ATTRIBUTES]
        values = _decode_attributes(attrs, names, self.flavor.change_attribute)
        values["dn"] = dn
        return GroupRecord(self._id_of(dn, attrs, host), values)

    def _id_of(self, dn: str, attrs: Mapping[str, list[bytes]], host: str) -> str:
        raw = attrs.get(self.id_attribute.lower())
        if not raw:
            # Skipping the entry would make it look deleted: refuse the whole read instead.
            raise SourceError(f"entry {dn!r} on {host} has no {self.id_attribute} attribute "
                              f"(check source.id_attribute and the bind account's read rights)")
        return decode_id(self.id_attribute, raw[0])

    def _group_records(self, session: "_Session", groups: list[tuple[str, dict]],
                       index: dict[str, str], marker: "_ChangeMarker") -> dict[str, GroupRecord]:
        """Group records with member DNs resolved to ids. ``index`` maps normalised DNs of
        the users read to their ids; the groups' own DNs are added first, so a nested group
        resolves whatever the order."""
        records = []
        for dn, attrs in groups:
            record = self._group_record(dn, attrs, session.host)
            index[normalise_dn(dn)] = record.id
            marker.seen(attrs)
            records.append((record, attrs))
        return {record.id: _with_members(record, self._member_ids(attrs, index))
                for record, attrs in records}

    @staticmethod
    def _member_ids(attrs: Mapping[str, list[bytes]], index: Mapping[str, str]) -> frozenset[str]:
        ids = set()
        for dn in member_dns(attrs):
            member_id = index.get(normalise_dn(dn))
            if member_id is not None:       # outside the user/group scope: not ours to sync
                ids.add(member_id)
        return frozenset(ids)

    # -----------------------------------------------------------------------------------
    # Scope group

    def _scoped_user_filter(self) -> str:
        if self.in_chain:
            dn = escape_filter_chars(self.settings.scope_group)
            return _and(self.user_filter, f"(memberOf:{IN_CHAIN_RULE}:={dn})")
        return self.user_filter

    def _scope(self, session: "_Session", groups: list[tuple[str, dict]]) -> set[str] | None:
        """Normalised DNs of the scope group's direct and nested members, or None when the
        server filters by scope itself (in-chain)."""
        if self.in_chain:
            return None
        return set(self._walk_scope(session, {normalise_dn(dn): attrs for dn, attrs in groups}))

    def _walk_scope(self, session: "_Session", groups: Mapping[str, Mapping]) -> dict[str, str]:
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
                attrs = session.read_entry(dn, self.group_filter, MEMBER_ATTRIBUTES)
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

    def _rescope(self, session: "_Session", known: Directory, users: dict[str, UserRecord],
                 user_keys: dict[str, str]) -> set[str]:
        """In a change read: users that entered the scope group are fetched, users that left
        it are removed (membership of the scope group does not touch their timestamps)."""
        if self.in_chain:
            scope = {key: key for key in session.dns(self.user_base, self._scoped_user_filter())}
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
        if entered:
            disabled_filter = self.disabled_filter
            for key in entered:
                dn = scope[key]
                attrs = session.read_entry(dn, self.user_filter, self.user_attributes)
                if attrs is None:
                    continue                # a member that is not a user in our filter
                active = not (disabled_filter and session.read_entry(dn, disabled_filter,
                                                                     (NO_ATTRIBUTES,)) is not None)
                record = self._user_record(dn, attrs, active, session.host)
                users[record.id] = record
                user_keys[record.id] = key
        removed -= set(users)
        return removed

    # -----------------------------------------------------------------------------------
    # Cursor

    def _parse_cursor(self, cursor: str) -> dict[str, Any]:
        try:
            state = json.loads(cursor)
            ok = (isinstance(state, dict) and state.get("v") == CURSOR_VERSION
                  and state.get("flavor") == self.settings.flavor and "url" in state)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CursorExpired("the stored LDAP change cursor is not usable with this "
                                "configuration; reading in full")
        return state

    # -----------------------------------------------------------------------------------
    # Connections

    @contextmanager
    def _session(self) -> Iterator["_Session"]:
        conn, url = self._connect()
        self._conn = conn
        session = _Session(self, conn, url)
        try:
            with _ldap_errors(session.host, "read"):
                yield session
        finally:
            self.close()

    def _connect(self) -> tuple[ldap3.Connection, str]:
        """Bind to the first URL that answers; a rejected password stops at once (trying
        the next controller with it would only lock the account sooner)."""
        problems = []
        for url in self.settings.url:
            try:
                return self._open(url), url
            except SourceAuthError:
                raise
            except SourceError as exc:
                log.warning("%s", exc)
                problems.append(str(exc))
        if len(problems) == 1:
            raise SourceError(problems[0])
        raise SourceError("no LDAP server could be reached: " + " ".join(problems))

    def _open(self, url: str) -> ldap3.Connection:
        parts = urlsplit(url)
        host = _host_of(url)
        s = self.settings
        if self._factory is not None:
            conn = self._factory(url)
        else:
            use_ssl = parts.scheme == "ldaps"
            tls = _VerifyingTls(self._context()) if use_ssl or s.start_tls else None
            server = ldap3.Server(parts.hostname, port=parts.port or (636 if use_ssl else 389),
                                  use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                                  connect_timeout=s.timeout)
            conn = ldap3.Connection(
                server, user=s.bind_dn, password=s.password.reveal() if s.password else None,
                authentication=ldap3.SIMPLE if s.bind_dn else ldap3.ANONYMOUS,
                raise_exceptions=True, read_only=True, receive_timeout=max(1, round(s.timeout)),
                check_names=False, return_empty_attributes=False, auto_range=False,
                auto_referrals=False, fast_decoder=True)
            if not use_ssl and not s.start_tls and s.password is not None \
                    and not is_loopback(parts.hostname):
                raise SettingError("", f"{host}: refusing to send the bind password without TLS; "
                                  "use an ldaps:// URL or start_tls = true")
        with _ldap_errors(host, "connection"):
            try:
                conn.open()
                if s.start_tls:
                    conn.start_tls()
                conn.bind()
            except BaseException:
                _quietly_unbind(conn)
                raise
        _install_lean_decoder(conn)
        log.debug("bound to %s as %s", host, s.bind_dn or "anonymous")
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = verifying_context(self.settings.ca_file)
        return self._tls_context


# ---------------------------------------------------------------------------------------------
# One bound connection and the searches a read needs


class _Session:
    def __init__(self, source: LdapSource, conn: ldap3.Connection, url: str):
        self.source = source
        self.conn = conn
        self.url = url
        self.host = _host_of(url)
        self.page_size = source.settings.page_size

    def search(self, what: str, base: str, flt: str,
               attributes: Iterable[str]) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Every entry, page by page; (dn, {lowercased attribute: [raw values]})."""
        cookie = None
        count = 0
        attributes = list(attributes)
        pages = 0
        seen_cookies: set[bytes] = set()
        self.source.on_search(what, flt)
        while True:
            try:
                self.conn.search(base, flt, ldap3.SUBTREE, attributes=attributes,
                                 paged_size=self.page_size, paged_cookie=cookie,
                                 paged_criticality=True)
            except lx.LDAPNoSuchObjectResult as exc:
                raise SourceError(f"{self.host}: the search base {base!r} does not exist "
                                  f"(check source.user_base/group_base)") from exc
            self._complete_or_fail(what)
            # Take this page's entries and cookie now: range retrieval below runs searches of
            # its own on the same connection, which replace conn.result and conn.response.
            page = list(self.conn.response or ())
            controls = self.conn.result.get("controls") or {}
            cookie = (controls.get(PAGED_RESULTS_OID) or {}).get("value", {}).get("cookie")
            for entry in page:
                kind = entry.get("type")
                if kind == "searchResEntry":
                    attrs = _lowered(entry["raw_attributes"])
                    self._complete_ranges(entry["dn"], attrs)
                    count += 1
                    yield entry["dn"], attrs
                elif kind == "searchResRef":
                    self._reference(entry)
            pages += 1
            activity()
            self.source.on_page(what, count)
            if not cookie:
                break
            if cookie in seen_cookies:      # a server that never ends the search
                raise SourceError(f"{self.host}: the server repeated a paging cookie while "
                                  f"reading {what}; the read was stopped")
            seen_cookies.add(cookie)
        log.debug("%s: %d entries in %d pages from %s", what, count, pages, self.host)

    def search_all(self, what: str, base: str, flt: str, attributes: Iterable[str]):
        return list(self.search(what, base, flt, attributes))

    def dns(self, base: str, flt: str) -> set[str]:
        """Normalised DNs of the entries matching ``flt`` (no attributes transferred)."""
        return {normalise_dn(dn) for dn, _ in self.search("dns", base, flt, [NO_ATTRIBUTES])}

    def read_entry(self, dn: str, flt: str, attributes: Iterable[str]) -> dict | None:
        """One entry by DN if it matches ``flt``; None if it does not or does not exist."""
        try:
            self.conn.search(dn, flt, ldap3.BASE, attributes=list(attributes))
        except lx.LDAPNoSuchObjectResult:
            return None
        self._complete_or_fail(f"read of {dn!r}")
        for entry in self.conn.response:
            if entry.get("type") == "searchResEntry":
                attrs = _lowered(entry["raw_attributes"])
                self._complete_ranges(entry["dn"], attrs)
                return attrs
        return None

    def _complete_or_fail(self, what: str) -> None:
        """ldap3 does not raise for sizeLimitExceeded, timeLimitExceeded or referral even
        with raise_exceptions: the entries so far arrive as if that were all. Refuse them."""
        result = self.conn.result or {}
        code = result.get("result", 0)
        if code == 0:
            return
        reason = {4: "its size limit", 3: "its time limit", 10: "a referral",
                  11: "its administrative limit"}.get(code, result.get("description", code))
        raise SourceError(f"{self.host} cut the {what} short with {reason} "
                          f"({result.get('description')}); the read is incomplete and was "
                          f"abandoned")

    def _reference(self, entry: Mapping) -> None:
        # AD returns continuation references to its application partitions (DomainDnsZones,
        # ForestDnsZones, Configuration) when searching from a domain root; users and groups
        # never live there. Anywhere else a reference means part of the tree is elsewhere.
        uris = entry.get("uri") or []
        if self.source.settings.flavor == "ad":
            log.debug("ignored continuation reference %s", uris)
            return
        raise SourceError(f"{self.host} referred part of the search to {', '.join(uris)}; "
                          f"point source.user_base/group_base at the server holding the entries")

    def _complete_ranges(self, dn: str, attrs: dict[str, list[bytes]]) -> None:
        """AD range retrieval: ``member;range=0-1499`` -> fetch ``member;range=1500-*`` and
        so on until the high bound is ``*``; the values end up under ``member``."""
        for key in [k for k in attrs if ";range=" in k]:
            name, _, bounds = key.partition(";range=")
            values = list(attrs.pop(key))
            high = bounds.split("-", 1)[1]
            steps = 0
            while high != "*":
                steps += 1
                if steps > 100_000:
                    raise SourceError(f"range retrieval of {name} on {dn!r} did not end")
                self.conn.search(dn, "(objectClass=*)", ldap3.BASE,
                                 attributes=[f"{name};range={int(high) + 1}-*"])
                self._complete_or_fail(f"range retrieval of {name} on {dn!r}")
                chunk = [e for e in self.conn.response if e.get("type") == "searchResEntry"]
                ranged = {k.lower(): v for k, v in (chunk[0]["raw_attributes"].items()
                                                    if chunk else ())
                          if k.lower().startswith(name + ";range=")}
                if len(ranged) != 1:
                    raise SourceError(f"{self.host} broke off the range retrieval of {name} "
                                      f"on {dn!r} after {len(values)} values")
                (next_key, chunk_values), = ranged.items()
                values.extend(chunk_values)
                high = next_key.partition(";range=")[2].split("-", 1)[1]
            attrs[name] = values
            log.debug("range retrieval: %d values of %s on %s", len(values), name, dn)

    def change_marker(self) -> "_ChangeMarker":
        if self.source.settings.flavor == "ad":
            return _UsnMarker(self)
        return _TimestampMarker(self)


class _ChangeMarker:
    """Where a change read starts and what the next cursor is."""

    def __init__(self, session: _Session):
        self.session = session

    def base_state(self) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "flavor": self.session.source.settings.flavor,
                "url": self.session.url}

    def seen(self, attrs: Mapping[str, list[bytes]]) -> None:
        pass


class _TimestampMarker(_ChangeMarker):
    """OpenLDAP: ``modifyTimestamp`` (one-second resolution, server clock).

    The next read starts at the newest timestamp seen minus the duration of this read and a
    second: every change made while this read ran is at least that recent, whatever the skew
    between our clock and the server's. Entries seen twice are simply upserted twice.
    """

    def __init__(self, session: _Session):
        super().__init__(session)
        self.newest = ""

    def seen(self, attrs: Mapping[str, list[bytes]]) -> None:
        stamp = attrs.get("modifytimestamp")
        if stamp and stamp[0] > self.newest.encode():
            self.newest = stamp[0].decode("ascii", "replace")

    def changed_filter(self, state: Mapping[str, Any]) -> str:
        since = str(state.get("since", EPOCH_TIMESTAMP))
        if not since.isascii() or not since[:14].isdigit():
            raise CursorExpired("the stored LDAP change cursor is damaged; reading in full")
        return f"(modifyTimestamp>={escape_filter_chars(since)})"

    def cursor(self, duration: float, previous: Mapping[str, Any] | None = None) -> str:
        since = EPOCH_TIMESTAMP
        if self.newest:
            newest = _parse_generalized_time(self.newest)
            if newest is not None:
                start = newest - dt.timedelta(seconds=int(duration) + 2)
                since = start.strftime("%Y%m%d%H%M%SZ")
        if previous is not None:
            since = max(since, str(previous.get("since", EPOCH_TIMESTAMP)))
        return json.dumps({**self.base_state(), "since": since})


class _UsnMarker(_ChangeMarker):
    """AD: ``uSNChanged`` is per domain controller. ``highestCommittedUSN`` is read before
    the searches, so a change committed during the read is read again next time rather than
    lost; a different controller (``dsServiceName``) or a restored one (new ``invocationId``)
    makes the cursor useless."""

    def __init__(self, session: _Session):
        super().__init__(session)
        root = session.read_entry("", "(objectClass=*)",
                                  ["highestCommittedUSN", "dsServiceName"]) or {}
        try:
            self.usn = int(root["highestcommittedusn"][0])
            self.dsa = root["dsservicename"][0].decode()
        except (KeyError, IndexError, ValueError) as exc:
            raise SourceError(f"{session.host} did not report highestCommittedUSN and "
                              f"dsServiceName in its rootDSE; is it Active Directory?") from exc
        service = session.read_entry(self.dsa, "(objectClass=*)", ["invocationId"]) or {}
        raw = (service.get("invocationid") or [b""])[0]
        self.invocation = decode_id("objectGUID", raw) if len(raw) == 16 else raw.hex()

    def changed_filter(self, state: Mapping[str, Any]) -> str:
        if state.get("dsa") != self.dsa or state.get("invocation") != self.invocation:
            raise CursorExpired(f"the domain controller behind {self.session.host} changed or "
                                f"was restored (dsServiceName/invocationId); reading in full")
        usn = state.get("usn")
        if not isinstance(usn, int) or usn < 0:
            raise CursorExpired("the stored AD change cursor is damaged; reading in full")
        return f"(uSNChanged>={usn + 1})"

    def cursor(self, duration: float, previous: Mapping[str, Any] | None = None) -> str:
        return json.dumps({**self.base_state(), "usn": self.usn, "dsa": self.dsa,
                           "invocation": self.invocation})


# ---------------------------------------------------------------------------------------------
# TLS


class _VerifyingTls(ldap3.Tls):
    """ldap3's Tls with our SSLContext: certificate required and host name checked by
    Python's ssl module itself (ldap3's own Tls defaults to CERT_NONE)."""

    def __init__(self, context: ssl.SSLContext):
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection, do_handshake=False):
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host)


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """CERT_REQUIRED + check_hostname, trusting ``ca_file`` or the OS trust store. The OS
    store is located through OpenSSL's compiled-in paths, not SSL_CERT_FILE/SSL_CERT_DIR."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)     # verifies and checks host names
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        paths = ssl.get_default_verify_paths()
        cafile = paths.openssl_cafile if Path(paths.openssl_cafile).is_file() else None
        capath = paths.openssl_capath if Path(paths.openssl_capath).is_dir() else None
        if cafile or capath:
            ctx.load_verify_locations(cafile=cafile, capath=capath)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    return ctx


# ---------------------------------------------------------------------------------------------
# Errors


@contextmanager
def _ldap_errors(host: str, what: str) -> Iterator[None]:
    """ldap3 exceptions -> one-sentence SourceErrors naming the server."""
    try:
        yield
    except (SourceError, SettingError):
        raise
    except lx.LDAPInvalidCredentialsResult as exc:
        raise SourceAuthError(f"{host} rejected the bind DN or password "
                              f"(invalidCredentials)") from exc
    except (lx.LDAPStrongerAuthRequiredResult, lx.LDAPConfidentialityRequiredResult) as exc:
        raise SourceAuthError(f"{host} requires TLS or signing before it accepts this bind "
                              f"(use ldaps:// or start_tls = true)") from exc
    except lx.LDAPNoSuchObjectResult as exc:
        raise SourceError(f"{host}: the search base {exc.dn or ''!r} does not exist "
                          f"(check source.user_base/group_base)") from exc
    except lx.LDAPSizeLimitExceededResult as exc:
        raise SourceError(f"{host} stopped the {what} at its size limit; the read is "
                          f"incomplete and was abandoned") from exc
    except lx.LDAPTimeLimitExceededResult as exc:
        raise SourceError(f"{host} stopped the {what} at its time limit; the read is "
                          f"incomplete and was abandoned") from exc
    except lx.LDAPReferralResult as exc:
        raise SourceError(f"{host} answered with a referral; point the base at the server "
                          f"that holds the entries") from exc
    except lx.LDAPUnavailableCriticalExtensionResult as exc:
        raise SourceError(f"{host} does not support paged searches (control "
                          f"{PAGED_RESULTS_OID}); a read could be truncated, so none was "
                          f"made") from exc
    except lx.LDAPOperationResult as exc:
        raise SourceError(f"LDAP {what} on {host} failed: {exc.description}"
                          f"{': ' + exc.message if exc.message else ''}") from exc
    except (lx.LDAPException, OSError) as exc:
        raise SourceError(_connection_problem(host, what, exc)) from exc


def _connection_problem(host: str, what: str, exc: BaseException) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        found = re.search(r"certificate verify failed:\s*([^(]+)", text)
        detail = found.group(1).strip() if found else "certificate verify failed"
        return (f"the TLS certificate of {host} could not be verified ({detail}); set "
                f"source.ca_file to the CA that signed it")
    if "IP address mismatch" in text or "Hostname mismatch" in text:
        return (f"the TLS certificate of {host} is not valid for that host name; use the name "
                f"the certificate was issued to in source.url")
    if isinstance(exc, lx.LDAPStartTLSError):
        return f"{host} refused StartTLS ({text}); is TLS configured on the server?"
    if isinstance(exc, (lx.LDAPSessionTerminatedByServerError, lx.LDAPSocketReceiveError,
                        lx.LDAPSocketSendError)) or "closed" in text.lower():
        return f"the connection to {host} was lost during the {what}; nothing was used from it"
    if isinstance(exc, lx.LDAPResponseTimeoutError) or "timed out" in text:
        return f"{host} did not answer within the timeout during the {what}"
    return f"cannot reach {host} ({type(exc).__name__}: {text})"


def _quietly_unbind(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except Exception:               # the socket may already be gone; nothing to release
        pass


# ---------------------------------------------------------------------------------------------
# Decoding


def _install_lean_decoder(conn: ldap3.Connection) -> None:
    """Decode search result entries with :func:`decode_entry` instead of ldap3's generic BER
    walker. Only on the real synchronous strategy; the mock builds responses its own way."""
    from ldap3.strategy.mockBase import MockBaseStrategy
    from ldap3.strategy.sync import SyncStrategy

    strategy = conn.strategy
    if not isinstance(strategy, SyncStrategy) or isinstance(strategy, MockBaseStrategy):
        return
    strategy._get_response = lambda message_id, timeout: _get_response(strategy, message_id)


def _get_response(strategy, message_id: int):
    """ldap3's SyncStrategy._get_response (2.9.1), with search entries decoded by
    :func:`decode_entry`; everything else still goes through ldap3's own decoder."""
    from ldap3.core.exceptions import LDAPSocketReceiveError
    from ldap3.strategy.base import RESPONSE_COMPLETE, SESSION_TERMINATED_BY_SERVER
    from ldap3.utils.asn1 import decode_message_fast

    responses: list = []
    complete = False
    while not complete:
        messages = strategy.receiving()
        if not messages:
            return SESSION_TERMINATED_BY_SERVER
        for raw in messages:
            if not raw:
                continue
            entry = decode_entry(raw)
            if entry is not None:
                mid, response = entry
            else:
                message = decode_message_fast(raw)
                mid, response = int(message["messageID"]), strategy.decode_response_fast(message)
            if mid == message_id:
                responses.append(response)
                if response["type"] not in ("searchResEntry", "searchResRef",
                                            "intermediateResponse"):
                    complete = True
            elif mid == 0 and response.get("responseName") == "1.3.6.1.4.1.1466.20036":
                return SESSION_TERMINATED_BY_SERVER       # notice of disconnection
            else:
                raise LDAPSocketReceiveError(f"unexpected LDAP message id {mid}")
    responses.append(RESPONSE_COMPLETE)
    return responses


def _ber_length(m: bytes, i: int) -> tuple[int, int]:
    first = m[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    return int.from_bytes(m[i + 1:i + 1 + n], "big"), i + 1 + n


def decode_entry(m: bytes) -> tuple[int, dict] | None:
    """(message id, response dict) if ``m`` is a searchResEntry LDAPMessage, else None.

    A straight walk over the BER that only a search entry can have: SEQUENCE { INTEGER id,
    [APPLICATION 4] { OCTET STRING dn, SEQUENCE OF SEQUENCE { OCTET STRING type, SET OF
    OCTET STRING } } }. Values stay bytes; ldap3's generic decoder builds a tuple per element,
    converts every value to str and looks up its config on each one, which costs more than
    the network. Anything unexpected returns None and ldap3 decodes the message instead."""
    try:
        if m[0] != 0x30:
            return None
        _, i = _ber_length(m, 1)
        if m[i] != 0x02:
            return None
        n, i = _ber_length(m, i + 1)
        message_id = int.from_bytes(m[i:i + n], "big", signed=True)
        i += n
        if m[i] != 0x64:                               # [APPLICATION 4] searchResEntry
            return None
        _, i = _ber_length(m, i + 1)
        if m[i] != 0x04:
            return None
        n, i = _ber_length(m, i + 1)
        raw_dn = m[i:i + n]
        i += n
        if m[i] != 0x30:
            return None
        total, i = _ber_length(m, i + 1)
        end = i + total
        attrs: dict[str, list[bytes]] = {}
        while i < end:
            if m[i] != 0x30:
                return None
            _, i = _ber_length(m, i + 1)
            n, i = _ber_length(m, i + 1)              # attribute type
            name = m[i:i + n].decode()
            i += n
            size, i = _ber_length(m, i + 1)           # SET OF values
            stop = i + size
            values = []
            while i < stop:
                n, i = _ber_length(m, i + 1)
                values.append(m[i:i + n])
                i += n
            attrs[name] = values
        if i != end:
            return None
        return message_id, {"type": "searchResEntry", "raw_dn": raw_dn, "dn": raw_dn.decode(),
                            "raw_attributes": attrs, "attributes": attrs}
    except (IndexError, UnicodeDecodeError):
        return None


def _lowered(raw: Mapping[str, list]) -> dict[str, list[bytes]]:
    return {name.lower(): [v if isinstance(v, bytes) else str(v).encode() for v in values]
            for name, values in raw.items() if values}


def _decode_attributes(attrs: Mapping[str, list[bytes]], names: Iterable[str],
                       skip: str = "") -> dict[str, Value]:
    """Requested attributes as JSON-able values (one value -> str, several -> list[str]),
    under the spelling the mapping uses. Binary values (photos, SIDs) are left out."""
    out: dict[str, Value] = {}
    for name in names:
        raw = attrs.get(name.lower())
        if not raw or name.lower() in GUID_ATTRIBUTES or name == skip:
            continue
        try:
            values = [v.decode("utf-8") for v in raw]
        except UnicodeDecodeError:
            continue
        out[name] = values[0] if len(values) == 1 else values
    return out


def decode_id(attribute: str, raw: bytes) -> str:
    """A stable id as text: GUIDs as UUID strings (little-endian first fields, as AD and
    Windows show them), entryUUID and anything textual as is (lower-cased if a UUID)."""
    if attribute.lower() in GUID_ATTRIBUTES:
        if len(raw) != 16:
            raise SourceError(f"{attribute} value is {len(raw)} bytes, not 16")
        return str(uuid.UUID(bytes_le=bytes(raw)))
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.hex()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def member_dns(attrs: Mapping[str, list[bytes]]) -> list[str]:
    dns = []
    for name in ("member", "uniquemember"):
        for raw in attrs.get(name, ()):
            dn = raw.decode("utf-8", "replace")
            if name == "uniquemember" and dn.endswith("'B") and "#'" in dn:
                dn = dn.rsplit("#'", 1)[0]          # nameAndOptionalUID: drop the bit string
            dns.append(dn)
    return dns


def _parse_generalized_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# DNs


_DN_SPECIALS = frozenset('\\"+<>;#')


def normalise_dn(dn: str) -> str:
    """A DN in one canonical spelling for comparisons: attribute types lower-cased, values
    unescaped then case-folded, multi-valued RDNs sorted, insignificant spaces dropped, and
    special characters re-escaped the same way every time."""
    if not (_DN_SPECIALS & set(dn)):
        parts = []
        for rdn in dn.split(","):
            attr, sep, value = rdn.partition("=")
            if not sep or "=" in value:
                break
            parts.append(f"{attr.strip().lower()}={value.strip().casefold()}")
        else:
            return ",".join(parts)
    return ",".join("+".join(sorted(f"{attr.lower()}={_escape_value(value.casefold())}"
                                    for attr, value in rdn))
                    for rdn in parse_dn(dn))


def parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """RFC 4514 DN -> RDNs -> (type, unescaped value). Tolerates the older RFC 2253/1779
    forms directories still return (spaces around separators, quoted values, ``;``)."""
    rdns: list[list[tuple[str, str]]] = []
    rdn: list[tuple[str, str]] = []
    i, n = 0, len(dn)
    while i < n:
        # attribute type
        j = dn.find("=", i)
        if j < 0:
            if dn[i:].strip():
                raise SourceError(f"malformed DN {dn!r}")
            break
        attr = dn[i:j].strip()
        i = j + 1
        while i < n and dn[i] == " ":
            i += 1
        value = bytearray()
        if i < n and dn[i] == '"':
            i += 1
            while i < n and dn[i] != '"':
                if dn[i] == "\\" and i + 1 < n:
                    i += 1
                value += dn[i].encode()
                i += 1
            i += 1
            while i < n and dn[i] == " ":
                i += 1
        else:
            trailing = 0                     # unescaped trailing spaces are not part of it
            while i < n and dn[i] not in ",;+":
                ch = dn[i]
                if ch == "\\" and i + 1 < n:
                    pair = dn[i + 1:i + 3]
                    if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                        value.append(int(pair, 16))
                        i += 3
                    else:
                        value += dn[i + 1].encode()
                        i += 2
                    trailing = 0
                    continue
                trailing = trailing + 1 if ch == " " else 0
                value += ch.encode()
                i += 1
            if trailing:
                del value[-trailing:]
        rdn.append((attr, value.decode("utf-8", "replace")))
        if i < n and dn[i] == "+":
            i += 1
            continue
        rdns.append(rdn)
        rdn = []
        i += 1                               # skip , or ;
    if rdn:
        rdns.append(rdn)
    return rdns


def _escape_value(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


# ---------------------------------------------------------------------------------------------
# Small helpers


def _wrap(flt: str) -> str:
    flt = flt.strip()
    return flt if flt.startswith("(") else f"({flt})"


def _and(*filters: str | None) -> str:
    parts = [f for f in filters if f]
    return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _with_members(record: GroupRecord, members: frozenset[str]) -> GroupRecord:
    return GroupRecord(record.id, record.attributes, members)


def _ignore(*args: object) -> None:
    pass
