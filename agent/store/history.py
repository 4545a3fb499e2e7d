"""The run history and the failing objects, kept in the snapshot beside what was pushed.

Messages are redacted as they are written (:mod:`connectors.redaction`): an error that
quoted a secret never reaches the file.

``status`` reads both; the daemon reads the runs to see whether a manual sync succeeded while
it held pushing. Mixed into :class:`agent.store.state.State`, whose ``db`` they use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:      # (read-only commands never import it: see sqlite.ReadOnlyDatabase)
    import sqlite_utils

from connectors.redaction import redact


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunRecord:
    id: int
    started: str
    finished: str | None
    mode: str
    outcome: str | None
    counts: dict
    failed: int
    message: str
    duration: float | None
    pid: int | None = None


def migrate_v3(db: sqlite_utils.Database) -> None:
    db["runs"].add_column("pid", int)


STALE = "the process stopped before the run ended (killed, or the machine went down)"


# A run row edited by hand or half-written by an old version is shown as best it can be,
# never a traceback: ``status`` is what an operator runs when something is wrong.

def _text(value) -> str:
    return value if isinstance(value, str) else str(value)


def _counts(text) -> dict:
    try:
        counts = json.loads(text or "{}")
    except (ValueError, TypeError):
        return {}
    if not isinstance(counts, dict):
        return {}
    return {str(k): n for k, n in counts.items() if isinstance(n, int)}


def _number(value, kind):
    try:
        return kind(value) if value is not None else None
    except (ValueError, TypeError, OverflowError):
        return None


def _record(r) -> RunRecord:
    return RunRecord(r[0], _text(r[1]), r[2] and _text(r[2]), _text(r[3]),
                     r[4] and _text(r[4]), _counts(r[5]), _number(r[6], int) or 0,
                     _text(r[7] or ""), _number(r[8], float), _number(r[9], int))


class RunHistory:
    db: sqlite_utils.Database

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, mode: str) -> int:
        """A new run, under the snapshot's exclusive lock: any run still open now belongs to
        a process that is gone, and is closed as interrupted."""
        with self.db.atomic():
            self.db.execute("UPDATE runs SET outcome = 'interrupted', message = ? "
                            "WHERE finished IS NULL AND outcome IS NULL", [STALE])
            cur = self.db.execute("INSERT INTO runs (started, mode, failed, message, counts, pid) "
                                  "VALUES (?, ?, 0, '', '{}', ?)", [now(), mode, os.getpid()])
            return cur.lastrowid

    def finish_run(self, run_id: int, outcome: str, counts: dict, failed: int, message: str,
                   duration: float) -> None:
        with self.db.atomic():
            self.db.execute("UPDATE runs SET finished = ?, outcome = ?, counts = ?, failed = ?, "
                            "message = ?, duration = ? WHERE id = ?",
                            [now(), outcome, json.dumps(counts), failed, redact(message),
                             duration, run_id])

    def runs(self, limit: int = 10) -> list[RunRecord]:
        rows = self.db.execute("SELECT id, started, finished, mode, outcome, counts, failed, "
                               "message, duration, pid FROM runs ORDER BY id DESC LIMIT ?",
                               [limit])
        return [_record(r) for r in rows]

    def last_run(self, mode: str, outcomes: Iterable[str]) -> RunRecord | None:
        """The newest finished run of ``mode`` that ended as one of ``outcomes``."""
        outcomes = list(outcomes)
        marks = ", ".join("?" * len(outcomes))
        row = self.db.execute("SELECT id, started, finished, mode, outcome, counts, failed, "
                              "message, duration, pid FROM runs WHERE mode = ? AND finished IS "
                              f"NOT NULL AND outcome IN ({marks}) ORDER BY id DESC LIMIT 1",
                              [mode, *outcomes]).fetchone()
        return None if row is None else _record(row)

    # Failures are kept per object (its source id) and operation: a rename leaves no stale
    # entry, and one operation's success does not hide another's failure on the same object.

    def record_failure(self, kind: str, source_id: str, key: str, op: str, error: str) -> None:
        with self.db.atomic():
            stamp = now()
            self.db.execute(
                "INSERT INTO failures (kind, source_id, key, op, error, count, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT(kind, source_id, op) DO "
                "UPDATE SET key = excluded.key, error = excluded.error, count = count + 1, "
                "last_seen = excluded.last_seen",
                [kind, source_id, key, op, redact(error), stamp, stamp])

    def clear_failure(self, kind: str, source_id: str, op: str) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM failures WHERE kind = ? AND source_id = ? AND op = ?",
                            [kind, source_id, op])

    def keep_only_failures(self, failing: Iterable[tuple[str, str, str]]) -> None:
        """After a complete cycle: forget failures (kind, source id, op) that did not happen
        again: fixed, or no longer planned at all (gone from the source, fixed by hand)."""
        keep = set(failing)
        with self.db.atomic():
            rows = self.db.execute("SELECT kind, source_id, op FROM failures").fetchall()
            self.db.conn.executemany(
                "DELETE FROM failures WHERE kind = ? AND source_id = ? AND op = ?",
                [row for row in rows if tuple(row) not in keep])

    def failures(self, limit: int = 50) -> list[dict]:
        rows = self.db.execute("SELECT kind, source_id, key, op, error, count, first_seen, "
                               "last_seen, next_attempt FROM failures ORDER BY count DESC, "
                               "last_seen DESC LIMIT ?", [limit])
        cols = ("kind", "source_id", "key", "op", "error", "count", "first_seen", "last_seen",
                "next_attempt")
        return [dict(zip(cols, r)) for r in rows]
