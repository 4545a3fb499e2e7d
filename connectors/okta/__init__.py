"""Okta source: users, groups and memberships from the Okta Management API (``/api/v1``).

Vendor traps handled here (wire details: ../shared/reference/sources.md section 1):

- Authentication is either an API token (``Authorization: SSWS ...``) or an OAuth 2.0 service
  app. Okta-scoped access tokens are only issued for ``private_key_jwt``: we sign a short-lived
  client assertion (aud = ``{org}/oauth2/v1/token``, iss = sub = client id) with PyJWT, cache
  the one-hour access token and renew it a few minutes before it expires. A 401 on a cached
  bearer token (revoked, clock jump) fetches one new token and tries once more.
- Lists are bare JSON arrays; paging lives in ``Link`` headers (Okta sends ``self`` and
  ``next`` as two separate header lines). We follow ``rel="next"`` exactly as given until
  there is none and never infer the end from a short page: Okta returns short pages.
- ``GET /api/v1/users`` without a filter silently omits DEPROVISIONED users. They are read
  with ``filter=status eq "DEPROVISIONED"`` so a deactivated person is deactivated in Split
  instead of vanishing (a vanished user is also deactivated, but only if it was pushed).
- Status -> active: ACTIVE, PASSWORD_EXPIRED, LOCKED_OUT, RECOVERY are active; SUSPENDED and
  DEPROVISIONED inactive; STAGED and PROVISIONED (never activated / no password yet) are left
  out unless ``include_staged``, and then pushed as active so the account is ready in Split.
- Incremental reads use ``filter=lastUpdated gt "<cursor>"`` for users (this filter reads the
  consistent store and includes DEPROVISIONED users) and ``lastUpdated``/
  ``lastMembershipUpdated`` for groups, re-reading the members of every changed group. The
  cursor is the server's own clock (``Date`` of the first response of a read) minus an
  overlap, so our clock's skew does not matter. Hard deletes appear in no filter: the periodic
  full read (``full_read_every``) catches them.
- Rate limits: every response carries ``X-Rate-Limit-Limit/-Remaining/-Reset`` for its own
  bucket (roughly one per endpoint). We keep the last values per endpoint and pause before the
  budget runs out, until the reset time measured against the response's ``Date``. A 429 (an
  E0000047 body, or the concurrent-request limit where limit and remaining are both 0) waits
  until that reset plus one second, with bounded attempts; repeated headers take the minimum.
- A failure anywhere in a read raises SourceError: no partial view ever leaves this module.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..base import (ChangeSet, SettingError, CursorExpired, Directory, GroupRecord, Secret,
                   SourceAuthError, SourceError, TransientError, UserRecord, is_loopback)
from ..http import HttpPolicy, RateLimiter, build_client, retrying, server_wait_hint

log = logging.getLogger(__name__)

DEFAULT_SCOPES = ("okta.users.read", "okta.groups.read")
PAGE_LIMIT = 200                      # Okta's maximum for users, its advice for groups/members
ACTIVE_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
INACTIVE_STATUSES = frozenset({"SUSPENDED", "DEPROVISIONED"})
STAGED_STATUSES = frozenset({"STAGED", "PROVISIONED"})
CURSOR_OVERLAP = timedelta(seconds=60)  # Date has 1 s resolution; writes land slightly late
TOKEN_PATH = "/oauth2/v1/token"
ASSERTION_LIFETIME = 300              # seconds; Okta accepts at most one hour
RESET_MARGIN = 1.0                    # seconds added to a reset time (Date is truncated)
_USER_FIELDS = ("status", "created", "activated", "statusChanged", "lastUpdated")
_GROUP_FIELDS = ("type", "created", "lastUpdated", "lastMembershipUpdated")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"
_ID_SEGMENT = re.compile(r"^[A-Za-z0-9]{10,}$")


class _Gone(SourceError):
    """404 on an object that was listed a moment ago (deleted while we read)."""


class OktaSource:
    type_name: ClassVar[str] = "okta"
    supports_changes: ClassVar[bool] = True
    # Records keep Okta's names flat: profile fields as "profile.<field>", plus status,
    # lastUpdated... (agent.mapping also reaches into nested dicts by dotted names).
    default_mapping: ClassVar[dict[str, tuple[str, ...]]] = {
        "userName": ("profile.email", "profile.login"),
        "email": ("profile.email",),
        "name.givenName": ("profile.firstName",),
        "name.familyName": ("profile.lastName",),
        "displayName": ("profile.displayName",),   # empty -> the engine uses first + last
        "title": ("profile.title",),
        "department": ("profile.department",),
    }
    group_name_attributes: ClassVar[tuple[str, ...]] = ("profile.name",)

    @dataclass(frozen=True)
    class Settings:
        org_url: str = field(metadata={"help": "Okta org URL, e.g. https://acme.okta.com "
                                                "(not the -admin URL)"})
        token: Secret | None = field(default=None, metadata={
            "help": "API token (sent as 'SSWS <token>'); or use client_id + private_key"})
        client_id: str | None = field(default=None, metadata={
            "help": "client id of an OAuth 2.0 API service app (private_key_jwt)"})
        private_key: Secret | None = field(default=None, metadata={
            "help": "PEM private key (RSA or EC) registered on that service app"})
        key_id: str | None = field(default=None, metadata={
            "help": "kid of that key, needed when the app has several keys"})
        scopes: tuple[str, ...] = field(default=DEFAULT_SCOPES, metadata={
            "help": "OAuth scopes to request (granted on the app's 'Okta API Scopes' tab)"})
        groups: tuple[str, ...] = field(default=(), metadata={
            "help": "Okta group names or ids: only their members are in scope (empty = all)"})
        include_staged: bool = field(default=False, metadata={
            "help": "also push STAGED and PROVISIONED (not yet activated) users"})
        full_read_every: timedelta = field(default=timedelta(hours=24), metadata={
            "help": "read everything at least this often (catches hard deletes)"})
        ca_file: Path | None = field(default=None, metadata={
            "help": "CA bundle to verify Okta's TLS certificate (default: public CAs)"})
        timeout: float = field(default=30.0, metadata={"help": "seconds per HTTP request"})
        rate_limit_headroom: int | None = field(default=None, metadata={
            "help": "requests left unused in each Okta rate-limit window "
                    "(default: 10% of the limit)"})

    def __init__(self, settings: Settings, *, attributes: Iterable[str] = (),
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 policy: HttpPolicy | None = None):
        self.settings = settings
        self._base = _org_url(settings.org_url)
        self._host = httpx.URL(self._base).host
        self._clock = clock
        self._sleep = sleep
        self._signer = _signer(settings)
        self._policy = policy or HttpPolicy(timeout=float(settings.timeout), concurrency=1,
                                            ca_file=settings.ca_file)
        self._limiter = RateLimiter(self._policy.rate_limit, clock=clock, sleep=sleep)
        self._client = build_client(self._base, self._policy,
                                    headers={"Accept": "application/json"}, transport=transport)
        self._budgets: dict[str, _Budget] = {}
        self._access_token: Secret | None = None
        self._renew_at = 0.0
        self._first_date: float | None = None

    # -----------------------------------------------------------------------------------------
    # The Source protocol

    def read(self) -> Directory:
        self._first_date = None
        snap = self._read_snapshot()
        directory = self._directory(snap)
        cursor = _Cursor(self._since(), self._clock(), self._scope_fingerprint()).encode()
        log.info("read %d users and %d groups from Okta %s", len(directory.users),
                 len(directory.groups), self._host)
        return Directory(directory.users, directory.groups, cursor)

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        state = _Cursor.decode(cursor)
        if state.scope != self._scope_fingerprint():
            raise CursorExpired("the Okta scope settings changed since the last read")
        if self._clock() - state.full_read >= self.settings.full_read_every.total_seconds():
            raise CursorExpired("a full Okta read is due (full_read_every)")
        scope_ids = self._scope_ids_from(known) if self.settings.groups else set()
        self._first_date = None
        changes = _ChangeReader(self, state.since, known, scope_ids).run()
        new_cursor = _Cursor(self._since(), state.full_read, state.scope).encode()
        log.info("Okta changes since %s: %d users, %d groups, %d users and %d groups gone",
                 state.since, len(changes.users), len(changes.groups),
                 len(changes.removed_users), len(changes.removed_groups))
        return ChangeSet(changes.users, changes.groups, frozenset(changes.removed_users),
                         frozenset(changes.removed_groups), new_cursor)

    def check(self) -> dict[str, int | str]:
        snap = self._read_snapshot()
        directory = self._directory(snap)
        report: dict[str, int | str] = {
            "org": self._host,
            "auth": (f"OAuth service app {self.settings.client_id}" if self._signer
                     else "API token (SSWS)"),
            "users": len(directory.users),
            "groups": len(directory.groups),
            "inactive": sum(1 for u in directory.users.values() if not u.active),
        }
        statuses: dict[str, int] = {}
        for user in snap.users.values():
            statuses[user.get("status", "?")] = statuses.get(user.get("status", "?"), 0) + 1
        for status in sorted(statuses):
            report[f"status {status}"] = statuses[status]
        if not self.settings.include_staged:
            report["not pushed (staged/provisioned)"] = sum(
                statuses.get(s, 0) for s in STAGED_STATUSES)
        for gid in sorted(snap.scope_ids):
            name = snap.groups[gid].get("profile", {}).get("name") or gid
            report[f"scope group {name}"] = len(snap.members.get(gid, ()))
        for bucket, budget in sorted(self._budgets.items()):
            report[f"rate limit {bucket}"] = f"{budget.remaining} of {budget.limit} left"
        return report

    def close(self) -> None:
        self._client.close()

    # -----------------------------------------------------------------------------------------
    # Full reads

    def _read_snapshot(self) -> "_Snapshot":
        groups = {g["id"]: g for g in self._list("/api/v1/groups", {"limit": PAGE_LIMIT})}
        scope_ids = self._resolve_scope(groups)
        members: dict[str, list[dict]] = {}
        for gid, group in groups.items():
            if group.get("type") == "BUILT_IN" and gid not in scope_ids:
                continue   # "Everyone": every user, never a group worth pushing
            try:
                members[gid] = self._members(gid)
            except _Gone:
                log.info("Okta group %s was deleted while reading; skipped", gid)
        if scope_ids:
            users = _latest(u for gid in scope_ids for u in members.get(gid, ()))
        else:
            users = _latest(self._all_users())
        return _Snapshot(users, groups, {gid: [u["id"] for u in m] for gid, m in members.items()},
                         scope_ids)

    def _all_users(self) -> Iterator[dict]:
        yield from self._list("/api/v1/users", {"limit": PAGE_LIMIT})
        # the plain list omits DEPROVISIONED users: ask for them by name
        yield from self._list("/api/v1/users", {"limit": PAGE_LIMIT,
                                                "filter": 'status eq "DEPROVISIONED"'})

    def _members(self, gid: str) -> list[dict]:
        return list(self._list(f"/api/v1/groups/{gid}/users", {"limit": PAGE_LIMIT}))

    def _directory(self, snap: "_Snapshot") -> Directory:
        users = [_user_record(u) for u in snap.users.values() if self._wanted_status(u)]
        in_scope = {u.id for u in users}
        groups = [_group_record(g, snap.members.get(gid, ()))
                  for gid, g in snap.groups.items()
                  if gid in snap.members
                  and self._pushed(gid, g, snap.members[gid], in_scope, snap.scope_ids)]
        return Directory.of(users, groups)

    def _wanted_status(self, user: Mapping[str, Any]) -> bool:
        status = user.get("status")
        if status in STAGED_STATUSES:
            return self.settings.include_staged
        return True

    def _pushed(self, gid: str, group: Mapping[str, Any], members: Iterable[str],
                in_scope: set[str], scope_ids: set[str]) -> bool:
        """Which groups go to Split: all of them when there is no scope; with a scope, the
        scope groups and every group with at least one member in scope."""
        if gid in scope_ids:
            return True
        if group.get("type") == "BUILT_IN":
            return False
        return not scope_ids or any(m in in_scope for m in members)

    def _resolve_scope(self, groups: Mapping[str, Mapping[str, Any]]) -> set[str]:
        ids = set()
        for wanted in self.settings.groups:
            found = _find_group(groups, wanted)
            if found is None:
                raise SourceError(f"source.groups names {wanted!r}, but Okta {self._host} has "
                                  f"no single group with that name or id")
            ids.add(found)
        return ids

    def _scope_ids_from(self, known: Directory) -> set[str]:
        groups = {gid: {"profile": {"name": g.attributes.get("profile.name")}}
                  for gid, g in known.groups.items()}
        ids = set()
        for wanted in self.settings.groups:
            found = _find_group(groups, wanted)
            if found is None:
                raise CursorExpired(f"scope group {wanted!r} is not in the last view")
            ids.add(found)
        return ids

    def _scope_fingerprint(self) -> str:
        blob = json.dumps([sorted(g.casefold() for g in self.settings.groups),
                           self.settings.include_staged, self._host])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _since(self) -> str:
        started = self._first_date if self._first_date is not None else self._clock()
        moment = datetime.fromtimestamp(started, timezone.utc) - CURSOR_OVERLAP
        return moment.strftime(_TIME_FORMAT)

    # -----------------------------------------------------------------------------------------
    # Paging

    def _list(self, path: str, params: Mapping[str, Any]) -> Iterator[dict]:
        """Every item of a paged list, following ``Link: rel="next"`` as given."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        seen: set[str] = set()
        pages = 0
        while url:
            response = self._get(url, query)
            pages += 1
            yield from self._json_array(response, path)
            next_url = response.links.get("next", {}).get("url")
            if next_url is None:
                break
            self._check_next(next_url, path)
            if next_url in seen:
                raise SourceError(f"Okta {self._host} sent the same next link twice for "
                                  f"{path}; stopping rather than looping")
            seen.add(next_url)
            url, query = next_url, None
        log.debug("GET %s: %d pages", path, pages)

    def _check_next(self, next_url: str, path: str) -> None:
        target, base = httpx.URL(next_url), httpx.URL(self._base)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            # never send the credentials to a host the operator did not configure
            raise SourceError(f"Okta {self._host} sent a next link for {path} to another host "
                              f"({target.host}); check org_url")

    def _json_array(self, response: httpx.Response, path: str) -> list[dict]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, list) or not all(isinstance(i, dict) and "id" in i
                                                 for i in body):
            raise SourceError(f"Okta {self._host} answered GET {path} with something other "
                              f"than a JSON array of objects")
        return body

    # -----------------------------------------------------------------------------------------
    # Requests: pacing, auth, retries, errors

    def _get(self, url: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        return self._call("GET", url, params=params)

    def _call(self, method: str, url: str, **kwargs) -> httpx.Response:
        path = httpx.URL(url).path
        try:
            return retrying(self._policy, self._limiter, self._sleep)(
                self._send, method, url, path, **kwargs)
        except TransientError as exc:
            raise SourceError(f"{exc} (gave up after {self._policy.max_attempts} "
                              f"attempts)") from None

    def _send(self, method: str, url: str, path: str, authenticate: bool = True,
              **kwargs) -> httpx.Response:
        bucket = _bucket_of(path)
        self._respect_budget(bucket)
        self._limiter.acquire()
        response = self._exchange(method, url, path, authenticate, **kwargs)
        if (response.status_code == 401 and authenticate and self._signer
                and self._access_token is not None):
            log.info("Okta refused the cached access token; fetching a new one")
            self._access_token = None
            response = self._exchange(method, url, path, authenticate, **kwargs)
        self._note_budget(bucket, response)
        return self._judge(method, path, response)

    def _exchange(self, method: str, url: str, path: str, authenticate: bool,
                  **kwargs) -> httpx.Response:
        headers = self._auth_header() if authenticate else {}
        try:
            response = self._client.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise TransientError(f"{method} {path} on Okta {self._host} timed out",
                                 sent=True) from None
        except httpx.TransportError as exc:
            raise TransientError(f"{method} {path} on Okta {self._host} failed "
                                 f"({type(exc).__name__})", sent=True) from None
        if self._first_date is None:
            self._first_date = _date_of(response)
        return response

    def _judge(self, method: str, path: str, response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status < 300:
            return response
        where = f"{method} {path} on Okta {self._host}"
        what = _describe(response)
        if status == 429:
            hint = server_wait_hint(response)
            if hint is None:
                hint = _reset_in(response)
            concurrent = _header_int(response, "X-Rate-Limit-Limit") == 0
            log.warning("Okta rate limit hit (%s) on %s; waiting %s",
                        "concurrent requests" if concurrent else "request budget", path,
                        f"{hint + RESET_MARGIN:.0f}s" if hint is not None else "with backoff")
            raise TransientError(f"{where} answered {what}", status,
                                 retry_after=None if hint is None else hint + RESET_MARGIN)
        if status >= 500:
            raise TransientError(f"{where} answered {what}", status)
        if status == 401:
            raise SourceAuthError(f"{where} answered {what}: the "
                                  f"{'access token' if self._signer else 'API token'} "
                                  f"is wrong, revoked or expired")
        if status == 403:
            raise SourceAuthError(f"{where} answered {what}: the credentials lack the "
                                  f"permission (admin role or scope) to read this")
        if status == 404 and path.startswith("/api/v1/groups/"):
            raise _Gone(f"{where} answered {what}")
        raise SourceError(f"{where} answered {what}")

    # -- rate-limit budget ---------------------------------------------------------------------

    def _headroom(self, limit: int) -> int:
        if self.settings.rate_limit_headroom is not None:
            return max(0, self.settings.rate_limit_headroom)
        return max(1, limit // 10)

    def _note_budget(self, bucket: str, response: httpx.Response) -> None:
        limit = _header_int(response, "X-Rate-Limit-Limit")
        remaining = _header_int(response, "X-Rate-Limit-Remaining")
        reset_in = _reset_in(response)
        if not limit or remaining is None or reset_in is None:
            return   # absent, or the concurrent-limit 429 (limit 0): nothing to plan with
        reset_in = min(reset_in, self._policy.max_wait)
        self._budgets[bucket] = _Budget(limit, remaining, self._clock() + reset_in)

    def _respect_budget(self, bucket: str) -> None:
        budget = self._budgets.get(bucket)
        if budget is None or budget.remaining > self._headroom(budget.limit):
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

    # -- OAuth ---------------------------------------------------------------------------------

    def _auth_header(self) -> dict[str, str]:
        if self._signer is None:
            assert self.settings.token is not None
            return {"Authorization": f"SSWS {self.settings.token.reveal()}"}
        if self._access_token is None or self._clock() >= self._renew_at:
            self._fetch_token()
        assert self._access_token is not None
        return {"Authorization": f"Bearer {self._access_token.reveal()}"}

    def _fetch_token(self) -> None:
        assert self._signer is not None
        audience = self._base + TOKEN_PATH
        form = {
            "grant_type": "client_credentials",
            "scope": " ".join(self.settings.scopes),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self._signer.assertion(audience, self._clock()),
        }
        try:
            response = self._token_request(form)
        except SourceAuthError:
            raise
        except SourceError as exc:
            raise SourceError(f"could not get an OAuth access token: {exc}") from None
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"Okta {self._host} answered POST {TOKEN_PATH} without an "
                              f"access token") from None
        # renew well before the end: 5 minutes for Okta's fixed hour (as the Okta SDK does)
        margin = min(300.0, lifetime / 10)
        self._access_token = Secret(token, "okta access token")
        self._renew_at = self._clock() + lifetime - margin
        log.info("got an Okta access token for client %s (valid %.0fs)",
                 self.settings.client_id, lifetime)

    def _token_request(self, form: dict[str, str]) -> httpx.Response:
        def send() -> httpx.Response:
            bucket = _bucket_of(TOKEN_PATH)
            self._respect_budget(bucket)
            self._limiter.acquire()
            response = self._exchange("POST", TOKEN_PATH, TOKEN_PATH, False, data=form)
            self._note_budget(bucket, response)
            if response.status_code in (400, 401, 403):
                raise SourceAuthError(
                    f"Okta {self._host} refused the OAuth client assertion of client "
                    f"{self.settings.client_id} at {TOKEN_PATH} ({_describe(response)}); "
                    f"check the app's public key, its granted scopes and its admin role")
            return self._judge("POST", TOKEN_PATH, response)
        try:
            return retrying(self._policy, self._limiter, self._sleep)(send)
        except TransientError as exc:
            raise SourceError(f"{exc} (gave up after {self._policy.max_attempts} "
                              f"attempts)") from None


# ---------------------------------------------------------------------------------------------
# Incremental reads


class _ChangeReader:
    """One ``read_changes``: what changed since ``since``, resolved against ``known``."""

    def __init__(self, source: OktaSource, since: str, known: Directory, scope_ids: set[str]):
        self.src, self.since, self.known, self.scope_ids = source, since, known, scope_ids
        self.users: dict[str, UserRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        self.removed_users: set[str] = set()
        self.removed_groups: set[str] = set()

    def run(self) -> "_ChangeReader":
        src, since = self.src, self.since
        changed_groups = {g["id"]: g for g in src._list("/api/v1/groups", {
            "limit": PAGE_LIMIT,
            "filter": f'lastUpdated gt "{since}" or lastMembershipUpdated gt "{since}"'})}
        changed_users = list(src._list("/api/v1/users", {
            "limit": PAGE_LIMIT, "filter": f'lastUpdated gt "{since}"'}))
        members: dict[str, list[dict]] = {}
        for gid, group in changed_groups.items():
            if group.get("type") == "BUILT_IN" and gid not in self.scope_ids:
                continue
            try:
                members[gid] = src._members(gid)
            except _Gone:
                members[gid] = []
                changed_groups[gid] = {}   # deleted while we read: drop it below
        records = _latest([*changed_users, *(u for m in members.values() for u in m)])

        old_users = set(self.known.users)
        scope_members = self._scope_members(members)
        for uid, user in records.items():
            in_scope = scope_members is None or uid in scope_members
            if in_scope and src._wanted_status(user):
                self.users[uid] = _user_record(user)
            elif uid in old_users:
                self.removed_users.add(uid)
        if scope_members is not None:
            self.removed_users |= old_users - scope_members
        effective = (old_users - self.removed_users) | set(self.users)

        for gid, group in changed_groups.items():
            if gid in members:
                self._judge_group(gid, group, [u["id"] for u in members[gid]], effective)
        if scope_members is not None:
            self._follow_scope_moves(old_users, effective, changed_groups)
        return self

    def _scope_members(self, reread: Mapping[str, list[dict]]) -> set[str] | None:
        if not self.scope_ids:
            return None
        ids: set[str] = set()
        for gid in self.scope_ids:
            if gid in reread:
                ids |= {u["id"] for u in reread[gid]}
            else:
                ids |= set(self.known.groups[gid].members)
        return ids

    def _judge_group(self, gid: str, group: Mapping[str, Any], member_ids: list[str],
                     effective: set[str]) -> None:
        if group and self.src._pushed(gid, group, member_ids, effective, self.scope_ids):
            self.groups[gid] = _group_record(group, member_ids)
        elif gid in self.known.groups:
            self.removed_groups.add(gid)

    def _follow_scope_moves(self, old_users: set[str], effective: set[str],
                            handled: Mapping[str, Any]) -> None:
        """With a scope, a user entering or leaving it can make an unchanged group start or
        stop having members in scope; no group filter reports that, so look it up."""
        leaving = old_users - effective
        for gid, group in self.known.groups.items():
            if gid in handled or gid in self.scope_ids or not (group.members & leaving):
                continue
            if not (group.members & effective):
                self.removed_groups.add(gid)
        for uid in sorted(effective - old_users):
            for group in self.src._list(f"/api/v1/users/{uid}/groups", {"limit": PAGE_LIMIT}):
                gid = group["id"]
                if gid in handled or gid in self.known.groups or gid in self.groups:
                    continue
                if group.get("type") == "BUILT_IN":
                    continue
                try:
                    member_ids = [u["id"] for u in self.src._members(gid)]
                except _Gone:
                    continue
                self._judge_group(gid, group, member_ids, effective)


# ---------------------------------------------------------------------------------------------
# Small values and helpers


@dataclass
class _Budget:
    limit: int
    remaining: int
    reset_at: float          # on our clock


@dataclass(frozen=True)
class _Snapshot:
    users: dict[str, dict]                 # in scope, every status
    groups: dict[str, dict]                # every group
    members: dict[str, list[str]]          # group id -> member user ids (groups read)
    scope_ids: set[str]


@dataclass(frozen=True)
class _Cursor:
    """``okta1;since=<server time>;full=<our epoch of the last full read>;scope=<hash>``."""

    since: str
    full_read: float
    scope: str

    def encode(self) -> str:
        return f"okta1;since={self.since};full={self.full_read:.0f};scope={self.scope}"

    @classmethod
    def decode(cls, text: str) -> "_Cursor":
        try:
            tag, *parts = text.split(";")
            fields = dict(p.split("=", 1) for p in parts)
            if tag != "okta1":
                raise ValueError(tag)
            datetime.strptime(fields["since"], _TIME_FORMAT)
            return cls(fields["since"], float(fields["full"]), fields["scope"])
        except (ValueError, KeyError, AttributeError):
            raise CursorExpired("the stored Okta cursor is not one this version wrote") from None


class _Signer:
    """Signs ``private_key_jwt`` client assertions for one service app."""

    def __init__(self, client_id: str, key: Any, algorithm: str, key_id: str | None):
        self.client_id, self._key, self.algorithm, self.key_id = client_id, key, algorithm, key_id

    def assertion(self, audience: str, now: float) -> str:
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                  "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME,
                  "jti": uuid.uuid4().hex}
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)


def _org_url(value: str) -> str:
    url = httpx.URL(value.strip().rstrip("/"))
    if not url.host or url.path not in ("", "/") or url.query:
        raise SettingError("", f"source.org_url {value!r} must be the bare org URL, "
                          f"e.g. https://acme.okta.com")
    if re.search(r"-admin\.(okta|oktapreview|okta-emea)\.com$", url.host):
        raise SettingError("", f"source.org_url {value!r} is the admin console URL; use the org URL "
                          f"without '-admin'")
    if url.scheme != "https" and not (url.scheme == "http" and is_loopback(url.host)):
        raise SettingError("", f"source.org_url {value!r} must use https")
    return f"{url.scheme}://{url.netloc.decode()}"



def _signer(settings: OktaSource.Settings) -> _Signer | None:
    oauth = settings.client_id or settings.private_key
    if settings.token and oauth:
        raise SettingError("", "source: set either token or client_id + private_key, not both")
    if settings.token:
        return None
    if not (settings.client_id and settings.private_key):
        raise SettingError("", "source: set token (an Okta API token) or both client_id and "
                          "private_key (an OAuth service app)")
    if not settings.scopes:
        raise SettingError("", "source.scopes is empty; Okta needs okta.users.read okta.groups.read")
    key, kid = _load_key(settings.private_key)
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    else:
        algorithm = {"secp256r1": "ES256", "secp384r1": "ES384",
                     "secp521r1": "ES512"}.get(key.curve.name, "")
        if not algorithm:
            raise SettingError("", f"source.private_key uses curve {key.curve.name}, which Okta "
                              f"does not accept (P-256, P-384, P-521)")
    return _Signer(settings.client_id, key, algorithm, settings.key_id or kid)


def _load_key(secret: Secret) -> tuple[Any, str | None]:
    """The private key from PEM (or a JWK, as the Okta console also offers), and its kid."""
    text = secret.reveal().strip()
    try:
        if text.startswith("{"):
            jwk = json.loads(text)
            algo = jwt.algorithms.RSAAlgorithm if jwk.get("kty") == "RSA" \
                else jwt.algorithms.ECAlgorithm
            key = algo.from_jwk(jwk)
            kid = jwk.get("kid")
        else:
            key = serialization.load_pem_private_key(text.encode(), password=None)
            kid = None
    except (ValueError, TypeError, jwt.exceptions.PyJWTError) as exc:
        raise SettingError("", f"source.private_key ({secret.origin}) is not an unencrypted PEM "
                          f"private key ({type(exc).__name__})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SettingError("", f"source.private_key ({secret.origin}) must be an RSA or EC "
                          f"private key")
    return key, kid


def _find_group(groups: Mapping[str, Mapping[str, Any]], wanted: str) -> str | None:
    if wanted in groups:
        return wanted
    matches = [gid for gid, g in groups.items()
               if str((g.get("profile") or {}).get("name") or "").casefold() == wanted.casefold()]
    return matches[0] if len(matches) == 1 else None


def _latest(users: Iterable[dict]) -> dict[str, dict]:
    """One record per id: the most recently updated (a user can show up in two listings)."""
    out: dict[str, dict] = {}
    for user in users:
        seen = out.get(user["id"])
        if seen is None or str(user.get("lastUpdated") or "") >= str(seen.get("lastUpdated") or ""):
            out[user["id"]] = user
    return out


def _plain(value: Any):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _user_record(user: Mapping[str, Any]) -> UserRecord:
    attributes: dict[str, Any] = {k: _plain(user.get(k)) for k in _USER_FIELDS if k in user}
    for name, value in (user.get("profile") or {}).items():
        attributes[f"profile.{name}"] = _plain(value)
    status = str(user.get("status") or "")
    if status not in ACTIVE_STATUSES | INACTIVE_STATUSES | STAGED_STATUSES:
        log.warning("Okta user %s has an unknown status %r; treating it as inactive",
                    user.get("id"), status)
    active = status in ACTIVE_STATUSES or status in STAGED_STATUSES
    return UserRecord(str(user["id"]), attributes, active)


def _group_record(group: Mapping[str, Any], member_ids: Iterable[str]) -> GroupRecord:
    attributes: dict[str, Any] = {k: _plain(group.get(k)) for k in _GROUP_FIELDS if k in group}
    for name, value in (group.get("profile") or {}).items():
        attributes[f"profile.{name}"] = _plain(value)
    return GroupRecord(str(group["id"]), attributes, frozenset(member_ids))


def _bucket_of(path: str) -> str:
    """Okta counts requests per endpoint; ids are folded so all groups share one bucket."""
    return "/".join("{id}" if _ID_SEGMENT.match(p) and i > 3 else p
                    for i, p in enumerate(path.split("/")))


def _header_int(response: httpx.Response, name: str) -> int | None:
    """Okta sometimes repeats rate-limit headers; like its SDK, take the smallest value."""
    values = []
    for raw in response.headers.get_list(name, split_commas=True):
        try:
            values.append(int(float(raw)))
        except ValueError:
            pass
    return min(values) if values else None


def _date_of(response: httpx.Response) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def _reset_in(response: httpx.Response) -> float | None:
    """Seconds until the rate-limit window resets, by the server's clock (reset - Date)."""
    reset = _header_int(response, "X-Rate-Limit-Reset")
    server_now = _date_of(response)
    if reset is None or server_now is None:
        return None
    return max(0.0, reset - server_now)


def _describe(response: httpx.Response) -> str:
    """``HTTP 401 E0000011 (Invalid token provided)``: status plus Okta's error code."""
    text = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return text
    if not isinstance(body, dict):
        return text
    code = body.get("errorCode") or body.get("error")
    summary = body.get("errorSummary") or body.get("error_description")
    if code:
        text += f" {code}"
    if summary:
        text += f" ({str(summary).rstrip('.')[:200]})"
    return text
