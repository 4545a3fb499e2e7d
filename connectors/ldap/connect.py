"""Reaching the directory: the URLs in order (failover), TLS, the bind."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

import ldap3

from ..base import SettingError, SourceAuthError, SourceError
from .errors import ldap_errors
from .settings import Settings, host_of, refusal_in_clear
from .tls import VerifyingTls, verifying_context
from .wire import install_receiver

log = logging.getLogger(__name__)


class Connector:
    """Opens bound connections for ``settings``. ``factory`` (a test seam) gives an unopened
    ldap3 Connection for a URL instead, e.g. one on ldap3's MOCK_SYNC strategy."""

    def __init__(self, settings: Settings,
                 factory: Callable[[str], ldap3.Connection] | None = None):
        self.settings = settings
        self._factory = factory
        self._tls_context: ssl.SSLContext | None = None

    def connect(self) -> tuple[ldap3.Connection, str]:
        """Bind to the first URL that answers; a rejected password stops at once (trying
        the next controller with it would only lock the account sooner)."""
        problems = []
        for url in self.settings.url:
            try:
                return self._open(url), url
            except SourceAuthError:
                raise
            except SourceError as exc:
                log.warning("%s", exc)
                problems.append(str(exc))
        if len(problems) == 1:
            raise SourceError(problems[0])
        raise SourceError("no LDAP server could be reached: " + " ".join(problems))

    def _open(self, url: str) -> ldap3.Connection:
        parts = urlsplit(url)
        host = host_of(url)
        s = self.settings
        if self._factory is not None:
            conn = self._factory(url)
        else:
            use_ssl = parts.scheme == "ldaps"
            tls = VerifyingTls(self._context()) if use_ssl or s.start_tls else None
            server = ldap3.Server(parts.hostname, port=parts.port or (636 if use_ssl else 389),
                                  use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                                  connect_timeout=s.timeout)
            conn = ldap3.Connection(
                server, user=s.bind_dn, password=s.password.reveal() if s.password else None,
                authentication=ldap3.SIMPLE if s.bind_dn else ldap3.ANONYMOUS,
                raise_exceptions=True, read_only=True, receive_timeout=max(1, round(s.timeout)),
                check_names=False, return_empty_attributes=False, auto_range=False,
                auto_referrals=False, fast_decoder=True)
            if s.password_in_clear(url):    # validate() refused it; this is the last line
                raise SettingError("url", refusal_in_clear(url))
        with ldap_errors(host, "connection", bind_dn=s.bind_dn, ca_file=s.ca_file):
            try:
                conn.open()
                _no_delay(conn)
                if s.start_tls:
                    conn.start_tls()
                conn.bind()
            except BaseException:
                quietly_unbind(conn)
                raise
        install_receiver(conn)
        log.debug("bound to %s as %s", host, s.bind_dn or "anonymous")
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = verifying_context(self.settings.ca_file)
        return self._tls_context


def _no_delay(conn: ldap3.Connection) -> None:
    """TCP_NODELAY (ldapsearch does not wait either): each LDAP request is one small write; with
    Nagle's algorithm the bind right after the TLS handshake waits for the server's delayed
    ACK (about 40 ms on Linux) before it leaves."""
    sock = getattr(conn, "socket", None)
    sock = getattr(sock, "plain", sock)           # under MemoryTls
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:               # not fatal: only slower
            pass


def quietly_unbind(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except Exception:               # the socket may already be gone; nothing to release
        pass
