"""The snapshot's side of the per-object back-off (:mod:`agent.core.quarantine`): when a
refused operation may be sent again, and the digest of the record that was refused, kept on
its row of the failures table so that ``status`` shows both."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:      # (read-only commands never import it: see sqlite.ReadOnlyDatabase)
    import sqlite_utils

from ..core.quarantine import Deferral


def migrate_v5(db: sqlite_utils.Database) -> None:
    db["failures"].add_column("next_attempt", str)
    db["failures"].add_column("digest", str)


class Quarantine:
    db: sqlite_utils.Database

    def defer(self, kind: str, source_id: str, op: str, when: dt.datetime,
              digest: str) -> None:
        """Hold an operation back until ``when`` (its failure row must exist)."""
        with self.db.atomic():
            self.db.execute("UPDATE failures SET next_attempt = ?, digest = ? WHERE kind = ? "
                            "AND source_id = ? AND op = ?",
                            [when.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
                             digest, kind, source_id, op])

    def failure_count(self, kind: str, source_id: str, op: str) -> int:
        row = self.db.execute("SELECT count FROM failures WHERE kind = ? AND source_id = ? "
                              "AND op = ?", [kind, source_id, op]).fetchone()
        return int(row[0]) if row else 0

    def deferrals(self) -> list[Deferral]:
        rows = self.db.execute("SELECT kind, source_id, op, key, error, count, next_attempt, "
                               "digest FROM failures WHERE next_attempt IS NOT NULL").fetchall()
        return [Deferral(r[0], r[1], r[2], r[3], r[4], r[5],
                         dt.datetime.fromisoformat(r[6]), r[7] or "") for r in rows]
