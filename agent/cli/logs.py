"""Logging for every command: one handler on stderr, text or JSON lines, secrets redacted.

The redaction filter is the last line of defence: whatever code logged it, a secret value
from the config never reaches a log line. :func:`redact_secrets_of` adds a config's secrets
to it; ``main`` calls it for the loaded config and hands it to the daemon, which calls it for
every config a reload brings in.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence

from ..config import Config, secrets_of

QUIETED = ("httpx", "httpcore", "apscheduler", "msal", "ldap3", "urllib3")   # they print URLs


class _Redact(logging.Filter):
    """Replaces every known secret value in a record's message. One instance, installed by
    :func:`setup_logging`; a reloaded config adds its secrets."""

    def __init__(self, secrets: Sequence[str] = ()):
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Sequence[str]) -> None:
        # very short values would redact ordinary words; such a secret is no secret anyway
        self.secrets = sorted(set(self.secrets) | {s for s in secrets if len(s) >= 4},
                              key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "[redacted]")
                record.msg, record.args = message, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the log call."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return getattr(sys.stderr, "underlying", sys.stderr)   # past stderr.json_stderr

    @stream.setter
    def stream(self, value):
        pass


_REDACT = _Redact()


def add_secrets_to_redact(secrets: Sequence[str]) -> None:
    _REDACT.add(secrets)


def config_secrets(config: Config) -> list[str]:
    return [s.reveal() for s in secrets_of(config)]


def redact_secrets_of(config: Config) -> None:
    """Keep every secret ``config`` holds out of the log from now on."""
    add_secrets_to_redact(config_secrets(config))


def setup_logging(level: int, fmt: str) -> logging.Handler:
    handler = _StderrHandler()
    handler.addFilter(_REDACT)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):       # journald stamps lines itself
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in QUIETED:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
