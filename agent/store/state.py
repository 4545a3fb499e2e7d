"""The SQLite snapshot: what was pushed, the last complete source view, and run history.

One row per user and group the agent manages: the source id (the key), the SCIM id the target
assigned, and the digest and attributes last pushed; memberships by source ids. Every applied
operation is recorded in its own transaction right after the target confirmed it, so a crash
at any point loses nothing and duplicates nothing (an operation whose confirmation was lost is
resolved by the 409 -> look up -> adopt path on the next run).

The database runs in WAL mode with ``synchronous=FULL`` (an acknowledged "user created" must
survive a power cut, or the next run would try to create it again); the file and its folder
are private (0600/0700). The schema carries a version; :data:`MIGRATIONS` upgrades old files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.base import Directory, GroupRecord, UserRecord

from ..core.adopt import Facts
from ..core.model import (DesiredState, Group, PushedGroup, PushedUsers, Snapshot,
                          StoredMembers, User)
from .access import diagnose
from .errors import OWNERSHIP_HINT, StateBusy, StateError
from .changes import Change, ChangeLog, migrate_v4
from .history import RunHistory, RunRecord, migrate_v3, now
from .intents import CreateIntents, Intent, migrate_v2
from .locks import FileLock, lock_holder, lock_snapshot, reader_lock, unfolded
from .meta import Meta, MetaStore, utc_now
from .quarantine import Quarantine, migrate_v5
from .sqlite import REBUILD, BackgroundCheck, ReadOnlyDatabase, connect

if TYPE_CHECKING:      # imported where a snapshot is opened to write: see ReadOnlyDatabase
    import sqlite_utils

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Change", "Intent", "Meta", "MetaStore", "RunRecord", "State",
           "StateBusy", "StateError", "lock_holder", "now"]

SCHEMA_VERSION = 8


def _v1(db: sqlite_utils.Database) -> None:
    db["users"].create({"source_id": str, "scim_id": str, "user_name": str, "active": int,
                        "attributes": str, "digest": str, "updated": str}, pk="source_id")
    db["users"].create_index(["scim_id"])
    db["groups"].create({"source_id": str, "scim_id": str, "display_name": str, "digest": str,
                         "updated": str}, pk="source_id")
    db["memberships"].create({"group_id": str, "user_id": str}, pk=("group_id", "user_id"))
    db["memberships"].create_index(["user_id"])
    db["source_users"].create({"id": str, "attributes": str, "active": int}, pk="id")
    db["source_groups"].create({"id": str, "attributes": str, "members": str}, pk="id")
    db["runs"].create({"id": int, "started": str, "finished": str, "mode": str, "outcome": str,
                       "counts": str, "failed": int, "message": str, "duration": float}, pk="id")
    db["failures"].create({"kind": str, "source_id": str, "key": str, "op": str, "error": str,
                           "count": int, "first_seen": str, "last_seen": str},
                          pk=("kind", "source_id", "op"))


def _v6(db: sqlite_utils.Database) -> None:
    # User.source_digest: what the pushed value was mapped from ("" when unknown)
    db.execute("ALTER TABLE users ADD COLUMN source_digest TEXT NOT NULL DEFAULT ''")


def _v7(db: sqlite_utils.Database) -> None:
    # User.manager_reference, recorded with source_digest (NULL: not known, so the row's
    # record is mapped again)
    db.execute("ALTER TABLE users ADD COLUMN manager_reference TEXT")


# The member epoch (agent/core/stamps.py): one more for every membership written and every
# user row made, dropped, or made active or inactive, whoever writes it. A user row written
# again with the same active is no change of it: rows are written by an upsert (_PUT_USER;
# a REPLACE would delete the row, which counts), and its insert is counted only where no row
# of that id with that active was there.
_EPOCH_TRIGGERS = {
    "memberships_added": "AFTER INSERT ON memberships",
    "memberships_removed": "AFTER DELETE ON memberships",
    "memberships_changed": "AFTER UPDATE ON memberships",
    "users_added": "BEFORE INSERT ON users WHEN NOT EXISTS (SELECT 1 FROM users "
                   "WHERE source_id = NEW.source_id AND active IS NEW.active)",
    "users_removed": "AFTER DELETE ON users",
    "users_changed": "AFTER UPDATE OF source_id, active ON users WHEN "
                     "OLD.source_id IS NOT NEW.source_id OR OLD.active IS NOT NEW.active",
}


# Every column written: the same row an INSERT OR REPLACE would leave, without its delete
_PUT_USER = (
    "INSERT INTO users (source_id, scim_id, user_name, active, attributes, digest, "
    "source_digest, manager_reference, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (source_id) DO UPDATE SET scim_id = excluded.scim_id, "
    "user_name = excluded.user_name, active = excluded.active, "
    "attributes = excluded.attributes, digest = excluded.digest, "
    "source_digest = excluded.source_digest, manager_reference = excluded.manager_reference, "
    "updated = excluded.updated")


def _v8(db: sqlite_utils.Database) -> None:
    # groups.members_stamp ("epoch:stamp", agent/core/stamps.py) and the member epoch
    db.execute("ALTER TABLE groups ADD COLUMN members_stamp TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE TABLE member_epoch (n INTEGER NOT NULL)")
    db.execute("INSERT INTO member_epoch VALUES (0)")
    for name, when in _EPOCH_TRIGGERS.items():
        db.execute(f"CREATE TRIGGER {name} {when} BEGIN "
                   "UPDATE member_epoch SET n = n + 1; END")


MIGRATIONS = {1: _v1, 2: migrate_v2, 3: migrate_v3, 4: migrate_v4, 5: migrate_v5, 6: _v6,
              7: _v7, 8: _v8}   # version -> brings the schema from version-1 to it


class State(RunHistory, CreateIntents, ChangeLog, Quarantine):
    """An open snapshot. Use :meth:`open`; close it (or use ``with``) when done.

    ``meta`` answers the typed questions (:mod:`agent.store.meta`); the run history and the
    failing objects come from :class:`~agent.store.history.RunHistory`. ``db`` is the store's
    own: callers use the methods, never SQL.
    """

    def __init__(self, db: sqlite_utils.Database, path: Path, lock: FileLock | None):
        self.db = db
        self.path = path
        self.meta = MetaStore(db, path)
        self._lock = lock
        self._snapshot: tuple[int, Snapshot] | None = None
        self._lazy_attributes = False   # (State.read: users' attributes read when needed)
        self._check: BackgroundCheck | None = None   # (State.read: the integrity check begun)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, lock: bool = True, create: bool = True) -> "State":
        """Open (creating if needed) the snapshot. ``lock`` takes an exclusive lock so that
        two agents can never write the same snapshot; it fails at once if another holds it."""
        path = Path(path)
        diagnose(path, write=True)
        if not path.exists() and not create:
            raise StateError(f"{path}: no snapshot yet (run sync first)")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{path.parent}: cannot create the state folder: {exc.strerror}")
        held = lock_snapshot(path) if lock else None
        try:
            if not path.exists():
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
                os.close(fd)
            conn = connect(path)
            import sqlite_utils
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            for suffix in ("-wal", "-shm"):
                side = path.with_name(path.name + suffix)
                if side.exists() and side.stat().st_uid == os.geteuid():
                    os.chmod(side, 0o600)
            state = cls(db, path, held)
            state._check_integrity()
            state._migrate()
            return state
        except sqlite3.DatabaseError as exc:
            _release(held)
            if "readonly" in str(exc) or "unable to open" in str(exc):
                raise StateError(f"{path}: cannot write the snapshot ({exc}): {OWNERSHIP_HINT}")
            raise StateError(f"{path}: not a usable snapshot database ({exc}); move it aside "
                             "and run sync to rebuild it from the target")
        except PermissionError as exc:
            _release(held)
            raise StateError(f"{exc.filename or path}: permission denied: {OWNERSHIP_HINT}")
        except BaseException:
            _release(held)
            raise

    @classmethod
    def read(cls, path: Path, *, missing_ok: bool = False, lazy_attributes: bool = True,
             check_beside: bool = False) -> "State | None":
        """Open an existing snapshot to read it only (``plan``, ``status``, ``history``,
        ``check``): nothing is created, locked, written or migrated, so a snapshot this user
        may read but not write serves them. A file from an older version is upgraded in a
        private copy in memory; the file itself waits for the next ``sync``. With
        ``missing_ok``, a snapshot not made yet is None. ``lazy_attributes``: the snapshot
        leaves users' attributes in the file until asked for, in a read transaction from
        its load to the close (keep it short: while it lasts, a sync's checkpoints cannot
        empty the -wal file); else they are read with it. ``check_beside``: the integrity
        check runs in the background while the caller does something else, and is waited
        for (:meth:`checked`) before the snapshot or the stored source view is read: only
        meta keys are read before."""
        path = Path(path)
        diagnose(path, write=False)
        if not path.exists():
            if missing_ok:
                return None
            raise StateError(f"{path}: no snapshot yet (run sync first)")
        shared, immutable = None, False
        if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            # This user may not make the journal and index beside the file, so it reads the
            # file alone: only with no writer possible (the snapshot lock held shared) and
            # nothing left in a journal it would miss.
            shared = reader_lock(path)
            immutable = True
        conn = state = None
        try:
            if immutable:
                unfolded(path)
            conn = connect(path, readonly=True, immutable=immutable)
            state = cls(ReadOnlyDatabase(conn), path, shared)
            state._lazy_attributes = lazy_attributes
            if check_beside:
                state._check = BackgroundCheck(path, immutable=immutable)
            else:
                state._check_integrity()
            version = state._stored_version()
            if version > SCHEMA_VERSION:
                raise state._newer(version)
            if version < SCHEMA_VERSION:
                state.checked()         # (the upgrade reads every table)
                state._upgrade_in_memory()
            return state
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if state is not None:
                state._wait_for_check()
            _release(shared)
            if isinstance(exc, sqlite3.DatabaseError):
                raise StateError(f"{path}: not a usable snapshot database ({exc}); "
                                 f"{REBUILD}") from None
            raise

    def _stored_version(self) -> int:
        has_meta = self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                   "name = 'meta'").fetchone()
        return self.meta.schema_version() if has_meta else 0

    def _newer(self, version: int) -> StateError:
        return StateError(f"{self.path}: written by a newer scim-agent (schema {version}, this "
                          f"one knows {SCHEMA_VERSION})")

    def _upgrade_in_memory(self) -> None:
        copy = connect(":memory:")
        copy.snapshot_path = self.path          # its errors name the file, not ":memory:"
        self.db.conn.backup(copy)
        self.db.close()
        import sqlite_utils
        self.db = sqlite_utils.Database(copy)
        self.meta = MetaStore(self.db, self.path)
        self._migrate()

    def close(self) -> None:
        self._wait_for_check()
        self.db.close()
        _release(self._lock)
        self._lock = None

    def _wait_for_check(self) -> None:
        """(A check still running is waited for, whatever it finds: nothing outlives the
        state, and the reader lock is held until it is done.)"""
        if self._check is not None:
            self._check.wait()          # (a Ctrl-C meanwhile still waits: see wait)
            self._check = None

    def __enter__(self) -> "State":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def checked(self) -> None:
        """The integrity check begun at opening (``State.read(check_beside=True)``) is done,
        and found the file whole: else a StateError says it is damaged. Nothing else to do
        where the check was made at opening."""
        if self._check is not None:
            self._check_integrity()

    def _check_integrity(self) -> None:
        check = self._check
        self._wait_for_check()
        try:
            result = check.result() if check is not None else \
                self.db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: not a usable snapshot database ({exc}); "
                             f"{REBUILD}") from None
        if result != "ok":
            raise StateError(f"{self.path}: the snapshot is damaged ({result}); move it aside and "
                             "run sync to rebuild it from the target")

    def _migrate(self) -> None:
        with self.db.atomic():
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            version = self.meta.schema_version()
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](self.db)
                self.meta.set(Meta.SCHEMA_VERSION, target)

    # -- the snapshot ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What was pushed. Each user's attributes stay as stored (JSON text) until someone
        reads them: a plan reads only those of the users it changes. Read again only after
        this connection wrote something (mapping, planning and planning again within one
        cycle share one read)."""
        written = self.db.conn.total_changes
        if self._snapshot is not None and self._snapshot[0] == written:
            return self._snapshot[1]
        snapshot = self._read_snapshot()
        self._snapshot = (written, snapshot)
        return snapshot

    def _read_snapshot(self) -> Snapshot:
        self.checked()
        # the rows as sqlite3 makes them, keyed by their first field: no tuple made again, and
        # each user's attributes stay text until read (StoredAttributes). A snapshot opened
        # to read only (State.read, in one read transaction) leaves that text in the file:
        # a user's is read when first needed (a plan needs those of the users it changes).
        lazy = self._lazy_attributes
        if lazy and not self.db.conn.in_transaction:
            # from here to the close every read sees the file as it is now, whatever a sync
            # writes meanwhile (WAL): a user's attributes read later are those of this moment
            self.db.execute("BEGIN")
        with self._rows("users"):
            rows = self.db.execute(
                f"SELECT source_id, scim_id, user_name, active, "
                f"{'NULL' if lazy else 'attributes'}, digest, source_digest, "
                "manager_reference FROM users").fetchall()
            # Text that cannot be an object's is a damaged snapshot at once (a cheap look at
            # every row); an object's text that does not parse is said so where it is read.
            if self.db.execute("SELECT 1 FROM users WHERE coalesce(attributes NOT LIKE '{%}', "
                               "1) LIMIT 1").fetchone():
                _object("")
        users = dict(zip(map(itemgetter(0), rows), rows))
        del rows
        # a stamp holds only under the epoch it was recorded with (agent/core/stamps.py)
        epoch = self.member_epoch()
        held = f"{epoch}:"
        found = self.db.execute("SELECT source_id, scim_id, display_name, digest, "
                                "members_stamp FROM groups").fetchall()
        stamps = {row[0]: row[4][len(held):] for row in found if row[4].startswith(held)}
        if lazy and stamps:
            # read in this read transaction, only for the groups a plan works out: those
            # whose stamp holds are taken as they are, unread (StoredMembers)
            counts = dict(self.db.execute(
                "SELECT group_id, count(*) FROM memberships GROUP BY group_id").fetchall())
            members = {gid: StoredMembers(partial(self._members, gid), count)
                       for gid, count in counts.items()}
        else:
            # one row per group (the primary key's order: no sort); a frozenset made from a
            # set has half the table of one made from a list
            members = {row[0]: frozenset(set(json.loads(row[1]))) for row in self.db.execute(
                "SELECT group_id, json_group_array(user_id) FROM memberships GROUP BY group_id")}
        groups = {row[0]: PushedGroup(row[0], row[1], row[2], row[3],
                                      members.get(row[0], frozenset()), stamps.get(row[0], ""))
                  for row in found}
        del found
        path = self.path

        def attributes(source_id: str, text: str | None) -> StoredAttributes:
            return StoredAttributes(partial(self._attributes_text, source_id) if lazy else text,
                                    path)
        return Snapshot(PushedUsers(users, attributes), groups, epoch)

    def _members(self, group_id: str) -> frozenset[str]:
        """One group's pushed members, from the read transaction the snapshot was loaded in."""
        try:
            row = self.db.execute("SELECT json_group_array(user_id) FROM memberships "
                                  "WHERE group_id = ?", [group_id]).fetchone()
        except sqlite3.ProgrammingError:
            raise RuntimeError(f"{self.path}: the members of {group_id!r} were asked for "
                               "after the snapshot was closed") from None
        return frozenset(set(json.loads(row[0])))

    def member_epoch(self) -> int:
        return self.db.execute("SELECT n FROM member_epoch").fetchone()[0]

    def record_group_stamps(self, desired: DesiredState, snapshot: Snapshot) -> int:
        """Stamp the groups whose pushed members, in ``snapshot``, are their desired ones
        (agent/core/stamps.py), under the epoch both were read at; none when anything was
        written to memberships or user rows since (another epoch). How many were stamped."""
        epoch = snapshot.epoch
        if epoch is None or desired.stamps_epoch != epoch:
            return 0
        with self.db.atomic():
            if self.member_epoch() != epoch:
                return 0
            rows = [(f"{epoch}:{stamp}", gid) for gid, stamp in desired.group_stamps.items()
                    if (pushed := snapshot.groups.get(gid)) is not None
                    and pushed.stamp != stamp and desired.groups[gid].members == pushed.members]
            self.db.conn.executemany("UPDATE groups SET members_stamp = ? WHERE source_id = ?",
                                     rows)
        return len(rows)

    def _attributes_text(self, source_id: str) -> str:
        """One user's stored attributes, from the read transaction the snapshot was loaded
        in (the same row, whatever was written since)."""
        try:
            row = self.db.execute("SELECT attributes FROM users WHERE source_id = ?",
                                  [source_id]).fetchone()
        except sqlite3.ProgrammingError:
            raise RuntimeError(f"{self.path}: the attributes of {source_id!r} were asked for "
                               "after the snapshot was closed") from None
        return row[0] if row is not None else ""

    def digest(self) -> str:
        """A digest of everything pushed (ids, digests, memberships): a saved plan records it,
        and applying that plan later refuses a snapshot that has moved since."""
        h = hashlib.blake2b(digest_size=16)
        for sql in ("SELECT source_id, scim_id, active, digest FROM users ORDER BY source_id",
                    "SELECT source_id, scim_id, display_name FROM groups ORDER BY source_id",
                    "SELECT group_id, user_id FROM memberships ORDER BY group_id, user_id"):
            for row in self.db.execute(sql):
                h.update(json.dumps(row).encode())
            h.update(b"|")
        return h.hexdigest()

    def is_empty(self) -> bool:
        """No user and no group pushed yet (cheap: does not load the snapshot)."""
        return not (self.db.execute("SELECT 1 FROM users LIMIT 1").fetchone()
                    or self.db.execute("SELECT 1 FROM groups LIMIT 1").fetchone())

    def scim_ids(self) -> tuple[dict[str, str], dict[str, str]]:
        """source id -> SCIM id, for users and for groups."""
        users = dict(self.db.execute("SELECT source_id, scim_id FROM users").fetchall())
        groups = dict(self.db.execute("SELECT source_id, scim_id FROM groups").fetchall())
        return users, groups

    def counts(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return self.db.execute(sql).fetchone()[0]
        return {
            "users": one("SELECT count(*) FROM users"),
            "active_users": one("SELECT count(*) FROM users WHERE active = 1"),
            "groups": one("SELECT count(*) FROM groups"),
            "memberships": one("SELECT count(*) FROM memberships"),
        }

    # One transaction per applied operation: each method below commits on return.

    def record_user(self, user: User, scim_id: str, active: bool | None = None) -> None:
        """Record a pushed user (as confirmed by the target); its create intent, if any, is
        cleared in the same transaction."""
        with self.db.atomic():
            self._put_user(user, scim_id, user.active if active is None else active)
            self._clear_intent("user", user.source_id)

    def _put_user(self, user: User, scim_id: str, active: bool) -> None:
        attributes = dict(user.attributes)
        whole = active == user.active       # else the target holds something else: no digests
        self.db.execute(
            _PUT_USER,
            [user.source_id, scim_id, user.user_name, int(active),
             json.dumps(attributes, sort_keys=True), user.digest if whole else "",
             user.source_digest if whole else "",
             user.manager_reference if whole and user.source_digest else None, now()])

    def record_source_digests(self, desired: DesiredState) -> int:
        """Rows holding exactly a desired user's value (its digest and active) but recorded
        from another source digest (from before a change of how records are digested, or
        adopted from the target), or without the record's manager reference, are given the
        desired user's, in one transaction: the next cycle takes those users as they are
        instead of mapping them again. Returns how many rows changed."""
        # the four columns compared, not the snapshot: after a cycle that wrote, that would be
        # a second read of every user and membership, and a PushedUser made for each user
        pushed = {row[0]: row[1:] for row in self.db.execute(
            "SELECT source_id, digest, active, source_digest, manager_reference FROM users")}
        stale = [(u.source_digest, u.manager_reference, sid, u.digest, int(u.active))
                 for sid, u in desired.users.items() if u.source_digest
                 and (p := pushed.get(sid)) is not None and p[0] == u.digest
                 and bool(p[1]) == u.active and (p[2] != u.source_digest
                                                 or p[3] != u.manager_reference)]
        if stale:
            with self.db.atomic():
                self.db.conn.executemany(
                    "UPDATE users SET source_digest = ?, manager_reference = ? "
                    "WHERE source_id = ? AND digest = ? AND active = ?", stale)
        return len(stale)

    def record_user_active(self, source_id: str, active: bool) -> None:
        """A deactivation of a user that left the source: keep what we know, flip active."""
        with self.db.atomic():
            self.db.execute("UPDATE users SET active = ?, digest = '', source_digest = '', "
                            "manager_reference = NULL, updated = ? WHERE source_id = ?", [int(active), now(), source_id])

    def record_group(self, group: Group, scim_id: str) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO groups (source_id, scim_id, display_name, digest, updated) "
                "VALUES (?, ?, ?, ?, ?)",
                [group.source_id, scim_id, group.display_name, group.digest, now()])

    def record_facts(self, facts: "Facts") -> None:
        """What reading the target taught (``agent/core/adopt.py``), in one transaction:
        forgotten rows first, then rows as the target holds them."""
        with self.db.atomic():
            for source_id in facts.forget_users:
                self.db.execute("DELETE FROM memberships WHERE user_id = ?", [source_id])
                self.db.execute("DELETE FROM users WHERE source_id = ?", [source_id])
            for source_id in facts.forget_groups:
                self.db.execute("DELETE FROM memberships WHERE group_id = ?", [source_id])
                self.db.execute("DELETE FROM groups WHERE source_id = ?", [source_id])
            stamp = now()
            for u in facts.users:
                self._clear_intent("user", u.source_id)
            self.db.conn.executemany(
                _PUT_USER,
                [(u.source_id, u.scim_id, u.user_name, int(u.active),
                  json.dumps(dict(u.attributes), sort_keys=True), u.digest, "", None, stamp)
                 for u in facts.users])
            for g in facts.groups:
                self.db.execute(
                    "INSERT OR REPLACE INTO groups (source_id, scim_id, display_name, digest, "
                    "updated) VALUES (?, ?, ?, ?, ?)",
                    [g.source_id, g.scim_id, g.display_name, g.digest, stamp])
                self.db.execute("DELETE FROM memberships WHERE group_id = ?", [g.source_id])
                self.db.conn.executemany(
                    "INSERT OR IGNORE INTO memberships (group_id, user_id) VALUES (?, ?)",
                    [(g.source_id, m) for m in g.members])

    def record_members(self, group_id: str, added: Iterable[str] = (),
                       removed: Iterable[str] = ()) -> None:
        with self.db.atomic():
            self.db.conn.executemany("INSERT OR IGNORE INTO memberships (group_id, user_id) VALUES (?, ?)",
                                [(group_id, m) for m in added])
            self.db.conn.executemany("DELETE FROM memberships WHERE group_id = ? AND user_id = ?",
                                [(group_id, m) for m in removed])

    def forget_group(self, source_id: str) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM memberships WHERE group_id = ?", [source_id])
            self.db.execute("DELETE FROM groups WHERE source_id = ?", [source_id])

    def forget_user(self, source_id: str) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM memberships WHERE user_id = ?", [source_id])
            self.db.execute("DELETE FROM users WHERE source_id = ?", [source_id])

    # -- the last complete source view (for change-feed sources) --------------------------

    def source_view(self) -> Directory | None:
        self.checked()
        cursor = self.meta.source_cursor()
        if cursor is None:
            return None
        with self._rows("source_users"):
            users = {
                row[0]: UserRecord(row[0], _object(row[1]), bool(row[2]))
                for row in self.db.execute("SELECT id, attributes, active FROM source_users")
            }
        with self._rows("source_groups"):
            groups = {
                row[0]: GroupRecord(row[0], _object(row[1]), frozenset(json.loads(row[2])))
                for row in self.db.execute("SELECT id, attributes, members FROM source_groups")
            }
        return Directory(users, groups, cursor)

    def save_source_view(self, view: Directory, source_config: str, full_read: bool,
                         changed: Directory | None = None, removed_users: Iterable[str] = (),
                         removed_groups: Iterable[str] = ()) -> None:
        """Store the view and its cursor in one transaction, after a successful cycle.

        After a full read the whole view is replaced; after a change set only ``changed``
        records are written and removals deleted.
        """
        with self.db.atomic():
            if full_read:
                self.db.execute("DELETE FROM source_users")
                self.db.execute("DELETE FROM source_groups")
                changed = view
            if changed is not None:
                self.db.conn.executemany(
                    "INSERT OR REPLACE INTO source_users (id, attributes, active) VALUES (?, ?, ?)",
                    [(u.id, json.dumps(dict(u.attributes), sort_keys=True), int(u.active))
                     for u in changed.users.values()])
                self.db.conn.executemany(
                    "INSERT OR REPLACE INTO source_groups (id, attributes, members) VALUES (?, ?, ?)",
                    [(g.id, json.dumps(dict(g.attributes), sort_keys=True),
                      json.dumps(sorted(g.members))) for g in changed.groups.values()])
            self.db.conn.executemany("DELETE FROM source_users WHERE id = ?",
                                [(i,) for i in removed_users])
            self.db.conn.executemany("DELETE FROM source_groups WHERE id = ?",
                                [(i,) for i in removed_groups])
            self.meta.set(Meta.SOURCE_CURSOR, view.cursor)
            self.meta.set(Meta.SOURCE_CONFIG, source_config)   # see Agent.source_fingerprint
            if full_read:
                self.meta.set(Meta.LAST_FULL_READ, utc_now())

    def forget_target(self, target: str) -> None:
        """Bind the snapshot to another target: every id the old one assigned is forgotten
        (users, groups, memberships, failures, create intents) in one transaction; the source
        view and the run history stay."""
        with self.db.atomic():
            for table in ("memberships", "users", "groups", "failures", "intents"):
                self.db.execute(f"DELETE FROM {table}")
            self.meta.set(Meta.LAST_TARGET_READ, None)
            self.meta.bind_target(target)

    def clear_source_view(self) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM source_users")
            self.db.execute("DELETE FROM source_groups")
            for key in (Meta.SOURCE_CURSOR, Meta.LAST_FULL_READ):
                self.meta.set(key, None)


    @contextlib.contextmanager
    def _rows(self, table: str):
        """A row that does not read (a file edited by hand, a disk that lied) is a damaged
        snapshot, said as such, never a traceback."""
        try:
            yield
        except (ValueError, TypeError, AttributeError) as exc:
            raise StateError(f"{self.path}: the snapshot is damaged (a row of {table} does not "
                             f"read: {type(exc).__name__}); {REBUILD}") from None


