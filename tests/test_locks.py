"""agent/store/locks.py: a lock belongs to the snapshot file, however its path is spelled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.store.locks import lock_daemon, lock_holder, lock_snapshot, snapshot_lock_path
from agent.store.state import State, StateBusy, StateError


@pytest.fixture
def snapshot(tmp_path) -> Path:
    path = tmp_path / "state" / "agent.db"
    State.open(path).close()
    return path


def spellings(snapshot: Path, tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """Other ways to name the same snapshot file."""
    (tmp_path / "link.db").symlink_to(snapshot)
    (tmp_path / "state-link").symlink_to(snapshot.parent, target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return {
        "a symlink to the file": tmp_path / "link.db",
        "a symlink to its folder": tmp_path / "state-link" / "agent.db",
        "a path with ..": tmp_path / "elsewhere" / ".." / "state" / "agent.db",
        "a relative path": Path("..") / "state" / "agent.db",
        "a doubled slash": Path(str(snapshot.parent) + "//agent.db"),
    }


def test_every_spelling_of_one_snapshot_takes_the_same_lock(snapshot, tmp_path, monkeypatch):
    for what, other in spellings(snapshot, tmp_path, monkeypatch).items():
        assert snapshot_lock_path(other) == snapshot_lock_path(snapshot), what
        with lock_snapshot(snapshot):
            with pytest.raises(StateBusy):
                lock_snapshot(other)
            assert lock_holder(other) == os.getpid(), what
        with lock_snapshot(other):               # and the other way round
            with pytest.raises(StateBusy, match="another scim-agent"):
                State.open(snapshot)


def test_the_daemon_lock_is_keyed_by_the_file_too(snapshot, tmp_path, monkeypatch):
    for what, other in spellings(snapshot, tmp_path, monkeypatch).items():
        with lock_daemon(snapshot):
            with pytest.raises(StateError, match="daemon is already running"):
                lock_daemon(other)


def test_a_snapshot_with_a_second_hard_link_is_refused(snapshot, tmp_path):
    os.link(snapshot, tmp_path / "copy.db")
    for name in (snapshot, tmp_path / "copy.db"):
        with pytest.raises(StateError, match="2 hard links; keep one name"):
            State.open(name)


def test_a_symlink_planted_as_the_lock_file_is_not_followed(snapshot, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    snapshot_lock_path(snapshot).unlink()
    snapshot_lock_path(snapshot).symlink_to(victim)
    with pytest.raises(StateError, match="cannot take the snapshot lock"):
        State.open(snapshot)
    assert victim.read_text() == "keep me\n"


def test_a_writer_kept_out_by_a_reader_is_told_so_not_given_a_stale_pid(snapshot):
    """Readers hold the lock shared and write no pid; the pid in the file is whoever wrote it
    last (a sync long gone, an idle daemon), so naming it sent the operator after the wrong
    process."""
    from agent.store.locks import reader_lock
    with reader_lock(snapshot):
        with pytest.raises(StateBusy) as busy:
            lock_snapshot(snapshot)
    assert "someone is reading the snapshot" in str(busy.value) and "pid" not in str(busy.value)
    with lock_snapshot(snapshot):                    # a writer is named by its pid
        with pytest.raises(StateBusy) as busy:
            lock_snapshot(snapshot)
    assert f"(pid {os.getpid()})" in str(busy.value)
