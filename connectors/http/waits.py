"""How long to wait: the shared token bucket, the server's wait hints, and the retry policy.

:class:`RateLimiter` paces every request to one remote (shared by its threads: a ceiling, and
a pace below it learned from the throttles);
:func:`server_wait_hint` reads what a server asked for, :func:`quota_spent` when an answer
says the quota is gone until a reset; :func:`retrying` is the tenacity policy
that retries :class:`~connectors.base.TransientError` with those hints honoured, else
exponential backoff with full jitter. Time comes only from the ``clock`` and ``sleep`` given.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

import httpx
import tenacity

from ..base import TransientError
from .transport import HttpPolicy

log = logging.getLogger(__name__)

# Adaptive pacing (AIMD). The bucket starts at the ceiling and learns the server's limit from
# its answers; see RateLimiter. Shares, so that one set of numbers fits 2 and 2 000 requests/s.
DECREASE = 0.7      # a throttle cuts the pace to this share of the rate that drew it
CLIMB = 0.05        # answers not throttled add this share of the ceiling per second of sending
PLATEAU = 0.97      # ... up to this share of the rate that last drew a throttle; above it,
PROBE = 0.0005      # only this share of that rate per second: the 3 % band takes a minute
FLOOR = 0.02        # never slower than this share of the ceiling
SPAN = 2.0          # seconds of grants that the measured sending rate looks back on
YEAR = 365 * 86400  # a reset header larger than this is an epoch, not a delta


class RateLimiter:
    """A token bucket shared by all threads talking to one remote, paced adaptively.

    ``rate`` tokens per second is the *ceiling* (``[target] rate_limit``): never exceeded.
    The pace starts there and learns the server's own limit from its answers, additive
    increase and multiplicative decrease as TCP does, for every worker at once:

    - :meth:`throttled` (a 429 or the vendor's equivalent) cuts the pace to ``DECREASE`` times
      the rate the remote was being sent (the lower of the pace and the rate measured since
      the last cut, over at most ``SPAN`` seconds: workers slower than the pace must not make
      the cut too small).
      Only the first throttle of an episode cuts: an answer to a request granted before the
      last cut (the other workers in flight into the same closed window) changes nothing.
    - :meth:`succeeded` (any other answer below 500) climbs back: ``CLIMB`` of the ceiling
      per second of sending, then, from ``PLATEAU`` of the rate that last drew a throttle,
      only ``PROBE`` of it per second. The pace thus settles just below the server's limit
      and tries it again about once a minute; climbing clearly past it without a throttle
      means the limit moved, and the fast climb resumes.

    ``burst`` (bucket size at the ceiling) shrinks with the pace, so that a pause does not
    end in a burst the server just refused. :meth:`pause_until` makes every caller wait until
    a moment the server named (Retry-After, a reset header), so one 429 slows the whole pool
    rather than only the thread that saw it.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = rate
        self.rate = rate                     # the pace now, requests per second
        self.burst = burst if burst is not None else max(1.0, rate)
        self.throttles = 0                   # cuts made (throttle episodes), for reports
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._paused_until = 0.0
        self._epoch = 0                      # bumped by every cut: which grants it judged
        self._too_fast: float | None = None  # the rate that last drew a throttle
        self._granted: deque[float] = deque()
        self._lock = threading.Lock()

    def pause_until(self, moment: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, moment)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def acquire(self) -> int:
        """Wait for a token; returns the ticket to hand back to :meth:`throttled` or
        :meth:`succeeded` with the answer."""
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    wait = self._paused_until - now
                else:
                    burst = max(1.0, self.burst * self.rate / self.ceiling)
                    self._tokens = min(burst, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._tokens >= 1 - 1e-9:     # a sleep of exactly the gap is enough
                        self._tokens -= 1
                        self._granted.append(now)
                        while self._granted[0] < now - SPAN:
                            self._granted.popleft()
                        return self._epoch
                    wait = (1 - self._tokens) / self.rate
            self._sleep(max(wait, 1e-3))   # never a zero-length spin

    def throttled(self, ticket: int) -> bool:
        """The answer to the request granted with ``ticket`` said "too fast"; True if that
        cut the pace (False: an earlier answer of the same episode already did)."""
        with self._lock:
            if ticket != self._epoch:
                return False
            measured = self._measured()
            basis = self.rate if measured is None else min(self.rate, measured)
            self._too_fast = basis
            self.rate = max(FLOOR * self.ceiling, DECREASE * basis)
            self._tokens = min(self._tokens, 1.0)
            self._granted.clear()            # measure the next episode on its own
            self._epoch += 1
            self.throttles += 1
            return True

    def succeeded(self, ticket: int) -> None:
        """The answer to the request granted with ``ticket`` was not a throttle."""
        with self._lock:
            if ticket != self._epoch or self.rate >= self.ceiling:
                return
            too_fast = self._too_fast
            if too_fast is not None and self.rate >= PLATEAU * too_fast:
                step = PROBE * too_fast
            else:
                step = CLIMB * self.ceiling
            self.rate = min(self.ceiling, self.rate + step / self.rate)
            if too_fast is not None and self.rate > too_fast * (2 - PLATEAU):
                self._too_fast = None        # well past it, never throttled: the limit moved

    def _measured(self) -> float | None:
        """Requests per second granted over the last ``SPAN`` seconds of this episode (since
        the last cut), if enough were."""
        granted = self._granted
        if len(granted) < 3 or granted[-1] <= granted[0]:
            return None
        return (len(granted) - 1) / (granted[-1] - granted[0])


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
        return _until(reset, headers, now)
    return None


def _until(epoch: float, headers: httpx.Headers, now: float | None) -> float:
    """Seconds from the answer's ``Date`` (else ``now``, else the wall clock) to ``epoch``."""
    server_now = None
    if headers.get("Date"):
        try:
            server_now = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
        except (TypeError, ValueError):
            server_now = None
    if server_now is None:
        server_now = time.time() if now is None else now
    return max(0.0, epoch - server_now)


def quota_spent(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds until the quota resets, when an answer says it is used up and when it resets;
    None otherwise (quota left, or no reset given: nothing to plan with).

    The spellings on the shared path: Split's ``X-RateLimit-Remaining-Org``/``-IP`` with
    ``X-RateLimit-Reset-Seconds-*`` (Split documents them with its 429s only; read wherever
    they come); Okta's ``X-Rate-Limit-Remaining`` with ``X-Rate-Limit-Reset`` (epoch seconds,
    measured against the answer's ``Date``; a limit of 0 is the concurrent-request limit, whose
    reset is only an estimate); the common ``X-RateLimit-Remaining``/``-Reset`` and the IETF
    draft's ``RateLimit-Remaining``/``-Reset`` (delta seconds, or epoch seconds when larger
    than a year of seconds, as GitHub sends).
    """
    headers = response.headers
    if not any(b"ratelimit" in key or b"rate-limit" in key
               for key in (raw.lower() for raw, _ in headers.raw)):
        return None                    # every header read below is one of these

    def number(name: str) -> float | None:
        try:
            return float(headers[name])
        except (KeyError, ValueError):
            return None

    remaining = [number(f"X-RateLimit-Remaining-{scope}") for scope in ("Org", "IP")]
    resets = [number(f"X-RateLimit-Reset-Seconds-{scope}") for scope in ("Org", "IP")]
    if 0 in remaining:
        known = [r for r in resets if r is not None]
        return max(0.0, max(known)) if known else None
    if number("X-Rate-Limit-Remaining") == 0 and number("X-Rate-Limit-Limit") != 0:
        reset = number("X-Rate-Limit-Reset")
        return None if reset is None else _until(reset, headers, now)
    for prefix in ("X-RateLimit-", "RateLimit-"):
        if number(prefix + "Remaining") == 0:
            reset = number(prefix + "Reset")
            if reset is None:
                return None
            return _until(reset, headers, now) if reset > YEAR else max(0.0, reset)
    return None


def retrying(policy: HttpPolicy, limiter: RateLimiter | None = None,
             sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
    """A tenacity policy: retry TransientError, waiting what the server asked for when it
    said (and making the shared limiter wait too), else exponential backoff with full jitter."""

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            hint = min(policy.max_wait, hint)
            if limiter is not None:
                # every worker waits exactly what the server said; the pace then spaces them
                limiter.pause_for(hint)
            # this worker a little longer, so that retries do not come back in lock-step
            return hint + random.uniform(0, 0.25)
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
