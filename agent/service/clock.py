"""The daemon's seams for time: the real clocks, and how moments are shown to people.

The daemon takes a wall clock (aware UTC datetimes: the schedule, "since", metrics), a
monotonic clock (heartbeats, grace periods) and a sleep as constructor parameters whose
defaults are these; tests pass their own instead of patching anything.
"""

from __future__ import annotations

import datetime as dt
import time

monotonic = time.monotonic
sleep = time.sleep
monotonic_ns = time.monotonic_ns


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def local(moment: dt.datetime | None, time_only: bool = False) -> str:
    if moment is None:
        return "-"
    shown = moment.astimezone()
    return shown.strftime("%H:%M:%S") if time_only else shown.isoformat(timespec="seconds")
