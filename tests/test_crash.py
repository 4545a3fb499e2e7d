"""Crashes: write-ahead creates, and syncs SIGKILLed at random moments (issue 11).

A create's intent is on disk before its POST; a run that finds an intent looks the user up
before sending anything. So however often a sync is killed (between a POST and its answer,
during a snapshot commit, in the middle of a membership PATCH), the target ends equal to the
source, no POST is ever answered 409 (nothing is sent twice), and the snapshot is intact.

The default run kills a small sync a few times; ``-m slow`` (and ``bench/bench_crash.py``)
runs the full campaign: at least 50 kills during a 2 000-user, 60-group sync.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.core.outcome import Outcome
from agent.store.state import State
from tests.conftest import TOKEN, Workspace, group, user
from tests.fakes.split import FakeSplit

ROOT = Path(__file__).resolve().parents[1]


def test_an_intent_left_by_a_killed_run_is_looked_up_before_anything_is_sent(fake_split,
                                                                              split_ws):
    split_ws.write_directory([user("u1", "ann@example.org"), user("u2", "ben@example.org")], [])
    # a run was killed after its POST for ann landed, before the answer was recorded
    fake_split.seed_user("ann@example.org", externalId="u1")
    with State.open(split_ws.state) as state:
        state.intend_create("user", "u1", "ann@example.org")
        state.record_user(_pushed_placeholder(), "scim-other")   # the snapshot is not empty
        state.forget_user("placeholder")
    fake_split.reset_log()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    posts = [r for r in fake_split.requests if r.method == "POST"]
    assert [r.body["userName"] for r in posts] == ["ben@example.org"]        # ann not resent
    with State.open(split_ws.state, lock=False) as state:
        assert state.intents() == [] and set(state.snapshot().users) == {"u1", "u2"}


def test_an_intent_whose_create_never_landed_is_created_once(fake_split, split_ws):
    split_ws.write_directory([user("u1", "ann@example.org")], [])
    with State.open(split_ws.state) as state:
        state.intend_create("user", "u1", "ann@example.org")
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK
    assert [r.status for r in fake_split.requests if r.method == "POST"] == [201]


def test_a_refused_create_leaves_no_intent(fake_split, split_ws):
    split_ws.write_directory([user("u1", "ann@example.org")], [])
    fake_split.fail_next(1, status=400)
    split_ws.agent().sync()
    with State.open(split_ws.state, lock=False) as state:
        assert state.intents() == []


def _pushed_placeholder():
    from agent.core.model import User
    return User("placeholder", "placeholder@example.org", True,
                {"userName": "placeholder@example.org"})


# -------------------------------------------------------------------------------------------
# The kill campaign


def directory(n_users: int, n_groups: int, seed: int):
    rnd = random.Random(seed)
    users = [user(f"u{i:05d}", f"person{i:05d}@example.org", f"G{i}", f"F{i}",
                  title=rnd.choice(["Dev", "Ops", "Sales"])) for i in range(n_users)]
    groups = [group(f"g{j:03d}", f"Team {j:03d}",
                    sorted(rnd.sample([u["id"] for u in users], min(n_users, 40))))
              for j in range(n_groups)]
    return users, groups


def campaign(split, ws: Workspace, kills: int, seed: int, window: tuple[int, int]) -> dict:
    """Start ``scim-agent sync`` again and again and SIGKILL it after a random number of
    write requests (in ``window``) reached the fake, until it has been killed ``kills`` times;
    then let one run finish. Counting writes, not seconds, puts the kills among the creates,
    the snapshot commits and the membership PATCHes however slow the machine is."""
    rnd = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "agent", "--config", str(ws.config), "sync",
               "--allow-mass-deactivation"]
    killed, finished = 0, []
    log = ws.root / "campaign.log"
    give_up = time.monotonic() + 900
    while killed < kills and time.monotonic() < give_up:
        before = len(split.writes())
        after = rnd.randint(*window)
        with log.open("w") as stderr:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                    cwd=ws.root)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(split.writes()) - before < after:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("a sync made no progress for two minutes")
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed += 1
            continue
        finished.append(proc.returncode)       # it ended before the kill
        assert proc.returncode in (0, 4), log.read_text()[-2000:]
        if proc.returncode == 0:
            break
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                           cwd=ws.root)
    return {"killed": killed, "finished": finished, "final": final}


def assert_converged(split, ws: Workspace, users, groups, report) -> None:
    final = report["final"]
    assert final.returncode == 0, final.stderr[-2000:]
    posts = [r for r in split.requests if r.method == "POST"]
    assert [r for r in posts if r.status == 409] == [], "a create was sent twice"
    by_name = {u["userName"].lower(): u for u in split.users.values()}
    assert set(by_name) == {u["userName"] for u in users}
    assert all(by_name[u["userName"]]["externalId"] == u["id"] for u in users)
    assert len(split.users) == len(users)
    name_of = {sid: u["userName"].lower() for sid, u in split.users.items()}
    members = {g["displayName"]: {name_of[m["value"]] for m in g.get("members", [])}
               for g in split.groups.values()}
    email = {u["id"]: u["userName"] for u in users}
    assert members == {g["displayName"]: {email[m] for m in g["members"]} for g in groups}
    conn = sqlite3.connect(ws.state)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM intents").fetchone()[0] == 0
    finally:
        conn.close()


def run_campaign(split, tmp_path, n_users, n_groups, kills, seed, window):
    ws = Workspace(tmp_path, split.base_url)
    users, groups = directory(n_users, n_groups, seed)
    ws.write_directory(users, groups)
    report = campaign(split, ws, kills, seed, window)
    assert_converged(split, ws, users, groups, report)
    return report


@pytest.fixture
def slow_answers():
    # Each write is carried out 15 ms before its answer leaves: a kill almost always falls
    # between a write that landed and the answer that would record it.
    with FakeSplit(token=TOKEN, answer_latency=0.015) as split:
        yield split


def test_a_sync_killed_again_and_again_converges_without_sending_anything_twice(
        slow_answers, tmp_path):
    report = run_campaign(slow_answers, tmp_path, 200, 8, kills=8, seed=11, window=(1, 40))
    assert report["killed"] >= 6, report        # the campaign did strike


@pytest.mark.slow
def test_fifty_kills_during_a_large_sync(slow_answers, tmp_path):
    report = run_campaign(slow_answers, tmp_path, 2000, 60, kills=50, seed=7,
                          window=(1, 80))
    assert report["killed"] >= 50, report
