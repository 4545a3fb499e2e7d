"""A plan you can trust (issue 13): plan --refresh shows drift before it is applied, saved
plans are applied exactly or refused, and a terminal is asked before anything is sent."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.core.outcome import Outcome
from agent.store.state import State
from tests.conftest import group, user

ROOT = Path(__file__).resolve().parents[1]
PEOPLE = [user("u1", "ann@example.org", "Ann", "Archer", title="Dev"),
          user("u2", "ben@example.org", "Ben", "Baker", title="Ops")]


def cli(capsys, ws, *args):
    code = main(["--config", str(ws.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def synced(ws, fake_split):
    ws.write_directory(PEOPLE, [group("g", "Team", ["u1", "u2"])])
    assert ws.agent().sync().outcome is Outcome.OK
    return {u["userName"]: sid for sid, u in fake_split.users.items()}


def test_plan_refresh_shows_drift_made_in_split_before_it_is_put_right(capsys, split_ws,
                                                                       fake_split):
    ids = synced(split_ws, fake_split)
    fake_split.users[ids["ann@example.org"]]["title"] = "CEO"        # edited by hand in Split
    fake_split.users[ids["ben@example.org"]]["active"] = False       # deactivated by hand
    code, plain, _ = cli(capsys, split_ws, "plan")
    assert "No changes" in plain and "plan --refresh" in plain       # it did not look
    fake_split.reset_log()
    code, out, _ = cli(capsys, split_ws, "plan", "--refresh")
    assert code == 0
    assert "= changed in Split by hand, put right below: user ann@example.org" in out
    assert 'title: "Dev" pushed, "CEO" in Split' in out
    assert 'active: "true" pushed, "false" in Split' in out
    assert "~ update user ann@example.org  [drift: puts right a change made in Split]" in out
    assert '      title: "CEO" -> "Dev"' in out
    assert "+ reactivate user ben@example.org" in out
    assert fake_split.writes() == []                                   # read-only
    with State.open(split_ws.state, lock=False) as state:
        assert state.snapshot().users["u1"].attributes["title"] == "Dev"   # nothing recorded
    code, same, _ = cli(capsys, split_ws, "sync", "--reconcile", "--dry-run")
    assert same == out
    code, as_json, _ = cli(capsys, split_ws, "plan", "--refresh", "--output", "json")
    drift = json.loads(as_json)["target_read"]["drift"]
    assert {"kind": "user", "key": "ann@example.org",
            "changed": {"title": ["Dev", "CEO"]}} in drift


def test_plan_refresh_on_a_first_run_shows_what_would_be_adopted(capsys, split_ws, fake_split):
    split_ws.write_directory(PEOPLE, [])
    fake_split.seed_user("ann@example.org", title="Dev")
    code, out, _ = cli(capsys, split_ws, "plan", "--refresh")
    assert "= adopted from Split: ann@example.org" in out
    assert "+ create user ben@example.org" in out and "create user ann" not in out
    assert fake_split.writes() == []


def test_a_saved_plan_is_applied_exactly(capsys, split_ws, fake_split, tmp_path):
    synced(split_ws, fake_split)
    split_ws.write_directory([PEOPLE[0], user("u3", "cy@example.org")],
                             [group("g", "Team", ["u1", "u3"])])
    plan_file = tmp_path / "reviewed.plan"
    code, shown, err = cli(capsys, split_ws, "plan", "--out", str(plan_file))
    assert code == 0 and "sync --plan" in err
    assert (plan_file.stat().st_mode & 0o777) == 0o600
    fake_split.reset_log()
    code, out, _ = cli(capsys, split_ws, "sync", "--plan", str(plan_file), "--yes")
    assert code == 0, out
    assert "+ create user cy@example.org" in out and "- deactivate user ben@example.org" in out
    saved = json.loads(plan_file.read_text())["plan"]
    assert len([r for r in fake_split.writes()]) >= len(saved["changes"])


def test_a_saved_plan_is_refused_when_the_source_moved(capsys, split_ws, fake_split, tmp_path):
    synced(split_ws, fake_split)
    split_ws.write_directory([PEOPLE[0]], [group("g", "Team", ["u1"])])
    plan_file = tmp_path / "p.plan"
    cli(capsys, split_ws, "plan", "--out", str(plan_file))
    split_ws.write_directory([PEOPLE[0], user("u4", "dee@example.org")],
                             [group("g", "Team", ["u1"])])
    fake_split.reset_log()
    code, _, err = cli(capsys, split_ws, "sync", "--plan", str(plan_file))
    assert code == 1 and "the source changed since the plan was made" in err
    assert fake_split.writes() == []


def test_a_saved_plan_is_refused_when_the_snapshot_moved(capsys, split_ws, fake_split,
                                                         tmp_path):
    synced(split_ws, fake_split)
    split_ws.write_directory([PEOPLE[0]], [group("g", "Team", ["u1"])])
    plan_file = tmp_path / "p.plan"
    cli(capsys, split_ws, "plan", "--out", str(plan_file))
    assert split_ws.agent().sync().outcome is Outcome.OK             # someone synced since
    split_ws.write_directory([PEOPLE[0]], [group("g", "Team", ["u1"])])
    code, _, err = cli(capsys, split_ws, "sync", "--plan", str(plan_file))
    assert code == 1 and "the snapshot moved since the plan was made" in err


def test_a_refreshed_saved_plan_is_refused_when_split_moved(capsys, split_ws, fake_split,
                                                            tmp_path):
    ids = synced(split_ws, fake_split)
    plan_file = tmp_path / "p.plan"
    fake_split.users[ids["ann@example.org"]]["title"] = "CEO"
    cli(capsys, split_ws, "plan", "--refresh", "--out", str(plan_file))
    fake_split.users[ids["ben@example.org"]]["title"] = "Boss"       # another hand edit
    fake_split.reset_log()
    code, _, err = cli(capsys, split_ws, "sync", "--plan", str(plan_file))
    assert code == 1 and "Split no longer matches what the plan was made from" in err
    assert "update_user ben@example.org is now planned" in err
    assert fake_split.writes() == []


def test_a_declined_confirmation_sends_nothing(split_ws, fake_split):
    split_ws.write_directory(PEOPLE, [])
    shown = []
    result = split_ws.agent().sync(confirm=lambda plan: shown.append(plan) or False)
    assert result.outcome is Outcome.DECLINED and len(shown[0].sendable) == 2
    assert fake_split.writes() == []


def test_no_question_once_a_stop_was_asked_for(split_ws, fake_split):
    """Ctrl-C while the source is read: the plan is not put to the operator, nothing is sent."""
    import threading
    split_ws.write_directory(PEOPLE, [])
    stop, asked = threading.Event(), []
    stop.set()
    result = split_ws.agent().sync(stop=stop, confirm=lambda plan: asked.append(plan) or True)
    assert asked == [] and fake_split.writes() == []
    assert result.outcome is Outcome.INTERRUPTED, result.message


def _read(leader: int, until: bytes, seen: bytes, deadline: float) -> bytes:
    """Read the terminal until ``until`` shows (or the program ends, or the deadline)."""
    while until not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:          # the program closed the terminal
                return seen
            if not chunk:
                return seen
            seen += chunk
    return seen


def _on_a_terminal(ws, answer: str | signal.Signals) -> tuple[int, str]:
    """``scim-agent sync`` with stdin and stdout on a pseudo-terminal, answering ``answer``
    (or sending that signal at the question)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(ws.config), "sync"],
                            stdin=follower, stdout=follower, stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    deadline = time.monotonic() + 60
    seen = _read(leader, b"Type yes to apply", b"", deadline)
    assert b"Type yes to apply" in seen, seen.decode(errors="replace")
    if isinstance(answer, signal.Signals):
        proc.send_signal(answer)
    else:
        os.write(leader, answer.encode() + b"\n")
    seen = _read(leader, b"\x00never", seen, min(deadline, time.monotonic() + 30))
    proc.wait(timeout=30)
    os.close(leader)
    return proc.returncode, seen.decode(errors="replace")


