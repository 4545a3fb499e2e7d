"""Okta JSON -> source records, and which users and groups are pushed.

Status -> active: ACTIVE, PASSWORD_EXPIRED, LOCKED_OUT, RECOVERY are active; SUSPENDED and
DEPROVISIONED inactive; STAGED and PROVISIONED (never activated / no password yet) are left
out unless ``include_staged``, and then pushed as active so the account is ready in Split.
Records keep Okta's names flat: profile fields as ``profile.<field>``, plus status,
lastUpdated...
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ..base import GroupRecord, UserRecord

log = logging.getLogger(__name__)

ACTIVE_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
INACTIVE_STATUSES = frozenset({"SUSPENDED", "DEPROVISIONED"})
STAGED_STATUSES = frozenset({"STAGED", "PROVISIONED"})
_USER_FIELDS = ("status", "created", "activated", "statusChanged", "lastUpdated")
_GROUP_FIELDS = ("type", "created", "lastUpdated", "lastMembershipUpdated")


def user_record(user: Mapping[str, Any]) -> UserRecord:
    attributes: dict[str, Any] = {k: _plain(user.get(k)) for k in _USER_FIELDS if k in user}
    for name, value in (user.get("profile") or {}).items():
        attributes[f"profile.{name}"] = _plain(value)
    status = str(user.get("status") or "")
    if status not in ACTIVE_STATUSES | INACTIVE_STATUSES | STAGED_STATUSES:
        log.warning("Okta user %s has an unknown status %r; treating it as inactive",
                    user.get("id"), status)
    active = status in ACTIVE_STATUSES or status in STAGED_STATUSES
    return UserRecord(str(user["id"]), attributes, active)


def group_record(group: Mapping[str, Any], member_ids: Iterable[str]) -> GroupRecord:
    attributes: dict[str, Any] = {k: _plain(group.get(k)) for k in _GROUP_FIELDS if k in group}
    for name, value in (group.get("profile") or {}).items():
        attributes[f"profile.{name}"] = _plain(value)
    return GroupRecord(str(group["id"]), attributes, frozenset(member_ids))


def wanted_status(user: Mapping[str, Any], include_staged: bool) -> bool:
    if user.get("status") in STAGED_STATUSES:
        return include_staged
    return True


def pushed(gid: str, group: Mapping[str, Any], members: Iterable[str], in_scope: set[str],
           scope_ids: set[str]) -> bool:
    """Which groups go to Split: all of them when there is no scope; with a scope, the scope
    groups and every group with at least one member in scope. Never "Everyone"."""
    if gid in scope_ids:
        return True
    if group.get("type") == "BUILT_IN":
        return False
    return not scope_ids or any(m in in_scope for m in members)


def find_group(groups: Mapping[str, Mapping[str, Any]], wanted: str) -> str | None:
    """The id of the one group with this id or (case-insensitive) name."""
    if wanted in groups:
        return wanted
    matches = [gid for gid, g in groups.items()
               if str((g.get("profile") or {}).get("name") or "").casefold() == wanted.casefold()]
    return matches[0] if len(matches) == 1 else None


def latest(users: Iterable[dict]) -> dict[str, dict]:
    """One record per id: the most recently updated (a user can show up in two listings)."""
    out: dict[str, dict] = {}
    for user in users:
        seen = out.get(user["id"])
        if seen is None or str(user.get("lastUpdated") or "") >= str(seen.get("lastUpdated") or ""):
            out[user["id"]] = user
    return out


def _plain(value: Any):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
