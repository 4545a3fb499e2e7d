"""``--log-format json`` for what the commands print on stderr, not only for what they log.

While :func:`json_stderr` lasts, ``sys.stderr`` turns each line printed on it ("error: ...",
"warning: ...", a note) into a log record, which the log handler (``logs``) formats as JSON:
every line on stderr is then one JSON object, the final error included, whichever module
printed it. The handler writes past it, to ``underlying``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LEVELS = (("error:", logging.ERROR), ("warning:", logging.WARNING))


class _JsonLines(io.TextIOBase):
    """``sys.stderr`` under ``--log-format json``: each line a command prints there ("error:
    ...", "warning: ...", a note) becomes a log record, so every line on stderr is one JSON
    object, the final error included. The log handler writes past it (``underlying``)."""

    def __init__(self, underlying):
        super().__init__()
        self.underlying = underlying
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        self.underlying.flush()

    def close_line(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    def _emit(self, line: str) -> None:
        message, level = _ANSI.sub("", line).strip(), logging.INFO
        if not message:
            return
        for prefix, prefix_level in _LEVELS:
            if message.startswith(prefix):
                message, level = message[len(prefix):].strip(), prefix_level
        logger = logging.getLogger("agent.cli")
        # handled whatever the logger's level: a line meant for the reader is never dropped
        logger.handle(logger.makeRecord(logger.name, level, "(stderr)", 0, message, None, None))


@contextlib.contextmanager
def json_stderr(enabled: bool) -> Iterator[None]:
    """While it lasts, lines printed on stderr are JSON log records (when ``enabled``)."""
    if not enabled or isinstance(sys.stderr, _JsonLines):
        yield
        return
    lines = _JsonLines(sys.stderr)
    sys.stderr = lines
    try:
        yield
    finally:
        lines.close_line()
        if sys.stderr is lines:
            sys.stderr = lines.underlying
