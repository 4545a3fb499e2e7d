"""The Entra ID source: users, groups and memberships through Microsoft Graph v1.0.

Vendor traps handled here (wire details: ../shared/reference/sources.md section 2; signing
in: :mod:`.auth`; requests, pacing and paging: :mod:`.client`; delta merging: :mod:`.delta`):

- With ``groups`` set, only the transitive members of those groups are in scope, and the
  groups in scope are those groups and the groups nested in them.
- Delta queries: a full read first takes ``$deltatoken=latest`` links for users and groups
  (before reading, so that a change made during the read is replayed, not lost), lists the
  users, and reads every group with its members in one groups delta round
  (``$select=displayName,members``): a full read costs pages, never one call per group.
  (``$expand=members`` is no way round: Graph expands at most 20 directory objects, without
  a nextLink.) Later cycles follow the stored delta links.
- A failure anywhere in a read raises SourceError: a half-read directory must never look
  like deletions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ..base import ChangeSet, Directory, GroupRecord, SourceError, UserRecord
from ..http import HttpPolicy
from .auth import GraphAuth, credential_of
from .client import GRAPH_RATE_LIMIT, PAGE_SIZE, GraphClient, NotFound, odata_quote
from .delta import (GROUP_TYPE, USER_TYPE, GroupDelta, decode_cursor, encode_cursor,
                    is_guest, merge_group_delta, merge_user_delta, user_record, user_select)
from .settings import GUID, Settings

log = logging.getLogger(__name__)

FILTER_IDS = 50          # ids one groups delta round may be filtered on (group-delta.md)


class EntraSource:
    type_name: ClassVar[str] = "entra"
    supports_changes: ClassVar[bool] = True
    Settings: ClassVar[type] = Settings
    default_mapping: ClassVar[dict[str, tuple[str, ...]]] = {
        # a guest's userPrincipalName never comes through (delta.guest_safe): mail, else the
        # invited address in otherMails
        "userName": ("mail", "otherMails", "userPrincipalName"),
        "email": ("mail", "otherMails", "userPrincipalName"),
        "name.givenName": ("givenName",),
        "name.familyName": ("surname",),
        "displayName": ("displayName",),
        "title": ("jobTitle",),
        "department": ("department",),
        "employeeNumber": ("employeeId",),
    }
    group_name_attributes: ClassVar[tuple[str, ...]] = ("displayName",)

    def __init__(self, settings: Settings, *,
                 attributes: Iterable[str] | Mapping[str, str | Iterable[str]] = (),
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 policy: HttpPolicy | None = None):
        """``settings`` were validated when the config was loaded. ``attributes``: the Graph
        property names used in ``[source.attributes]`` (or that table itself), so that they
        are part of ``$select``. ``clock`` and ``sleep`` are the time seam: pacing and retry
        waits use only them; ``transport`` and ``policy`` are for tests."""
        self.settings = settings
        extra: list[str] = []
        for raw in (attributes.values() if isinstance(attributes, Mapping) else attributes):
            extra.extend([raw] if isinstance(raw, str) else raw)
        self.user_select = user_select([*self.default_mapping.values(), extra])
        self._auth = GraphAuth(settings.tenant_id, settings.client_id,
                               credential_of(settings.client_secret, settings.certificate),
                               settings.authority, settings.graph_url, settings.ca_file,
                               settings.timeout)
        policy = policy or HttpPolicy(timeout=settings.timeout, rate_limit=GRAPH_RATE_LIMIT,
                                      ca_file=settings.ca_file)
        self.graph = GraphClient(settings.graph_url, self._auth, policy, transport=transport,
                                 clock=clock, sleep=sleep)

    @property
    def _scoped(self) -> bool:
        return bool(self.settings.groups)

    # -- full read ----------------------------------------------------------------------------

    def read(self) -> Directory:
        # Delta links first: a change made while we read shows up (again) in the next delta.
        # (The groups round below ends in a deltaLink of its own; the one taken before it is
        # kept instead, so nothing rests on when Graph sets a round's watermark.)
        users_link = self._latest(self._users_delta_start())
        groups_link = self._latest(self._groups_delta_start())
        if self._scoped:
            scope_users, scope_groups = self._scope()
            users = [user_record(raw) for raw in scope_users.values() if self._wanted(raw)]
            groups = list(self._groups_by_id(scope_groups).values())
        else:
            users = [user_record(raw) for raw in self.graph.list(
                "/v1.0/users", {"$select": ",".join(self.user_select), "$top": str(PAGE_SIZE)})
                if self._wanted(raw)]
            # Every group with its members in one delta round: pages, not a call per group.
            merged = GroupDelta(Directory.of())
            self.graph.delta_each(self._groups_delta_start(), merged.add)
            groups = list(merged.records().values())
        log.info("read %d users and %d groups from Entra ID", len(users), len(groups))
        return Directory.of(users, groups, self._cursor(users_link, groups_link))

    def _wanted(self, raw: Mapping[str, Any]) -> bool:
        """``guests = "skip"`` leaves guests out of scope (a pushed one is then deactivated)."""
        return self.settings.guests != "skip" or not is_guest(raw)

    def _groups_by_id(self, names: Mapping[str, Any]) -> dict[str, GroupRecord]:
        """These groups (id -> display name) complete with their members, from delta rounds
        filtered on ids (at most 50 to a round, group-delta.md): a round starts from nothing,
        so it lists every current member. A group deleted meanwhile is simply not there."""
        merged = GroupDelta(Directory.of())
        ids = sorted(names)
        for start in range(0, len(ids), FILTER_IDS):
            chosen = " or ".join(f"id eq {odata_quote(gid)}"
                                 for gid in ids[start:start + FILTER_IDS])
            self.graph.delta_each(f"{self._groups_delta_start()}&$filter={quote(chosen)}",
                                  merged.add)
        records = merged.records()
        for gid, record in records.items():
            if not record.attributes.get("displayName") and names.get(gid):
                records[gid] = GroupRecord(gid, {**record.attributes,
                                                 "displayName": names[gid]}, record.members)
        return records

    def _scope_group_ids(self) -> dict[str, str]:
        """The ``groups`` setting resolved: id -> display name."""
        found: dict[str, str] = {}
        for entry in self.settings.groups:
            if GUID.match(entry):
                try:
                    group = self.graph.get(f"/v1.0/groups/{entry}", {"$select": "id,displayName"})
                except NotFound:
                    raise SourceError(f"scope group {entry} (groups setting) does not exist "
                                      "in the tenant.") from None
                found[group["id"]] = group.get("displayName") or ""
                continue
            matches = self.graph.list("/v1.0/groups", {
                "$filter": f"displayName eq {odata_quote(entry)}", "$select": "id,displayName"})
            if not matches:
                raise SourceError(f"no group named {entry!r} (groups setting) in the tenant.")
            if len(matches) > 1:
                raise SourceError(f"{len(matches)} groups are named {entry!r} (groups "
                                  "setting); use the group's id instead.")
            found[matches[0]["id"]] = matches[0].get("displayName") or entry
        return found

    def _scope(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Users (raw, with the selected properties) and groups (id -> name) in scope: the
        transitive members of the scope groups, and those groups themselves."""
        groups = self._scope_group_ids()
        users: dict[str, dict[str, Any]] = {}
        select = ",".join(dict.fromkeys([*self.user_select, "displayName"]))
        for gid in list(groups):
            for obj in self.graph.list(f"/v1.0/groups/{gid}/transitiveMembers",
                                  {"$select": select, "$top": str(PAGE_SIZE)}):
                if obj.get("@odata.type") == USER_TYPE:
                    users[obj["id"]] = obj
                elif obj.get("@odata.type") == GROUP_TYPE:
                    groups.setdefault(obj["id"], obj.get("displayName") or "")
        log.debug("scope groups hold %d users and %d groups", len(users), len(groups))
        return users, groups

    # -- change reads -------------------------------------------------------------------------

    def _latest(self, start: str) -> str:
        """A delta link from now on (``$deltatoken=latest``: one call, no objects)."""
        return self.graph.delta(start + "&$deltatoken=latest")[1]

    def _users_delta_start(self) -> str:
        return f"/v1.0/users/delta?$select={','.join(self.user_select)}"

    def _groups_delta_start(self) -> str:
        return "/v1.0/groups/delta?$select=displayName,members"

    def _cursor(self, users_link: str, groups_link: str) -> str:
        return encode_cursor(users_link, groups_link, self.user_select, self.settings.groups)

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        users_link, groups_link = decode_cursor(cursor, self.user_select, self.settings.groups,
                                                 self.graph.origin)
        user_items, users_link = self.graph.delta(users_link)
        group_items, groups_link = self.graph.delta(groups_link)
        users, removed_users = merge_user_delta(user_items, known)
        for uid in [u for u, record in users.items() if not self._wanted(record.attributes)]:
            del users[uid]                  # became (or is) a guest while guests are skipped
            if uid in known.users:
                removed_users.add(uid)
        groups, removed_groups = merge_group_delta(group_items, known)
        if self._scoped:
            users, removed_users, groups, removed_groups = self._rescope(
                known, users, removed_users, groups, removed_groups)
        else:
            # a group the view has never seen must be complete, not just its member changes
            new = {gid: g.attributes.get("displayName") for gid, g in groups.items()
                   if gid not in known.groups}
            if new:
                groups.update(self._groups_by_id(new))
        changes = ChangeSet(users=users, groups=groups, removed_users=frozenset(removed_users),
                            removed_groups=frozenset(removed_groups),
                            cursor=self._cursor(users_link, groups_link))
        log.info("Entra delta: %d users changed, %d removed; %d groups changed, %d removed",
                 len(users), len(removed_users), len(groups), len(removed_groups))
        return changes

    def _rescope(self, known: Directory, users: dict[str, UserRecord], removed_users: set[str],
                 groups: dict[str, GroupRecord], removed_groups: set[str]):
        """Limit a change set to the scope as it is now: members that joined the scope groups
        come in whole, those that left are removed."""
        scope_users, scope_groups = self._scope()
        # the scope listing was read after the delta and is complete: it has the last word
        users = {uid: user_record(raw) for uid, raw in scope_users.items()
                 if (uid in users or uid not in known.users) and self._wanted(raw)}
        removed_users = {uid for uid in known.users
                         if uid not in scope_users or not self._wanted(scope_users[uid])}
        groups = {gid: rec for gid, rec in groups.items()
                  if gid in scope_groups and gid in known.groups}
        groups.update(self._groups_by_id({gid: name for gid, name in scope_groups.items()
                                          if gid not in known.groups}))
        removed_groups = {gid for gid in known.groups if gid not in scope_groups}
        return users, removed_users, groups, removed_groups

    # -- check ------------------------------------------------------------------------------

    def check(self) -> dict[str, int | str]:
        self._auth.access_token()
        report: dict[str, int | str] = {"tenant": self.settings.tenant_id,
                                        "credential": self._auth.credential.description}
        if self._auth.credential.expires is not None:
            report["certificate expires"] = self._auth.credential.expires.date().isoformat()
        users = self.graph.get("/v1.0/users", {"$select": "id,accountEnabled",
                                          "$top": str(PAGE_SIZE)})
        groups = self.graph.get("/v1.0/groups", {"$select": "id", "$top": str(PAGE_SIZE)})
        values = users.get("value", [])
        report["users"] = len(values)
        report["disabled users"] = sum(1 for u in values if u.get("accountEnabled") is False)
        report["groups"] = len(groups.get("value", []))
        if "@odata.nextLink" in users or "@odata.nextLink" in groups:
            report["counted"] = f"first page only (up to {PAGE_SIZE} each)"
        if self._scoped:
            scope_users, scope_groups = self._scope()
            report["users in scope"] = len(scope_users)
            report["groups in scope"] = len(scope_groups)
        return report

    def close(self) -> None:
        self.graph.close()
        self._auth.close()
