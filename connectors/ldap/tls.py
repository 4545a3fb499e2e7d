"""TLS that always verifies.

ldap3 does not verify certificates unless told to: every TLS connection here uses an
SSLContext with CERT_REQUIRED and host-name checking, trusting ``ca_file`` or the operating
system's store (never ``SSL_CERT_FILE``-style variables). Nothing turns it off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import ldap3


class VerifyingTls(ldap3.Tls):
    """ldap3's Tls with our SSLContext: certificate required and host name checked by
    Python's ssl module itself (ldap3's own Tls defaults to CERT_NONE)."""

    def __init__(self, context: ssl.SSLContext):
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection, do_handshake=False):
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host)


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """CERT_REQUIRED + check_hostname, trusting ``ca_file`` or the OS trust store. The OS
    store is located through OpenSSL's compiled-in paths, not SSL_CERT_FILE/SSL_CERT_DIR."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)     # verifies and checks host names
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        paths = ssl.get_default_verify_paths()
        cafile = paths.openssl_cafile if Path(paths.openssl_cafile).is_file() else None
        capath = paths.openssl_capath if Path(paths.openssl_capath).is_dir() else None
        if cafile or capath:
            ctx.load_verify_locations(cafile=cafile, capath=capath)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    return ctx
