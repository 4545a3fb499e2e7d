"""TLS trust for every connector: verification always on, against the configured bundle or the
bundled public CA store (certifi), never the process environment. Neutral ground: the config
loader checks a ``ca_file`` with it at load, the HTTP path builds its contexts
with it (ldap3 takes its own form: connectors/ldap/tls.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from .base import SettingError


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying TLS context: hostname checked, certificate required. Never anything else.
    A ``ca_file`` that cannot be used (missing, a folder, not PEM certificates) is a
    SettingError naming it, never a fallback to another store."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else certifi.where())
    except OSError as exc:                 # ssl.SSLError is one too
        reason = ("no PEM certificate in it" if isinstance(exc, ssl.SSLError)
                  else exc.strerror or str(exc))
        raise SettingError("ca_file", f"{ca_file}: cannot be used as a CA bundle ({reason})") \
            from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.keylog_filename = None      # SSLKEYLOGFILE must not write session keys to a file
    return ctx
