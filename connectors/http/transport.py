"""The client every HTTP connector talks through, and what can go wrong before an answer.

One ``httpx.Client`` per remote, built by :func:`build_client`: TLS always verified (against
``ca_file`` when given, else the bundled public CA store; the process-wide
``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` variables are deliberately not consulted so that a
config means the same thing on every machine), no proxy or ``.netrc`` from the environment,
redirects never followed. Every request sent and every answer received counts as progress for
the daemon's watchdog (:func:`connectors.base.activity`). Its sockets honour the deadline of
the request in progress (:mod:`.bounds`): ``timeout`` bounds the whole exchange, not each read.
"""

from __future__ import annotations

import enum
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..base import activity
from ..tls import tls_context
from . import bounds

# httpx logs every request URL at INFO (query strings hold e-mail addresses; a URL may hold
# credentials); httpcore logs headers at DEBUG. Neither belongs in an operator's log.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class HttpPolicy:
    timeout: float = 30.0          # seconds per request, all of it: connecting (at most 10),
                                   # sending, and receiving the whole answer
    rate_limit: float = 10.0       # requests per second, ceiling
    concurrency: int = 4           # requests in flight
    max_attempts: int = 6          # per request, first try included
    max_wait: float = 300.0        # longest single wait we accept from a server hint
    backoff_base: float = 0.5      # first exponential backoff step, seconds
    backoff_cap: float = 30.0      # longest exponential backoff step, seconds
    max_body: int = 100 << 20      # bytes: a larger answer (decoded) is refused, not read
    ca_file: Path | None = None


def _beat(_message) -> None:
    activity()


def build_client(base_url: str, policy: HttpPolicy, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> httpx.Client:
    timeout = httpx.Timeout(policy.timeout, connect=min(policy.timeout, 10.0))
    limits = httpx.Limits(max_connections=max(policy.concurrency, 1),
                          max_keepalive_connections=max(policy.concurrency, 1))
    context = tls_context(policy.ca_file)
    return _Client(
        base_url=base_url,
        headers={"User-Agent": "scim-agent/0.1", **(headers or {})},
        timeout=timeout,
        limits=limits,
        verify=context,
        trust_env=False,
        follow_redirects=False,
        transport=transport or bounds.transport(context, limits),
        # a request going out and an answer coming in both prove the process is not hung
        event_hooks={"request": [_beat], "response": [_beat]},
    )


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, not consulted for an answer that sets no cookie: the jar reads only
    ``Set-Cookie`` (``Set-Cookie2`` is off in its default policy), and the urllib adapters
    httpx builds to ask it cost more than the rest of reading an answer's headers."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class _Client(httpx.Client):
    """An ``httpx.Client`` whose cookies (still kept, still sent back) are a :class:`_Cookies`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cookies = None              # an empty _Cookies jar, through the setter below

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies) -> None:
        self._jar = _Cookies(cookies)


class Failure(enum.Enum):
    """How a request failed before any answer came, and whether it may have been carried out."""

    CONNECT = "connect"                  # refused, DNS, unreachable network: not sent
    CONNECT_TIMEOUT = "connect timeout"  # no connection within the connect timeout: not sent
    TLS = "tls"                          # the server's certificate did not verify: not sent
    TIMEOUT = "timeout"                  # no answer in time once sent: outcome unknown
    BROKEN = "broken"                    # the connection failed mid-exchange: outcome unknown

    @property
    def sent(self) -> bool:
        """The request may have reached the server (so a non-idempotent one is not resent)."""
        return self in (Failure.TIMEOUT, Failure.BROKEN)

    @property
    def unreachable(self) -> bool:
        """No connection at all: every other request to this remote will fail too."""
        return not self.sent


def failure_of(exc: httpx.TransportError) -> Failure:
    if isinstance(exc, httpx.ConnectTimeout):
        return Failure.CONNECT_TIMEOUT
    if isinstance(exc, httpx.ConnectError):
        return Failure.TLS if _certificate_failed(exc) else Failure.CONNECT
    if isinstance(exc, httpx.TimeoutException):
        return Failure.TIMEOUT
    return Failure.BROKEN


def _certificate_failed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):                  # httpx -> httpcore -> ssl: a short chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) \
                or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def os_reason(exc: Exception) -> str:
    """The OS-level reason of a connection error ("Connection refused", a DNS failure, a
    certificate problem), without the URL."""
    text = str(exc).strip() or type(exc).__name__
    return text.split("] ", 1)[-1] if text.startswith("[") else text
