"""Graph JSON -> records, and delta rounds merged over the last view; the delta cursor.

- ``/users`` returns a default property set without ``accountEnabled``: a read always asks
  for ``$select`` of the mapped attributes plus ``id`` and ``accountEnabled``
  (:func:`user_select`).
- Group members are directoryObjects of several types: only users and groups are kept
  (``@odata.type``); nesting is left to the engine.
- ``members@delta`` of one group may be spread over several objects and pages: they are
  merged in order. ``@removed`` on a user (soft ``changed`` or hard ``deleted``) removes it
  from the view (the engine deactivates it); on a group, deletes the group.
- The cursor holds the users and groups delta links in one JSON string, with the ``$select``
  and scope it was made for: a config change, or links for another Graph host, force a full
  read.
- Guests (``userType`` ``Guest``): their ``userPrincipalName`` is ``…#EXT#@tenant.
  onmicrosoft.com``, an address no mail reaches, and it changes when the guest later gets
  ``mail``. A guest record therefore never offers it (:func:`guest_safe`): the address is
  ``mail``, else the first of ``otherMails`` (the invited address, Graph user resource), else
  there is none and the engine reports the guest instead of pushing it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..base import CursorExpired, Directory, GroupRecord, UserRecord, Value
from .client import origin

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
CURSOR_FORMAT = 1
# read on every user whatever the mapping: activation, and what guests are made of
ALWAYS_SELECTED = ("id", "accountEnabled", "userType", "otherMails", "externalUserState")


def clean_attributes(raw: Mapping[str, Any]) -> dict[str, Value]:
    """Graph JSON -> record attributes: OData annotations and ``id`` dropped, nested objects
    flattened to dotted names (``onPremisesExtensionAttributes.extensionAttribute1``), lists
    kept as lists of strings."""
    out: dict[str, Value] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if "@" not in key:
                    put(f"{prefix}.{key}", inner)
        elif isinstance(value, (list, tuple)):
            out[prefix] = [str(v) for v in value if isinstance(v, (str, int, float))]
        elif value is None or isinstance(value, (str, bool, int, float)):
            out[prefix] = value
        else:
            out[prefix] = str(value)

    for key, value in raw.items():
        if key == "id" or "@" in key:
            continue
        put(key, value)
    return out



def user_select(raw_names: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """``$select`` for users: id, accountEnabled and the top-level property of every mapped
    attribute (``onPremisesExtensionAttributes.extensionAttribute1`` selects the whole
    complex property)."""
    names = set(ALWAYS_SELECTED)
    for raws in raw_names:
        names.update(raw.split(".")[0] for raw in raws if raw)
    return tuple(sorted(names))


def is_guest(attributes: Mapping[str, Any]) -> bool:
    return str(attributes.get("userType") or "").casefold() == "guest"


def guest_safe(attributes: dict[str, Value]) -> dict[str, Value]:
    """A guest's ``#EXT#`` userPrincipalName is not offered as an address (see the module
    docstring); members keep theirs."""
    upn = attributes.get("userPrincipalName")
    if is_guest(attributes) and isinstance(upn, str) and "#EXT#" in upn.upper():
        attributes.pop("userPrincipalName")
    return attributes


def user_record(raw: Mapping[str, Any]) -> UserRecord:
    return UserRecord(raw["id"], guest_safe(clean_attributes(raw)),
                      raw.get("accountEnabled") is not False)


def merge_user_delta(items: Iterable[Mapping[str, Any]], known: Directory
                     ) -> tuple[dict[str, UserRecord], set[str]]:
    """User delta objects -> (changed records, removed ids). An update may carry only the
    changed properties, so it is laid over what the view knew. The same user may appear
    more than once (replays); the last word wins."""
    changed: dict[str, UserRecord] = {}
    removed: set[str] = set()
    for item in items:
        uid = item["id"]
        if "@removed" in item:
            removed.add(uid)
            changed.pop(uid, None)
            continue
        removed.discard(uid)
        base = changed.get(uid) or known.users.get(uid)
        attrs = dict(base.attributes) if base else {}
        attrs.update(clean_attributes(item))
        guest_safe(attrs)
        if "accountEnabled" in item:
            active = item["accountEnabled"] is not False
        else:
            active = base.active if base else True
        changed[uid] = UserRecord(uid, attrs, active)
    return changed, removed


class GroupDelta:
    """Group delta objects merged in order over what the view knew. One group may come back
    in several objects, on any page, each with part of its ``members@delta``; an entry
    marked ``@removed`` takes the member out (an initial round may list members that left
    that way too). Fed page by page (:meth:`add`), so a full round is never held whole."""

    def __init__(self, known: Directory):
        self.known = known
        self.attrs: dict[str, dict[str, Value]] = {}
        self.members: dict[str, set[str]] = {}
        self.removed: set[str] = set()

    def add(self, items: Iterable[Mapping[str, Any]]) -> None:
        for item in items:
            gid = item["id"]
            if "@removed" in item:
                self.removed.add(gid)
                self.attrs.pop(gid, None)
                self.members.pop(gid, None)
                continue
            self.removed.discard(gid)
            if gid not in self.attrs:
                base = self.known.groups.get(gid)
                self.attrs[gid] = dict(base.attributes) if base else {}
                self.members[gid] = set(base.members) if base else set()
            self.attrs[gid].update(clean_attributes({k: v for k, v in item.items()
                                                     if not k.startswith("members")}))
            members = self.members[gid]
            for entry in item.get("members@delta", ()):
                if "@removed" in entry:
                    members.discard(entry["id"])
                elif entry.get("@odata.type", USER_TYPE) in (USER_TYPE, GROUP_TYPE):
                    members.add(entry["id"])

    def records(self) -> dict[str, GroupRecord]:
        return {gid: GroupRecord(gid, self.attrs[gid], frozenset(self.members[gid]))
                for gid in self.attrs}


def merge_group_delta(items: Iterable[Mapping[str, Any]], known: Directory
                      ) -> tuple[dict[str, GroupRecord], set[str]]:
    """Group delta objects -> (changed records, removed ids); see :class:`GroupDelta`."""
    merged = GroupDelta(known)
    merged.add(items)
    return merged.records(), merged.removed


def encode_cursor(users_link: str, groups_link: str, select: Iterable[str],
                  scope: Iterable[str]) -> str:
    return json.dumps({"format": CURSOR_FORMAT, "users": users_link, "groups": groups_link,
                       "select": list(select), "scope": sorted(scope)}, separators=(",", ":"))


def decode_cursor(cursor: str, select: Iterable[str], scope: Iterable[str],
                  graph_origin: str) -> tuple[str, str]:
    """(users delta link, groups delta link), or CursorExpired when the cursor was made for
    other settings (or is not one this version wrote)."""
    try:
        state = json.loads(cursor)
        users_link, groups_link = state["users"], state["groups"]
        fmt, stored_select, stored_scope = state["format"], state["select"], state["scope"]
    except (ValueError, TypeError, KeyError):
        raise CursorExpired("the stored Entra cursor is not one this version "
                            "understands.") from None
    if fmt != CURSOR_FORMAT:
        raise CursorExpired("the stored Entra cursor has an older format.")
    if stored_select != list(select):
        raise CursorExpired("the mapped user attributes changed since the last full read.")
    if stored_scope != sorted(scope):
        raise CursorExpired("the groups setting changed since the last full read.")
    for link in (users_link, groups_link):
        if not isinstance(link, str) or origin(link) != graph_origin:
            raise CursorExpired("the stored delta links belong to another graph_url.")
    return users_link, groups_link
