"""Wiring only: the one place that builds the real source, target and clocks from config.

Everything that reaches the outside world is made here and handed to the engine
(:class:`agent.engine.cycle.Agent`), so tests replace one factory or one clock instead of
patching internals.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Sequence

from connectors.base import Source, Target
from connectors.redaction import keep_secret

from .config import Config, ConfigError, secrets_of
from .engine.cycle import Agent


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_source(config: Config, attributes: Sequence[str] = ()) -> Source:
    """The configured source (``[source] type``), told the raw attribute names to read."""
    return config.source.source_class(config.source.settings, attributes=attributes)


def make_target(config: Config, *, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep,
                pacers: dict | None = None) -> Target:
    """The SCIM target of ``[target]``; ``clock`` and ``sleep`` pace it and time its retries.
    ``pacers`` keeps the pace each target learned (its RateLimiter) from one cycle to the
    next, so a daemon does not relearn Split's limit from the ceiling every cycle.

    The HTTP stack is imported here, when a target is built: ``plan`` from a file source
    never loads it (a tenth of a second of a plan's start)."""
    from connectors.http import HttpPolicy, RateLimiter
    from connectors.scim import ScimTarget

    if config.target.token is None or not config.target.token.resolved:
        raise ConfigError(f"{config.path}: [target] token: is required for this command")
    t = config.target
    policy = HttpPolicy(timeout=t.timeout, rate_limit=t.rate_limit, concurrency=t.concurrency,
                        max_attempts=t.max_attempts, max_wait=t.max_wait.total_seconds(),
                        max_body=t.max_response_mb << 20, ca_file=t.ca_file)
    limiter = None
    if pacers is not None:
        # one organisation's pace: two share Split's URL, each with its own token
        key = (t.url, hashlib.sha256(t.token.reveal().encode()).hexdigest(), t.rate_limit)
        limiter = pacers.get(key)
        if limiter is None:
            limiter = pacers[key] = RateLimiter(t.rate_limit, burst=1.0, clock=clock, sleep=sleep)
    return ScimTarget(t.url, t.token, policy, dialect=t.dialect, limiter=limiter, clock=clock,
                      sleep=sleep)


def build_agent(config: Config, *,
                target_factory: Callable[[Config], Target] | None = None,
                source_factory: Callable[[Config, Sequence[str]], Source] | None = None,
                clock: Callable[[], float] = time.monotonic,
                now: Callable[[], dt.datetime] = utc_now,
                sleep: Callable[[float], None] = time.sleep,
                pacers: dict | None = None) -> Agent:
    """The engine for ``config`` with the real parts, unless a test hands its own. The
    config's secrets are registered for redaction (connectors/redaction.py) first. The
    daemon hands the same ``pacers`` to every cycle's agent: the pace learned from the
    target's 429s carries over (see :func:`make_target`)."""
    for secret in secrets_of(config):
        keep_secret(secret.reveal())

    pacers = {} if pacers is None else pacers

    def real_target(cfg: Config) -> Target:
        return make_target(cfg, clock=clock, sleep=sleep, pacers=pacers)
    return Agent(config, make_source=source_factory or make_source,
                 make_target=target_factory or real_target, clock=clock, now=now, sleep=sleep)
