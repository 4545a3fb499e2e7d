"""Write-ahead creates: the intent to create a user is on disk before the POST goes out.

A create whose answer never came back (the process was killed, the connection dropped after
sending) leaves its intent behind. The next cycle looks each such user up on the target before
anything is sent (``agent/engine/cycle.py``), so a create that did land is adopted, never sent
twice. Recording the created user clears its intent in the same transaction.

Groups need no intent: a group create always looks its name up first (Split links an existing
group of that name), so a lost answer is found before a second POST could go out.

Mixed into :class:`agent.store.state.State`, whose ``db`` it uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:      # (read-only commands never import it: see sqlite.ReadOnlyDatabase)
    import sqlite_utils

from .history import now


def migrate_v2(db: sqlite_utils.Database) -> None:
    db["intents"].create({"kind": str, "source_id": str, "key": str, "started": str},
                         pk=("kind", "source_id"))


@dataclass(frozen=True)
class Intent:
    kind: str            # "user"
    source_id: str
    key: str             # the userName the create was for
    started: str


class CreateIntents:
    db: sqlite_utils.Database

    def intend_create(self, kind: str, source_id: str, key: str) -> None:
        """Before the POST: on disk (synchronous=FULL) once this returns."""
        with self.db.atomic():
            self.db.execute("INSERT OR REPLACE INTO intents (kind, source_id, key, started) "
                            "VALUES (?, ?, ?, ?)", [kind, source_id, key, now()])

    def intend_creates(self, intents: Iterable[tuple[str, str, str]]) -> None:
        """Several intents (kind, source id, key) in one transaction."""
        stamp = now()
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO intents (kind, source_id, key, started) "
                "VALUES (?, ?, ?, ?)", [(k, s, key, stamp) for k, s, key in intents])

    def clear_intents(self, kind: str, source_ids: Iterable[str]) -> None:
        """Intents written ahead for creates that were never sent."""
        with self.db.atomic():
            for source_id in source_ids:
                self._clear_intent(kind, source_id)

    def clear_intent(self, kind: str, source_id: str) -> None:
        """The create is known not to have landed (refused, never sent) or is recorded."""
        with self.db.atomic():
            self._clear_intent(kind, source_id)

    def _clear_intent(self, kind: str, source_id: str) -> None:
        self.db.execute("DELETE FROM intents WHERE kind = ? AND source_id = ?",
                        [kind, source_id])

    def intents(self) -> list[Intent]:
        return [Intent(*row) for row in self.db.execute(
            "SELECT kind, source_id, key, started FROM intents ORDER BY started, source_id")]
