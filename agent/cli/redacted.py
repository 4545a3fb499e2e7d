"""The output edge: everything a command prints to stdout or stderr passes a redaction.

Commands format their own text; :func:`redacted_output` swaps ``sys.stdout``/``sys.stderr``
for the duration of a command for streams that remove every known secret
(:mod:`connectors.redaction`) from what is written, whatever wrote it: the plan, ``status``,
an error line, a ``--debug`` traceback.
"""

from __future__ import annotations

import contextlib
import sys

from connectors.redaction import redact


class RedactingStream:
    def __init__(self, inner):
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(redact(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):           # isatty, fileno, flush, encoding...
        return getattr(self._inner, name)


@contextlib.contextmanager
def redacted_output():
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
