"""How long to wait: the shared token bucket, the server's wait hints, and the retry policy.

:class:`RateLimiter` paces every request to one remote (a ceiling, shared by its threads);
:func:`server_wait_hint` reads what a server asked for; :func:`retrying` is the tenacity policy
that retries :class:`~connectors.base.TransientError` with those hints honoured, else
exponential backoff with full jitter. Time comes only from the ``clock`` and ``sleep`` given.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable

import httpx
import tenacity

from ..base import TransientError
from .transport import HttpPolicy

log = logging.getLogger(__name__)


class RateLimiter:
    """A token bucket shared by all threads talking to one remote.

    ``rate`` tokens per second, bucket size ``burst``. :meth:`pause_until` makes every caller
    wait until a moment the server named (Retry-After, a reset header), so one 429 slows the
    whole pool rather than only the thread that saw it.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def pause_until(self, moment: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, moment)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    wait = self._paused_until - now
                else:
                    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._tokens >= 1:
                        self._tokens -= 1
                        return
                    wait = (1 - self._tokens) / self.rate
            self._sleep(max(wait, 1e-3))   # never a zero-length spin


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def server_wait_hint(response: httpx.Response, now: float | None = None) -> float | None:
    """How long the server asked us to wait, in seconds, or None if it did not say.

    ``Retry-After`` first; then Split's ``X-RateLimit-Reset-Seconds-Org``/``-IP`` (the larger);
    then Okta's ``X-Rate-Limit-Reset`` (epoch seconds, measured against the response's own
    ``Date`` so that clock skew between us and the server does not matter). ``now`` (epoch
    seconds, default the wall clock) is used only for a moment given without a ``Date``.
    """
    headers = response.headers
    hint = parse_retry_after(headers.get("Retry-After"), now)
    if hint is not None:
        return hint
    resets = []
    for name in ("X-RateLimit-Reset-Seconds-Org", "X-RateLimit-Reset-Seconds-IP"):
        try:
            resets.append(float(headers[name]))
        except (KeyError, ValueError):
            pass
    if resets:
        return max(0.0, max(resets))
    epoch = headers.get("X-Rate-Limit-Reset")
    if epoch:
        try:
            reset = float(epoch)
        except ValueError:
            return None
        server_now = None
        if headers.get("Date"):
            try:
                server_now = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
            except (TypeError, ValueError):
                server_now = None
        if server_now is None:
            server_now = time.time() if now is None else now
        return max(0.0, reset - server_now)
    return None


def retrying(policy: HttpPolicy, limiter: RateLimiter | None = None,
             sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
    """A tenacity policy: retry TransientError, waiting what the server asked for when it
    said (and making the shared limiter wait too), else exponential backoff with full jitter."""

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            # a little jitter so a pool of workers does not return in lock-step
            delay = min(policy.max_wait, hint) + random.uniform(0, 0.25)
            if limiter is not None:
                limiter.pause_for(delay)
            return delay
        step = min(policy.backoff_cap, policy.backoff_base * 2 ** (state.attempt_number - 1))
        return random.uniform(0, step)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("retrying after %s (attempt %d of %d, waiting %.1fs)", exc,
                 state.attempt_number, policy.max_attempts,
                 state.next_action.sleep if state.next_action else 0)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
