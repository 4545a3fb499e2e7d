"""The Okta source: users, groups and memberships from the Okta Management API (``/api/v1``).

Vendor traps handled here (wire details: ../shared/reference/sources.md section 1; signing in:
:mod:`.auth`; requests, budgets and paging: :mod:`.client`; change reads: :mod:`.changes`):

- ``GET /api/v1/users`` without a filter silently omits DEPROVISIONED users. They are read
  with ``filter=status eq "DEPROVISIONED"`` so a deactivated person is deactivated in Split
  instead of vanishing (a vanished user is also deactivated, but only if it was pushed).
- The built-in "Everyone" group is never pushed and its member list never read.
- A failure anywhere in a read raises SourceError: no partial view ever leaves this package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from ..base import ChangeSet, CursorExpired, Directory, SourceError
from ..http import HttpPolicy
from .changes import ChangeReader, Cursor, since_of
from .client import PAGE_LIMIT, Gone, OktaClient
from .records import (STAGED_STATUSES, find_group, group_record, latest, pushed, user_record,
                      wanted_status)
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    users: dict[str, dict]                 # in scope, every status
    groups: dict[str, dict]                # every group
    members: dict[str, list[str]]          # group id -> member user ids (groups read)
    scope_ids: set[str]


class OktaSource:
    type_name: ClassVar[str] = "okta"
    supports_changes: ClassVar[bool] = True
    Settings: ClassVar[type] = Settings
    default_mapping: ClassVar[dict[str, tuple[str, ...]]] = {
        # [source] username = "login" makes it ("profile.login",) (Settings.mapping_overrides)
        "userName": ("profile.email", "profile.login"),
        "email": ("profile.email",),
        "name.givenName": ("profile.firstName",),
        "name.familyName": ("profile.lastName",),
        "displayName": ("profile.displayName",),   # empty -> the engine uses first + last
        "title": ("profile.title",),
        "department": ("profile.department",),
    }
    group_name_attributes: ClassVar[tuple[str, ...]] = ("profile.name",)

    def __init__(self, settings: Settings, *, attributes: Iterable[str] = (),
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 policy: HttpPolicy | None = None):
        """``settings`` were validated when the config was loaded. ``clock`` (epoch seconds)
        and ``sleep`` are the time seam: pacing, retry waits and token renewal use only them."""
        self.settings = settings
        self._clock = clock
        self.client = OktaClient(settings, transport=transport, clock=clock, sleep=sleep,
                                 policy=policy)
        self._host = self.client.host

    # -----------------------------------------------------------------------------------------
    # The Source protocol

    def read(self) -> Directory:
        self.client.first_date = None
        snap = self._read_snapshot()
        directory = self._directory(snap)
        cursor = Cursor(self._since(), self._clock(), self._scope_fingerprint()).encode()
        log.info("read %d users and %d groups from Okta %s", len(directory.users),
                 len(directory.groups), self._host)
        return Directory(directory.users, directory.groups, cursor)

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        state = Cursor.decode(cursor)
        if state.scope != self._scope_fingerprint():
            raise CursorExpired("the Okta scope settings changed since the last read")
        if self._clock() - state.full_read >= self.settings.full_read_every.total_seconds():
            raise CursorExpired("a full Okta read is due (full_read_every)")
        scope_ids = self._scope_ids_from(known) if self.settings.groups else set()
        self.client.first_date = None
        changes = ChangeReader(self.client, self.settings.include_staged, state.since, known,
                               scope_ids).run()
        new_cursor = Cursor(self._since(), state.full_read, state.scope).encode()
        log.info("Okta changes since %s: %d users, %d groups, %d users and %d groups gone",
                 state.since, len(changes.users), len(changes.groups),
                 len(changes.removed_users), len(changes.removed_groups))
        return ChangeSet(changes.users, changes.groups, frozenset(changes.removed_users),
                         frozenset(changes.removed_groups), new_cursor)

    def check(self) -> dict[str, int | str]:
        snap = self._read_snapshot()
        directory = self._directory(snap)
        report: dict[str, int | str] = {
            "org": self._host,
            "auth": self._auth_line(),
            "users": len(directory.users),
            "groups": len(directory.groups),
            "inactive": sum(1 for u in directory.users.values() if not u.active),
        }
        statuses: dict[str, int] = {}
        for user in snap.users.values():
            statuses[user.get("status", "?")] = statuses.get(user.get("status", "?"), 0) + 1
        for status in sorted(statuses):
            report[f"status {status}"] = statuses[status]
        if not self.settings.include_staged:
            report["not pushed (staged/provisioned)"] = sum(
                statuses.get(s, 0) for s in STAGED_STATUSES)
        for gid in sorted(snap.scope_ids):
            name = snap.groups[gid].get("profile", {}).get("name") or gid
            report[f"scope group {name}"] = len(snap.members.get(gid, ()))
        for bucket, budget in sorted(self.client.budgets.by_bucket.items()):
            report[f"rate limit {bucket}"] = f"{budget.remaining} of {budget.limit} left"
        return report

    def _auth_line(self) -> str:
        if not self.settings.oauth:
            return "API token (SSWS)"
        kind = ("DPoP-bound token" if getattr(self.client.auth, "bound", False)
                else "bearer token")
        return f"OAuth service app {self.settings.client_id} ({kind})"

    def close(self) -> None:
        self.client.close()

    # -----------------------------------------------------------------------------------------
    # Full reads

    def _read_snapshot(self) -> _Snapshot:
        groups = {g["id"]: g for g in self.client.list("/api/v1/groups", {"limit": PAGE_LIMIT})}
        scope_ids = self._resolve_scope(groups)
        members: dict[str, list[dict]] = {}
        for gid, group in groups.items():
            if group.get("type") == "BUILT_IN" and gid not in scope_ids:
                continue   # "Everyone": every user, never a group worth pushing
            try:
                members[gid] = self.client.members(gid)
            except Gone:
                log.info("Okta group %s was deleted while reading; skipped", gid)
        if scope_ids:
            users = latest(u for gid in scope_ids for u in members.get(gid, ()))
        else:
            users = latest(self._all_users())
        return _Snapshot(users, groups, {gid: [u["id"] for u in m] for gid, m in members.items()},
                         scope_ids)

    def _all_users(self) -> Iterator[dict]:
        yield from self.client.list("/api/v1/users", {"limit": PAGE_LIMIT})
        # the plain list omits DEPROVISIONED users: ask for them by name
        yield from self.client.list("/api/v1/users", {"limit": PAGE_LIMIT,
                                                      "filter": 'status eq "DEPROVISIONED"'})

    def _directory(self, snap: _Snapshot) -> Directory:
        users = [user_record(u) for u in snap.users.values()
                 if wanted_status(u, self.settings.include_staged)]
        in_scope = {u.id for u in users}
        groups = [group_record(g, snap.members.get(gid, ()))
                  for gid, g in snap.groups.items()
                  if gid in snap.members
                  and pushed(gid, g, snap.members[gid], in_scope, snap.scope_ids)]
        return Directory.of(users, groups)

    def _resolve_scope(self, groups: Mapping[str, Mapping[str, Any]]) -> set[str]:
        ids = set()
        for wanted in self.settings.groups:
            found = find_group(groups, wanted)
            if found is None:
                raise SourceError(f"source.groups names {wanted!r}, but Okta {self._host} has "
                                  f"no single group with that name or id")
            ids.add(found)
        return ids

    def _scope_ids_from(self, known: Directory) -> set[str]:
        groups = {gid: {"profile": {"name": g.attributes.get("profile.name")}}
                  for gid, g in known.groups.items()}
        ids = set()
        for wanted in self.settings.groups:
            found = find_group(groups, wanted)
            if found is None:
                raise CursorExpired(f"scope group {wanted!r} is not in the last view")
            ids.add(found)
        return ids

    def _scope_fingerprint(self) -> str:
        blob = json.dumps([sorted(g.casefold() for g in self.settings.groups),
                           self.settings.include_staged, self._host])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _since(self) -> str:
        started = self.client.first_date
        return since_of(started if started is not None else self._clock())
