"""Change reads: where one starts (a marker on the server) and what the next cursor is.

OpenLDAP: ``modifyTimestamp``; AD: ``uSNChanged`` on the same domain controller, bounded by
``highestCommittedUSN`` read *before* the search, with a full read when the controller or its
``invocationId`` (a restore) changed. A cursor is JSON naming its version, the flavor and the
URL it came from; anything else makes the engine read in full (:class:`CursorExpired`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from ldap3.utils.conv import escape_filter_chars

from ..base import CursorExpired, SourceError
from .decoding import decode_id
from .session import Session

EPOCH_TIMESTAMP = "19700101000000Z"
CURSOR_VERSION = 1


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


def change_marker(session: Session) -> "ChangeMarker":
    """The marker for the flavor of ``session``, taken now (before the searches of a read)."""
    if session.flavor == "ad":
        return UsnMarker(session)
    return TimestampMarker(session)


class ChangeMarker:
    """Where a change read starts and what the next cursor is."""

    def __init__(self, session: Session):
        self.session = session

    def base_state(self) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "flavor": self.session.flavor, "url": self.session.url}

    def seen(self, attrs: Mapping[str, list[bytes]]) -> None:
        pass

    def changed_filter(self, state: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def cursor(self, duration: float, previous: Mapping[str, Any] | None = None) -> str:
        raise NotImplementedError


class TimestampMarker(ChangeMarker):
    """OpenLDAP: ``modifyTimestamp`` (one-second resolution, server clock).

    The next read starts at the newest timestamp seen minus the duration of this read and a
    second: every change made while this read ran is at least that recent, whatever the skew
    between our clock and the server's. Entries seen twice are simply upserted twice.
    """

    def __init__(self, session: Session):
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


class UsnMarker(ChangeMarker):
    """AD: ``uSNChanged`` is per domain controller. ``highestCommittedUSN`` is read before
    the searches, so a change committed during the read is read again next time rather than
    lost; a different controller (``dsServiceName``) or a restored one (new ``invocationId``)
    makes the cursor useless."""

    def __init__(self, session: Session):
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



def _parse_generalized_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
