"""/healthz from what the daemon knows (agent/service/health.py: Standing.health).

Each row is a situation an administrator's monitoring must read rightly: the status, and
whether it is 200 (fine, or not yet worrying) or 503 (someone should look).
"""

from __future__ import annotations

import datetime as dt

import pytest

from agent.core.outcome import Outcome
from agent.service.health import HEALTHY_PERIODS, Standing

T0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
PERIOD = dt.timedelta(minutes=5)
LONG = PERIOD * HEALTHY_PERIODS + dt.timedelta(seconds=1)     # just past the window


def standing(outcome: Outcome | None = None, *, ended_ago=dt.timedelta(minutes=1),
             success_ago=None, restored=False, started_ago=dt.timedelta(hours=1)) -> Standing:
    now = T0
    s = Standing(started_at=now - started_ago, restored=restored)
    if outcome is not None:
        s.last_outcome = outcome
        s.last_finished = now - ended_ago
        s.last_success = now - (success_ago if success_ago is not None else ended_ago) \
            if (outcome.succeeded or success_ago is not None) else None
    return s


@pytest.mark.parametrize("case, s, syncing, status, code", [
    ("a recent success", standing(Outcome.OK), False, "ok", 200),
    ("a recent partial cycle (some applied)", standing(Outcome.PARTIAL), False, "ok", 200),
    ("a failed cycle, success recent", standing(Outcome.FAILED, success_ago=PERIOD),
     False, "retrying", 200),
    ("failing for longer than the window", standing(Outcome.FAILED, success_ago=LONG),
     False, "failing", 503),
    ("failing since the start, and for long", standing(Outcome.ERROR), False, "failing", 503),
    # the last cycle succeeded, but none has ended since: cycles are being skipped (another
    # agent holds the snapshot: a sync prompt left unanswered, say)
    ("a success long ago, no cycle since", standing(Outcome.OK, ended_ago=LONG), False,
     "failing", 503),
    # a long cycle under way that the watchdog says is making progress
    ("a long first cycle", standing(None, started_ago=LONG), True, "syncing", 200),
    ("a long cycle after a success", standing(Outcome.OK, ended_ago=LONG), True, "syncing", 200),
    ("a long first cycle after a restart", standing(Outcome.OK, ended_ago=LONG * 2,
                                                    restored=True, started_ago=LONG),
     True, "syncing", 200),
    ("a cycle under way after failing for long", standing(Outcome.FAILED, success_ago=LONG),
     True, "failing", 503),
    ("not started a cycle yet", standing(None, started_ago=PERIOD), False, "starting", 200),
    ("no cycle ended for long after the start", standing(None, started_ago=LONG), False,
     "failing", 503),
    ("restarted, no cycle of its own yet", standing(Outcome.OK, ended_ago=LONG, restored=True,
                                                     started_ago=PERIOD), False, "starting", 200),
])
def test_health_reads_each_situation_rightly(case, s, syncing, status, code):
    got_code, body = s.health(now=T0, period=PERIOD, token_days_left=None, syncing=syncing)
    assert (body["status"], got_code) == (status, code), case
