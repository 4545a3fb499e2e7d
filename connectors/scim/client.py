"""The wire to a SCIM service provider, on the shared HTTP path (``connectors/http/``).

What SCIM's answers mean for the caller (:class:`ScimVendor`: the error tree of
``connectors/base.py``) and how its lists page (``startIndex``/``totalResults``). What to send
is :mod:`connectors.scim.target`'s business.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..base import (ConflictError, FatalTargetError, NotFoundError, RejectedError, Secret,
                    TransientError, UnsupportedError, is_loopback)
from ..http import (Failure, HeaderAuth, HttpClient, HttpPolicy, RateLimiter, Request, Vendor,
                    os_reason)
from . import answers

SCIM_JSON = "application/scim+json"
COLLECTIONS = ("Users", "Groups")     # always served by a SCIM base URL
PAGE_SIZE = 100
TOKEN_HINT = ("the SCIM token was rejected (expired after one year, or regenerated?): "
              "create a new one in Split under Admin settings > Security > SCIM and update "
              "[target] token")


def suggested_base(url: str) -> str | None:
    """The SCIM base URL ``url`` was probably meant to be, or None when no better form is
    known: a collection or anything after ``/scim/v2`` cut off, ``/v2`` added after a
    trailing ``/scim``, ``/scim/v2`` added to a bare host, a query string dropped."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    while path.rsplit("/", 1)[-1] in ("Users", "Groups", "ServiceProviderConfig"):
        path = path.rsplit("/", 1)[0]
    at = path.lower().find("/scim/v2")
    if at >= 0:
        path = path[:at + len("/scim/v2")]
    elif path.lower().endswith("/scim"):
        path += "/v2"
    elif not path:
        path = "/scim/v2"
    suggested = parts._replace(path=path, query="", fragment="").geturl()
    return None if suggested == url.rstrip("/") else suggested


class ScimVendor(Vendor):
    """SCIM 2.0 answers (RFC 7644 §3.12) in the target's error tree."""

    name = "the SCIM target"

    def __init__(self, where: str, timeout: float, base: str = ""):
        self.where = where              # host:port, for connection errors
        self.timeout = timeout
        self.base = base                # [target] url, for a base URL that is not one

    def classify(self, request: Request, response: httpx.Response) -> Exception | None:
        status = response.status_code
        where = f"{request.method} {request.url}: HTTP {status}"
        if 300 <= status < 400:
            # Never followed, never taken for success: a moved endpoint (e.g. after a move to
            # Harness FME) must be configured, not silently written through.
            return FatalTargetError(f"{where}: the SCIM endpoint redirects to "
                                    f"{response.headers.get('Location', '(no Location)')}; "
                                    "check [target] url", status)
        if status in (401, 403):
            return FatalTargetError(f"{TOKEN_HINT} ({request.method} {request.url} answered "
                                    f"HTTP {status})", status)
        if status == 404:
            if request.url in COLLECTIONS:
                return FatalTargetError(self._no_collection(request), status)
            return NotFoundError(f"{where}: not found on the target", status)
        if status == 409:
            detail, scim_type = _error_body(response)
            return ConflictError(f"{where}: {detail or 'already exists'}", status, scim_type)
        if status == 501:
            detail, scim_type = _error_body(response)
            return UnsupportedError(f"{where}: the SCIM target does not implement this request"
                                    f"{' (' + what_of(request) + ')' if what_of(request) else ''}"
                                    f"{': ' + detail if detail else ''}; it is not retried",
                                    status, scim_type)
        return None

    def _no_collection(self, request: Request) -> str:
        """A 404 on /Users or /Groups itself: the URL is not a SCIM base URL (a collection
        is never missing from one that serves it)."""
        text = (f"{request.method} {self.base}/{request.url}: HTTP 404: there is no SCIM "
                f"{request.url} here, so [target] url ({self.base}) is not the SCIM base URL; "
                "the one Split shows (Admin settings > Security > SCIM) ends in /scim/v2")
        suggested = suggested_base(self.base)
        if suggested:
            text += f": did you mean {suggested}?"
            if urlsplit(self.base).query:
                text += " (a base URL carries no query string)"
        if request.url == "Groups":
            text += " (or this target keeps no groups: then set [sync] groups = false)"
        return text

    def describe(self, request: Request, response: httpx.Response) -> str:
        where = f"{request.method} {request.url}: HTTP {response.status_code}"
        if self.throttled(response):
            return f"{where}: rate limited"
        return f"{where}: {_error_body(response)[0] or 'server error'}"

    def rejected(self, request: Request, response: httpx.Response) -> Exception:
        status = response.status_code
        detail, scim_type = _error_body(response)
        return RejectedError(f"{request.method} {request.url}: HTTP {status}: "
                             f"{detail or 'rejected'}" + (f" ({scim_type})" if scim_type else ""),
                             status, scim_type)

    def transport_error(self, request: Request, failure: Failure,
                        exc: httpx.TransportError) -> Exception:
        where = f"{request.method} {request.url}"
        if failure is Failure.CONNECT_TIMEOUT:
            return TransientError(f"cannot connect to the SCIM target at {self.where}: no "
                                  "answer within 10s; check [target] url and the network",
                                  sent=False, unreachable=True)
        if failure in (Failure.CONNECT, Failure.TLS):
            return TransientError(f"cannot connect to the SCIM target at {self.where}: "
                                  f"{os_reason(exc)}; check [target] url and the network",
                                  sent=False, unreachable=True)
        if failure is Failure.TIMEOUT:
            return TransientError(f"{where}: no answer within {self.timeout:g}s", sent=True)
        return TransientError(f"{where}: connection failed ({type(exc).__name__})", sent=True)

    def gave_up(self, request: Request, error: TransientError) -> Exception:
        if error.unreachable:     # retries spent and still no connection: stop the run
            return FatalTargetError(str(error))
        return error

    def broken(self, request: Request, problem: str) -> Exception:
        return FatalTargetError(f"{request.method} {request.url}: {problem}")


