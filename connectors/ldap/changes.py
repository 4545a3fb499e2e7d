"""Change reads: where one starts (a marker on the server), what left, and the next cursor.

OpenLDAP: ``modifyTimestamp``; AD: ``uSNChanged`` on the same domain controller, bounded by
``highestCommittedUSN`` read *before* the search, with a full read when the controller or its
``invocationId`` (a restore) changed. A cursor is JSON naming its version, the flavor and the
URL it came from; anything else makes the engine read in full (:class:`CursorExpired`).

What left (AD only, :meth:`UsnMarker.departures`): every object of the naming context whose
``uSNChanged`` is above the cursor, wherever it now is, deleted ones included. A deletion
moves the object into the Deleted Objects container as a tombstone (``isDeleted: TRUE``, its
``objectGUID`` kept, a new ``uSNChanged``), visible with the Show Deleted control to an
account that may list that container. A known object that changed but is no longer in the
filtered reads moved out of the base or stopped matching the filter. An account that cannot
list deleted objects cannot tell a deletion from no change, so for it every cycle is a full
read (:class:`CursorExpired`), and ``check`` says so.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from ..base import CursorExpired, SourceError
from .decoding import decode_id
from .dn import normalise_dn
from .session import Session

EPOCH_TIMESTAMP = "19700101000000Z"
CURSOR_VERSION = 1
SHOW_DELETED = ("1.2.840.113556.1.4.417", False, None)     # LDAP_SERVER_SHOW_DELETED_OID
DELETED_OBJECTS_WKGUID = "18e2ea80684f11d2b9aa00c04f79f805"  # GUID_DELETED_OBJECTS_CONTAINER
DELETED_OBJECTS_GRANT = "List Contents and Read Property on its Deleted Objects container"


@dataclass
class Departures:
    """Ids of the objects changed since the cursor anywhere in the naming context."""

    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)


def parse_cursor(cursor: str, flavor: str) -> dict[str, Any]:
    """The state in a stored cursor, if this version and flavor can continue from it."""
    try:
        state = json.loads(cursor)
        ok = (isinstance(state, dict) and state.get("v") == CURSOR_VERSION
              and state.get("flavor") == flavor and "url" in state)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CursorExpired("the stored LDAP change cursor is not usable with this "
                            "configuration; reading in full")
    return state


def change_marker(session: Session, bases: Iterable[str] = ()) -> "ChangeMarker":
    """The marker for the flavor of ``session``, taken now (before the searches of a read).
    ``bases``: the search bases, to find the naming contexts that hold them (AD)."""
    if session.flavor == "ad":
        return UsnMarker(session, bases)
    return TimestampMarker(session)


class ChangeMarker:
    """Where a change read starts and what the next cursor is."""

    def __init__(self, session: Session):
        self.session = session

    def base_state(self) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "flavor": self.session.flavor, "url": self.session.url}

    def seen(self, attrs: Mapping[str, list[bytes]]) -> None:
        """An entry read, by its attributes (lowered form)."""
        stamp = attrs.get(self.stamp_key)
        self.seen_stamp(stamp[0] if stamp else None)

    stamp_key = ""

    def seen_stamp(self, stamp: bytes | None) -> None:
        """An entry read, by the raw first value of its change attribute."""

    def changed_filter(self, state: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def cursor(self, duration: float, previous: Mapping[str, Any] | None = None) -> str:
        raise NotImplementedError

    def departures(self, state: Mapping[str, Any], id_attribute: str) -> Departures | None:
        """What changed since ``state`` anywhere, deleted objects included; None when this
        flavor cannot tell (the periodic full read catches deletions and moves out)."""
        return None

    def deletions(self) -> str:
        """How deletions reach the view, in words for ``check``."""
        return "at the periodic full read (full_read_every)"


class TimestampMarker(ChangeMarker):
    """OpenLDAP: ``modifyTimestamp`` (one-second resolution, server clock).

    The next read starts at the newest timestamp seen minus the duration of this read and a
    second: every change made while this read ran is at least that recent, whatever the skew
    between our clock and the server's. Entries seen twice are simply upserted twice.
    """

    def __init__(self, session: Session):
        super().__init__(session)
        self.newest = ""
        self._newest = b""

    stamp_key = "modifytimestamp"

    def seen_stamp(self, stamp: bytes | None) -> None:
        if stamp and stamp > self._newest:
            self._newest = stamp
            self.newest = stamp.decode("ascii", "replace")

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


class UsnMarker(ChangeMarker):
    """AD: ``uSNChanged`` is per domain controller. ``highestCommittedUSN`` is read before
    the searches, so a change committed during the read is read again next time rather than
    lost; a different controller (``dsServiceName``) or a restored one (new ``invocationId``)
    makes the cursor useless."""

    def __init__(self, session: Session, bases: Iterable[str] = ()):
        super().__init__(session)
        root = session.read_entry("", "(objectClass=*)",
                                  ["highestCommittedUSN", "dsServiceName", "namingContexts",
                                   "defaultNamingContext"]) or {}
        try:
            self.usn = int(root["highestcommittedusn"][0])
            self.dsa = root["dsservicename"][0].decode()
        except (KeyError, IndexError, ValueError) as exc:
            raise SourceError(f"{session.host} does not look like Active Directory (its root "
                              f"entry has no highestCommittedUSN or dsServiceName); check "
                              f"source.flavor") from exc
        service = session.read_entry(self.dsa, "(objectClass=*)", ["invocationId"]) or {}
        raw = (service.get("invocationid") or [b""])[0]
        self.invocation = decode_id("objectGUID", raw) if len(raw) == 16 else raw.hex()
        contexts = [v.decode() for v in root.get("namingcontexts", ())]
        default = [v.decode() for v in root.get("defaultnamingcontext", ())]
        self.contexts = _contexts_holding(bases, contexts) or default
        self._visible: bool | None = None

    def deleted_objects_visible(self) -> bool:
        """Can the bind account see the Deleted Objects container of every naming context
        read? Where it cannot, tombstones are silently left out of searches."""
        if self._visible is None:
            self._visible = bool(self.contexts) and all(
                self._sees_deleted_objects(nc) for nc in self.contexts)
        return self._visible

    def _sees_deleted_objects(self, context: str) -> bool:
        try:
            attrs = self.session.read_entry(f"<WKGUID={DELETED_OBJECTS_WKGUID},{context}>",
                                            "(objectClass=*)", ["isDeleted"],
                                            controls=[SHOW_DELETED])
        except (lx.LDAPOperationResult, SourceError):   # refused, or answered with a referral
            return False
        return bool(attrs and attrs.get("isdeleted"))

    def departures(self, state: Mapping[str, Any], id_attribute: str) -> Departures:
        if not self.deleted_objects_visible():
            raise CursorExpired(f"the bind account cannot list deleted objects on "
                                f"{self.session.host}, so a change read would miss "
                                f"deletions; reading in full (grant it "
                                f"{DELETED_OBJECTS_GRANT} to read changes only)")
        found = Departures()
        for context in self.contexts:
            for dn, attrs in self.session.search(
                    "changed and deleted objects", context, self.changed_filter(state),
                    [id_attribute, "isDeleted"], controls=[SHOW_DELETED]):
                raw = attrs.get(id_attribute.lower())
                if not raw:
                    continue            # a tombstone that dropped a custom id attribute
                object_id = decode_id(id_attribute, raw[0])
                found.changed.add(object_id)
                if (attrs.get("isdeleted") or [b""])[0].upper() == b"TRUE":
                    found.deleted.add(object_id)
        return found

    def deletions(self) -> str:
        if self.deleted_objects_visible():
            return "seen by change reads (the bind account can list deleted objects)"
        return ("at a full read every cycle: the bind account cannot list deleted objects "
                f"(grant it {DELETED_OBJECTS_GRANT} to read changes only)")

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


def _contexts_holding(bases: Iterable[str], contexts: list[str]) -> list[str]:
    """For each base, the longest naming context it lies in (a domain, not the forest root
    that may contain it); in order, without repeats."""
    chosen: list[str] = []
    for base in bases:
        key = normalise_dn(base)
        holding = [c for c in contexts
                   if key == normalise_dn(c) or key.endswith("," + normalise_dn(c))]
        if holding:
            best = max(holding, key=lambda c: len(normalise_dn(c)))
            if best not in chosen:
                chosen.append(best)
    return chosen


def _parse_generalized_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
