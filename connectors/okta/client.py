"""The Okta Management API on the shared HTTP path: its answers, its budgets, its paging.

- Errors: ``errorCode``/``errorSummary`` bodies; 401/403 are SourceAuthError (the token
  endpoint's 400 too), a 404 on a group that was listed a moment ago is :class:`Gone`.
- Rate limits: every response carries ``X-Rate-Limit-Limit/-Remaining/-Reset`` for its own
  bucket (roughly one per endpoint). :class:`Budgets` keeps the last values per endpoint and
  pauses the shared limiter before the budget runs out, until the reset time measured against
  the response's ``Date``. A 429 (an E0000047 body, or the concurrent-request limit where
  limit and remaining are both 0) waits until that reset plus one second, with bounded
  attempts; repeated headers take the minimum, as Okta's SDK does.
- Lists are bare JSON arrays; paging lives in ``Link`` headers (Okta sends ``self`` and
  ``next`` as two separate header lines). We follow ``rel="next"`` exactly as given until
  there is none and never infer the end from a short page: Okta returns short pages. A next
  link to another host than the org is refused (the shared path keeps credentials home).
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..base import SourceAuthError, SourceError, TransientError
from ..http import Failure, HttpClient, HttpPolicy, RateLimiter, Request, Vendor, server_wait_hint
from .auth import TOKEN_PATH, NonceRequired, api_token, service_app
from .dpop import dpop_error
from .settings import Settings, org_base

log = logging.getLogger(__name__)

PAGE_LIMIT = 200                      # Okta's maximum for users, its advice for groups
# /groups/{id}/users: Okta's documented default (older docs: 10 000; "the recommended page
# limit is now 200" to stay clear of request timeouts). Members are the one listing a full
# read makes per group, so the page is the largest Okta hands out by default: a group of up
# to 1 000 members costs one call, where 200 would cost five.
MEMBER_PAGE_LIMIT = 1000
RESET_MARGIN = 1.0                    # seconds added to a reset time (Date is truncated)
RATE_LIMITED = "E0000047"
_ID_SEGMENT = re.compile(r"^[A-Za-z0-9]{10,}$")


class Gone(SourceError):
    """404 on an object that was listed a moment ago (deleted while we read)."""


@dataclass
class Budget:
    limit: int
    remaining: int
    reset_at: float          # on our clock


class Budgets:
    """The last rate-limit headers seen per endpoint bucket, and the pause they call for."""

    def __init__(self, limiter: RateLimiter, clock: Callable[[], float],
                 headroom: int | None, max_wait: float):
        self._limiter, self._clock, self._headroom, self._max_wait = (limiter, clock, headroom,
                                                                      max_wait)
        self.by_bucket: dict[str, Budget] = {}

    def headroom(self, limit: int) -> int:
        if self._headroom is not None:
            return max(0, self._headroom)
        return max(1, limit // 10)

    def before(self, bucket: str) -> None:
        budget = self.by_bucket.get(bucket)
        if budget is None or budget.remaining > self.headroom(budget.limit):
            if budget is not None:
                budget.remaining -= 1   # count our own request until the answer corrects it
            return
        now = self._clock()
        if now < budget.reset_at:
            wait = budget.reset_at - now + RESET_MARGIN
            log.info("Okta rate limit for %s nearly used (%d of %d left); pausing %.0fs "
                     "until the window resets", bucket, budget.remaining, budget.limit, wait)
            self._limiter.pause_until(now + wait)
        budget.remaining = budget.limit

    def note(self, bucket: str, response: httpx.Response) -> None:
        limit = header_int(response, "X-Rate-Limit-Limit")
        remaining = header_int(response, "X-Rate-Limit-Remaining")
        reset_in = reset_in_of(response)
        if not limit or remaining is None or reset_in is None:
            return   # absent, or the concurrent-limit 429 (limit 0): nothing to plan with
        reset_in = min(reset_in, self._max_wait)
        self.by_bucket[bucket] = Budget(limit, remaining, self._clock() + reset_in)


class OktaVendor(Vendor):
    """What Okta's answers mean, and the per-endpoint budgets around every request."""

    def __init__(self, host: str, client_id: str | None, budgets: Budgets, max_attempts: int,
                 on_date: Callable[[float], None], dpop: bool = False):
        self.host, self.client_id, self.budgets = host, client_id, budgets
        self.max_attempts, self._on_date = max_attempts, on_date
        self.dpop = dpop                  # [source] dpop: proofs are sent
        self.name = f"Okta {host}"

    def _where(self, request: Request) -> str:
        return f"{request.where} on Okta {self.host}"

    def classify(self, request: Request, response: httpx.Response) -> Exception | None:
        status, what = response.status_code, describe(response)
        refusal = self._dpop_refusal(request, response)
        if refusal is not None:
            return refusal
        if request.path == TOKEN_PATH and status in (400, 401, 403):
            return SourceAuthError(
                f"Okta {self.host} refused the OAuth client assertion of client "
                f"{self.client_id} at {TOKEN_PATH} ({what}); check the app's public key, its "
                f"granted scopes and its admin role")
        if status == 401:
            return SourceAuthError(f"{self._where(request)} answered {what}: the "
                                   f"{'access token' if self.client_id else 'API token'} "
                                   f"is wrong, revoked or expired")
        if status == 403:
            return SourceAuthError(f"{self._where(request)} answered {what}: the credentials "
                                   f"lack the permission (admin role or scope) to read this")
        if status == 404 and request.path.startswith("/api/v1/groups/"):
            return Gone(f"{self._where(request)} answered {what}")
        return None

    def _dpop_refusal(self, request: Request, response: httpx.Response) -> Exception | None:
        """What a DPoP error means: a nonce to send again with, or which setting to fix."""
        if response.status_code not in (400, 401):
            return None
        error, description = dpop_error(response)
        said = f"{error}: {description.rstrip('.')}" if description else error
        if error == "use_dpop_nonce" and request.path == TOKEN_PATH:
            nonce = response.headers.get("DPoP-Nonce")
            if nonce:
                return NonceRequired(f"Okta {self.host} asked for a DPoP nonce", nonce)
            return SourceAuthError(f"Okta {self.host} asked for a DPoP nonce at {TOKEN_PATH} "
                                   "but sent none")
        if error != "invalid_dpop_proof":
            return None
        if not self.dpop:
            return SourceAuthError(
                f"Okta {self.host} requires DPoP for client {self.client_id} ({said}), but "
                f"[source] dpop = false: set dpop = true, or switch off \"Require Demonstrating "
                f"Proof of Possession (DPoP) header in token requests\" on the app")
        return SourceAuthError(
            f"Okta {self.host} refused the DPoP proof of {request.where} ({said}); check this "
            f"machine's clock (proofs carry the time) and [source] org_url")

    def throttled(self, response: httpx.Response) -> bool:
        return response.status_code == 429 or _error_code(response) == RATE_LIMITED

    def wait_hint(self, request: Request, response: httpx.Response) -> float | None:
        """Until the window resets, by the server's clock, plus a second; only for a 429
        (Okta's SDK retries a 503 at once). Says in the log which limit was hit."""
        if not self.throttled(response):
            return None
        hint = server_wait_hint(response)
        if hint is None:
            hint = reset_in_of(response)
        concurrent = header_int(response, "X-Rate-Limit-Limit") == 0
        log.warning("Okta rate limit hit (%s) on %s; waiting %s",
                    "concurrent requests" if concurrent else "request budget", request.path,
                    f"{hint + RESET_MARGIN:.0f}s" if hint is not None else "with backoff")
        return None if hint is None else hint + RESET_MARGIN

    def describe(self, request: Request, response: httpx.Response) -> str:
        return f"{self._where(request)} answered {describe(response)}"

    def rejected(self, request: Request, response: httpx.Response) -> Exception:
        return SourceError(self.describe(request, response))

    def transport_error(self, request: Request, failure: Failure,
                        exc: httpx.TransportError) -> Exception:
        if failure in (Failure.TIMEOUT, Failure.CONNECT_TIMEOUT):
            return TransientError(f"{self._where(request)} timed out", sent=True)
        return TransientError(f"{self._where(request)} failed ({type(exc).__name__})", sent=True)

    def gave_up(self, request: Request, error: TransientError) -> Exception:
        return SourceError(f"{error} (gave up after {self.max_attempts} attempts)")

    def broken(self, request: Request, problem: str) -> Exception:
        return SourceError(f"{self._where(request)}: {problem}")

    def before_send(self, request: Request) -> None:
        self.budgets.before(bucket_of(request.path))

    def after_answer(self, request: Request, response: httpx.Response) -> None:
        self.budgets.note(bucket_of(request.path), response)
        moment = date_of(response)
        if moment is not None:
            self._on_date(moment)


