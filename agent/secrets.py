"""The four forms of a secret in the config, resolved to a :class:`Secret`.

``"literal"``, ``{ env = "VAR" }``, ``{ file = "path" }`` (relative to the config file) or
``{ credential = "name" }`` (``$CREDENTIALS_DIRECTORY/name``, systemd's ``LoadCredential=``).
The value never enters an error message; ``error(text)`` builds the loader's own error, which
names the file and the key.

A secret that is sent as a token (in an ``Authorization`` header, or as a client secret) is
checked for its format as soon as it is known: a space, a line break, a control character or
a non-ASCII character (a typographic quote pasted with it) is refused with a sentence saying
which character, where, and where the value came from. Sent as it is, such a value would
fail in the HTTP library on every attempt ("LocalProtocolError", "UnicodeEncodeError").
"""

from __future__ import annotations

import difflib
import os
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.base import Secret

from . import sandbox


FORMS = ("env", "file", "credential")


def resolve_secret(value: Any, base: Path, error: Callable[[str], Exception],
                   resolve: bool = True, *, token: bool = False) -> Secret:
    """Resolve the four secret forms (or, with ``resolve=False``, only check their form and
    return an unresolved placeholder). ``token``: the value is sent as a token, so its
    format is checked too (:func:`token_problem`). The value never enters an error message."""
    secret = _resolve(value, base, error, resolve)
    if token:
        literal = value if isinstance(value, str) else None   # checkable even unresolved
        text = secret.reveal() if secret.resolved else literal
        problem = token_problem(text) if text is not None else None
        if problem:
            raise error(f"the value from {secret.origin} {problem}, which no token contains; "
                        "paste it again without spaces, line breaks or typographic quotes")
    return secret


def token_problem(value: str) -> str | None:
    """What in ``value`` cannot be part of a token, told without showing the token: a bearer
    token (RFC 6750), an Okta API token and an Entra client secret are printable ASCII with
    no spaces, and an HTTP header carries nothing else. None when there is nothing wrong."""
    stripped = value.strip()
    if stripped != value:                       # pasted with what surrounded it
        end = value[len(value.rstrip()):]
        if end:
            return f"ends with {_characters(end)}"
        return f"starts with {_characters(value[:len(value) - len(value.lstrip())])}"
    for index, char in enumerate(value):
        if not "!" <= char <= "~":
            return f"has {_character(char)} at character {index + 1}"
    return None


def _characters(run: str) -> str:
    names = list(dict.fromkeys(_character(c) for c in run))
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def _character(char: str) -> str:
    code = f"U+{ord(char):04X}"
    if char == " ":
        return "a space"
    if char in "\r\n":
        return "a line break"
    if char == "\t":
        return "a tab"
    if unicodedata.category(char).startswith("C"):
        return f"a control character ({code})"
    name = unicodedata.name(char, "")
    return f"a non-ASCII character ({code} {name})" if name else f"a non-ASCII character ({code})"


def _resolve(value: Any, base: Path, error: Callable[[str], Exception], resolve: bool) -> Secret:
    if isinstance(value, str):
        if not value:
            raise error("the secret is empty")
        return Secret(value if resolve else None, "the config file")
    if not isinstance(value, dict) or len(value) != 1:
        raise error('expected "literal", { env = "VAR" }, { file = "path" } '
                               'or { credential = "name" }')
    (kind, ref), = value.items()
    if not isinstance(ref, str) or not ref:
        raise error(f"{kind} must name something")
    if kind == "env":
        origin = f"environment variable {ref}"
        if not resolve:
            return Secret.unresolved(origin)
        secret = os.environ.get(ref)
        if not secret:
            raise error(f"environment variable {ref} is not set or empty")
        return Secret(secret, origin)
    if kind == "file":
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else base / path
        if not resolve:
            return Secret.unresolved(f"file {path}")
        return Secret(_read_secret_file(path, error), f"file {path}")
    if kind == "credential":
        if "/" in ref:
            raise error("a credential name cannot contain '/'")
        if not resolve:
            return Secret.unresolved(f"credential {ref}")
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise error(f"credential {ref!r} needs $CREDENTIALS_DIRECTORY "
                                   "(set by systemd's LoadCredential=)")
        return Secret(_read_secret_file(Path(directory) / ref, error), f"credential {ref}")
    close = difflib.get_close_matches(kind.lower(), FORMS, n=1, cutoff=0.6)
    raise error(f"unknown secret source {kind!r}" + (f"; did you mean {close[0]!r}?" if close
                                                     else "") + " (env, file or credential)")


def _read_secret_file(path: Path, error: Callable[[str], Exception]) -> str:
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):      # a folder, or a pipe that would block the read
            raise error(f"secret file {path} is not a regular file")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        hidden = sandbox.hidden_by_unit(path)
        if hidden:          # a root shell sees it; the service does not
            raise error(f"secret file {path} cannot be seen by the service: {hidden}; "
                        f"{sandbox.hand_over(path, sandbox.unit())}")
        if isinstance(exc, FileNotFoundError):
            raise error(f"secret file {path} does not exist")
        advice = sandbox.unreadable_under_unit(path) if isinstance(exc, PermissionError) else None
        raise error(f"cannot read secret file {path}: {exc.strerror}"
                    + (f"; {advice}" if advice else ""))
    if mode & stat.S_IWOTH:
        raise error(f"secret file {path} is writable by everyone; chmod 600 it")
    # A PEM key keeps its inner newlines; a token file's trailing newline is not part of it.
    text = text.strip("\r\n") if "-----BEGIN" not in text else text
    if not text.strip():
        raise error(f"secret file {path} is empty")
    return text
