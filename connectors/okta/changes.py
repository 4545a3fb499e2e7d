"""Okta change reads: what changed since a cursor, and the cursor itself.

Users are read with ``filter=lastUpdated gt "<cursor>"`` (this filter reads the consistent
store and includes DEPROVISIONED users), groups with ``lastUpdated``/``lastMembershipUpdated``,
re-reading the members of every changed group. The cursor is the server's own clock (``Date``
of the first answer of a read) minus an overlap, so our clock's skew does not matter. Hard
deletes appear in no filter: the periodic full read (``full_read_every``) catches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..base import CursorExpired, Directory, GroupRecord, UserRecord
from .client import PAGE_LIMIT, Gone, OktaClient
from .records import group_record, latest, pushed, user_record, wanted_status

CURSOR_OVERLAP = timedelta(seconds=60)  # Date has 1 s resolution; writes land slightly late
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"


def since_of(moment: float) -> str:
    """The ``lastUpdated gt`` bound for a read that started at ``moment`` (server time)."""
    return (datetime.fromtimestamp(moment, timezone.utc) - CURSOR_OVERLAP).strftime(TIME_FORMAT)


@dataclass(frozen=True)
class Cursor:
    """``okta1;since=<server time>;full=<our epoch of the last full read>;scope=<hash>``."""

    since: str
    full_read: float
    scope: str

    def encode(self) -> str:
        return f"okta1;since={self.since};full={self.full_read:.0f};scope={self.scope}"

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            tag, *parts = text.split(";")
            fields = dict(p.split("=", 1) for p in parts)
            if tag != "okta1":
                raise ValueError(tag)
            datetime.strptime(fields["since"], TIME_FORMAT)
            return cls(fields["since"], float(fields["full"]), fields["scope"])
        except (ValueError, KeyError, AttributeError):
            raise CursorExpired("the stored Okta cursor is not one this version wrote") from None


class ChangeReader:
    """One ``read_changes``: what changed since ``since``, resolved against ``known``."""

    def __init__(self, client: OktaClient, include_staged: bool, since: str, known: Directory,
                 scope_ids: set[str]):
        self.client, self.include_staged = client, include_staged
        self.since, self.known, self.scope_ids = since, known, scope_ids
        self.users: dict[str, UserRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        self.removed_users: set[str] = set()
        self.removed_groups: set[str] = set()

    def run(self) -> "ChangeReader":
        client, since = self.client, self.since
        changed_groups = {g["id"]: g for g in client.list("/api/v1/groups", {
            "limit": PAGE_LIMIT,
            "filter": f'lastUpdated gt "{since}" or lastMembershipUpdated gt "{since}"'})}
        changed_users = list(client.list("/api/v1/users", {
            "limit": PAGE_LIMIT, "filter": f'lastUpdated gt "{since}"'}))
        members: dict[str, list[dict]] = {}
        for gid, group in changed_groups.items():
            if group.get("type") == "BUILT_IN" and gid not in self.scope_ids:
                continue
            try:
                members[gid] = client.members(gid)
            except Gone:
                members[gid] = []
                changed_groups[gid] = {}   # deleted while we read: drop it below
        records = latest([*changed_users, *(u for m in members.values() for u in m)])

        old_users = set(self.known.users)
        scope_members = self._scope_members(members)
        for uid, user in records.items():
            in_scope = scope_members is None or uid in scope_members
            if in_scope and wanted_status(user, self.include_staged):
                self.users[uid] = user_record(user)
            elif uid in old_users:
                self.removed_users.add(uid)
        if scope_members is not None:
            self.removed_users |= old_users - scope_members
        effective = (old_users - self.removed_users) | set(self.users)

        for gid, group in changed_groups.items():
            if gid in members:
                self._judge_group(gid, group, [u["id"] for u in members[gid]], effective)
        if scope_members is not None:
            self._follow_scope_moves(old_users, effective, changed_groups)
        return self

    def _scope_members(self, reread: Mapping[str, list[dict]]) -> set[str] | None:
        if not self.scope_ids:
            return None
        ids: set[str] = set()
        for gid in self.scope_ids:
            if gid in reread:
                ids |= {u["id"] for u in reread[gid]}
            else:
                ids |= set(self.known.groups[gid].members)
        return ids

    def _judge_group(self, gid: str, group: Mapping[str, Any], member_ids: list[str],
                     effective: set[str]) -> None:
        if group and pushed(gid, group, member_ids, effective, self.scope_ids):
            self.groups[gid] = group_record(group, member_ids)
        elif gid in self.known.groups:
            self.removed_groups.add(gid)

    def _follow_scope_moves(self, old_users: set[str], effective: set[str],
                            handled: Mapping[str, Any]) -> None:
        """With a scope, a user entering or leaving it can make an unchanged group start or
        stop having members in scope; no group filter reports that, so look it up."""
        leaving = old_users - effective
        for gid, group in self.known.groups.items():
            if gid in handled or gid in self.scope_ids or not (group.members & leaving):
                continue
            if not (group.members & effective):
                self.removed_groups.add(gid)
        for uid in sorted(effective - old_users):
            for group in self.client.list(f"/api/v1/users/{uid}/groups", {"limit": PAGE_LIMIT}):
                gid = group["id"]
                if gid in handled or gid in self.known.groups or gid in self.groups:
                    continue
                if group.get("type") == "BUILT_IN":
                    continue
                try:
                    member_ids = [u["id"] for u in self.client.members(gid)]
                except Gone:
                    continue
                self._judge_group(gid, group, member_ids, effective)
