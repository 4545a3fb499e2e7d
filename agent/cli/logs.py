"""Logging for every command: one handler on stderr, text or JSON lines, secrets redacted.

Redaction is the last line of defence: whatever code logged it, a secret value from the
config never reaches a log line, tracebacks included (the handler redacts the formatted
line; :mod:`connectors.redaction` holds the secrets). :func:`redact_secrets_of` registers a
config's secrets; ``main`` calls it for the loaded config and hands it to the daemon, which
calls it for every config a reload brings in. Text lines escape control characters in the
message, so a name from the directory cannot forge a log line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence

from connectors.redaction import keep_secret, known_secrets, printable, redact

from ..config import Config, secrets_of

QUIETED = ("httpx", "httpcore", "apscheduler", "msal", "ldap3", "urllib3")   # they print URLs


class _Redact(logging.Filter):
    """Replaces every known secret value in a record's message (for any handler that looks
    at the record itself). One instance, installed by :func:`setup_logging`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if known_secrets():
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


class _TextFormatter(logging.Formatter):
    """The message with control characters escaped: one record, one line (a traceback, with
    ``--debug``, follows on lines of its own)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        shown = logging.makeLogRecord(record.__dict__)
        shown.message = printable(record.message)
        return super().formatMessage(shown)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the log call; the formatted line
    (traceback included) is redacted."""

    def __init__(self):
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    @property
    def stream(self):
        return getattr(sys.stderr, "underlying", sys.stderr)   # past stderr.json_stderr

    @stream.setter
    def stream(self, value):
        pass


_REDACT = _Redact()


def add_secrets_to_redact(secrets: Sequence[str]) -> None:
    for secret in secrets:
        keep_secret(secret)


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
        handler.setFormatter(_TextFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in QUIETED:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
