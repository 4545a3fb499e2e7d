"""Per-object back-off: an object the target keeps refusing is retried with a growing wait
across cycles, shown in status, never blocks the others, and is tried at once when its source
record changes (agent/core/quarantine.py, agent/store/quarantine.py, agent/engine/quarantine.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent.cli.main import main
from agent.core.outcome import Outcome
from agent.core.quarantine import BACKOFF, Deferral, backoff, waiting
from tests.conftest import user

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


def test_the_wait_grows_then_stays_at_a_day():
    assert [backoff(n) for n in range(1, 8)] == [*BACKOFF, BACKOFF[-1], BACKOFF[-1]]
    assert BACKOFF[-1] == dt.timedelta(hours=24)


def test_a_deferral_holds_until_due_or_until_the_record_changes():
    d = Deferral("user", "u1", "update_user", "a@x", "HTTP 400", 2, T0 + dt.timedelta(hours=1),
                 "digest-1")
    assert waiting([d], {("user", "u1"): "digest-1"}, T0)
    assert not waiting([d], {("user", "u1"): "digest-2"}, T0)          # changed: at once
    assert not waiting([d], {("user", "u1"): "digest-1"}, T0 + dt.timedelta(hours=1))


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def patches_of(fake_split, uid: str) -> int:
    return sum(1 for r in fake_split.writes() if r.path == f"/Users/{uid}")


def bob_id(fake_split) -> str:
    return next(sid for sid, u in fake_split.users.items() if u["userName"] == "b@example.org")


def test_a_refused_change_waits_longer_each_time_and_never_blocks_the_others(fake_split,
                                                                             split_ws, capsys):
    ws, clock = split_ws, Clock()
    people = [user("0", "a@example.org"), user("1", "b@example.org", title="Engineer")]
    ws.write_directory(people, [])
    assert ws.agent(now=clock).sync().outcome is Outcome.OK
    bob = bob_id(fake_split)
    # Split refuses bob's new title (a rule of the service the agent cannot know), every time
    fake_split.refuse("PATCH", f"/Users/{bob}", 400, "title is not allowed")
    people[1] = user("1", "b@example.org", title="Chief Everything")
    ws.write_directory(people, [])
    fake_split.reset_log()
    first = ws.agent(now=clock).sync()
    assert first.outcome is Outcome.REFUSED and patches_of(fake_split, bob) == 1

    # the next cycles within the wait send nothing for bob, and still do the others' work
    clock.now += dt.timedelta(minutes=5)
    ws.write_directory(people + [user("2", "c@example.org")], [])
    second = ws.agent(now=clock).sync()
    assert patches_of(fake_split, bob) == 1                     # held back
    assert any(u["userName"] == "c@example.org" for u in fake_split.users.values())
    assert second.outcome is Outcome.REFUSED and "held back" in second.message

    # status shows the reason and the next attempt
    assert main(["--config", str(ws.config), "status", "--output", "json"]) == 0
    failures = json.loads(capsys.readouterr().out)["failures"]
    entry = next(f for f in failures if f["op"] == "update_user")
    assert "title is not allowed" in entry["error"] and entry["count"] == 1
    assert dt.datetime.fromisoformat(entry["next_attempt"]) == T0 + BACKOFF[0]
    assert main(["--config", str(ws.config), "status"]) == 0
    assert "next attempt" in capsys.readouterr().out

    # once due it is sent again, refused again, and waits longer
    clock.now = T0 + BACKOFF[0] + dt.timedelta(seconds=1)
    ws.agent(now=clock).sync()
    assert patches_of(fake_split, bob) == 2
    clock.now += BACKOFF[1] - dt.timedelta(minutes=1)
    ws.agent(now=clock).sync()
    assert patches_of(fake_split, bob) == 2                     # the second wait is longer

    # a changed source record is tried at once
    fake_split.stop_refusing()
    people[1] = user("1", "b@example.org", title="Engineer II")
    ws.write_directory(people + [user("2", "c@example.org")], [])
    fixed = ws.agent(now=clock).sync()
    assert patches_of(fake_split, bob) == 3 and fixed.outcome is Outcome.OK, fixed.message
    assert fake_split.users[bob]["title"] == "Engineer II"
    assert main(["--config", str(ws.config), "status", "--output", "json"]) == 0
    assert not json.loads(capsys.readouterr().out)["failures"]


@pytest.mark.parametrize("status", [503, 408, 425])      # 4xx that mean "not now"
def test_a_transient_failure_is_not_held_back(fake_split, split_ws, status):
    ws, clock = split_ws, Clock()
    people = [user("1", "b@example.org", title="Engineer")]
    ws.write_directory(people, [])
    ws.agent(now=clock).sync()
    bob = bob_id(fake_split)
    fake_split.refuse("PATCH", f"/Users/{bob}", status, "busy", None)
    people[0] = user("1", "b@example.org", title="Lead")
    ws.write_directory(people, [])
    failed = ws.agent(now=clock).sync()
    assert failed.outcome is Outcome.FAILED, failed.message      # retried, not a refusal
    fake_split.stop_refusing()
    fake_split.reset_log()
    assert ws.agent(now=clock).sync().outcome is Outcome.OK    # the very next cycle
    assert patches_of(fake_split, bob) == 1


def test_only_retries_a_held_object_at_once(fake_split, split_ws):
    ws, clock = split_ws, Clock()
    people = [user("1", "b@example.org", title="Engineer")]
    ws.write_directory(people, [])
    ws.agent(now=clock).sync()
    bob = bob_id(fake_split)
    fake_split.refuse("PATCH", f"/Users/{bob}")
    people[0] = user("1", "b@example.org", title="Lead")
    ws.write_directory(people, [])
    ws.agent(now=clock).sync()
    fake_split.reset_log()
    ws.agent(now=clock).sync(only=["b@example.org"])          # the operator asks: now
    assert patches_of(fake_split, bob) == 1


def test_what_only_follows_a_refusal_is_a_refusal_too_every_cycle(fake_split, split_ws):
    """A user Split refuses to create, member of a group: the group's members are added
    without them. Neither that cycle nor the next ones, while the create is held back, is a
    failure to retry (exit 4); both are refusals (exit 5)."""
    from tests.conftest import group
    ws, clock = split_ws, Clock()
    fake_split.refuse("POST", "/Users", 400, "this domain is not allowed")
    ws.write_directory([user("1", "b@example.org")], [group("g", "Team", ["1"])])
    first = ws.agent(now=clock).sync()
    assert first.outcome is Outcome.REFUSED, first.message
    assert "retried next cycle" not in first.message
    clock.now += dt.timedelta(minutes=5)
    second = ws.agent(now=clock).sync()
    assert second.outcome is Outcome.REFUSED, second.message
    assert "held back" in second.message

