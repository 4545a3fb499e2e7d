"""What may leave the process: known secrets removed, control characters escaped.

One registry of secret values for the whole process. The wiring (``agent/cli``, the daemon
on a reload) registers every secret a config holds with :func:`keep_secret`; after that
:func:`redact` removes them, in the forms a remote side may echo them in (as sent, URL-encoded,
JSON- or HTML-escaped, each line of a PEM key), from any text. It is applied where remote
text enters the process (every answer on the shared HTTP path, which also removes the
credential headers that very request carried, so a token fetched at run time is covered
too) and again at every edge where text leaves: stdout, stderr, the log, the snapshot, the
daemon's status line and health page. A secret therefore cannot leak through a message
whatever produced it: a remote error body that quotes the request headers, a proxy page, an
exception.

:func:`printable` escapes control characters (and the Unicode line separators and bidi
controls) so that a name taken from a directory cannot forge a line of the plan or the log.
"""

from __future__ import annotations

import functools
import html
import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MARK = "[redacted]"
MIN_LENGTH = 4          # shorter values would redact ordinary words; such a secret is no secret
_PEM_LINE = 16          # each line of a multi-line secret (a PEM key) this long is one too

_lock = threading.Lock()
_known: tuple[str, ...] = ()


@functools.lru_cache(maxsize=64)
def forms(value: str) -> frozenset[str]:
    """The spellings in which ``value`` may come back: as sent, URL-encoded, JSON- and
    HTML-escaped; for a multi-line value (a key), each long line as well. Kept for the few
    values asked about (the token of every request: worked out once, not per answer)."""
    if len(value) < MIN_LENGTH:
        return frozenset()
    escaped = json.dumps(value)[1:-1]
    out = {value, quote(value, safe=""), quote_plus(value), escaped,
           json.dumps(value, ensure_ascii=False)[1:-1], escaped.replace("/", "\\/"),
           html.escape(value)}
    if "\n" in value:
        out |= {line.strip() for line in value.splitlines() if len(line.strip()) >= _PEM_LINE}
    return frozenset(f for f in out if len(f) >= MIN_LENGTH)


def keep_secret(value: str) -> None:
    """From now on, ``value`` is removed from everything :func:`redact` sees."""
    global _known
    new = forms(value)
    with _lock:
        if new - set(_known):
            _known = tuple(sorted(set(_known) | new, key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    return _known


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and every value of ``extra``) removed."""
    secrets = _merged(extra)
    if not secrets or not isinstance(text, str):
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MARK)
    return text


def redact_bytes(data: bytes, extra: Iterable[str] = ()) -> bytes:
    secrets = _merged(extra)
    if not secrets or not data:
        return data
    for secret in secrets:
        encoded = secret.encode("utf-8", "surrogatepass")
        if encoded in data:
            data = data.replace(encoded, MARK.encode())
    return data


def _merged(extra: Iterable[str]) -> tuple[str, ...]:
    extra = tuple(extra)
    return _union(_known, extra) if extra else _known


@functools.lru_cache(maxsize=64)
def _union(known: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    more: set[str] = set()
    for value in extra:
        more |= forms(value)
    if not more:
        return known
    return tuple(sorted(set(known) | more, key=len, reverse=True))


# ---------------------------------------------------------------------------------------------
# Values that look like a credential, before any secret is known

# A run of token characters at least 16 long with digits and letters of both cases, or a
# run of 32 letters and digits: how access tokens, client secrets and API keys are spelt, and
# how no host name label, key name, GUID or folder name usually is.
_CREDENTIAL_LIKE = re.compile(r"(?<![\w~+=-])[\w~+=-]{16,}(?![\w~+=-])")
_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def without_credentials(text: str) -> str:
    """``text`` with every run that looks like a credential replaced by a note of its
    length. For messages about a value rejected before its config is loaded (so before its
    secrets are known to :func:`redact`): a token pasted into a URL or an id field must not
    be echoed into a terminal or the journal."""
    return _CREDENTIAL_LIKE.sub(_hidden, text)


def _hidden(match: re.Match) -> str:
    run = match.group()
    mixed = re.search(r"[a-z]", run) and re.search(r"[A-Z]", run) and re.search(r"\d", run)
    long_key = len(run) >= 32 and re.fullmatch(r"[A-Za-z0-9]+", run) and re.search(r"\d", run)
    if _GUID.match(run) or not (mixed or long_key):
        return run
    return f"[{len(run)} characters hidden: they look like a secret]"


# ---------------------------------------------------------------------------------------------
# Control characters

# C0 and C1 controls (tab and newline included: a name holds neither), DEL, the Unicode line
# and paragraph separators, and the bidi controls that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\n``, ``\\x1b``, ``\\u202e``)."""
    if not isinstance(text, str):
        text = str(text)
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
