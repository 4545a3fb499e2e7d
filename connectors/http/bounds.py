"""What comes in: every request ends by its deadline, no answer is larger than the cap, and
no answer carries a secret further.

httpx's timeouts bound each socket operation, not the request: a server that drips one byte
a second answers every read in time and holds the request for ever. :func:`deadline` sets,
for the calling thread, the moment by which the whole exchange must be over; the sockets of
:func:`transport` (connect, TLS handshake, every read and write) are given no more than the
time left, and fail as a timeout once it is spent. The pool's connections are shared by the
threads, the deadline is not: each socket call reads the deadline of the thread making it.

:func:`read_capped` reads an answer's body (decoded, so a compressed bomb counts at its real
size) up to a byte cap, refusing a declared ``Content-Length`` above it before reading
anything.

:func:`scrubbed` removes from an answer's body and headers every secret of the process
(:mod:`connectors.redaction`) and the credentials the request itself carried: a server or a
proxy that echoes the request's headers in an error page hands nothing on, whatever later
quotes that page (an error message, the log, the snapshot).

The deadline is real time (``time.monotonic``): sockets wait in real time whatever clock
pacing and retries are given.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing

import httpcore
import httpx

from ..redaction import redact, redact_bytes
from .pool import Lanes

_CHUNK = 64 * 1024          # writes are cut so that one large body cannot outlive the deadline


class _Deadline(threading.local):
    at: float | None = None


_current = _Deadline()


@contextlib.contextmanager
def deadline(seconds: float | None):
    """Within the block, this thread's exchanges must be over ``seconds`` from now."""
    previous = _current.at
    _current.at = None if seconds is None else time.monotonic() + seconds
    try:
        yield
    finally:
        _current.at = previous


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The timeout for one socket operation: no more than what is left of the deadline."""
    at = _current.at
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed before the exchange was over")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _CHUNK):
            self._inner.write(buffer[start:start + _CHUNK],
                              _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname,
                                             _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self):
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout),
                                               local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable | None = None
                            ) -> httpcore.NetworkStream:  # pragma: no cover - no unix sockets
        return _Stream(self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def transport(ssl_context, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, on sockets that honour the thread's :func:`deadline`, with a lane
    of one connection per request in flight (:mod:`.pool`). (httpx takes no network backend,
    so its pool is rebuilt with one; the drip-server tests in tests/test_bounds.py fail if a
    new httpx stops using it.)"""
    made = httpx.HTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    backend = _Backend()

    def lane() -> httpcore.ConnectionPool:
        return httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=1, max_keepalive_connections=1,
            keepalive_expiry=limits.keepalive_expiry, http1=True, http2=False,
            network_backend=backend)

    made._pool = Lanes(lane, limits.max_connections or 1)
    return made


class TooLarge(Exception):
    def __init__(self, limit: int, declared: int | None = None):
        super().__init__(f"the answer is larger than {describe_size(limit)}"
                         + (f" ({describe_size(declared)} announced)" if declared else ""))
        self.limit = limit


def read_capped(response: httpx.Response, limit: int) -> httpx.Response:
    """The answer with its body read (decoded) in full, or :class:`TooLarge` past ``limit``
    bytes. ``response`` was sent with ``stream=True``; the caller closes it."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit, int(declared))
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
    # The body is decoded now: it no longer has the encoding or the length the server gave
    # (an answer sent as it is, the usual case, keeps its headers: they say the body's length).
    headers: httpx.Headers | list = response.headers
    if "content-encoding" in headers or "transfer-encoding" in headers \
            or declared not in ("", str(size)):
        headers = [(k, v) for k, v in headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks),
                          request=response.request)


def describe_size(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def credentials_of(headers: typing.Mapping[str, str], data: typing.Mapping | None = None) -> list[str]:
    """The secret values a request carries: its credential headers (whole, and without their
    scheme: ``Bearer``, ``SSWS``) and form fields that name a secret."""
    values = []
    for value in headers.values():
        values.append(value)
        scheme, _, rest = value.partition(" ")
        if rest and scheme.isalpha():
            values.append(rest.strip())
    for key, value in (data or {}).items():
        if isinstance(value, str) and any(word in str(key).lower() for word in
                                          ("secret", "assertion", "password", "token")):
            values.append(value)
    return values


def scrubbed(response: httpx.Response, extra: typing.Sequence[str] = ()) -> httpx.Response:
    """The answer without any known secret, or ``extra`` value, in its body or headers."""
    body = redact_bytes(response.content, extra)
    received = response.headers.multi_items()
    headers = [(k, redact(v, extra)) for k, v in received]
    if body is response.content and all(new is old for (_, new), (_, old) in
                                        zip(headers, received)):
        return response             # redact() hands back the very text it found nothing in
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    return httpx.Response(response.status_code, headers=headers, content=body,
                          request=response.request)