class StoredAttributes(Mapping):
    """A pushed user's attributes, read from their JSON text the first time they are needed.
    ``text``: that text, or what reads it from the snapshot when first needed."""

    __slots__ = ("_text", "_path", "_value")

    def __init__(self, text: "str | Callable[[], str]", path: Path):
        self._text = text
        self._path = path
        self._value: dict | None = None

    def _read(self) -> dict:
        if self._value is None:
            text = self._text if isinstance(self._text, str) else self._text()
            try:
                self._value = _object(text)
            except (ValueError, TypeError) as exc:
                raise StateError(f"{self._path}: the snapshot is damaged (a row of users does "
                                 f"not read: {type(exc).__name__}); {REBUILD}") from None
            self._text = ""
        return self._value

    def __getitem__(self, key: str) -> str:
        return self._read()[key]

    def get(self, key: str, default=None):
        return self._read().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredAttributes):
            other = other._read()
        return self._read() == (other if isinstance(other, dict) else
                                dict(other) if isinstance(other, Mapping) else other)

    __hash__ = None     # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._read())


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _object(text: str) -> dict:
    value = json.loads(text, parse_constant=_no_constant)    # (NaN, Infinity: not JSON)
    if not isinstance(value, dict):
        raise TypeError("not an object")
    return value


def _release(lock: FileLock | None) -> None:
    if lock is not None:
        lock.release()
