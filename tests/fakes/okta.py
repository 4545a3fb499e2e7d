"""A fake Okta org (Management API + org authorization server) over plain HTTP on loopback.

One threaded ``http.server`` on 127.0.0.1, port 0. Okta has no client library that insists on
https, and the connector builds its httpx client the usual way, so plain http on loopback is
enough here (the connector refuses http for anything but loopback).

What it reproduces (docs: ../shared/reference/sources.md section 1):

- ``GET /api/v1/users``: bare JSON array; ``limit`` (at most 200), ``after`` (an opaque
  cursor), ``filter`` on ``status``/``id``/``profile.*`` (eq) and ``lastUpdated``
  (eq/gt/ge/lt/le) joined by ``and``/``or``. Without a filter DEPROVISIONED users are left out,
  exactly like the real list. Anything else in a filter is a 400 E0000031.
- ``GET /api/v1/groups`` (filter on ``id``, ``type``, ``lastUpdated``,
  ``lastMembershipUpdated``), ``GET /api/v1/groups/{id}/users`` (direct members, any status,
  default limit 1000), ``GET /api/v1/users/{id}/groups``; 404 E0000007 for unknown ids.
- Paging: ``Link: <...>; rel="self"`` and ``Link: <...>; rel="next"`` as two separate header
  lines; ``page_cap`` makes every page shorter than the requested limit, as Okta does.
- Rate limits per endpoint bucket and window: ``X-Rate-Limit-Limit/-Remaining/-Reset`` and
  ``Date`` on every response, 429 with an E0000047 body when the budget is spent, and the
  concurrent-limit 429 (limit and remaining 0) on demand. ``skew`` shifts the server clock.
- Auth: ``SSWS <token>`` (a wrong one is 401 E0000011) or an access token issued by
  ``POST /oauth2/v1/token`` for a registered service app: the client assertion's signature
  is checked against the registered public key, with aud = ``{org}/oauth2/v1/token``,
  iss = sub = client id, exp present, in the future and at most an hour away, jti not
  replayed (spent even when the request then fails on its DPoP proof, as Okta does), scopes
  granted. Tokens last ``token_lifetime`` seconds; expired ones get 401.
- DPoP (RFC 9449), on for apps by default as the Admin Console creates them
  (okta/okta-developer-docs ``guides/dpop``; support article "The DPoP Proof JWT Header Is
  Missing"): a token request without a ``DPoP`` header is ``400 invalid_dpop_proof``; a proof
  without the current nonce is ``400 use_dpop_nonce`` with a ``DPoP-Nonce`` header; then a
  ``token_type: DPoP`` token bound to the proof key's thumbprint (``cnf.jkt``). API calls
  with it need ``Authorization: DPoP`` and a proof checked every time: ``typ``, an asymmetric
  ``alg``, a public-only ``jwk`` whose thumbprint is the token's, the signature, ``htm``,
  ``htu`` (URL without query, decoded path), ``iat`` within the window, ``jti`` never seen,
  ``ath`` the token's hash; a failure is ``400`` with ``WWW-Authenticate: DPoP
  error="invalid_dpop_proof"`` (okta-sdk-python issue #541). The bound token as ``Bearer``
  is 401. ``resource_nonce`` makes API calls demand a nonce too (401 ``use_dpop_nonce``,
  RFC 9449 §9); ``rotate_nonce()`` hands out a new one (the old stays valid, as Okta keeps
  an old nonce for three days), ``expire_nonces()`` invalidates all. An app with DPoP off
  ignores a proof and issues a ``Bearer`` token.
- Faults: fail page N of a listing with a status code or a dropped connection, N times.

All time comes from a :class:`FakeClock` that the connector shares, so nothing really waits.
Every request is recorded in :attr:`FakeOkta.requests` (method, path, query, status).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import jwt

ALL_STATUSES = ("ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY", "SUSPENDED",
                "DEPROVISIONED", "STAGED", "PROVISIONED")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PROOF_AGE = 300                      # seconds a proof's iat may lie in the past
PROOF_AHEAD = 60                     # ... or in the future (clock skew)


class FakeClock:
    """Epoch seconds that move only when someone sleeps (or a test advances them)."""

    def __init__(self, start: float | None = None):
        self.now = float(int(time.time())) if start is None else start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            # a real sleep always takes some time; a tiny step lost in float rounding at
            # epoch scale would leave a caller polling the clock forever
            self.now += max(0.001, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def iso(moment: float) -> str:
    """Okta's timestamp format: millisecond precision, Z."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime(TIME_FORMAT)[:-4] + "Z"


