"""The wire to a SCIM service provider: one pooled, paced, retrying httpx client.

It sends a request and turns every answer into a response or an error of the tree in
``connectors/base.py`` (what SCIM's statuses mean for the caller); it pages lists by
``startIndex``. What to send is :mod:`connectors.scim.target`'s business.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..base import (ConflictError, FatalTargetError, Interrupted, NotFoundError, RejectedError,
                    Secret, TransientError, is_loopback)
from ..http import HttpPolicy, RateLimiter, build_client, retrying, server_wait_hint

SCIM_JSON = "application/scim+json"
PAGE_SIZE = 100
TOKEN_HINT = ("the SCIM token was rejected (expired after one year, or regenerated?): "
              "create a new one in Split under Admin settings > Security > SCIM and update "
              "[target] token")


class ScimClient:
    """Requests to one SCIM base URL, paced as a ceiling and retried as the error tree says."""

    def __init__(self, url: str, token: Secret, policy: HttpPolicy = HttpPolicy(), *,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        """``clock`` and ``sleep`` are the time seam: pacing and retry waits use only them."""
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        self._where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        if not _https_or_loopback(self.url):
            raise FatalTargetError(f"[target] url must use https:// (only a loopback address "
                                   f"may use http://): {self.url}")
        self.policy = policy
        self.limiter = RateLimiter(policy.rate_limit, burst=1.0,  # a ceiling, not an average
                                   clock=clock, sleep=sleep)
        self._sleep = sleep
        self.cancel: threading.Event | None = None    # set: send nothing new, cut waits short
        self.client = build_client(self.url + "/", policy, transport=transport, headers={
            "Authorization": f"Bearer {token.reveal()}",
            "Accept": SCIM_JSON,
        })
        self.requests_sent = 0
        self.write_requests = 0

    def close(self) -> None:
        self.client.close()

    def _pause(self, seconds: float) -> None:
        if self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            self._sleep(seconds)

    def _send_once(self, method: str, path: str, json: Any = None,
                   params: Mapping[str, Any] | None = None) -> httpx.Response:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted(f"{method} {path}: not sent, a stop was requested")
        self.limiter.acquire()
        self.requests_sent += 1
        if method != "GET":
            self.write_requests += 1
        headers = {"Content-Type": SCIM_JSON} if json is not None else None
        try:
            response = self.client.request(method, path, json=json, params=params, headers=headers)
        except httpx.ConnectError as exc:
            raise TransientError(f"cannot connect to the SCIM target at {self._where}: "
                                 f"{_cause(exc)}; check [target] url and the network",
                                 sent=False, unreachable=True) from None
        except httpx.ConnectTimeout:
            raise TransientError(f"cannot connect to the SCIM target at {self._where}: no answer "
                                 "within 10s; check [target] url and the network",
                                 sent=False, unreachable=True) from None
        except httpx.TimeoutException:
            raise TransientError(f"{method} {path}: no answer within {self.policy.timeout:g}s",
                                 sent=True) from None
        except httpx.TransportError as exc:
            raise TransientError(f"{method} {path}: connection failed ({type(exc).__name__})",
                                 sent=True) from None
        _raise_for_status(method, path, response)
        return response

    def call(self, method: str, path: str, json: Any = None,
             params: Mapping[str, Any] | None = None, *, idempotent: bool = True) -> httpx.Response:
        """Send with pacing and bounded retries. A non-idempotent request whose outcome is
        unknown is not resent here: the caller looks the object up first."""
        policy = retrying(self.policy, self.limiter, sleep=self._pause)
        if not idempotent:
            policy = policy.copy(retry=_retry_unless_sent)
        try:
            return policy(self._send_once, method, path, json, params)
        except TransientError as exc:
            if exc.unreachable:     # retries spent and still no connection: stop the run
                raise FatalTargetError(str(exc)) from None
            raise

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every resource of a list, paged by 1-based startIndex, advancing by what came back."""
        start, seen = 1, 0
        while True:
            page = self.call("GET", path, params={**(params or {}), "startIndex": start,
                                                  "count": PAGE_SIZE}).json()
            resources = page.get("Resources") or []
            yield from resources
            seen += len(resources)
            total = page.get("totalResults")
            if not resources or (total is not None and seen >= int(total)):
                return
            if total is None and len(resources) < PAGE_SIZE:
                return              # no total given: a short page is the last one
            start += len(resources)


def _cause(exc: Exception) -> str:
    """The OS-level reason of a connection error ("Connection refused", a DNS failure, a
    certificate problem), without the URL."""
    text = str(exc).strip() or type(exc).__name__
    return text.split("] ", 1)[-1] if text.startswith("[") else text


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    return is_loopback(parts.hostname)


def _retry_unless_sent(state) -> bool:
    exc = state.outcome.exception() if state.outcome else None
    return isinstance(exc, TransientError) and not exc.sent


def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        # Never followed, never taken for success: a moved endpoint (e.g. after a move to
        # Harness FME) must be configured, not silently written through.
        raise FatalTargetError(f"{method} {path}: HTTP {status}: the SCIM endpoint redirects to "
                               f"{response.headers.get('Location', '(no Location)')}; "
                               "check [target] url", status)
    detail, scim_type = _error_body(response)
    where = f"{method} {path}: HTTP {status}"
    if status in (401, 403):
        raise FatalTargetError(f"{TOKEN_HINT} ({method} {path} answered HTTP {status})", status)
    if status == 429:
        raise TransientError(f"{where}: rate limited", status, retry_after=server_wait_hint(response),
                             sent=False)
    if status >= 500:
        # Only a 503 reliably means "not processed"; behind a gateway a 500, 502 or 504 may
        # come after the request was carried out, so a create must be looked up, not resent.
        raise TransientError(f"{where}: {detail or 'server error'}", status,
                             retry_after=server_wait_hint(response) if status == 503 else None,
                             sent=status != 503)
    if status == 404:
        raise NotFoundError(f"{where}: not found on the target", status)
    if status == 409:
        raise ConflictError(f"{where}: {detail or 'already exists'}", status, scim_type)
    raise RejectedError(f"{where}: {detail or 'rejected'}" + (f" ({scim_type})" if scim_type else ""),
                        status, scim_type)


def _error_body(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return "", None
    if not isinstance(body, dict):
        return "", None
    detail = body.get("detail") or body.get("message") or ""
    return str(detail)[:300], body.get("scimType")
