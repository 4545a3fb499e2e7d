"""Microsoft Graph v1.0 on the shared HTTP path: its answers, its pacing, its paging.

- Pacing: Graph throttles per app and tenant with a token bucket measured in resource units
  (a user list costs 2, a member list 3, transitive members 5; the smallest tenants get 3 500
  units per 10 s). :data:`GRAPH_RATE_LIMIT` requests per second, even at 5 units each, stay
  under a third of that, so a read never has to be throttled to slow down.
- Throttling: 429/503 (and 500, 502, 504, dropped connections) are retried with
  ``Retry-After`` honoured, else exponential backoff, a bounded number of times; then the
  read fails. Other 5xx (a 501 for a property that cannot be listed) fail at once.
- An expired delta token (``410 Gone`` or ``400 syncStateNotFound``, after 7 days for
  directory objects) raises CursorExpired: the engine then does one full read.
- A 403 means the app lacks the application permissions or their admin consent.
- Collections page by ``@odata.nextLink``, delta rounds end in ``@odata.deltaLink``; links are
  followed as given and only on Graph's own origin, so the bearer token never goes elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..base import CursorExpired, SourceAuthError, SourceError, TransientError
from ..http import Auth, Failure, HttpClient, HttpPolicy, Request, Vendor, server_wait_hint

log = logging.getLogger(__name__)

GRAPH_RATE_LIMIT = 20.0              # requests per second, ceiling (see the module docstring)
PAGE_SIZE = 999                      # Graph's maximum $top for users and groups
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})


class NotFound(SourceError):
    """Graph answered 404 (an id that does not exist)."""


class GraphVendor(Vendor):
    """What Graph's answers mean."""

    name = "Graph"

    def __init__(self, origin: str, max_attempts: int):
        self.origin, self.max_attempts = origin, max_attempts

    def classify(self, request: Request, response: httpx.Response) -> Exception | None:
        status, path = response.status_code, request.path
        if status in RETRY_STATUSES:
            return None                  # the shared rules: retried, hints honoured
        code = _error_code(response)
        label = f"{status} {code}".strip()
        if "/delta" in path and (status == 410 or code.lower() in RESYNC_CODES):
            kind = "users" if path.rstrip("/").endswith("users/delta") else "groups"
            # the engine logs the full read that follows; once is enough
            log.debug("Graph says the %s delta token is no longer valid (%s)", kind, label)
            return CursorExpired(f"the Graph delta token for {kind} expired ({label}).")
        if status == 401:
            return SourceAuthError(f"Graph rejected the access token for GET {path} ({label}); "
                                   "check that graph_url belongs to the same cloud as "
                                   "authority.")
        if status == 403:
            return SourceAuthError(f"Graph refused GET {path} ({label}): grant the app the "
                                   "application permissions User.Read.All and "
                                   "GroupMember.Read.All, with admin consent.")
        if status == 404:
            return NotFound(f"Graph GET {path} found nothing ({label}).")
        return self.rejected(request, response)

    def wait_hint(self, request: Request, response: httpx.Response) -> float | None:
        return server_wait_hint(response)

    def describe(self, request: Request, response: httpx.Response) -> str:
        return f"HTTP {response.status_code} {_error_code(response)}".strip()

    def rejected(self, request: Request, response: httpx.Response) -> Exception:
        return SourceError(f"Graph GET {request.path} failed with "
                           f"{self.describe(request, response)}.")

    def transport_error(self, request: Request, failure: Failure,
                        exc: httpx.TransportError) -> Exception:
        if failure is Failure.TLS:
            return SourceError(f"TLS verification of {self.origin} failed; set ca_file to the "
                               "CA that signed its certificate.")
        return TransientError(f"{type(exc).__name__}", sent=True)

    def gave_up(self, request: Request, error: TransientError) -> Exception:
        return SourceError(f"Graph GET {request.path} kept failing: {error} (gave up after "
                           f"{self.max_attempts} attempts).")

    def broken(self, request: Request, problem: str) -> Exception:
        return SourceError(f"Graph {request.where}: {problem}.")


class GraphClient:
    """GETs against one Graph host: paced, signed in, retried, paged."""

    def __init__(self, graph_url: str, auth: Auth, policy: HttpPolicy, *,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.origin = origin(graph_url)
        self.http = HttpClient(graph_url.rstrip("/"),
                               GraphVendor(self.origin, policy.max_attempts), policy,
                               auth=auth, transport=transport, clock=clock, sleep=sleep)

    def close(self) -> None:
        self.http.close()

    def get(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One Graph GET, retried while throttled or failing transiently; the JSON body."""
        return _json(Request("GET", url), self.http.call(Request("GET", url, params=params)))

    def pages(self, path: str, params: Mapping[str, str] | None) -> Iterator[dict[str, Any]]:
        """Every page (its JSON body) of a collection or a delta round, following
        ``@odata.nextLink`` as given."""
        def read(request: Request, response: httpx.Response):
            body = _json(request, response)
            link = body.get("@odata.nextLink")
            return body, (Request("GET", link) if link else None)

        yield from self.http.pages(Request("GET", path, params=params), read)

    def list(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        return [item for page in self.pages(path, params) for item in _values(path, page)]

    def delta(self, url: str) -> tuple[list[dict[str, Any]], str]:
        """Follow a delta round to its end: (every object in order, the new deltaLink)."""
        items: list[dict[str, Any]] = []
        return items, self.delta_each(url, items.extend)

    def delta_each(self, url: str, take: Callable[[list[dict[str, Any]]], None]) -> str:
        """Follow a delta round to its end, handing each page's objects to ``take`` as it
        comes (a full groups round holds every membership of the tenant: it is merged page
        by page, not kept); the new deltaLink."""
        for page in self.pages(url, None):
            take(_values(url, page))
            if "@odata.deltaLink" in page:
                return page["@odata.deltaLink"]
        raise SourceError(f"Graph delta round on {urlsplit(url).path} ended without a "
                          "deltaLink.")


def odata_quote(value: str) -> str:
    """A string literal for an OData ``$filter``: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _json(request: Request, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise SourceError(f"Graph GET {request.path} returned a body that is not JSON.") \
            from None
    if not isinstance(body, dict):
        raise SourceError(f"Graph GET {request.path} returned JSON that is not an object.")
    return body


def _values(path: str, page: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A page's objects. Graph always sends ``value``, an empty list included: a page without
    one (a proxy's ``{}``, a cut answer) is refused, not read as the end of the listing,
    which would look like every later user gone."""
    values = page.get("value")
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise SourceError(f"Graph GET {urlsplit(path).path} returned a page without a list of "
                          f"objects in 'value'; refusing an incomplete read.")
    return values


def _error_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, Mapping):
        return str(error.get("code") or "")
    return str(error or "")
