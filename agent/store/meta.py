"""The snapshot's ``meta`` table: a few named facts, each with its type.

Every key is a :class:`Meta` member, and each member declares what it holds: a number, an
aware timestamp, or text. Callers ask :class:`MetaStore` questions (``last_full_read()``,
``clear_hold()``) and never spell a key or parse a value. A stored value that does not parse
(a file edited by hand, a bug in an old version) is logged and treated as absent, which is
the safe reading for every key: no timestamp means "due now", no count means zero. Only the
schema version is strict: guessing it could run a migration twice.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:      # (read-only commands never import it: see sqlite.ReadOnlyDatabase)
    import sqlite_utils

from connectors.redaction import redact

from .errors import StateError

log = logging.getLogger(__name__)


class Meta(StrEnum):
    SCHEMA_VERSION = "schema_version"               # int: see state.MIGRATIONS
    HELD = "held"                                   # text: why the daemon holds pushing
    NEXT_RUN = "next_run"                           # time: the daemon's next cycle
    CONSECUTIVE_FAILURES = "consecutive_failures"   # int: failed daemon cycles in a row
    LAST_FULL_READ = "last_full_read"               # time: the last complete source read
    SOURCE_CURSOR = "source_cursor"                 # text: change cursor of the stored view
    SOURCE_CONFIG = "source_config"                 # text: fingerprint of the view's [source]
    LAST_TARGET_READ = "last_target_read"           # time: the last paged read of the target
    TARGET = "target"                               # text: the target this snapshot is for


_TYPE: dict[Meta, type] = {
    Meta.SCHEMA_VERSION: int, Meta.HELD: str, Meta.NEXT_RUN: dt.datetime,
    Meta.CONSECUTIVE_FAILURES: int, Meta.LAST_FULL_READ: dt.datetime, Meta.SOURCE_CURSOR: str,
    Meta.SOURCE_CONFIG: str, Meta.LAST_TARGET_READ: dt.datetime, Meta.TARGET: str,
}

MetaValue = int | str | dt.datetime


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP   # record_daemon(held=KEEP): leave the stored hold as it is


class CorruptMeta(StateError):
    """A stored meta value does not parse as its key's type."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class MetaStore:
    """Typed access to the meta table of one open snapshot. Each write commits at once,
    or with the transaction it is part of."""

    def __init__(self, db: sqlite_utils.Database, path: Path):
        self._db = db
        self._path = path

    # -- the daemon -----------------------------------------------------------------------

    def held(self) -> str | None:
        """Why the daemon holds pushing, as ``status`` shows it; None when it does not."""
        return self._get(Meta.HELD)

    def clear_hold(self) -> None:
        """Lift the daemon's hold: a manual sync succeeded, or the daemon starts afresh."""
        self.set(Meta.HELD, None)

    def next_run(self) -> dt.datetime | None:
        return self._get(Meta.NEXT_RUN)

    def consecutive_failures(self) -> int:
        return self._get(Meta.CONSECUTIVE_FAILURES) or 0

    def record_daemon(self, *, next_run: dt.datetime | None, failures: int,
                      held: str | None | _Keep = KEEP) -> None:
        """What ``status`` shows about the daemon, in one transaction. ``held`` is written
        only when given: a manual sync may have cleared it a moment ago."""
        with self._db.atomic():
            if held is not KEEP:
                self.set(Meta.HELD, held)
            self.set(Meta.NEXT_RUN, next_run)
            self.set(Meta.CONSECUTIVE_FAILURES, failures)

    # -- the engine -----------------------------------------------------------------------

    def last_full_read(self) -> dt.datetime | None:
        return self._get(Meta.LAST_FULL_READ)

    def source_cursor(self) -> str | None:
        return self._get(Meta.SOURCE_CURSOR)

    def source_config(self) -> str | None:
        """The fingerprint of the [source] config the stored view was read under."""
        return self._get(Meta.SOURCE_CONFIG)

    def last_target_read(self) -> dt.datetime | None:
        return self._get(Meta.LAST_TARGET_READ)

    def record_target_read(self, when: dt.datetime | None = None) -> None:
        self.set(Meta.LAST_TARGET_READ, when or utc_now())

    def target(self) -> str | None:
        """The target (its normalised base URL) whose ids this snapshot holds."""
        return self._get(Meta.TARGET)

    def bind_target(self, target: str) -> None:
        self.set(Meta.TARGET, target)

    # -- the schema -----------------------------------------------------------------------

    def schema_version(self) -> int:
        """0 for a new file. A value that does not parse is an error, never a guess."""
        raw = self._raw(Meta.SCHEMA_VERSION)
        if raw is None:
            return 0
        try:
            return _decode(Meta.SCHEMA_VERSION, raw)
        except (ValueError, TypeError):
            raise CorruptMeta(f"{self._path}: the snapshot's schema_version is {raw!r}, not a "
                              "number; move the file aside and run sync to rebuild it from "
                              "the target") from None

    # -- any key ----------------------------------------------------------------------------

    def set(self, key: Meta, value: MetaValue | None) -> None:
        """Store ``value`` (of the key's type) under ``key``; None deletes it."""
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", [key.value])
            return
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [key.value, _encode(key, value)])

    def _get(self, key: Meta):
        raw = self._raw(key)
        if raw is None:
            return None
        try:
            return _decode(key, raw)
        except (ValueError, TypeError, OverflowError):
            log.warning("%s: meta %s holds %r, which is not a %s; treating it as absent",
                        self._path, key.value, raw[:80] if isinstance(raw, str) else raw,
                        _TYPE[key].__name__)
            return None

    def _raw(self, key: Meta) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", [key.value]).fetchone()
        return row[0] if row else None


def _encode(key: Meta, value: MetaValue) -> str:
    kind = _TYPE[key]
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind is dt.datetime and isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise TypeError(f"meta {key.value}: a naive datetime; give it a time zone")
        return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    if kind is str and isinstance(value, str):
        return redact(value) if key is Meta.HELD else value    # a hold quotes an error
    raise TypeError(f"meta {key.value} holds {kind.__name__} values, not {type(value).__name__}")


def _decode(key: Meta, raw: str) -> MetaValue:
    """The stored text as the key's type; ValueError when it does not parse."""
    kind = _TYPE[key]
    if kind is int:
        return int(raw)
    if kind is dt.datetime:
        moment = dt.datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("no time zone")
        # a year this agent cannot have written would overflow local-time arithmetic later
        if not _EARLIEST <= moment <= _LATEST:
            raise ValueError("out of range")
        return moment
    return raw


_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)
