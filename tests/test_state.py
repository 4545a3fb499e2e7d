"""agent/store/state.py: the SQLite snapshot, its file, its lock, and its bookkeeping."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.core import adopt
from agent.core.model import (DesiredState, Group, PushedGroup, PushedUser, Snapshot, User,
                              user_digest)
from agent.store.state import SCHEMA_VERSION, Meta, State, StateError
from connectors.base import Directory, GroupRecord, TargetGroup, TargetUser, UserRecord

ALICE = User("u1", "alice@example.org", True,
             {"userName": "alice@example.org", "email": "alice@example.org", "title": "Eng"})
BOB = User("u2", "bob@example.org", True, {"userName": "bob@example.org"})
ENG = Group("g1", "Engineering", frozenset({"u1", "u2"}))
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "var" / "state.db"


@pytest.fixture
def state(db_path):
    with State.open(db_path) as opened:
        yield opened


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ the file


def desired_of(*users) -> DesiredState:
    return DesiredState(users={u.source_id: u for u in users}, groups={})


def test_open_creates_a_private_file_in_a_private_folder(db_path):
    State.open(db_path).close()
    assert mode(db_path) == 0o600
    assert mode(db_path.parent) == 0o700


def test_every_file_beside_the_snapshot_is_private(state, db_path):
    state.record_user(ALICE, "scim-1")
    files = list(db_path.parent.iterdir())
    assert db_path in files
    # the data is private; the lock (a pid) is readable, so a reader may hold it shared
    expected = {f.name: 0o644 if f.name.endswith(".lock") else 0o600 for f in files}
    assert {f.name: mode(f) for f in files} == expected


def test_wal_mode_is_on(state):
    assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_version_is_recorded(state):
    assert state.meta.schema_version() == SCHEMA_VERSION


def test_reopening_keeps_the_data(db_path):
    with State.open(db_path) as first:
        first.record_user(ALICE, "scim-1")
    with State.open(db_path) as second:
        assert set(second.snapshot().users) == {"u1"}
        assert second.meta.schema_version() == SCHEMA_VERSION


def test_a_newer_schema_is_refused(db_path):
    with State.open(db_path) as first:
        first.meta.set(Meta.SCHEMA_VERSION, SCHEMA_VERSION + 1)
    with pytest.raises(StateError, match="newer scim-agent") as info:
        State.open(db_path)
    assert str(db_path) in str(info.value)


def test_a_corrupt_file_gives_a_clear_error(db_path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database\n" * 500)
    with pytest.raises(StateError) as info:
        State.open(db_path)
    message = str(info.value)
    assert str(db_path) in message
    assert "not a usable snapshot" in message
    assert "move it aside" in message


def test_a_corrupt_file_releases_the_lock(db_path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError):
        State.open(db_path)
    db_path.unlink()
    State.open(db_path).close()


def test_open_without_create_refuses_a_missing_snapshot(db_path):
    with pytest.raises(StateError, match="no snapshot yet"):
        State.open(db_path, create=False)
    assert not db_path.exists()


# ------------------------------------------------------------------ the lock


def test_a_second_locked_open_is_refused_naming_the_path(state, db_path):
    with pytest.raises(StateError, match="another scim-agent") as info:
        State.open(db_path, lock=True)
    assert str(db_path) in str(info.value)


def test_the_lock_is_released_on_close(db_path):
    State.open(db_path).close()
    State.open(db_path).close()


def test_the_lock_is_released_when_leaving_the_with_block(db_path):
    with State.open(db_path):
        pass
    with State.open(db_path) as again:
        assert again.snapshot().is_empty


def test_an_unlocked_reader_may_open_while_locked(state, db_path):
    state.record_user(ALICE, "scim-1")
    with State.open(db_path, lock=False) as reader:
        assert set(reader.snapshot().users) == {"u1"}


# ------------------------------------------------------------------ the snapshot


def test_a_new_snapshot_is_empty(state):
    assert state.snapshot() == Snapshot.empty()


def test_record_user_round_trips(state):
    state.record_user(ALICE, "scim-1")
    assert state.snapshot().users == {
        "u1": PushedUser("u1", "scim-1", "alice@example.org", True, dict(ALICE.attributes),
                         ALICE.digest)}


def test_record_user_replaces_the_previous_version(state):
    state.record_user(ALICE, "scim-1")
    renamed = User("u1", "a.archer@example.org", True, {"userName": "a.archer@example.org"})
    state.record_user(renamed, "scim-1")
    pushed = state.snapshot().users["u1"]
    assert pushed.user_name == "a.archer@example.org"
    assert pushed.digest == renamed.digest
    assert state.counts()["users"] == 1


def test_record_user_with_another_active_flag_clears_the_digest(state):
    state.record_user(ALICE, "scim-1", active=False)
    pushed = state.snapshot().users["u1"]
    assert pushed.active is False
    assert pushed.digest == ""          # so the next plan compares attributes again


def test_record_user_active_flips_only_the_flag(state):
    state.record_user(ALICE, "scim-1")
    state.record_user_active("u1", False)
    pushed = state.snapshot().users["u1"]
    assert pushed.active is False
    assert pushed.attributes == dict(ALICE.attributes)
    assert pushed.scim_id == "scim-1"


def test_recorded_facts_keep_the_digest_of_what_the_target_holds(state):
    target = TargetUser("scim-1", "alice@example.org", True, dict(ALICE.attributes))
    state.record_facts(adopt.observe(desired_of(ALICE), Snapshot.empty(), [target]))
    pushed = state.snapshot().users["u1"]
    assert pushed.digest == ALICE.digest
    assert pushed.digest == user_digest(ALICE.attributes, True)


def test_record_group_and_members_round_trip(state):
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1", "u2"])
    assert state.snapshot().groups == {
        "g1": PushedGroup("g1", "scim-g1", "Engineering", ENG.digest, frozenset({"u1", "u2"}))}


def test_record_members_removes(state):
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1", "u2"])
    state.record_members("g1", removed=["u1"])
    assert state.snapshot().groups["g1"].members == {"u2"}


def test_record_members_twice_is_harmless(state):
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1"])
    state.record_members("g1", added=["u1"])
    assert state.counts()["memberships"] == 1


def test_recorded_facts_replace_a_groups_memberships(state):
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1"])
    found = TargetGroup("scim-g9", "Engineering", frozenset({"t2"}))
    state.record_facts(adopt.found_group(ENG, found, {"t2": "u2"}))
    group = state.snapshot().groups["g1"]
    assert (group.scim_id, group.members) == ("scim-g9", {"u2"})
    assert group.digest == ENG.digest


def test_forget_user_drops_the_user_and_their_memberships(state):
    state.record_user(ALICE, "scim-1")
    state.record_user(BOB, "scim-2")
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1", "u2"])
    state.forget_user("u1")
    snap = state.snapshot()
    assert set(snap.users) == {"u2"}
    assert snap.groups["g1"].members == {"u2"}


def test_forget_group_drops_the_group_and_its_memberships(state):
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1"])
    state.forget_group("g1")
    assert state.snapshot().groups == {}
    assert state.counts()["memberships"] == 0


def test_scim_ids_and_counts(state):
    state.record_user(ALICE, "scim-1")
    state.record_user(BOB, "scim-2")
    state.record_user_active("u2", False)
    state.record_group(ENG, "scim-g1")
    state.record_members("g1", added=["u1"])
    assert state.scim_ids() == ({"u1": "scim-1", "u2": "scim-2"}, {"g1": "scim-g1"})
    assert state.counts() == {"users": 2, "active_users": 1, "groups": 1, "memberships": 1}


def test_each_record_is_committed_at_once(state, db_path):
    state.record_user(ALICE, "scim-1")
    other = sqlite3.connect(db_path)          # a separate connection sees it: committed
    try:
        assert other.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    finally:
        other.close()


# ------------------------------------------------------------------ the source view


VIEW = Directory.of(
    [UserRecord("u1", {"mail": "alice@example.org", "groups": ["a", "b"]}, True),
     UserRecord("u2", {"mail": "bob@example.org"}, False)],
    [GroupRecord("g1", {"cn": "Eng"}, frozenset({"u1", "g2"})),
     GroupRecord("g2", {"cn": "Platform"}, frozenset())],
    cursor="delta-1")


def test_no_source_view_before_one_is_saved(state):
    assert state.source_view() is None


def test_full_source_view_round_trips(state):
    state.save_source_view(VIEW, "entra", full_read=True)
    assert state.source_view() == VIEW
    assert state.meta.source_config() == "entra"
    assert state.meta.last_full_read()


def test_a_full_read_replaces_the_whole_view(state):
    state.save_source_view(VIEW, "entra", full_read=True)
    smaller = Directory.of([UserRecord("u3", {"mail": "c@example.org"})], [], cursor="delta-2")
    state.save_source_view(smaller, "entra", full_read=True)
    assert state.source_view() == smaller


def test_incremental_source_view_round_trips(state):
    state.save_source_view(VIEW, "entra", full_read=True)
    changed = Directory.of([UserRecord("u2", {"mail": "bob@example.org"}, True),
                            UserRecord("u3", {"mail": "carol@example.org"}, True)],
                           [GroupRecord("g1", {"cn": "Eng"}, frozenset({"u3"}))])
    after = Directory(
        {"u2": changed.users["u2"], "u3": changed.users["u3"]},
        {"g1": changed.groups["g1"]},
        cursor="delta-2")
    state.save_source_view(after, "entra", full_read=False, changed=changed,
                           removed_users=["u1"], removed_groups=["g2"])
    assert state.source_view() == after


def test_incremental_save_keeps_the_last_full_read_time(state):
    state.save_source_view(VIEW, "entra", full_read=True)
    state.meta.set(Meta.LAST_FULL_READ, LONG_AGO)
    state.save_source_view(Directory.of(cursor="delta-2"), "entra", full_read=False,
                           changed=Directory.of())
    assert state.meta.last_full_read() == LONG_AGO
    assert state.meta.source_cursor() == "delta-2"


def test_clear_source_view(state):
    state.save_source_view(VIEW, "entra", full_read=True)
    state.clear_source_view()
    assert state.source_view() is None
    assert state.db.execute("SELECT count(*) FROM source_users").fetchone()[0] == 0


# ------------------------------------------------------------------ runs and failures


def test_runs_are_listed_newest_first(state):
    first = state.start_run("sync")
    state.finish_run(first, "ok", {"create_user": 2}, 0, "", 1.5)
    second = state.start_run("sync")
    runs = state.runs()
    assert [r.id for r in runs] == [second, first]
    assert runs[1].outcome == "ok"
    assert runs[1].counts == {"create_user": 2}
    assert runs[1].duration == 1.5
    assert runs[1].finished is not None
    assert runs[0].finished is None and runs[0].outcome is None
    assert runs[0].mode == "sync"


def test_runs_limit(state):
    for _ in range(5):
        state.start_run("plan")
    assert len(state.runs(limit=3)) == 3


def test_failures_are_counted_per_object(state):
    state.record_failure("user", "u1", "alice@example.org", "update_user", "400: bad email")
    state.record_failure("user", "u1", "alice@example.org", "update_user", "400: bad title")
    state.record_failure("group", "g1", "Eng", "create_group", "409")
    failures = state.failures()
    assert [(f["key"], f["count"]) for f in failures] == [("alice@example.org", 2), ("Eng", 1)]
    assert failures[0]["op"] == "update_user"
    assert failures[0]["error"] == "400: bad title"


def test_a_failure_follows_its_object_through_a_rename(state):
    state.record_failure("group", "g1", "A very long group name for Split", "update_group", "25")
    state.record_failure("group", "g1", "Short", "update_group", "400")
    assert [(f["key"], f["count"]) for f in state.failures()] == [("Short", 2)]


def test_one_operations_success_does_not_hide_anothers_failure(state):
    state.record_failure("group", "g1", "Team", "update_group", "refused")
    state.clear_failure("group", "g1", "remove_members")
    assert [f["op"] for f in state.failures()] == ["update_group"]


def test_a_cleared_failure_is_gone(state):
    state.record_failure("user", "u1", "alice@example.org", "create_user", "400")
    state.clear_failure("user", "u1", "create_user")
    assert state.failures() == []


def test_after_a_complete_cycle_only_current_failures_remain(state):
    state.record_failure("user", "u1", "alice@example.org", "create_user", "400")
    state.record_failure("user", "u2", "bob@example.org", "create_user", "400")
    state.keep_only_failures([("user", "u2", "create_user")])
    assert [f["source_id"] for f in state.failures()] == ["u2"]


def test_is_empty_until_something_is_pushed(state):
    assert state.is_empty()
    state.record_group(ENG, "scim-g1")
    assert not state.is_empty()
    state.forget_group(ENG.source_id)
    assert state.is_empty()


# ------------------------------------------------------------------ typed meta


def test_meta_values_come_back_typed(state):
    when = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    state.meta.record_daemon(next_run=when, failures=3, held="safety guard: too many")
    assert state.meta.next_run() == when and state.meta.next_run().tzinfo is not None
    assert state.meta.consecutive_failures() == 3
    assert state.meta.held() == "safety guard: too many"
    state.meta.record_target_read(when)
    assert state.meta.last_target_read() == when


def test_record_daemon_keeps_a_hold_unless_told(state):
    state.meta.record_daemon(next_run=None, failures=0, held="token rejected")
    state.meta.record_daemon(next_run=None, failures=1)
    assert state.meta.held() == "token rejected"
    state.meta.clear_hold()
    assert state.meta.held() is None and state.meta.consecutive_failures() == 1


def test_absent_meta_reads_as_none_or_zero(state):
    assert state.meta.next_run() is None and state.meta.last_full_read() is None
    assert state.meta.consecutive_failures() == 0 and state.meta.held() is None


def test_a_corrupt_meta_value_is_treated_as_absent_and_logged(state, db_path, caplog):
    for key in ("next_run", "last_full_read", "consecutive_failures"):
        state.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, "yesterday-ish"])
    state.db.execute("INSERT OR REPLACE INTO meta VALUES ('last_target_read', "
                     "'2026-01-01T00:00:00')")                       # no time zone
    assert state.meta.next_run() is None and state.meta.last_full_read() is None
    assert state.meta.consecutive_failures() == 0 and state.meta.last_target_read() is None
    assert "meta next_run holds 'yesterday-ish'" in caplog.text and str(db_path) in caplog.text


def test_a_corrupt_schema_version_is_a_clear_error(db_path):
    with State.open(db_path) as first:
        first.db.execute("UPDATE meta SET value = 'one' WHERE key = 'schema_version'")
        first.db.conn.commit()
    with pytest.raises(StateError, match="schema_version is 'one', not a number") as info:
        State.open(db_path)
    assert str(db_path) in str(info.value)
    with pytest.raises(StateError, match="schema_version"):     # and the lock was let go
        State.open(db_path)


def test_meta_refuses_a_value_of_the_wrong_type(state):
    with pytest.raises(TypeError, match="consecutive_failures holds int values, not str"):
        state.meta.set(Meta.CONSECUTIVE_FAILURES, "3")
    with pytest.raises(TypeError, match="naive"):
        state.meta.set(Meta.NEXT_RUN, dt.datetime(2026, 1, 1))


def test_a_next_run_written_in_local_time_by_an_older_daemon_still_reads(state):
    state.db.execute("INSERT INTO meta VALUES ('next_run', '2026-03-01T14:30:00+02:00')")
    assert state.meta.next_run() == dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone.utc)


# ------------------------------------------------------------------ the locks


def test_lock_holder_names_the_pid_while_locked(db_path):
    import os

    from agent.store.locks import lock_holder
    assert lock_holder(db_path) is None
    with State.open(db_path):
        assert lock_holder(db_path) == os.getpid()
    assert lock_holder(db_path) is None


def test_one_daemon_per_snapshot_and_its_lock_is_not_the_snapshot_lock(db_path):
    import os

    from agent.store.locks import lock_daemon
    with lock_daemon(db_path):
        with pytest.raises(StateError, match=rf"another scim-agent daemon is already running "
                                             rf"for this snapshot \(pid {os.getpid()}\)"):
            lock_daemon(db_path)
        State.open(db_path).close()             # a manual sync between cycles still works
    lock_daemon(db_path).release()


def test_a_busy_snapshot_names_the_holder(state, db_path):
    import os

    from agent.store.state import StateBusy
    with pytest.raises(StateBusy, match=rf"another scim-agent \(pid {os.getpid()}\) is using"):
        State.open(db_path)


def test_schema_7_rows_written_before_it_know_no_manager_reference(tmp_path):
    """A row recorded by schema 6 keeps its source digest but not the record's manager
    reference: a record the engine holds is still taken from it (its reference is read from
    the record), one a source builds only on demand is mapped again; both plan nothing."""
    import json

    import sqlite_utils

    from agent.core.mapping import MappingRules, map_directory
    from agent.core.plan import make_plan
    from agent.store.state import MIGRATIONS
    from connectors.files import FileSource

    rules = MappingRules.for_source(FileSource)
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"users": [
        {"id": "u1", "userName": "a@example.org", "manager": "u2"},
        {"id": "u2", "userName": "b@example.org"}], "groups": []}))

    def read(built: bool) -> Directory:
        view = FileSource(FileSource.Settings(path=export)).read()
        return Directory(dict(view.users), {}) if built else view

    for built in (True, False):
        path = tmp_path / f"state-{built}.db"
        db = sqlite_utils.Database(sqlite3.connect(path))
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        for version in range(1, 7):
            MIGRATIONS[version](db)
        db["meta"].upsert({"key": "schema_version", "value": "6"}, pk="key")
        for n, user in enumerate(map_directory(read(built), rules).users.values()):
            db.execute("INSERT INTO users (source_id, scim_id, user_name, active, attributes, "
                       "digest, source_digest, updated) VALUES (?, ?, ?, 1, ?, ?, ?, '')",
                       [user.source_id, f"s{n}", user.user_name,
                        json.dumps(dict(user.attributes)), user.digest, user.source_digest])
        db.conn.commit()
        db.close()
        with State.open(path) as state:
            assert state.meta.schema_version() == SCHEMA_VERSION >= 7
            pushed = state.snapshot().users
            assert pushed["u1"].manager_reference is None and pushed["u1"].source_digest
            desired = map_directory(read(built), rules, pushed)
            assert (desired.users["u1"].attributes is pushed["u1"].attributes) is built
            assert make_plan(desired, state.snapshot()).is_empty
            state.record_user(desired.users["u1"], "s0")       # recorded again: taken next time
            pushed = state.snapshot().users
            assert pushed["u1"].manager_reference == "u2"
            assert map_directory(read(built), rules, pushed).users["u1"].attributes \
                is pushed["u1"].attributes


def test_reading_a_snapshot_does_not_import_sqlite_utils(db_path):
    """``plan`` reads through plain sqlite3 (store/sqlite.ReadOnlyDatabase): sqlite_utils
    and what it loads are for making the schema and writing."""
    with State.open(db_path) as state:
        state.record_user(User("u1", "a@example.org", True, {"userName": "a@example.org"}), "s1")
    code = ("import sys; from agent.store.state import State\n"
            f"s = State.read({str(db_path)!r}); users = s.snapshot().users\n"
            "assert users['u1'].attributes == {'userName': 'a@example.org'}; s.close()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlite_utils', 'click', 'dateutil', 'pluggy')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("stored", ["[1]", "{not json", "null"])
def test_a_user_row_whose_attributes_do_not_read_is_a_damaged_snapshot(db_path, stored):
    with State.open(db_path) as state:
        state.record_user(User("u1", "a@example.org", True, {"userName": "a@example.org"}), "s1")
        state.record_user(User("u2", "b@example.org", True, {"userName": "b@example.org"}), "s2")
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE users SET attributes = ? WHERE source_id = 'u2'", [stored])
    db.close()
    for opened in (State.open(db_path), State.read(db_path)):
        with opened as state, pytest.raises(StateError, match="damaged"):
            state.snapshot()


@pytest.mark.parametrize("stored", ["{not json}", '{"title": }', "{'title': 'Eng'}",
                                    '{"title": NaN}', '{"title": -Infinity}'])
def test_attributes_that_look_like_an_object_but_do_not_parse_are_damaged_where_read(db_path,
                                                                                     stored):
    """Loading a snapshot looks at every row's text cheaply (an object's braces); text that
    passes that but does not parse is a damaged snapshot where a user's attributes are
    read, in either kind of opening: never a traceback, never an empty mapping."""
    with State.open(db_path) as state:
        state.record_user(ALICE, "s1")
        state.record_user(BOB, "s2")
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE users SET attributes = ? WHERE source_id = 'u2'", [stored])
    db.close()
    for opened in (State.open(db_path), State.read(db_path)):
        with opened as state:
            users = state.snapshot().users
            assert users["u1"].attributes == ALICE.attributes
            with pytest.raises(StateError, match="the snapshot is damaged"):
                dict(users["u2"].attributes)


def test_a_snapshot_opened_to_read_leaves_attributes_in_the_file_until_one_is_asked_for(db_path):
    """``plan`` holds no user's attributes text it does not need (the snapshot's largest
    part): a row carries none, and a user's is read from the file when first asked for."""
    from agent.core.model import ROW_ATTRIBUTES
    with State.open(db_path) as state:
        state.record_user(ALICE, "s1")
        state.record_user(BOB, "s2")
        assert state.snapshot().users.rows["u1"][ROW_ATTRIBUTES] is not None   # (a writer's)
    with State.read(db_path) as state:
        users = state.snapshot().users
        assert [row[ROW_ATTRIBUTES] for row in users.rows.values()] == [None, None]
        assert users["u1"].attributes == ALICE.attributes
    assert users["u1"].attributes == ALICE.attributes       # read once: kept
    with pytest.raises(RuntimeError, match="after the snapshot was closed"):
        dict(users["u2"].attributes)                        # a bug, said as one


