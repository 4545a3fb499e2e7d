"""When the next cycle is due: ``interval`` or ``cron``, stretched after failed cycles.

A cycle sets the next run when it ends, so a slow cycle delays the next one and never
overlaps it. After consecutive failures the least delay doubles, up to ``max_backoff``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ..config import ScheduleConfig, format_duration
from .clock import utc_now

MAX_DOUBLINGS = 30           # 2**30 periods exceeds any max_backoff; keeps the product finite
BUSY_RETRY = dt.timedelta(minutes=1)   # a cycle that found the snapshot in use tries again


class Schedule:
    def __init__(self, config: ScheduleConfig,
                 wall_clock: Callable[[], dt.datetime] = utc_now):
        self.config = config
        self.cron = CronTrigger.from_crontab(config.cron) if config.cron else None
        self._wall_clock = wall_clock

    def trigger(self):
        return self.cron or IntervalTrigger(seconds=self.config.effective_interval.total_seconds())

    def period(self) -> dt.timedelta:
        if self.cron is None:
            return self.config.effective_interval
        first = self.cron.get_next_fire_time(None, self._wall_clock())
        second = self.cron.get_next_fire_time(first, first)
        return second - first

    def backoff(self, failures: int) -> dt.timedelta:
        """Least time after a failed cycle before the next: doubling, capped. In float
        seconds: a timedelta of a daily period doubled 30 times overflows."""
        if failures <= 0:
            return dt.timedelta(0)
        seconds = self.period().total_seconds() * 2.0 ** min(failures, MAX_DOUBLINGS)
        return dt.timedelta(seconds=min(seconds, self.config.max_backoff.total_seconds()))

    def next_run(self, started: dt.datetime, ended: dt.datetime, failures: int) -> dt.datetime:
        if self.cron is not None:
            due = self.cron.get_next_fire_time(None, ended)
        else:  # a cycle longer than the interval is followed at once, never overlapped
            due = max(started + self.config.effective_interval, ended)
        return max(due, ended + self.backoff(failures))

    def busy_retry(self, ended: dt.datetime) -> dt.datetime:
        """After a cycle that found the snapshot in use (a manual ``sync``, an admin's
        ``plan`` reading it): soon, not a whole period later; never sooner than a period."""
        return ended + min(BUSY_RETRY, self.period())

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.config.cron!r}"
        return f"every {format_duration(self.config.effective_interval)}"