class OktaClient:
    """Requests to one Okta org: paced, budgeted, signed in, retried, paged."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 policy: HttpPolicy | None = None):
        self.base = org_base(settings.org_url)
        self.host = httpx.URL(self.base).host
        self.policy = policy or HttpPolicy(timeout=float(settings.timeout), concurrency=1,
                                           ca_file=settings.ca_file)
        self.limiter = RateLimiter(self.policy.rate_limit, clock=clock, sleep=sleep)
        self.budgets = Budgets(self.limiter, clock, settings.rate_limit_headroom,
                               self.policy.max_wait)
        self.first_date: float | None = None    # the server's Date of the first answer
        vendor = OktaVendor(self.host, settings.client_id if settings.oauth else None,
                            self.budgets, self.policy.max_attempts, self._saw_date,
                            dpop=settings.oauth and settings.dpop)
        if settings.oauth:
            assert settings.client_id and settings.private_key is not None
            auth: Any = service_app(settings.client_id, settings.private_key, settings.key_id,
                                    settings.scopes, self.base, self.host, clock,
                                    self._token_request, dpop=settings.dpop)
        else:
            assert settings.token is not None
            auth = api_token(settings.token)
        self.auth = auth
        self.http = HttpClient(self.base, vendor, self.policy, auth=auth, limiter=self.limiter,
                               headers={"Accept": "application/json"}, transport=transport,
                               clock=clock, sleep=sleep)

    def close(self) -> None:
        self.http.close()

    def _saw_date(self, moment: float) -> None:
        if self.first_date is None:
            self.first_date = moment

    def _token_request(self, form: Mapping[str, str],
                       headers: Mapping[str, str] | None = None) -> httpx.Response:
        return self.http.call(Request("POST", TOKEN_PATH, data=form, headers=headers or None,
                                      authenticate=False))

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        return self.http.call(Request("GET", url, params=params))

    def list(self, path: str, params: Mapping[str, Any]) -> Iterator[dict]:
        """Every item of a paged list, following ``Link: rel="next"`` as given."""
        def read(request: Request, response: httpx.Response):
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, list) or not all(isinstance(i, dict) and "id" in i
                                                     for i in body):
                raise SourceError(f"Okta {self.host} answered GET {path} with something other "
                                  f"than a JSON array of objects")
            next_url = response.links.get("next", {}).get("url")
            return body, (Request("GET", next_url) if next_url else None)

        pages = 0
        try:
            for items in self.http.pages(Request("GET", path, params=params), read):
                pages += 1
                yield from items
        except Gone:
            if not pages:
                raise
            # A 404 past the first page is no proof of a deletion (a cursor Okta no longer
            # takes, say): the group would be deleted from Split on the strength of half a
            # read. Fail the read; a group really deleted is gone from the next listing.
            raise SourceError(f"Okta {self.host} answered 404 after {pages} page(s) of GET "
                              f"{path}; refusing an incomplete read") from None

    def members(self, gid: str) -> list[dict]:
        return list(self.list(f"/api/v1/groups/{gid}/users", {"limit": MEMBER_PAGE_LIMIT}))


def bucket_of(path: str) -> str:
    """Okta counts requests per endpoint; ids are folded so all groups share one bucket."""
    return "/".join("{id}" if _ID_SEGMENT.match(p) and i > 3 else p
                    for i, p in enumerate(path.split("/")))


def header_int(response: httpx.Response, name: str) -> int | None:
    """Okta sometimes repeats rate-limit headers; like its SDK, take the smallest value."""
    values = []
    for raw in response.headers.get_list(name, split_commas=True):
        try:
            values.append(int(float(raw)))
        except ValueError:
            pass
    return min(values) if values else None


def date_of(response: httpx.Response) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def reset_in_of(response: httpx.Response) -> float | None:
    """Seconds until the rate-limit window resets, by the server's clock (reset - Date)."""
    reset = header_int(response, "X-Rate-Limit-Reset")
    server_now = date_of(response)
    if reset is None or server_now is None:
        return None
    return max(0.0, reset - server_now)


def _body(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(response: httpx.Response) -> str:
    return str(_body(response).get("errorCode") or "") if response.status_code >= 400 else ""


def describe(response: httpx.Response) -> str:
    """``HTTP 401 E0000011 (Invalid token provided)``: status plus Okta's error code."""
    text = f"HTTP {response.status_code}"
    body = _body(response)
    code = body.get("errorCode") or body.get("error")
    summary = body.get("errorSummary") or body.get("error_description")
    if code:
        text += f" {code}"
    if summary:
        text += f" ({str(summary).rstrip('.')[:200]})"
    return text
