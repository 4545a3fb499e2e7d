"""agent/engine/deadline.py: a cycle that has run for [sync] max_cycle_time sends nothing new.

Time is the injected clock: the target's answers advance it (a slow target) or its wait
hints do (a throttling one), so the limit is reached in a test without waiting for it."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from agent.app import make_target
from agent.cli.main import main
from agent.core.outcome import Outcome
from agent.engine.deadline import CycleStop
from tests.conftest import FakeTime, user


class Slow:
    """A real ScimTarget whose creates each take ``seconds`` of the fake clock."""

    def __init__(self, inner, fake: FakeTime, seconds: float):
        self.inner, self.fake, self.seconds = inner, fake, seconds

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def cancel(self):
        return self.inner.cancel

    @cancel.setter
    def cancel(self, event):
        self.inner.cancel = event

    def create_user(self, *args, **kwargs):
        self.fake.now += self.seconds
        return self.inner.create_user(*args, **kwargs)


def people(n: int) -> list[dict]:
    return [user(str(i), f"user{i}@example.org") for i in range(n)]


@pytest.fixture
def slow_ws(split_ws):
    split_ws.write_config(extra='[sync]\nmax_cycle_time = "5m"\n')
    split_ws.config.write_text(split_ws.config.read_text().replace("concurrency = 4",
                                                                   "concurrency = 1"))
    return split_ws


def agent_on(ws, fake: FakeTime, seconds: float):
    return ws.agent(clock=fake.clock, sleep=fake.sleep,
                    target_factory=lambda config: Slow(make_target(
                        config, clock=fake.clock, sleep=fake.sleep), fake, seconds))


def test_a_slow_target_cannot_hold_a_cycle_past_max_cycle_time(slow_ws, fake_split):
    slow_ws.write_directory(people(20), [])
    fake = FakeTime()
    started = fake.now
    result = agent_on(slow_ws, fake, 60).sync()
    assert result.outcome is Outcome.PARTIAL
    assert result.message == ("stopped sending after [sync] max_cycle_time (5m): applied 4 of "
                              "20 operations; 16 wait for the next cycle")
    assert len([r for r in fake_split.requests if r.method == "POST"]) == 4
    assert fake.now - started <= 300 + 60
    assert not result.report.interrupted            # the daemon counts it as a cycle, not a stop
    for _ in range(5):                               # each cycle does its share, none twice
        if agent_on(slow_ws, fake, 60).sync().outcome is Outcome.OK:
            break
    assert len(fake_split.users) == 20
    assert all(r.status != 409 for r in fake_split.requests)


def test_retry_waits_end_at_the_deadline(slow_ws, fake_split):
    slow_ws.write_directory(people(3), [])
    fake = FakeTime()
    fake_split.fail_next(50, status=429, retry_after=100)
    result = agent_on(slow_ws, fake, 0).sync()
    assert result.outcome is Outcome.ERROR
    assert result.message == ("the cycle reached [sync] max_cycle_time (5m) before sending "
                              "anything (a slow source read or target?); nothing was applied")
    assert sum(fake.waits) <= 300.5                 # two waits of 100 and one cut at the limit
    assert fake_split.writes() == []


def test_sync_says_so_and_exits_4(slow_ws, fake_split, capsys, monkeypatch):
    slow_ws.write_directory(people(3), [])
    fake = FakeTime()
    import sys
    monkeypatch.setattr(sys.modules["agent.cli.main"], "build_agent", lambda config: agent_on(slow_ws, fake, 200))
    assert main(["--config", str(slow_ws.config), "sync"]) == 4
    captured = capsys.readouterr()
    assert "warning: stopped sending after [sync] max_cycle_time (5m): applied 1 of 3 " \
           "operations; 2 wait for the next cycle" in captured.err


def test_the_cycle_stop_obeys_the_daemon_too():
    external = threading.Event()
    fake = FakeTime()
    stop = CycleStop(external, fake.now, dt.timedelta(seconds=10), fake.clock, fake.sleep)
    assert not stop.is_set()
    external.set()
    assert stop.is_set() and not stop.expired
    unlimited = CycleStop(None, fake.now, None, fake.clock, fake.sleep)
    assert unlimited.wait(5) is False and fake.sleeps == [5]
    limited = CycleStop(None, fake.now, dt.timedelta(seconds=2), fake.clock, fake.sleep)
    assert limited.wait(30) is True and fake.sleeps[-1] == 2 and limited.expired


def test_max_cycle_time_is_a_duration(tmp_path):
    from agent.config import ConfigError, load
    from tests.conftest import Workspace
    ws = Workspace(tmp_path, "https://split.example.test/scim/v2")
    ws.write_config(extra='[sync]\nmax_cycle_time = "soon"\n')
    with pytest.raises(ConfigError, match=r"\[sync\] max_cycle_time: 'soon' is not a duration"):
        load(ws.config)
    ws.write_config()
    assert load(ws.config).sync.max_cycle_time == dt.timedelta(hours=6)


def test_a_deadline_reached_as_the_last_operation_ended_keeps_the_cycles_own_outcome(split_ws):
    """Nothing was left to send: the cycle ends as it would have without the deadline, so
    work held back after a refusal still makes it 'refused', never 'ok'."""
    from agent.core.plan import Op, OpKind
    from agent.engine.apply import ApplyReport
    from agent.engine.cycle import SyncResult
    sent = Op(OpKind.UPDATE_USER, "a@example.org", "1")
    waiting = Op(OpKind.UPDATE_USER, "b@example.org", "2")
    report = ApplyReport(planned=1, applied=[sent], deferred=[waiting], interrupted=True)
    result = split_ws.agent()._out_of_time(SyncResult(Outcome.INTERRUPTED, report=report,
                                                      message="interrupted: ..."))
    assert result.outcome is Outcome.REFUSED and "held back" in result.message
    clean = ApplyReport(planned=1, applied=[sent], interrupted=True)
    assert split_ws.agent()._out_of_time(
        SyncResult(Outcome.INTERRUPTED, report=clean)).outcome is Outcome.OK