def test_on_a_terminal_sync_shows_the_plan_and_asks_first(split_ws, fake_split):
    split_ws.write_directory(PEOPLE, [])
    code, screen = _on_a_terminal(split_ws, "no")
    assert code == 0 and "+ create user ann@example.org" in screen
    assert "Nothing was applied." in screen and fake_split.writes() == []
    code, screen = _on_a_terminal(split_ws, "yes")
    assert code == 0 and "Applied: users 2 created" in screen
    assert len(fake_split.users) == 2


def test_ctrl_c_at_the_question_means_no(split_ws, fake_split):
    """It used to print "stopping: the requests in flight finish", wait on, and after a late
    "yes" say "interrupted" and then "No changes"."""
    split_ws.write_directory(PEOPLE, [])
    code, screen = _on_a_terminal(split_ws, signal.SIGINT)
    assert code == 0 and "Nothing was applied." in screen, screen
    assert "stopping" not in screen and "No changes" not in screen
    assert fake_split.writes() == []


def test_a_ctrl_c_at_the_question_ends_it_at_once_wherever_the_signal_lands():
    """A SIGINT taken by another thread (or just before the wait began) does not make a
    blocked wait return: the question used to wait out its whole time, a sync that seemed
    to ignore Ctrl-C (one run in twenty of the terminal test above on a busy machine)."""
    import threading

    from agent.cli.main import answer_within

    read, write = os.pipe()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with os.fdopen(read) as stream, os.fdopen(write, "w"):
            timer = threading.Timer(0.2, signal.raise_signal, [signal.SIGINT])  # (its thread)
            timer.start()
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                answer_within(stream, 20)
            assert time.monotonic() - started < 10
            timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_question_has_an_answer_within_its_time_or_none(tmp_path):
    """The answer is read with a time limit (a forgotten prompt holds the snapshot lock)."""
    from agent.cli.main import answer_within

    read, write = os.pipe()
    with os.fdopen(read) as stream, os.fdopen(write, "w") as typed:
        started = time.monotonic()
        assert answer_within(stream, 0.2) is None and time.monotonic() - started >= 0.2
        typed.write("yes\n")
        typed.flush()
        assert answer_within(stream, 5) == "yes\n"
        typed.close()
        with pytest.raises(EOFError):
            answer_within(stream, 5)