class ScimClient:
    """Requests to one SCIM base URL, paced as a ceiling and retried as the error tree says."""

    def __init__(self, url: str, token: Secret, policy: HttpPolicy = HttpPolicy(), *,
                 transport: httpx.BaseTransport | None = None,
                 limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        """``clock`` and ``sleep`` are the time seam: pacing and retry waits use only them.
        ``limiter`` is the pace learned by an earlier client of the same target (the
        daemon's previous cycle); without it the pace starts at ``rate_limit``."""
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        if not _https_or_loopback(self.url):
            raise FatalTargetError(f"[target] url must use https:// (only a loopback address "
                                   f"may use http://): {self.url}")
        self.policy = policy
        self.http = HttpClient(self.url + "/", ScimVendor(where, policy.timeout, self.url), policy,
                               auth=HeaderAuth("Bearer", token), limiter=limiter,
                               burst=1.0,                 # a ceiling, not an average
                               headers={"Accept": SCIM_JSON},
                               transport=transport, clock=clock, sleep=sleep)

    # The engine sets ``cancel`` (send nothing new, cut waits short); the rest is for reports.
    @property
    def cancel(self) -> threading.Event | None:
        return self.http.cancel

    @cancel.setter
    def cancel(self, event: threading.Event | None) -> None:
        self.http.cancel = event

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    @property
    def write_requests(self) -> int:
        return self.http.write_requests

    @property
    def limiter(self) -> RateLimiter:
        return self.http.limiter

    @property
    def client(self) -> httpx.Client:
        return self.http.client

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, json: Any = None,
             params: Mapping[str, Any] | None = None, *, idempotent: bool = True) -> httpx.Response:
        """Send with pacing and bounded retries. A non-idempotent request whose outcome is
        unknown is not resent here: the caller looks the object up first."""
        headers = {"Content-Type": SCIM_JSON} if json is not None else None
        return self.http.call(Request(method, path, params=params, json=json, headers=headers,
                                      idempotent=idempotent))

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every resource of a list, paged by 1-based startIndex, advancing by what came back.

        The listing must make sense, or it stops (FatalTargetError) rather than loop or be
        trusted: each page is a ListResponse (:mod:`.answers`); a page that brings nothing new
        (the same page again, a server ignoring startIndex) or more objects than
        ``totalResults`` announced stops it; an object seen on an earlier page (a shift while
        paging) is yielded once; the shared path caps the pages (``MAX_PAGES``).
        """
        seen: set[str] = set()

        def read(request: Request, response: httpx.Response):
            try:
                resources, total = answers.page_of(request.where,
                                                   answers.json_of(request.where, response))
            except answers.Malformed as exc:
                raise FatalTargetError(str(exc)) from None
            fresh = [r for r in resources if answers.id_of(request.where, r) not in seen]
            if resources and not fresh:
                # a server that ignores startIndex answers the same page for ever
                raise self.http.vendor.broken(request, "the page brought nothing new (the same "
                                                       "page came back for a later startIndex?); "
                                                       "stopping rather than looping")
            seen.update(answers.id_of(request.where, r) for r in fresh)
            if total is not None and len(seen) > total:
                raise self.http.vendor.broken(request, f"the listing holds more than the {total} "
                                                       "objects it announced (totalResults); "
                                                       "stopping rather than trusting it")
            if not resources or (total is not None and len(seen) >= total):
                return fresh, None
            if total is None and len(resources) < PAGE_SIZE:
                return fresh, None              # no total given: a short page is the last one
            start = int(request.params["startIndex"]) + len(resources)
            return fresh, Request("GET", path, params={**request.params, "startIndex": start})

        first = Request("GET", path, params={**(params or {}), "startIndex": 1,
                                             "count": PAGE_SIZE})
        for resources in self.http.pages(first, read):
            yield from resources


def what_of(request: Request) -> str:
    """The PATCH operations of a request in a few words (``remove members[value eq ...]``), so
    a refusal names the request shape the target does not support."""
    body = request.json if isinstance(request.json, dict) else {}
    shapes = []
    for operation in body.get("Operations") or []:
        if isinstance(operation, dict):
            path = str(operation.get("path") or "(no path)")
            if path.startswith("members["):
                path = "members[value eq ...]"
            shape = f"{operation.get('op')} {path}"
            if shape not in shapes:
                shapes.append(shape)
    return ", ".join(shapes[:3])


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    return is_loopback(parts.hostname)


def _error_body(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return "", None
    if not isinstance(body, dict):
        return "", None
    detail = body.get("detail") or body.get("message") or ""
    scim_type = body.get("scimType")
    return str(detail)[:300], scim_type[:60] if isinstance(scim_type, str) else None