def test_attributes_read_later_are_those_of_the_snapshot_loaded_whatever_a_sync_wrote_since(
        db_path):
    """A reader's snapshot is one read transaction: a sync that changes a user (and adds
    one) after the reader loaded it changes nothing the reader then reads."""
    with State.open(db_path) as state:
        state.record_user(ALICE, "s1")
    reader = State.read(db_path)
    try:
        users = reader.snapshot().users
        changed = User("u1", "alice@example.org", True, {**ALICE.attributes, "title": "CTO"})
        with State.open(db_path) as writer:           # (the daemon's sync, meanwhile)
            writer.record_user(changed, "s1")
            writer.record_user(BOB, "s2")
        assert users["u1"].attributes == ALICE.attributes
        assert users["u1"].digest == ALICE.digest and "u2" not in users
        assert reader.snapshot().users["u1"].attributes["title"] == "Eng"
        assert reader.counts()["users"] == 1
    finally:
        reader.close()
    with State.read(db_path) as again:
        assert again.snapshot().users["u1"].attributes["title"] == "CTO"


def test_a_reader_holds_a_read_transaction_only_from_the_snapshot_load_and_only_if_lazy(db_path):
    """While a read transaction lasts, a sync's checkpoints cannot empty the -wal file: a
    reader starts one only when it loads the snapshot lazily (after its source read), and
    ``plan --refresh``, which reads the whole target after that, reads eagerly instead."""
    from agent.core.model import ROW_ATTRIBUTES
    with State.open(db_path) as state:
        state.record_user(ALICE, "s1")
    with State.read(db_path) as state:
        assert not state.db.conn.in_transaction
        state.counts()
        assert not state.db.conn.in_transaction
        state.snapshot()
        assert state.db.conn.in_transaction
    with State.read(db_path, lazy_attributes=False) as state:
        users = state.snapshot().users
        assert not state.db.conn.in_transaction
        assert users.rows["u1"][ROW_ATTRIBUTES] is not None
    assert users["u1"].attributes == ALICE.attributes       # (read with it: no file needed)