def _parse_iso(text: str) -> float:
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", text):
        raise ValueError(text)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()


@dataclass
class ServiceApp:
    client_id: str
    public_key_pem: str
    scopes: frozenset[str] = frozenset({"okta.users.read", "okta.groups.read"})
    dpop: bool = True                # "Require DPoP header in token requests", the default


class _ProofError(Exception):
    pass


@dataclass(frozen=True)
class Issued:
    expires: float
    scopes: frozenset[str]
    jkt: str | None = None           # the thumbprint a DPoP token is bound to


@dataclass
class Fault:
    path: str                  # exact path, e.g. /api/v1/users
    page: int                  # 1-based page of a listing
    action: int | str = 500    # a status code, or "drop" to close the connection
    times: float = float("inf")
    fired: int = 0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict
    status: int


class _BadRequest(Exception):
    pass


@dataclass
class FakeOkta:
    clock: FakeClock = field(default_factory=FakeClock)
    api_token: str = "00ssws-test-token-0123456789"
    rate_limit: int = 600                 # requests per window per bucket
    window: int = 60                      # seconds
    page_cap: int | None = None           # pages never hold more than this
    skew: float = 0.0                     # server clock minus the shared clock
    token_lifetime: int = 3600
    link_base: str | None = None          # send next links to another origin (a trap)
    resource_nonce: bool = False          # API calls too must carry the nonce

    def __post_init__(self):
        self.users: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.members: dict[str, list[str]] = {}
        self.apps: dict[str, ServiceApp] = {}
        self.access_tokens: dict[str, Issued] = {}
        self.nonces: list[str] = [secrets.token_urlsafe(24)]   # the last is current
        self._proof_jtis: set[str] = set()
        self.proofs: list[dict] = []          # claims of every proof accepted, in order
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.concurrent_429s = 0
        self._used: dict[tuple[str, int], int] = {}
        self._cursors: dict[str, tuple[str, int]] = {}
        self._jtis: set[str] = set()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # -----------------------------------------------------------------------------------------
    # Server lifecycle

    def start(self) -> "FakeOkta":
        fake = self

        class Handler(_Handler):
            okta = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeOkta":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -----------------------------------------------------------------------------------------
    # Directory edits (each stamps lastUpdated / lastMembershipUpdated like Okta)

    def now(self) -> float:
        return self.clock.time() + self.skew

    def add_user(self, email: str, first: str, last: str, status: str = "ACTIVE",
                 uid: str | None = None, **profile) -> str:
        assert status in ALL_STATUSES
        uid = uid or "00u" + secrets.token_hex(8)
        stamp = iso(self.now())
        with self._lock:
            self.users[uid] = {
                "id": uid, "status": status, "created": stamp,
                "activated": None if status in ("STAGED",) else stamp,
                "statusChanged": stamp, "lastLogin": None, "lastUpdated": stamp,
                "passwordChanged": None, "type": {"id": "oty1162QAr8hJjTaq0g4"},
                "profile": {"firstName": first, "lastName": last, "mobilePhone": None,
                            "secondEmail": None, "login": email, "email": email, **profile},
                "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
                "_links": {"self": {"href": f"{self.url}/api/v1/users/{uid}"}},
            }
        return uid

    def update_user(self, uid: str, **profile) -> None:
        with self._lock:
            self.users[uid]["profile"].update(profile)
            self.users[uid]["lastUpdated"] = iso(self.now())

    def set_status(self, uid: str, status: str) -> None:
        assert status in ALL_STATUSES
        with self._lock:
            stamp = iso(self.now())
            self.users[uid].update(status=status, statusChanged=stamp, lastUpdated=stamp)

    def delete_user(self, uid: str) -> None:
        """A hard delete: the user vanishes from every listing and every group."""
        with self._lock:
            del self.users[uid]
            for gid, uids in self.members.items():
                if uid in uids:
                    uids.remove(uid)
                    self.groups[gid]["lastMembershipUpdated"] = iso(self.now())

    def add_group(self, name: str, members=(), gid: str | None = None,
                  type: str = "OKTA_GROUP", description: str = "") -> str:
        gid = gid or "00g" + secrets.token_hex(8)
        stamp = iso(self.now())
        profile = {"name": name, "description": description}
        extra: dict = {}
        if type == "APP_GROUP":
            # an AD-sourced group as Okta shows it (tests/vectors/okta.py APP_GROUP)
            profile.update(groupType="Security", samAccountName=name,
                           objectSid="S-1-5-21-717838489-685202119-709183397-"
                                     + str(1000 + len(self.groups)),
                           groupScope="Global", dn=f"CN={name},OU=Groups,DC=corp,DC=example",
                           windowsDomainQualifiedName=f"CORP\\{name}",
                           externalId=base64.b64encode(secrets.token_bytes(16)).decode())
            extra["source"] = {"id": "0oa" + secrets.token_hex(8)}
        elif type == "BUILT_IN" and not description:
            profile["description"] = "All users in your organization"
        with self._lock:
            self.groups[gid] = {
                "id": gid, "created": stamp, "lastUpdated": stamp,
                "lastMembershipUpdated": stamp,
                "objectClass": ["okta:windows_security_principal" if type == "APP_GROUP"
                                else "okta:user_group"], "type": type,
                "profile": profile, **extra,
                "_links": {"users": {"href": f"{self.url}/api/v1/groups/{gid}/users"}},
            }
            self.members[gid] = list(members)
        return gid

    def rename_group(self, gid: str, name: str) -> None:
        with self._lock:
            self.groups[gid]["profile"]["name"] = name
            self.groups[gid]["lastUpdated"] = iso(self.now())

    def delete_group(self, gid: str) -> None:
        with self._lock:
            del self.groups[gid]
            del self.members[gid]

    def add_member(self, gid: str, uid: str) -> None:
        with self._lock:
            if uid not in self.members[gid]:
                self.members[gid].append(uid)
            self.groups[gid]["lastMembershipUpdated"] = iso(self.now())

    def remove_member(self, gid: str, uid: str) -> None:
        with self._lock:
            self.members[gid].remove(uid)
            self.groups[gid]["lastMembershipUpdated"] = iso(self.now())

    def add_app(self, client_id: str, public_key_pem: str, scopes=None,
                dpop: bool = True) -> ServiceApp:
        app = ServiceApp(client_id, public_key_pem,
                         frozenset(scopes) if scopes is not None else ServiceApp.scopes, dpop)
        self.apps[client_id] = app
        return app

    def rotate_nonce(self) -> None:
        """A new DPoP nonce; earlier ones keep working (Okta: three days)."""
        with self._lock:
            self.nonces.append(secrets.token_urlsafe(24))

    def expire_nonces(self) -> None:
        with self._lock:
            self.nonces = [secrets.token_urlsafe(24)]

    def fail(self, path: str, page: int, action: int | str = 500,
             times: float = float("inf")) -> Fault:
        fault = Fault(path, page, action, times)
        self.faults.append(fault)
        return fault

    def consume(self, bucket: str, count: int) -> None:
        """Spend budget as another integration would."""
        with self._lock:
            key = (bucket, self._window_start())
            self._used[key] = self._used.get(key, 0) + count

    # -----------------------------------------------------------------------------------------
    # Assertions for tests

    def count(self, path: str | None = None, status: int | None = None,
              prefix: str | None = None) -> int:
        return sum(1 for r in list(self.requests)
                   if (path is None or r.path == path)
                   and (prefix is None or r.path.startswith(prefix))
                   and (status is None or r.status == status))

    # -----------------------------------------------------------------------------------------
    # Request handling: returns (status, headers list, body bytes) or None to drop

    def handle(self, method: str, target: str, headers, body: bytes):
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            result = self._dispatch(method, path, query, headers, body)
            status = result[0] if result else 0
            self.requests.append(Request(method, path, query, status))
        return result

    def _dispatch(self, method, path, query, headers, body):
        bucket = _bucket(path)
        if self.concurrent_429s > 0:
            self.concurrent_429s -= 1
            return self._reply(429, _error("E0000047", "API call exceeded rate limit due to "
                                           "too many requests."), bucket, concurrent=True)
        used = self._used.get((bucket, self._window_start()), 0)
        if used >= self.rate_limit:
            return self._reply(429, _error("E0000047", "API call exceeded rate limit due to "
                                           "too many requests."), bucket)
        self._used[(bucket, self._window_start())] = used + 1
        if path == "/oauth2/v1/token":
            if method != "POST":
                return self._reply(405, _error("E0000022", "The endpoint does not support "
                                               "the provided HTTP method"), bucket)
            return self._token(body, headers, bucket)
        if method != "GET":
            return self._reply(405, _error("E0000022", "The endpoint does not support the "
                                           "provided HTTP method"), bucket)
        denied = self._authorize(headers.get("Authorization", ""), path, bucket, method,
                                 headers)
        if denied:
            return denied
        try:
            return self._api(path, query, bucket)
        except _BadRequest as exc:
            return self._reply(400, _error("E0000031", "Invalid search criteria.",
                                           [str(exc)]), bucket)

    def _authorize(self, auth: str, path: str, bucket: str, method: str = "GET", headers=None):
        scheme, _, credential = auth.partition(" ")
        if scheme == "SSWS" and credential == self.api_token:
            return None
        if scheme in ("Bearer", "DPoP") and credential in self.access_tokens:
            issued = self.access_tokens[credential]
            expires, scopes = issued.expires, issued.scopes
            if self.now() >= expires:
                return self._reply(401, _error("E0000011", "Invalid token provided"), bucket,
                                   extra=[("WWW-Authenticate", f'{scheme} error="invalid_token", '
                                           'error_description="The token has expired."')])
            if (scheme == "DPoP") != (issued.jkt is not None):
                # a DPoP-bound token sent as a bearer token (or the reverse) is no token
                return self._reply(401, _error("E0000011", "Invalid token provided"), bucket,
                                   extra=[("WWW-Authenticate", f'{scheme} error="invalid_token", '
                                           'error_description="The access token is not valid '
                                           'for this authorization scheme."')])
            if issued.jkt is not None:
                refused = self._check_resource_proof(headers, method, path, credential,
                                                     issued.jkt, bucket)
                if refused:
                    return refused
            needed = "okta.users.read" if path.startswith("/api/v1/users") \
                else "okta.groups.read"
            if needed not in scopes:
                return self._reply(403, _error("E0000006", "You do not have permission to "
                                               "perform the requested action"), bucket,
                                   extra=[("WWW-Authenticate", 'Bearer error="insufficient_'
                                           f'scope", scope="{needed}"')])
            return None
        return self._reply(401, _error("E0000011", "Invalid token provided"), bucket)

    # -- /api/v1 ------------------------------------------------------------------------------

    def _api(self, path, query, bucket):
        segments = path.strip("/").split("/")
        if segments[:2] != ["api", "v1"]:
            return self._not_found(path, bucket)
        rest = segments[2:]
        if rest == ["users"]:
            if "search" in query or "q" in query:
                raise _BadRequest("the fake implements filter only")
            users = list(self.users.values())
            if "filter" in query:
                users = [u for u in users if _matches(u, query["filter"], _USER_FILTER)]
            else:
                users = [u for u in users if u["status"] != "DEPROVISIONED"]
            return self._page(path, query, users, 200, 200, bucket)
        if rest == ["groups"]:
            groups = list(self.groups.values())
            if "filter" in query:
                groups = [g for g in groups if _matches(g, query["filter"], _GROUP_FILTER)]
            return self._page(path, query, groups, 10000, 10000, bucket)
        if len(rest) == 3 and rest[0] == "groups" and rest[2] == "users":
            if rest[1] not in self.groups:
                return self._not_found(path, bucket)
            users = [self.users[u] for u in self.members[rest[1]] if u in self.users]
            return self._page(path, query, users, 1000, 10000, bucket)
        if len(rest) == 3 and rest[0] == "users" and rest[2] == "groups":
            if rest[1] not in self.users:
                return self._not_found(path, bucket)
            groups = [self.groups[g] for g, m in self.members.items() if rest[1] in m]
            return self._page(path, query, groups, 10000, 10000, bucket)
        return self._not_found(path, bucket)

    def _not_found(self, path, bucket):
        return self._reply(404, _error("E0000007", f"Not found: Resource not found: {path}"),
                           bucket)

    def _page(self, path, query, items, default_limit, max_limit, bucket):
        try:
            limit = int(query.get("limit", default_limit))
        except ValueError:
            raise _BadRequest("limit must be a number") from None
        if limit < 1:
            raise _BadRequest("limit must be positive")
        size = min(limit, max_limit, self.page_cap or max_limit)
        start, page_no = 0, 1
        if "after" in query:
            if query["after"] not in self._cursors:
                raise _BadRequest("invalid after cursor")
            last_id, page_no = self._cursors[query["after"]]
            ids = [i["id"] for i in items]
            start = ids.index(last_id) + 1 if last_id in ids else len(ids)
        for fault in self.faults:
            if fault.path == path and fault.page == page_no and fault.fired < fault.times:
                fault.fired += 1
                if fault.action == "drop":
                    return None
                return self._reply(int(fault.action), _error("E0000009", "Internal Server "
                                                             "Error"), bucket)
        chunk = items[start:start + size]
        base = self.link_base or self.url
        self_query = urlencode(query)
        links = [("Link", f'<{self.url}{path}{"?" + self_query if self_query else ""}>; '
                          f'rel="self"')]
        if start + size < len(items):
            cursor = secrets.token_urlsafe(9)
            self._cursors[cursor] = (chunk[-1]["id"], page_no + 1)
            next_query = {k: v for k, v in query.items() if k != "after"}
            next_query.setdefault("limit", str(limit))
            next_query["after"] = cursor
            links.append(("Link", f'<{base}{path}?{urlencode(next_query)}>; rel="next"'))
        return self._reply(200, chunk, bucket, extra=links)

    # -- /oauth2/v1/token ---------------------------------------------------------------------

    def _token(self, body: bytes, headers, bucket: str):
        form = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}

        def oauth_error(status, error, description, extra=()):
            return self._reply(status, {"error": error, "error_description": description},
                               bucket, extra=extra)

        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type",
                               "The authorization grant type is not supported.")
        if form.get("client_assertion_type") != ASSERTION_TYPE or "client_assertion" not in form:
            return oauth_error(401, "invalid_client", "Client authentication failed. Either "
                               "the client or the client credentials are invalid.")
        assertion = form["client_assertion"]
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return oauth_error(401, "invalid_client", "The client_assertion is not a JWT.")
        app = self.apps.get(str(claims.get("iss")))
        if app is None:
            return oauth_error(401, "invalid_client", "The client_id is not valid.")
        if header.get("alg") not in ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512"):
            return oauth_error(401, "invalid_client", "The client_assertion algorithm is not "
                               "supported.")
        audience = f"{self.url}/oauth2/v1/token"
        try:
            claims = jwt.decode(assertion, app.public_key_pem, algorithms=[header["alg"]],
                                audience=audience,
                                options={"verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False, "require": ["exp", "aud"]})
        except jwt.InvalidAudienceError:
            return oauth_error(401, "invalid_client", "The audience claim for client_assertion"
                               " must be the endpoint invoked for the request.")
        except jwt.PyJWTError:
            return oauth_error(401, "invalid_client", "The client_assertion signature is "
                               "invalid.")
        now = self.now()
        if claims.get("sub") != app.client_id:
            return oauth_error(401, "invalid_client", "The sub claim must equal iss.")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now - 30:
            return oauth_error(401, "invalid_client", "The client_assertion token is expired.")
        if claims["exp"] > now + 3600 + 30:
            return oauth_error(401, "invalid_client", "The client_assertion token has an "
                               "expiration too far in the future.")
        if claims.get("jti") and claims["jti"] in self._jtis:
            return oauth_error(401, "invalid_client", "The client_assertion token has already "
                               "been used.")
        self._jtis.add(claims.get("jti") or "")       # spent now, whatever follows
        jkt = None
        if app.dpop:
            proof = headers.get("DPoP") if headers is not None else None
            if not proof:
                return oauth_error(400, "invalid_dpop_proof",
                                   "The DPoP proof JWT header is missing.")
            try:
                proof_claims, jkt = self._verify_proof(proof, "POST",
                                                       f"{self.url}/oauth2/v1/token")
            except _ProofError as exc:
                return oauth_error(400, "invalid_dpop_proof", str(exc))
            if proof_claims.get("nonce") not in self.nonces:
                return oauth_error(400, "use_dpop_nonce",
                                   "Authorization server requires nonce in DPoP proof.",
                                   extra=[("DPoP-Nonce", self.nonces[-1])])
        wanted = set(form.get("scope", "").split())
        if not wanted:
            return oauth_error(400, "invalid_scope", "The authorization server resource does "
                               "not have any configured default scopes, 'scope' must be "
                               "provided.")
        missing = sorted(wanted - app.scopes)
        if missing:
            return oauth_error(400, "invalid_scope", "The following scopes are not allowed: "
                               + ", ".join(missing))
        token = "eyJ" + secrets.token_urlsafe(24)
        self.access_tokens[token] = Issued(now + self.token_lifetime, frozenset(wanted), jkt)
        return self._reply(200, {"token_type": "DPoP" if jkt else "Bearer",
                                 "expires_in": self.token_lifetime,
                                 "access_token": token, "scope": " ".join(sorted(wanted))},
                           bucket)

    # -- DPoP proofs --------------------------------------------------------------------------

    def _verify_proof(self, proof: str, method: str, url: str) -> tuple[dict, str]:
        """The claims and the key thumbprint of a valid proof for this request, or
        _ProofError with Okta's kind of sentence."""
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise _ProofError("The DPoP proof JWT is malformed.") from None
        if header.get("typ") != "dpop+jwt":
            raise _ProofError("'typ' header in the DPoP proof JWT is invalid.")
        alg = header.get("alg")
        if alg not in ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512"):
            raise _ProofError("'alg' header in the DPoP proof JWT is invalid.")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or "d" in jwk or jwk.get("kty") not in ("RSA", "EC"):
            raise _ProofError("'jwk' header in the DPoP proof JWT is invalid.")
        algorithm = (jwt.algorithms.RSAAlgorithm if jwk["kty"] == "RSA"
                     else jwt.algorithms.ECAlgorithm)
        try:
            key = algorithm.from_jwk(json.dumps(jwk))
            claims = jwt.decode(proof, key, algorithms=[alg],
                                options={"verify_aud": False, "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except (jwt.PyJWTError, ValueError, KeyError):
            raise _ProofError("The DPoP proof JWT signature is invalid.") from None
        if claims.get("htm") != method:
            raise _ProofError("'htm' claim in the DPoP proof JWT is invalid.")
        if claims.get("htu") != htu_of(url):
            raise _ProofError("'htu' claim in the DPoP proof JWT is invalid.")
        iat = claims.get("iat")
        if not isinstance(iat, int) or not (self.now() - PROOF_AGE <= iat
                                            <= self.now() + PROOF_AHEAD):
            raise _ProofError("'iat' claim in the DPoP proof JWT is invalid.")
        jti = claims.get("jti")
        if not jti or jti in self._proof_jtis:
            raise _ProofError("'jti' claim in the DPoP proof JWT is invalid.")
        self._proof_jtis.add(jti)
        self.proofs.append(claims)
        return claims, thumbprint(jwk)

    def _check_resource_proof(self, headers, method, path, token, jkt, bucket):
        def refuse(status, error, description, extra=()):
            challenge = f'DPoP algs="RS256 ES256", error="{error}", ' \
                        f'error_description="{description}"'
            return self._reply(status, {"errorCode": error, "errorSummary": description},
                               bucket, extra=[("WWW-Authenticate", challenge), *extra])

        proof = headers.get("DPoP") if headers is not None else None
        if not proof:
            return refuse(400, "invalid_dpop_proof", "The DPoP proof JWT header is missing.")
        try:
            claims, proof_jkt = self._verify_proof(proof, method, self.url + path)
        except _ProofError as exc:
            return refuse(400, "invalid_dpop_proof", str(exc))
        if proof_jkt != jkt:
            return refuse(400, "invalid_dpop_proof", "The DPoP proof JWT key does not match "
                          "the access token's binding.")
        if claims.get("ath") != access_token_hash(token):
            return refuse(400, "invalid_dpop_proof", "'ath' claim in the DPoP proof JWT is "
                          "invalid.")
        if self.resource_nonce and claims.get("nonce") not in self.nonces:
            return refuse(401, "use_dpop_nonce", "Resource server requires nonce in DPoP "
                          "proof.", extra=[("DPoP-Nonce", self.nonces[-1])])
        return None

    # -- replies ------------------------------------------------------------------------------

    def _window_start(self) -> int:
        return int(self.now() // self.window * self.window)

    def _reply(self, status, payload, bucket, extra=(), concurrent=False):
        start = self._window_start()
        remaining = max(0, self.rate_limit - self._used.get((bucket, start), 0))
        headers = [("Content-Type", "application/json"),
                   ("X-Okta-Request-Id", secrets.token_urlsafe(12)),
                   ("X-Rate-Limit-Limit", "0" if concurrent else str(self.rate_limit)),
                   ("X-Rate-Limit-Remaining", "0" if concurrent else str(remaining)),
                   ("X-Rate-Limit-Reset", str(start + self.window)),
                   *extra]
        return status, headers, json.dumps(payload).encode()


_USER_FILTER = {"status": ("eq",), "id": ("eq",), "lastUpdated": ("eq", "gt", "ge", "lt", "le"),
                "profile.login": ("eq",), "profile.email": ("eq",),
                "profile.firstName": ("eq",), "profile.lastName": ("eq",)}
_GROUP_FILTER = {"id": ("eq",), "type": ("eq",),
                 "lastUpdated": ("eq", "gt", "ge", "lt", "le"),
                 "lastMembershipUpdated": ("eq", "gt", "ge", "lt", "le")}
_CLAUSE = re.compile(r'^\s*([\w.]+)\s+(eq|gt|ge|lt|le)\s+"([^"]*)"\s*$')


def _matches(item: dict, expression: str, allowed: dict) -> bool:
    """Okta's filter subset: clauses joined by ``or`` of ``and`` (no parentheses)."""
    return any(all(_clause(item, c, allowed) for c in re.split(r"\s+and\s+", branch))
               for branch in re.split(r"\s+or\s+", expression))


def _clause(item: dict, text: str, allowed: dict) -> bool:
    match = _CLAUSE.match(text)
    if not match:
        raise _BadRequest(f"cannot parse {text!r}")
    name, op, value = match.groups()
    if name not in allowed or op not in allowed[name]:
        raise _BadRequest(f"{name} {op} is not supported in a filter")
    node = item
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if name in ("lastUpdated", "lastMembershipUpdated"):
        try:
            wanted = _parse_iso(value)
        except ValueError:
            raise _BadRequest(f"{value!r} is not a timestamp") from None
        have = _parse_iso(node) if node else 0.0
        return {"eq": have == wanted, "gt": have > wanted, "ge": have >= wanted,
                "lt": have < wanted, "le": have <= wanted}[op]
    return str(node or "").casefold() == value.casefold()


# DPoP arithmetic written out here on its own (RFC 9449 §4.2, RFC 7638), not taken from the
# connector: a fake that shared the code under test would agree with its bugs.

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    return _b64(hashlib.sha256(token.encode("ascii")).digest())


def htu_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{unquote(parts.path)}"


def thumbprint(jwk: dict) -> str:
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    return _b64(hashlib.sha256(json.dumps({m: jwk[m] for m in members}, sort_keys=True,
                                          separators=(",", ":")).encode()).digest())


def _error(code: str, summary: str, causes=()) -> dict:
    return {"errorCode": code, "errorSummary": summary, "errorLink": code,
            "errorId": "oae" + secrets.token_hex(8),
            "errorCauses": [{"errorSummary": c} for c in causes]}


def _bucket(path: str) -> str:
    segments = path.split("/")
    return "/".join("{id}" if i == 4 and len(segments) > 5 else s
                    for i, s in enumerate(segments))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body leave at once: no 40 ms delayed ACK
    wbufsize = -1
    okta: FakeOkta

    def log_message(self, *args):  # keep test output quiet
        pass

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(self.okta.now(), usegmt=True)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        result = self.okta.handle(method, self.path, self.headers, body)
        if result is None:              # a dropped connection
            self.close_connection = True
            return
        status, headers, payload = result
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")
