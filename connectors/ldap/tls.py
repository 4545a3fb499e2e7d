"""TLS that always verifies.

ldap3 does not verify certificates unless told to: every TLS connection here uses an
SSLContext with CERT_REQUIRED and host-name checking, trusting ``ca_file`` or the operating
system's store (never ``SSL_CERT_FILE``-style variables). Nothing turns it off.

The TLS runs over memory BIOs (:class:`MemoryTls`) rather than in an ``SSLSocket``: the same
context and the same checks in the handshake, but an SSLSocket reads every TLS record with
two system calls (its header, then the rest), and slapd sends one record per search entry;
here the socket is read in large blocks and the records are taken from memory.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

BLOCK = 262144          # what one read of the socket may take

import ldap3


class VerifyingTls(ldap3.Tls):
    """ldap3's Tls with our SSLContext: certificate required and host name checked by
    Python's ssl module itself (ldap3's own Tls defaults to CERT_NONE)."""

    def __init__(self, context: ssl.SSLContext):
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection, do_handshake=False):
        tls = MemoryTls(connection.socket, self._context, connection.server.host)
        tls.do_handshake()          # ldap3 asks for it at once, for ldaps and StartTLS alike
        connection.socket = tls


class MemoryTls:
    """A TLS client connection over the connected socket ``plain``, with the socket calls
    ldap3 makes (``sendall``, ``recv``, ``settimeout``, ``shutdown``, ``close``, ...). The
    socket's timeout applies to every read and write of it, the handshake's included; a
    closed connection reads as ``b""``, as an SSLSocket's does."""

    def __init__(self, plain: socket.socket, context: ssl.SSLContext, host: str):
        self.plain = plain
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=False,
                                     server_hostname=host)

    def __getattr__(self, name: str):
        return getattr(self.plain, name)     # settimeout, setsockopt, getpeername, fileno...

    def do_handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._tls.read(size)
            except ssl.SSLWantReadError:
                self._flush()                # a TLS 1.3 key update may want an answer
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def sendall(self, data: bytes) -> None:
        while True:
            try:
                self._tls.write(data)
                break
            except ssl.SSLWantReadError:     # a renegotiation (TLS 1.2) wants to read first
                self._flush()
                self._fill()
        self._flush()

    def getpeercert(self, binary_form: bool = False):
        return self._tls.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._tls.version()

    def shutdown(self, how: int) -> None:
        self.plain.shutdown(how)

    def close(self) -> None:
        self.plain.close()

    def _fill(self) -> None:
        data = self.plain.recv(BLOCK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self.plain.sendall(self._outgoing.read())


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
