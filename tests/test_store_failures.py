"""The snapshot's bad days (agent/store/sqlite.py and the engine's edges): a full disk, a
read-only or immutable file, a corrupt timestamp or row. Each is one sentence naming the file
and what to do, never a traceback, and nothing is sent twice because of it.

The full disk is SQLite's own: ``PRAGMA max_page_count`` makes the file full at a chosen
size, and SQLite answers exactly as for a full disk (SQLITE_FULL, "database or disk is
full"). The immutable file is the real attribute (chattr +i), so these tests need
CAP_LINUX_IMMUTABLE and skip without it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest

import agent.store.state as state_module
from agent.cli.main import main
from agent.core.outcome import Outcome
from agent.store.state import State
from tests.conftest import user


class PageBudget:
    """Connections opened while ``extra`` is set may grow the file by that many pages."""

    def __init__(self, monkeypatch):
        self.extra: int | None = None
        real = state_module.connect

        def limited(path):
            conn = real(path)
            if self.extra is not None:
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {pages + self.extra}")
            return conn
        monkeypatch.setattr(state_module, "connect", limited)


def people(n: int, start: int = 0) -> list[dict]:
    return [user(str(i), f"user{i}@example.org", "User", f"N{i}", title="x" * 200)
            for i in range(start, start + n)]


def run(capsys, ws, *args) -> tuple[int, str, str]:
    code = main(["--config", str(ws.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_sentence(err: str, *needles: str) -> None:
    assert "Traceback" not in err and "unexpected" not in err, err
    for needle in needles:
        assert needle in err, err


def test_a_full_disk_stops_the_sync_with_a_sentence_and_nothing_is_sent_twice(
        split_ws, fake_split, capsys, monkeypatch):
    budget = PageBudget(monkeypatch)
    split_ws.write_directory(people(5), [])
    assert run(capsys, split_ws, "sync")[0] == 0
    split_ws.write_directory(people(300), [])
    budget.extra = 3                             # room for a few records, not for 295
    code, out, err = run(capsys, split_ws, "sync")
    assert code == 1
    one_sentence(err, f"{split_ws.state}: the snapshot cannot be written: the disk is full")
    pushed = len(fake_split.users)
    assert 5 <= pushed < 300                      # it stopped sending when it could not record
    budget.extra = None                          # space freed
    fake_split.reset_log()
    assert run(capsys, split_ws, "sync")[0] == 0
    assert len(fake_split.users) == 300
    conflicts = [r for r in fake_split.requests if r.method == "POST" and r.status == 409]
    assert conflicts == []                       # unrecorded creates were looked up, not resent
    assert run(capsys, split_ws, "plan", "--detailed-exitcode")[0] == 0


def test_a_disk_full_before_the_first_write_is_a_failed_cycle_not_a_crash(
        split_ws, fake_split, caplog, monkeypatch):
    budget = PageBudget(monkeypatch)
    split_ws.write_directory(people(300), [])
    State.open(split_ws.state).close()
    budget.extra = 0
    result = split_ws.agent().sync(mode="run")           # as the daemon runs it
    assert result.outcome is Outcome.ERROR
    assert "the disk is full" in result.message
    assert len(fake_split.users) < 300
    assert not [r for r in caplog.records if r.exc_info]       # no traceback in the log


@pytest.fixture
def immutable():
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    made = []

    def make(path):
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("cannot set the immutable attribute here")
        made.append(path)
    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_an_immutable_snapshot_is_named_as_such(split_ws, fake_split, capsys, immutable):
    split_ws.write_directory(people(2), [])
    assert run(capsys, split_ws, "sync")[0] == 0
    split_ws.write_directory(people(3), [])
    fake_split.reset_log()
    immutable(split_ws.state)
    code, _, err = run(capsys, split_ws, "sync")
    assert code == 1
    one_sentence(err, f"{split_ws.state}: the snapshot cannot be written: the file or its "
                      "folder is read-only", "immutable attribute")
    assert fake_split.writes() == []
    code, out, err = run(capsys, split_ws, "status")          # reading still works
    assert code == 0 and "Snapshot:" in out and not err
    code, out, _ = run(capsys, split_ws, "plan")
    assert code == 0 and "create user user2@example.org" in out


# ------------------------------------------------------------------ corrupt contents


def poke(ws, sql: str, *params) -> None:
    with sqlite3.connect(ws.state) as db:
        db.execute(sql, params)


@pytest.mark.parametrize("key, value", [
    ("next_run", "9999-12-31T23:59:59+14:00"), ("next_run", "yesterday"),
    ("last_target_read", "0001-01-01T00:00:00-12:00"), ("last_full_read", "2026-13-45"),
    ("consecutive_failures", "many"), ("held", "x\n" * 3),
])
def test_a_corrupt_timestamp_or_count_in_meta_reads_as_absent(split_ws, fake_split, capsys,
                                                              key, value):
    split_ws.write_directory(people(2), [])
    assert run(capsys, split_ws, "sync")[0] == 0
    poke(split_ws, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value)
    for command in (["status"], ["status", "--output", "json"], ["plan"], ["sync"]):
        code, out, err = run(capsys, split_ws, *command)
        assert code == 0, (command, err)
        one_sentence(err)


def test_corrupt_run_rows_are_shown_as_best_they_can_be(split_ws, fake_split, capsys):
    split_ws.write_directory(people(2), [])
    assert run(capsys, split_ws, "sync")[0] == 0
    poke(split_ws, "UPDATE runs SET counts = '{', duration = 'slow', failed = 'x', "
                   "started = 12, outcome = 'ok'")
    code, out, err = run(capsys, split_ws, "status")
    assert code == 0 and "Last runs" in out, err
    code, out, _ = run(capsys, split_ws, "status", "--output", "json")
    assert json.loads(out)["runs"][0]["duration"] is None


@pytest.mark.parametrize("value", ["{not json", "[1, 2]", "null"])
def test_a_damaged_row_is_a_damaged_snapshot_not_a_traceback(split_ws, fake_split, capsys,
                                                             value):
    split_ws.write_directory(people(2), [])
    assert run(capsys, split_ws, "sync")[0] == 0
    poke(split_ws, "UPDATE users SET attributes = ?", value)
    for command in ("plan", "sync"):
        code, _, err = run(capsys, split_ws, command)
        assert code == 1
        one_sentence(err, f"{split_ws.state}: the snapshot is damaged (a row of users does not "
                          "read", "move it aside and run sync to rebuild it from the target")


def test_a_damaged_page_met_while_reading_is_named(split_ws, fake_split, capsys):
    split_ws.write_directory(people(40), [])
    assert run(capsys, split_ws, "sync")[0] == 0
    with sqlite3.connect(split_ws.state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    data = bytearray(split_ws.state.read_bytes())
    for page in range(2, pages):                 # keep the header: the file still opens
        data[page * page_size - page_size + 8: page * page_size - 8] = b"\xa5" * (page_size - 16)
    split_ws.state.write_bytes(bytes(data))
    for command in ("plan", "status", "sync"):
        code, _, err = run(capsys, split_ws, command)
        assert code == 1, (command, err)
        one_sentence(err, str(split_ws.state), "move it aside")


def test_a_folder_given_as_the_snapshot_is_named(split_ws, fake_split, capsys):
    split_ws.state.mkdir(parents=True)
    for command in ("sync", "status", "plan", "check"):
        code, out, err = run(capsys, split_ws, command)
        assert code == 1, command
        one_sentence(out + err, f"{split_ws.state}: is a folder, not a snapshot file")
