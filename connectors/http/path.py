"""The one HTTP path: pace, authenticate, send, map transport errors, classify, retry, page.

:class:`HttpClient` does every step the same way for every remote; a :class:`Vendor` says
only what its answers mean, and an :class:`Auth` only how a request is signed in::

    call(request)                          tenacity: retry TransientError, hints honoured,
    └── send(request)                      never resend a non-idempotent request once sent
        ├── cancel set?                    Interrupted: nothing new goes out
        ├── same origin as the base URL?   else vendor.broken(): credentials stay home
        ├── vendor.before_send()           e.g. Okta's per-endpoint budget
        ├── limiter.acquire()              the shared token bucket: a ceiling, and a pace
        │                                  below it learned from the answers (AIMD)
        ├── auth.headers()                 a fixed header, or a token fetched when due
        ├── httpx send, read the answer    within policy.timeout in all (bounds.deadline),
        │                                  at most policy.max_body bytes (else vendor.broken());
        │                                  a transport error: vendor.transport_error(Failure)
        ├── scrub the answer               no secret, and not the credentials this request
        │                                  carried, survives in its body or headers
        ├── vendor.after_answer()          e.g. Okta's budget headers, the server's Date
        ├── limiter.throttled/succeeded()  a throttle cuts the shared pace, others climb;
        │                                  vendor.quota_spent(): quota gone until a reset
        │                                  the answer names? every worker waits for it
        ├── 401 and auth.renew()?          one more try with a fresh credential
        └── judge(response)                2xx: the answer
                                           vendor.classify(): what only this vendor means
                                           throttled or 5xx: TransientError, wait =
                                               vendor.wait_hint() (Retry-After and friends)
                                           501/505: a permanent refusal, never retried
                                           anything else: vendor.rejected()
    pages(first, read)                     read(request, response) -> (items, next request);
                                           a repeated next request or more than max_pages
                                           pages is vendor.broken(), never an endless loop
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from ..base import ConnectorError, Interrupted, TransientError
from .bounds import TooLarge, credentials_of, deadline, read_capped, scrubbed
from .transport import Failure, HttpPolicy, build_client, failure_of
from .waits import RateLimiter, quota_spent, retrying, server_wait_hint

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PAGES = 100_000                  # a loop guard, far above any real directory
# 5xx answers that say "never", not "not now": 501 Not Implemented is RFC 7644's answer for an
# operation the service provider does not support (§3.12), 505 a protocol it will not speak.
# Retrying them only repeats the refusal; they go to vendor.rejected() like a 4xx.
PERMANENT_5XX = frozenset({501, 505})
# 4xx that say "not now", not "no": the request was not carried out and may be sent again
# (408 Request Timeout, 423 Locked, 425 Too Early: RFC 9110 §15.5.9, RFC 4918, RFC 8470)
TRANSIENT_4XX = frozenset({408, 423, 425})


@dataclass(frozen=True)
class Request:
    """One request as the vendor code means it; ``url`` is relative to the client's base URL,
    or an absolute link the remote handed out (then sent with ``params=None``: httpx would
    replace the link's own query)."""

    method: str
    url: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    idempotent: bool = True          # False: not resent once it may have reached the server
    authenticate: bool = True        # False: sent without auth.headers() (a token request)

    @property
    def path(self) -> str:
        return httpx.URL(self.url).path

    @property
    def where(self) -> str:
        return f"{self.method} {self.path}"

    def key(self) -> tuple:
        """What makes two page requests the same page (for the loop guard)."""
        return (self.method, self.url, tuple(sorted((str(k), str(v)) for k, v in
                                                    (self.params or {}).items())))


class Auth(Protocol):
    """How a request is signed in. Kept apart from the vendor so that another scheme (a
    certificate-bound token, a proof per request) replaces this object and nothing else."""

    def headers(self, request: Request) -> Mapping[str, str]:
        """Headers that authenticate ``request`` (may fetch or renew a token first)."""

    def renew(self, request: Request, response: httpx.Response) -> bool:
        """The remote answered 401: forget what is cached; True if one more try is worth it."""


class HeaderAuth:
    """A fixed ``Authorization`` header: ``Bearer <token>`` (SCIM), ``SSWS <token>`` (Okta)."""

    def __init__(self, scheme: str, secret):
        self.scheme, self._secret = scheme, secret

    def headers(self, request: Request) -> Mapping[str, str]:
        return {"Authorization": f"{self.scheme} {self._secret.reveal()}"}

    def renew(self, request: Request, response: httpx.Response) -> bool:
        return False                 # nothing to renew: a refused token stays refused


class Vendor:
    """What one remote API tells the shared path. The defaults are plain HTTP; subclasses
    override what their API means differently. Every hook returns (not raises) its error."""

    name = "the remote"

    def classify(self, request: Request, response: httpx.Response) -> Exception | None:
        """The error a non-2xx answer means to this vendor, or None for the shared rules
        (throttled or 5xx: retried; anything else: :meth:`rejected`)."""
        return None

    def throttled(self, response: httpx.Response) -> bool:
        return response.status_code == 429

    def wait_hint(self, request: Request, response: httpx.Response) -> float | None:
        """Seconds the server asked us to wait before retrying; None: back off exponentially.
        Retry-After is defined for 429 and 503; other 5xx carry no promise."""
        if response.status_code in (429, 503):
            return server_wait_hint(response)
        return None

    def describe(self, request: Request, response: httpx.Response) -> str:
        """The message of a retryable answer (throttled or 5xx)."""
        return f"{request.where}: HTTP {response.status_code}"

    def rejected(self, request: Request, response: httpx.Response) -> Exception:
        return ConnectorError(f"{request.where}: HTTP {response.status_code}")

    def transport_error(self, request: Request, failure: Failure,
                        exc: httpx.TransportError) -> Exception:
        return TransientError(f"{request.where}: {failure.value} ({type(exc).__name__})",
                              sent=failure.sent, unreachable=failure.unreachable)

    def gave_up(self, request: Request, error: TransientError) -> Exception:
        """What a TransientError becomes once the retries are spent (or must not be made)."""
        return error

    def broken(self, request: Request, problem: str) -> Exception:
        """The remote's answers cannot be followed (a link elsewhere, a paging loop)."""
        return ConnectorError(f"{request.where}: {problem}")

    def quota_spent(self, response: httpx.Response) -> float | None:
        """Seconds to hold every request back because an answer says the quota is used up
        until a reset (:func:`~.waits.quota_spent`); None: send on."""
        return quota_spent(response)

    def before_send(self, request: Request) -> None:
        pass

    def after_answer(self, request: Request, response: httpx.Response) -> None:
        pass


class HttpClient:
    """Requests to one base URL on the shared path; see the module docstring for the steps.

    ``clock`` and ``sleep`` are the time seam: pacing and retry waits use only them. Setting
    ``cancel`` (a ``threading.Event``) stops new requests and cuts waits short.
    """

    def __init__(self, base_url: str, vendor: Vendor, policy: HttpPolicy = HttpPolicy(), *,
                 auth: Auth | None = None, limiter: RateLimiter | None = None,
                 burst: float | None = None, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.vendor = vendor
        self.policy = policy
        self.auth = auth
        self.limiter = limiter or RateLimiter(policy.rate_limit, burst=burst, clock=clock,
                                              sleep=sleep)
        self.client = build_client(base_url, policy, headers=headers, transport=transport)
        self._origin = _origin(self.client.base_url)
        # what httpx makes of a relative URL (after the base URL's path), worked out once per
        # spelling: parsing URLs was 7 % of the agent's CPU
        self._joined = functools.lru_cache(maxsize=1024)(self.client._merge_url)
        self._sleep = sleep
        self.cancel: threading.Event | None = None
        self.requests_sent = 0
        self.write_requests = 0

    def close(self) -> None:
        self.client.close()

    # -- one attempt --------------------------------------------------------------------------

    def send(self, request: Request) -> httpx.Response:
        """One attempt: the answer if it is a success, else the error it means."""
        response = self._exchange(request)
        if (response.status_code == 401 and request.authenticate and self.auth is not None
                and self.auth.renew(request, response)):
            log.info("%s refused a cached credential; trying once more with a fresh one",
                     self.vendor.name)
            response = self._exchange(request)
        return self._judge(request, response)

    def _exchange(self, request: Request) -> httpx.Response:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted(f"{request.where}: not sent, a stop was requested")
        url = self._target(request)
        self.vendor.before_send(request)
        ticket = self.limiter.acquire()
        headers = dict(request.headers or {})
        credentials: dict[str, str] = {}
        if request.authenticate and self.auth is not None:
            credentials = dict(self.auth.headers(request))
            headers.update(credentials)
        self.requests_sent += 1
        if request.method != "GET":
            self.write_requests += 1
        outgoing = self.client.build_request(request.method, url, params=request.params,
                                             json=request.json, data=request.data,
                                             headers=headers)
        try:
            with deadline(self.policy.timeout):
                streamed = self.client.send(outgoing, stream=True)
                try:
                    response = read_capped(streamed, self.policy.max_body)
                finally:
                    streamed.close()
        except httpx.TransportError as exc:
            raise self.vendor.transport_error(request, failure_of(exc), exc) from None
        except TooLarge as exc:
            raise self.vendor.broken(request, f"{exc}; refusing to read it") from None
        response = scrubbed(response, credentials_of(credentials, request.data))
        self.vendor.after_answer(request, response)
        self._learn(ticket, response)
        return response

    def _target(self, request: Request) -> httpx.URL:
        """Where ``request`` goes: a link the remote handed out only if it stays on the base
        URL's origin (else the credentials would go with it to another host)."""
        if "://" not in request.url:
            return self._joined(request.url)
        url = httpx.URL(request.url)
        if _origin(url) != self._origin:
            raise self.vendor.broken(request, f"refusing a link to another host ({url.host}), "
                                              f"which would receive the credentials")
        return url

    def _learn(self, ticket: int, response: httpx.Response) -> None:
        """Tell the shared bucket what this answer says about the pace: a throttle cuts it,
        an answer below 500 lets it climb back towards the ceiling (a 5xx says neither)."""
        limiter = self.limiter
        if response.status_code >= 400 and self.vendor.throttled(response):
            before = limiter.rate
            if limiter.throttled(ticket):
                log.info("%s throttled a request (HTTP %d): pacing %.1f requests/s, was %.1f "
                         "(ceiling %g)", self.vendor.name, response.status_code, limiter.rate,
                         before, limiter.ceiling)
        elif response.status_code < 500:
            limiter.succeeded(ticket)
            spent = self.vendor.quota_spent(response)
            if spent:
                # the server says the next request would be refused: wait, do not ask
                limiter.pause_for(min(spent, self.policy.max_wait))

    def _judge(self, request: Request, response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if 200 <= status < 300:
            return response
        error = self.vendor.classify(request, response)
        if error is not None:
            raise error
        if self.vendor.throttled(response) or status in TRANSIENT_4XX or \
                (status >= 500 and status not in PERMANENT_5XX):
            # Only a 503 or a 429 reliably means "not processed"; behind a gateway a 500, 502
            # or 504 may come after the request was carried out.
            raise TransientError(self.vendor.describe(request, response), status,
                                 retry_after=self.vendor.wait_hint(request, response),
                                 sent=status >= 500 and status != 503)
        raise self.vendor.rejected(request, response)

    # -- with retries -------------------------------------------------------------------------

    def call(self, request: Request) -> httpx.Response:
        """Send with pacing and bounded retries. A non-idempotent request whose outcome is
        unknown is not resent: the caller decides (a create looks the object up first)."""
        policy = retrying(self.policy, self.limiter, sleep=self._pause)
        if not request.idempotent:
            policy = policy.copy(retry=_retry_unless_sent)
        try:
            return policy(self.send, request)
        except TransientError as exc:
            raise self.vendor.gave_up(request, exc) from None

    def _pause(self, seconds: float) -> None:
        if self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            self._sleep(seconds)

    # -- paging -------------------------------------------------------------------------------

    def pages(self, first: Request,
              read: Callable[[Request, httpx.Response], tuple[T, Request | None]], *,
              max_pages: int = MAX_PAGES) -> Iterator[T]:
        """Each page of a list, as ``read`` makes it of an answer; ``read`` also names the
        next request (None: the last page). Each page is fetched only when the previous one
        has been consumed."""
        request, seen = first, {first.key()}
        for _ in range(max_pages):
            page, following = read(request, self.call(request))
            yield page
            if following is None:
                return
            if following.key() in seen:
                raise self.vendor.broken(request, "the next page repeats an earlier one; "
                                                  "stopping rather than looping")
            seen.add(following.key())
            request = following
        raise self.vendor.broken(first, f"more than {max_pages} pages; stopping rather than "
                                        "looping")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host.lower(), url.port)


def _retry_unless_sent(state) -> bool:
    exc = state.outcome.exception() if state.outcome else None
    return isinstance(exc, TransientError) and not exc.sent
