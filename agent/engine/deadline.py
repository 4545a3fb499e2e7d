"""How long one cycle may run: ``[sync] max_cycle_time``, then nothing new is sent.

Every request has its own deadline (``[target] timeout``); a cycle of many requests, slowed
by a target that throttles or answers slowly, needs one of its own, or it would hold the
snapshot (and the daemon's schedule) for as long as the target likes. :class:`CycleStop`
is the cycle's stop signal: it is set when the daemon asks to stop *or* when the cycle has
run for its limit, and it stands in for the ``threading.Event`` the target (``cancel``) and
the applier (``stop``) already obey: they send nothing new once it is set, and a retry wait
ends at the deadline instead of running past it. Time comes from the engine's seam.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable


class CycleStop:
    """Set when ``external`` is set, or once ``limit`` has passed since ``started``."""

    def __init__(self, external: threading.Event | None, started: float,
                 limit: dt.timedelta | None, clock: Callable[[], float],
                 sleep: Callable[[float], None]):
        self._external = external
        self._at = None if limit is None else started + limit.total_seconds()
        self._clock = clock
        self._sleep = sleep

    @property
    def expired(self) -> bool:
        """The cycle ran out of time (as opposed to being asked to stop)."""
        return self._at is not None and self._clock() >= self._at

    def is_set(self) -> bool:
        return (self._external is not None and self._external.is_set()) or self.expired

    def wait(self, timeout: float | None = None) -> bool:
        """Wait ``timeout`` seconds, less if a stop comes or the deadline falls before."""
        if self._at is not None:
            left = max(0.0, self._at - self._clock())
            timeout = left if timeout is None else min(timeout, left)
        if self._external is not None:
            self._external.wait(timeout)
        elif timeout:
            self._sleep(timeout)
        return self.is_set()
