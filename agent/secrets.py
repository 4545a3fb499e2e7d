"""The four forms of a secret in the config, resolved to a :class:`Secret`.

``"literal"``, ``{ env = "VAR" }``, ``{ file = "path" }`` (relative to the config file) or
``{ credential = "name" }`` (``$CREDENTIALS_DIRECTORY/name``, systemd's ``LoadCredential=``).
The value never enters an error message; ``error(text)`` builds the loader's own error, which
names the file and the key.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.base import Secret


def resolve_secret(value: Any, base: Path, error: Callable[[str], Exception],
                   resolve: bool = True) -> Secret:
    """Resolve the four secret forms (or, with ``resolve=False``, only check their form and
    return an unresolved placeholder). The value never enters an error message."""
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
    raise error(f"unknown secret source {kind!r} (env, file or credential)")


def _read_secret_file(path: Path, error: Callable[[str], Exception]) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"secret file {path} does not exist")
    except OSError as exc:
        raise error(f"cannot read secret file {path}: {exc.strerror}")
    if mode & stat.S_IWOTH:
        raise error(f"secret file {path} is writable by everyone; chmod 600 it")
    # A PEM key keeps its inner newlines; a token file's trailing newline is not part of it.
    text = text.strip("\r\n") if "-----BEGIN" not in text else text
    if not text.strip():
        raise error(f"secret file {path} is empty")
    return text