def _damage_all_but_meta(db_path: Path) -> None:
    """Every page of the file but the schema's and the meta table's overwritten (the file
    opens and its meta reads; the rest is damaged)."""
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    meta = {row[0] for row in db.execute("SELECT rootpage FROM sqlite_master WHERE "
                                         "tbl_name = 'meta'")}      # the table and its key
    assert db.execute("SELECT count(*) FROM meta").fetchone()[0] < 20     # a page each
    db.close()
    data = bytearray(db_path.read_bytes())
    for page in set(range(2, pages + 1)) - meta:
        data[(page - 1) * size + 8: page * size - 8] = b"\xa5" * (size - 16)
    db_path.write_bytes(bytes(data))


def test_an_integrity_check_in_the_background_is_waited_for_before_anything_is_read(db_path):
    """``State.read(check_beside=True)`` (a plan) checks the file on the other core while
    the source is read: its meta keys read at once, and a damaged file is refused, as it
    is at opening without it, before the snapshot or the stored source view is read."""
    with State.open(db_path) as state:
        for n in range(300):        # pages enough of users to damage
            state.record_user(User(f"u{n}", f"u{n}@example.org", True,
                                   {"userName": f"u{n}@example.org", "title": "x" * 200}),
                              f"s{n}")
        state.meta.set(Meta.TARGET, "https://split.example/scim/v2")
    with State.read(db_path, check_beside=True) as state:
        assert state.snapshot().users["u7"].attributes["title"] == "x" * 200
        state.checked()                                     # (done: nothing more to wait for)
    _damage_all_but_meta(db_path)
    with pytest.raises(StateError, match="damaged|not a usable snapshot"):
        State.read(db_path)                                 # checked at opening
    for read in (State.snapshot, State.source_view, State.checked):
        with State.read(db_path, check_beside=True) as state:
            assert state.meta._get(Meta.TARGET) == "https://split.example/scim/v2"
            with pytest.raises(StateError, match="the snapshot is damaged"):   # (the check's
                read(state)                                 # words, not a page met reading)
    with State.read(db_path, check_beside=True):
        pass                        # closed unread: the check is waited for, nothing raised
    assert [t.name for t in threading.enumerate() if t.name == "snapshot-check"] == []


def test_a_ctrl_c_while_the_check_is_waited_for_still_waits_for_it(db_path):
    """The reader lock and the file stay the check's until it is over, Ctrl-C or not."""
    from agent.store.sqlite import BackgroundCheck
    with State.open(db_path):
        pass
    check = BackgroundCheck(db_path)
    thread, joins = check._thread, []

    class Interrupted:
        def join(self):
            joins.append(1)
            if len(joins) == 1:
                raise KeyboardInterrupt
            thread.join()
    check._thread = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        check.wait()
    assert len(joins) == 2 and not thread.is_alive()
