"""The applier's snapshot writer (agent/engine/apply.py: _Recorder): group commit.

What it promises, each checked here on a real snapshot with real threads: a write is
committed (visible to another connection) when its call returns; writes that arrive while a
commit is under way share the next transaction; one write's own failure is undone alone and
raised to its caller only; a failure of the snapshot itself fails every write of the batch
and commits none; bookkeeping handed to ``later`` rides with the next transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from agent.engine.apply import _Recorder
from agent.store.state import State, StateError

WAIT = 20.0           # bound on every wait: generous for a loaded 2-core machine


@pytest.fixture
def state(tmp_path):
    s = State.open(tmp_path / "state.db")
    s.db.execute("CREATE TABLE t (x INTEGER)")
    s.db.conn.commit()
    yield s
    s.close()


def put(state: State, x: int) -> None:
    with state.db.atomic():
        state.db.execute("INSERT INTO t VALUES (?)", [x])


def rows_seen_elsewhere(state: State) -> list[int]:
    """What another connection sees: only what is committed."""
    with sqlite3.connect(state.path) as other:
        return sorted(x for (x,) in other.execute("SELECT x FROM t"))


def transactions(state: State) -> list[str]:
    begun: list[str] = []
    state.db.conn.set_trace_callback(lambda sql: begun.append(sql) if sql == "BEGIN" else None)
    return begun


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def held_first_write(record: _Recorder, state: State, late: list):
    """Start a write that holds its commit open until released; then ``late`` calls
    (``write(x)``, x) queue behind it. Returns (release, threads, errors by x)."""
    release = threading.Event()
    errors: dict[int, BaseException | None] = {}

    def slow(x):
        put(state, x)
        assert release.wait(WAIT)

    def call(write, x):
        try:
            record(write, x)
            errors[x] = None
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            errors[x] = exc

    first = threading.Thread(target=call, args=(slow, 0))
    first.start()
    wait_for(lambda: record.lock.locked(), "the first commit to start")
    threads = [threading.Thread(target=call, args=(w, x)) for w, x in late]
    for t in threads:
        t.start()
    wait_for(lambda: len(record._queue) == len(late), "the later writes to queue")
    return release, [first, *threads], errors


def join(threads) -> None:
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()


def test_writes_that_arrive_during_a_commit_share_the_next_and_each_is_committed_on_return(
        state):
    record = _Recorder(state)
    begun = transactions(state)
    seen_on_return: dict[int, list[int]] = {}

    def put_and_look(x):
        put(state, x)

    def call(x):
        record(put_and_look, x)
        seen_on_return[x] = rows_seen_elsewhere(state)

    release, threads, errors = held_first_write(record, state, [(put_and_look, x)
                                                                for x in range(1, 9)])
    assert rows_seen_elsewhere(state) == []          # nothing committed while held
    release.set()
    join(threads)
    assert all(e is None for e in errors.values()), errors
    assert rows_seen_elsewhere(state) == list(range(9))
    assert len(begun) == 2, "the eight queued writes did not share one transaction"

    # and one at a time, each caller finds its own write committed when the call returns
    for x in (10, 11):
        call(x)
        assert x in seen_on_return[x]


def test_one_writes_own_failure_is_undone_alone_and_raised_to_its_caller_only(state):
    record = _Recorder(state)

    def broken(x):
        put(state, x)              # written, then the write fails: its savepoint is undone
        raise ValueError(f"write {x} failed")

    def fine(x):
        put(state, x)

    release, threads, errors = held_first_write(record, state,
                                                [(fine, 1), (broken, 2), (fine, 3)])
    release.set()
    join(threads)
    assert rows_seen_elsewhere(state) == [0, 1, 3]
    assert isinstance(errors[2], ValueError) and "write 2 failed" in str(errors[2])
    assert errors[0] is errors[1] is errors[3] is None


def test_a_failure_of_the_snapshot_fails_the_whole_batch_and_commits_none_of_it(state):
    record = _Recorder(state)

    def disk_full(x):
        put(state, x)
        raise StateError("state.db: the disk is full")

    def fine(x):
        put(state, x)

    release, threads, errors = held_first_write(record, state, [(fine, 1), (disk_full, 2),
                                                                (fine, 3)])
    release.set()
    join(threads)
    assert errors[0] is None and rows_seen_elsewhere(state) == [0]   # its own batch
    for x in (1, 2, 3):
        assert isinstance(errors[x], StateError), errors
    record(fine, 4)                                  # the writer is usable afterwards
    assert rows_seen_elsewhere(state) == [0, 4]


def test_bookkeeping_handed_to_later_rides_with_the_next_commit_or_the_flush(state):
    record = _Recorder(state)
    begun = transactions(state)
    record.later(put, state, 100)
    assert rows_seen_elsewhere(state) == []
    record(put, state, 1)
    assert rows_seen_elsewhere(state) == [1, 100] and len(begun) == 1
    record.later(put, state, 101)
    record.flush()
    assert rows_seen_elsewhere(state) == [1, 100, 101] and len(begun) == 2
    record.flush()                                   # nothing queued: no empty transaction
    assert len(begun) == 2
