"""Per-object history: every change sent (or refused) for a user or group, by which run, when,
and what became of it; ``scim-agent history KEY`` reads it. Entra's provisioning logs are the
model administrators know. Old rows are pruned after ``[state] history_days``.

Mixed into :class:`agent.store.state.State`, whose ``db`` it uses.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:      # (read-only commands never import it: see sqlite.ReadOnlyDatabase)
    import sqlite_utils

from .history import now


def migrate_v4(db: sqlite_utils.Database) -> None:
    db["changes"].create({"id": int, "run_id": int, "at": str, "kind": str, "source_id": str,
                          "key": str, "op": str, "outcome": str, "detail": str}, pk="id")
    db["changes"].create_index(["source_id"])
    db["changes"].create_index(["key"])


@dataclass(frozen=True)
class Change:
    at: str
    run_id: int | None
    mode: str | None
    kind: str              # "user" | "group"
    source_id: str
    key: str               # the userName or group name at the time
    op: str                # create_user, update_user, add_members...
    outcome: str           # applied | adopted | gone | failed | refused
    detail: dict           # changed attributes, members, the error or the reason


class ChangeLog:
    db: sqlite_utils.Database

    def log_change(self, run_id: int | None, kind: str, source_id: str, key: str, op: str,
                   outcome: str, detail: dict) -> None:
        with self.db.atomic():
            self.db.execute("INSERT INTO changes (run_id, at, kind, source_id, key, op, outcome, "
                            "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [run_id, now(), kind, source_id, key, op, outcome,
                             json.dumps(detail, ensure_ascii=False, sort_keys=True)])

    def source_ids_named(self, key: str) -> list[str]:
        """Source ids a KEY names: a source id, or a userName / group name now or in the past
        (case-insensitive), so an object is found across its renames."""
        folded = key.casefold()
        found: set[str] = set()
        for sql in ("SELECT source_id FROM users WHERE source_id = ? OR lower(user_name) = ?",
                    "SELECT source_id FROM groups WHERE source_id = ? OR lower(display_name) = ?",
                    "SELECT DISTINCT source_id FROM changes WHERE source_id = ? OR lower(key) = ?"):
            found.update(row[0] for row in self.db.execute(sql, [key, folded]))
        return sorted(found)

    def changes_of(self, source_ids: Iterable[str], limit: int = 200) -> list[Change]:
        ids = list(source_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT c.at, c.run_id, r.mode, c.kind, c.source_id, c.key, c.op, c.outcome, "
            f"c.detail FROM changes c LEFT JOIN runs r ON r.id = c.run_id "
            f"WHERE c.source_id IN ({marks}) ORDER BY c.id DESC LIMIT ?", [*ids, limit])
        return [Change(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8] or "{}"))
                for r in rows]

    def prune_changes(self, keep: dt.timedelta) -> int:
        cutoff = (dt.datetime.now(dt.timezone.utc) - keep).isoformat(timespec="seconds")
        with self.db.atomic():
            return self.db.execute("DELETE FROM changes WHERE at < ?", [cutoff]).rowcount
