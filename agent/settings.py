"""The settings a config file holds, as typed, frozen values: one dataclass per section
(each field's help is the text ``scim-agent config`` docs and ``--help`` show), and the
values with a syntax of their own (durations, guard thresholds). ``agent/config.py`` reads a
TOML file into them and validates it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import source_class
from connectors.base import TARGET_DIALECTS, Secret

from .core.expressions import Expression
from .core.scope import Scope


# ---------------------------------------------------------------------------------------------
# Value types with their own syntax


@dataclass(frozen=True)
class Threshold:
    """A guard threshold: a count (``25``) or a share of what is managed (``"10%"``)."""

    value: float
    percent: bool

    def limit(self, managed: int) -> int:
        if not self.percent:
            return int(self.value)
        # rounded up: 10% of 5 users still lets one leaver through
        return math.ceil(managed * self.value / 100)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str | int | float) -> dt.timedelta:
    if isinstance(text, bool):
        raise ValueError("expected a duration such as \"30s\", \"5m\", \"1h\" or \"7d\"")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a duration such as \"30s\", \"5m\", \"1h\" or \"7d\"")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------------------------
# Sections


def _help(text: str, *, token: bool = False, **kwargs) -> Any:
    return field(metadata={"help": text, "token": token}, **kwargs)


@dataclass(frozen=True)
class StateConfig:
    path: Path = _help("the SQLite snapshot file (created 0600 in a 0700 folder)")
    history_days: int = _help("days of per-object history kept for 'scim-agent history'",
                              default=90)


@dataclass(frozen=True)
class TargetConfig:
    url: str = _help("SCIM connector base URL from Split (Admin settings > Security > SCIM)")
    token: Secret | None = _help("bearer access token (a secret); needed by sync and check",
                                 token=True, default=None)
    token_created: dt.date | None = _help("date the token was created; warns 30 days before its "
                                          "one-year expiry", default=None)
    rate_limit: float = _help("requests per second, ceiling", default=10.0)
    concurrency: int = _help("requests in flight", default=4)
    timeout: float = _help("seconds per request, all of it (connecting, sending, the whole "
                           "answer)", default=30.0)
    max_attempts: int = _help("attempts per request before it counts as failed", default=6)
    max_wait: dt.timedelta = _help("longest wait honoured from the server's Retry-After or "
                                   "rate-limit reset headers; a longer one is cut to this",
                                   default=dt.timedelta(minutes=5))
    max_response_mb: int = _help("largest answer read from the target, in MB (decoded); a "
                                 "larger one stops the run", default=100)
    ca_file: Path | None = _help("CA bundle to verify the target's certificate "
                                 "(default: the public CA store)", default=None)
    admin_group_name: str = _help("target name of the administrators group "
                                  "(\"_fme_admins\" on Harness FME)",
                                  default="Split_Administrators")
    dialect: str = _help("request shapes to send: \"entra\" (as Microsoft Entra's provisioning "
                         "service does), \"okta\" (as Okta's SCIM client does) or \"rfc\"",
                         default=TARGET_DIALECTS[0])


@dataclass(frozen=True)
class SyncConfig:
    deactivate: bool = _help("deactivate users that leave the source or its scope", default=True)
    max_deactivations: Threshold = _help("more deactivations than this stop the cycle (exit 3): "
                                         "a count or a percentage of managed users",
                                         default=Threshold(10, True))
    groups: bool = _help("push groups and memberships", default=True)
    max_group_changes: Threshold = _help("more group deletions, or more member removals, than "
                                         "this stop the cycle (exit 3): a count or a percentage "
                                         "of managed groups (memberships)",
                                         default=Threshold(10, True))
    admin_group: str = _help("source group (name or id) whose members become Split "
                             "administrators", default="")
    reconcile_every: dt.timedelta = _help("re-read Split this often to put right changes made "
                                          "there by hand (as sync --reconcile does)",
                                          default=dt.timedelta(hours=24))
    max_cycle_time: dt.timedelta = _help("a cycle that has run this long sends nothing new; "
                                         "what is left waits for the next cycle",
                                         default=dt.timedelta(hours=6))


@dataclass(frozen=True)
class ScheduleConfig:
    interval: dt.timedelta | None = _help("time between cycles, e.g. \"5m\"", default=None)
    cron: str | None = _help("crontab expression instead of interval", default=None)
    max_backoff: dt.timedelta = _help("longest delay between cycles after repeated failures",
                                      default=dt.timedelta(hours=1))

    @property
    def effective_interval(self) -> dt.timedelta:
        return self.interval or dt.timedelta(minutes=5)


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = _help("host:port for /healthz and /metrics; empty = off", default="")


@dataclass(frozen=True)
class SourceConfig:
    type: str
    settings: Any                      # the source class's own Settings instance
    attributes: dict[str, Expression]  # [source.attributes]: SCIM user attribute -> expression
    group_attributes: dict[str, Expression] = field(default_factory=dict)
    scope: Scope = Scope()             # [[source.scope]]

    @property
    def source_class(self) -> type:
        return source_class(self.type)


@dataclass(frozen=True)
class Config:
    path: Path
    state: StateConfig
    source: SourceConfig
    target: TargetConfig
    sync: SyncConfig
    schedule: ScheduleConfig
    metrics: MetricsConfig


def describe_fields(cls: type) -> list[tuple[str, str]]:
    """(key, help) pairs of a section, for docs and --help output."""
    return [(f.name, f.metadata.get("help", "")) for f in dataclasses.fields(cls)]
