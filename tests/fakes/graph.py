"""A fake Microsoft identity platform + Microsoft Graph v1.0 over TLS on loopback.

One threaded HTTPS server on 127.0.0.1 plays both hosts (the connector is pointed at it
through ``authority`` and ``graph_url``). msal refuses a plain-HTTP authority, so
:func:`make_pki` generates a throw-away CA and a server certificate (SAN IP:127.0.0.1 and
DNS:localhost) with ``cryptography``; tests hand the CA file to every client explicitly.

What it reproduces (docs: ../shared/reference/sources.md section 2):

login (``/{tenant}/...``)
    OpenID discovery; ``POST /{tenant}/oauth2/v2.0/token`` with client credentials, either
    ``client_secret`` or a ``client_assertion`` JWT whose signature is checked against the
    registered certificate (x5t thumbprint, aud = token endpoint, iss = sub = client id, exp).
    Errors look like the real service: ``{"error", "error_description": "AADSTSnnnn: ...",
    "error_codes": [nnnn], "timestamp", "trace_id", "correlation_id"}``.

Graph (``/v1.0/...``)
    ``/users`` and ``/groups`` with ``$select`` (default property set otherwise: no
    ``accountEnabled``!), ``$top`` 1..999 (default 100), ``$filter=displayName eq '...'`` on
    groups, ``$expand=members`` on groups as capped as Graph's (20 members, no link to the
    rest, pages of at most 100), ``@odata.nextLink`` paging with an opaque ``$skiptoken``; ``/groups/{id}/members``
    and ``/transitiveMembers`` (directoryObjects with ``@odata.type``); ``/users/{id}``,
    ``/groups/{id}``; ``/users/delta`` and ``/groups/delta`` with nextLink/deltaLink pages,
    ``$deltatoken=latest``, ``@removed`` (``changed`` = soft delete, ``deleted`` = hard),
    ``$filter`` on ids (at most 50, group-delta.md). Delta pages are the server's size, not
    the client's (``$top`` is not supported there): at most ``delta_page_size`` (200)
    objects, ``members@delta`` in objects of ``members_delta_chunk`` (500) entries and at
    most ``delta_page_members`` (500) entries a page, so a big group fills pages alone
    (delta-query-groups.md; a 9 993-member group came 20 times in msgraph-sdk-dotnet#574);
    its later objects come after other groups; an initial round also lists members that
    left, as ``@removed`` (microsoft-graph-docs #5855, #17513). A round is one snapshot,
    made when its first page is asked for. Members of every
    directoryObject kind (users, groups, devices, service principals, org contacts); expired
    delta tokens (410 with a ``Location`` header, or 400 ``syncStateNotFound``); 429 with
    ``Retry-After`` and Graph's error body (``innerError`` date and request-id); injected
    faults (status codes or a dropped connection), optionally only on pages after the first.
    The shapes are checked against tests/vectors/graph.py (tests/test_vendor_vectors.py).

Every request is recorded in :attr:`FakeEntra.requests` (method, path, query) so tests can
assert on what went over the wire; bodies and headers are not kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GRAPH_DEFAULT_USER_PROPERTIES = (
    "businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
)
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
EXPAND_CAP = 20          # objects in an expanded directory-object relationship


# ---------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> Pki:
    """A test CA and a server certificate for 127.0.0.1/localhost, written as PEM files."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = _key()
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name("scim-agent test CA")).issuer_name(_name("scim-agent test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return pki


def make_client_certificate(expired: bool = False) -> tuple[str, str]:
    """A self-signed app certificate as Entra accepts them: (PEM private key + certificate,
    PEM certificate alone, i.e. what is uploaded to the app registration)."""
    now = dt.datetime.now(dt.timezone.utc)
    key = _key()
    start, end = ((now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired
                  else (now - dt.timedelta(minutes=5), now + dt.timedelta(days=365)))
    cert = (x509.CertificateBuilder()
            .subject_name(_name("scim-agent")).issuer_name(_name("scim-agent"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem + cert_pem, cert_pem


# ---------------------------------------------------------------------------------------------
# Directory state


@dataclass
class App:
    client_id: str
    secret: str | None = None
    secret_expired: bool = False
    certificate: str | None = None         # PEM of the uploaded public certificate
    consented: bool = True                 # False: token endpoint answers AADSTS65001
    roles: tuple[str, ...] = ("User.Read.All", "GroupMember.Read.All")


@dataclass
class Rule:
    """An injected response: ``status`` (or a dropped connection) for requests whose path
    starts with ``prefix``; ``later_pages_only`` limits it to URLs with a skip token."""

    prefix: str
    status: int = 503
    times: float = 1
    retry_after: str | None = None
    drop: bool = False
    later_pages_only: bool = False
    code: str = ""
    body: dict | None = None       # answer this body instead (a proxy's 200 {}, say)


class _Expired(Exception):
    pass


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _unb64(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


@dataclass
class FakeEntra:
    """The tenant's state and the server's behaviour. Mutate it through the methods so the
    change log (which feeds delta queries) stays right."""

    tenant_id: str = "11111111-2222-3333-4444-555555555555"
    apps: dict[str, App] = field(default_factory=dict)
    users: dict[str, dict] = field(default_factory=dict)
    groups: dict[str, dict] = field(default_factory=dict)
    page_cap: int = 999                     # the server may return fewer than $top
    # Delta pages are sized by the server ($top is not supported on users/groups delta and
    # is ignored): at most delta_page_size objects per page, a group's members@delta cut
    # into objects of at most members_delta_chunk entries, and at most delta_page_members
    # entries on one page, so one big group fills a page alone (see _delta_pages).
    delta_page_size: int = 200
    members_delta_chunk: int = 500
    delta_page_members: int = 500
    devices: set[str] = field(default_factory=set)
    # other directoryObjects a group can hold (Graph group-list-members.md): id -> @odata.type
    others: dict[str, str] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    token_requests: int = 0
    base_url: str = ""

    def __post_init__(self):
        self._lock = threading.RLock()
        self._log: list[tuple] = []           # (version, kind, ...)
        self._generation = 1                  # bump to expire every delta token
        self._expire_mode = "410"
        self._tokens: dict[str, tuple[str, float]] = {}
        self._rounds: dict[tuple, list[list[dict]]] = {}   # a round's pages, made once
        self._listings: dict[tuple, list[dict]] = {}

    # -- directory mutations ---------------------------------------------------------------

    @property
    def version(self) -> int:
        return len(self._log)

    def add_user(self, uid: str | None = None, **props) -> str:
        uid = uid or str(uuid.uuid4())
        with self._lock:
            self.users[uid] = {"id": uid, "accountEnabled": True, **props}
            self._log.append(("user", uid))
        return uid

    def update_user(self, uid: str, **props) -> None:
        with self._lock:
            self.users[uid].update(props)
            self._log.append(("user", uid))

    def delete_user(self, uid: str, hard: bool = False) -> None:
        """Soft delete (reason ``changed``: restorable) or hard delete (``deleted``). A hard
        delete also drops the user's memberships, reported through group delta."""
        with self._lock:
            del self.users[uid]
            self._log.append(("user-removed", uid, "deleted" if hard else "changed"))
            if hard:
                for gid, group in self.groups.items():
                    if uid in group["members"]:
                        self.remove_member(gid, uid)

    def add_group(self, gid: str | None = None, displayName: str = "", members=()) -> str:
        gid = gid or str(uuid.uuid4())
        with self._lock:
            self.groups[gid] = {"id": gid, "displayName": displayName, "members": []}
            self._log.append(("group", gid))
            for member in members:
                self.add_member(gid, member)
        return gid

    def load_group(self, gid: str, displayName: str, members) -> str:
        """add_group for big directories (benchmarks): the same state and change log,
        without checking each member against the list so far (members must be distinct)."""
        with self._lock:
            self.groups[gid] = {"id": gid, "displayName": displayName, "members": list(members)}
            self._log.append(("group", gid))
            self._log.extend(("member", gid, member, True) for member in members)
        return gid

    def rename_group(self, gid: str, name: str) -> None:
        with self._lock:
            self.groups[gid]["displayName"] = name
            self._log.append(("group", gid))

    def delete_group(self, gid: str) -> None:
        with self._lock:
            del self.groups[gid]
            self._log.append(("group-removed", gid))

    def add_member(self, gid: str, member: str) -> None:
        with self._lock:
            if member not in self.groups[gid]["members"]:
                self.groups[gid]["members"].append(member)
                self._log.append(("member", gid, member, True))

    def remove_member(self, gid: str, member: str) -> None:
        with self._lock:
            self.groups[gid]["members"].remove(member)
            self.groups[gid].setdefault("departed", []).append(member)
            self._log.append(("member", gid, member, False))

    def expire_delta_tokens(self, mode: str = "410") -> None:
        """Invalidate every delta/skip token handed out so far: ``410`` (Gone + Location, as
        after a service-side migration) or ``syncStateNotFound`` (400, token too old)."""
        with self._lock:
            self._generation += 1
            self._expire_mode = mode

    def inject(self, prefix: str, status: int = 503, times: float = 1, **kw) -> Rule:
        rule = Rule(prefix, status, times, **kw)
        self.rules.append(rule)
        return rule

    def add_app(self, client_id: str, **kw) -> App:
        self.apps[client_id] = App(client_id, **kw)
        return self.apps[client_id]

    def paths(self, prefix: str = "") -> list[str]:
        return [p for _, p, _ in self.requests if p.startswith(prefix)]

    # -- serving -----------------------------------------------------------------------------

    def handle(self, method: str, url: str, headers, body: bytes):
        """(status, headers, JSON body) or None to drop the connection."""
        parts = urlsplit(url)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append((method, path, query))
            for rule in self.rules:
                if rule.times > 0 and path.startswith(rule.prefix) and (
                        not rule.later_pages_only or "$skiptoken" in query):
                    rule.times -= 1
                    if rule.drop:
                        return None
                    if rule.body is not None:
                        return rule.status, {}, rule.body
                    request_id = str(uuid.uuid4())
                    extra = {"request-id": request_id, "client-request-id": request_id}
                    if rule.retry_after:
                        extra["Retry-After"] = rule.retry_after
                    code = rule.code or ("TooManyRequests" if rule.status == 429 else
                                         "ServiceUnavailable" if rule.status == 503 else
                                         "UnknownError")
                    # the shape Graph throttles with (tests/vectors/graph.py THROTTLED_BODY)
                    return rule.status, extra, {"error": {
                        "code": code, "message": "injected",
                        "innerError": {"date": dt.datetime.now(dt.timezone.utc)
                                       .strftime("%Y-%m-%dT%H:%M:%S"),
                                       "request-id": request_id,
                                       "client-request-id": request_id}}}
        if path.startswith("/v1.0/"):
            return self._graph(method, path[len("/v1.0"):], query, headers)
        return self._login(method, path, body)

    # -- login -------------------------------------------------------------------------------

    def _aadsts(self, status: int, error: str, code: int, text: str):
        now = dt.datetime.now(dt.timezone.utc)
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        return status, {}, {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: "
                                 f"{corr} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
            "error_codes": [code], "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
            "trace_id": trace, "correlation_id": corr,
            "error_uri": f"{self.base_url}/error?code={code}",
        }

    def _unknown_tenant(self, tenant: str):
        return self._aadsts(400, "invalid_request", 90002,
                            f"Tenant '{tenant}' not found. Check to make sure you have the "
                            "correct tenant ID and are signing into the correct cloud.")

    def _login(self, method: str, path: str, body: bytes):
        segments = path.strip("/").split("/")
        tenant = segments[0] if segments else ""
        rest = "/".join(segments[1:])
        if tenant != self.tenant_id:
            return self._unknown_tenant(tenant)
        base = f"{self.base_url}/{tenant}"
        if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return 200, {}, {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{self.base_url}/{tenant}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                          "private_key_jwt",
                                                          "client_secret_basic"],
                "tenant_region_scope": "EU",
            }
        if method == "POST" and rest == "oauth2/v2.0/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            return self._token(form, f"{base}/oauth2/v2.0/token")
        return 404, {}, {"error": "not_found"}

    def _token(self, form: dict, endpoint: str):
        with self._lock:
            self.token_requests += 1
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            return self._aadsts(400, "unsupported_grant_type", 70003,
                                "The app requested an unsupported grant type.")
        app = self.apps.get(client_id)
        if app is None:
            return self._aadsts(400, "unauthorized_client", 700016,
                                f"Application with identifier '{client_id}' was not found in "
                                f"the directory '{self.tenant_id}'. This can happen if the "
                                "application has not been installed by the administrator of "
                                "the tenant or consented to by any user in the tenant.")
        if "client_secret" in form:
            if app.secret is None or not secrets.compare_digest(form["client_secret"],
                                                                app.secret):
                return self._aadsts(401, "invalid_client", 7000215,
                                    "Invalid client secret provided. Ensure the secret being "
                                    "sent in the request is the client secret value, not the "
                                    f"client secret ID, for a secret added to app '{client_id}'.")
            if app.secret_expired:
                return self._aadsts(401, "invalid_client", 7000222,
                                    f"The provided client secret keys for app '{client_id}' "
                                    "are expired. Visit the Azure portal to create new keys "
                                    "for your app.")
        elif form.get("client_assertion_type") == \
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            problem = self._check_assertion(app, form.get("client_assertion", ""), endpoint)
            if problem:
                return self._aadsts(401, "invalid_client", 700027,
                                    f"Client assertion contains an invalid signature. "
                                    f"[Reason - {problem}, Thumbprint of key used by client: "
                                    "'hidden']")
        else:
            return self._aadsts(401, "invalid_client", 7000218,
                                "The request body must contain the following parameter: "
                                "'client_assertion' or 'client_secret'.")
        if not app.consented:
            return self._aadsts(400, "invalid_grant", 65001,
                                f"The user or administrator has not consented to use the "
                                f"application with ID '{client_id}'. Send an interactive "
                                "authorization request for this user and resource.")
        graph = self.base_url
        if form.get("scope") != f"{graph}/.default":
            return self._aadsts(400, "invalid_scope", 1002012,
                                f"The provided value for scope {form.get('scope')} is not "
                                "valid. Client credential flows must have a scope value with "
                                "/.default suffixed to the resource identifier.")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (client_id, time.time() + 3599)
        return 200, {}, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                         "access_token": token}

    def _check_assertion(self, app: App, assertion: str, endpoint: str) -> str:
        """'' when the JWT is good, else the reason the real service would give."""
        if not app.certificate:
            return "The key was not found."
        cert = x509.load_pem_x509_certificate(app.certificate.encode())
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return "The assertion is not a JWT."
        sha1 = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode().rstrip("=")
        sha256 = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode().rstrip("=")
        # msal keeps the base64 padding of x5t; compare without it
        if (str(header.get("x5t", "")).rstrip("=") != sha1
                and str(header.get("x5t#S256", "")).rstrip("=") != sha256):
            return "The key was not found."
        now = dt.datetime.now(dt.timezone.utc)
        if cert.not_valid_after_utc < now:
            return "The key used is expired."
        try:
            claims = jwt.decode(assertion, key=cert.public_key(), algorithms=["RS256", "PS256"],
                                audience=endpoint, options={"require": ["exp", "aud", "iss",
                                                                        "sub"]})
        except jwt.ExpiredSignatureError:
            return "The assertion has expired."
        except jwt.InvalidTokenError as exc:
            return f"The assertion is invalid: {exc}."
        if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
            return "The issuer or subject is not the client id."
        return ""

    # -- graph -------------------------------------------------------------------------------

    def _graph_error(self, status: int, code: str, message: str, extra=None):
        return status, extra or {}, {"error": {"code": code, "message": message,
                                               "innerError": {"date": "2025-01-01T00:00:00",
                                                              "request-id": str(uuid.uuid4())}}}

    def _graph(self, method: str, path: str, query: dict, headers):
        auth = headers.get("Authorization", "")
        entry = self._tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
        if entry is None or entry[1] < time.time():
            return self._graph_error(401, "InvalidAuthenticationToken",
                                     "Access token is empty." if not auth else
                                     "Lifetime validation failed, the token is expired.")
        app = self.apps.get(entry[0])
        if app is None or not app.roles:
            return self._graph_error(403, "Authorization_RequestDenied",
                                     "Insufficient privileges to complete the operation.")
        if method != "GET":
            return self._graph_error(405, "Request_BadRequest", "read-only fake")
        top = query.get("$top", "100")
        if not top.isdigit() or not 1 <= int(top) <= 999:
            return self._graph_error(400, "Request_BadRequest",
                                     f"Invalid page size specified: '{top}'. Must be between 1 "
                                     "and 999 inclusive.")
        segments = path.strip("/").split("/")
        try:
            with self._lock:
                return self._route(segments, query)
        except _Expired:
            if self._expire_mode == "410":
                kind = segments[0]
                return self._graph_error(
                    410, "resyncRequired",
                    "Resync required. Replace any local cached resources with the server "
                    "version.", {"Location": f"{self.base_url}/v1.0/{kind}/delta?$deltatoken="})
            return self._graph_error(400, "syncStateNotFound",
                                     "The sync state generation is not found. The delta token "
                                     "is expired and data must be synchronized again.")
        except KeyError as exc:
            return self._graph_error(404, "Request_ResourceNotFound",
                                     f"Resource '{exc.args[0]}' does not exist or one of its "
                                     "queried reference-property objects are not present.")

    def _route(self, segments: list[str], query: dict):
        match segments:
            case ["users"]:
                key = ("users", self.version, query.get("$select"))
                if key not in self._listings:      # made once per state, not once per page
                    self._listings.clear()
                    self._listings[key] = self._select_users(list(self.users.values()), query)
                return self._collection("users", self._listings[key], query)
            case ["users", "delta"]:
                return self._delta("users", query)
            case ["users", uid]:
                return 200, {}, self._user_view(self.users[uid], query.get("$select"))
            case ["groups"]:
                groups = list(self.groups.values())
                if "$filter" in query:
                    name = _parse_name_filter(query["$filter"])
                    if name is None:
                        return self._graph_error(400, "Request_UnsupportedQuery",
                                                 "Unsupported Query.")
                    groups = [g for g in groups if g["displayName"] == name]
                views = [self._group_view(g, query.get("$select")) for g in groups]
                if query.get("$expand") == "members":
                    # Graph known issues, "query parameter limitations": an expanded
                    # directory-object relationship holds at most 20 objects, with no link to
                    # the rest, and a page with $expand holds at most 100 objects
                    for view, group in zip(views, groups):
                        view["members"] = self._objects(group["members"][:EXPAND_CAP], "id")
                    return self._collection("groups", views,
                                            {**query, "$top": str(min(
                                                int(query.get("$top", "100")), 100))})
                elif "$expand" in query:
                    return self._graph_error(400, "Request_BadRequest",
                                             "The fake expands members only.")
                return self._collection("groups", views, query)
            case ["groups", "delta"]:
                return self._delta("groups", query)
            case ["groups", gid]:
                return 200, {}, self._group_view(self.groups[gid], query.get("$select"))
            case ["groups", gid, "members"]:
                ids = list(self.groups[gid]["members"])
                return self._collection(f"groups/{gid}/members",
                                        self._objects(ids, query.get("$select")), query)
            case ["groups", gid, "transitiveMembers"]:
                return self._collection(f"groups/{gid}/transitiveMembers",
                                        self._objects(self._transitive(gid),
                                                      query.get("$select")), query)
        return self._graph_error(400, "BadRequest", f"Resource not found for the segment "
                                                    f"'{segments[-1]}'.")

    def _user_view(self, user: dict, select: str | None) -> dict:
        names = select.split(",") if select else GRAPH_DEFAULT_USER_PROPERTIES
        view = {n: user.get(n) for n in names if n != "id"}
        return {"id": user["id"], **view}

    def _select_users(self, users: list[dict], query: dict) -> list[dict]:
        return [self._user_view(u, query.get("$select")) for u in
                sorted(users, key=lambda u: u["id"])]

    def _group_view(self, group: dict, select: str | None) -> dict:
        names = select.split(",") if select else ("displayName", "description", "mail")
        return {"id": group["id"], **{n: group.get(n) for n in names
                                      if n not in ("id", "members")}}

    def _objects(self, ids: list[str], select: str | None) -> list[dict]:
        out = []
        for oid in ids:
            if oid in self.users:
                out.append({"@odata.type": USER_TYPE, **self._user_view(self.users[oid], select)})
            elif oid in self.groups:
                out.append({"@odata.type": GROUP_TYPE,
                            **self._group_view(self.groups[oid], select)})
            elif oid in self.devices:  # another directoryObject type
                out.append({"@odata.type": "#microsoft.graph.device", "id": oid})
            elif oid in self.others:   # service principals, org contacts
                out.append({"@odata.type": self.others[oid], "id": oid})
            # else: a deleted object; Graph lists only live members
        return out

    def _transitive(self, gid: str) -> list[str]:
        seen, stack, out = {gid}, [gid], []
        while stack:
            for member in self.groups[stack.pop()]["members"]:
                if member in seen:
                    continue
                seen.add(member)
                out.append(member)
                if member in self.groups:
                    stack.append(member)
        return out

    def _collection(self, name: str, items: list[dict], query: dict):
        size = min(int(query.get("$top", "100")), self.page_cap)
        offset = 0
        if "$skiptoken" in query:
            state = _unb64(query["$skiptoken"])
            offset = state["offset"]
        page = items[offset:offset + size]
        body = {"@odata.context": f"{self.base_url}/v1.0/$metadata#{name}", "value": page}
        if offset + size < len(items):
            keep = {k: v for k, v in query.items() if k != "$skiptoken"}
            keep["$skiptoken"] = _b64({"offset": offset + size})
            body["@odata.nextLink"] = (f"{self.base_url}/v1.0/{name}?"
                                       + "&".join(f"{k}={quote(v, safe=',')}"
                                                  for k, v in keep.items()))
        return 200, {}, body

    # -- delta -------------------------------------------------------------------------------

    def _delta(self, kind: str, query: dict):
        if "$skiptoken" in query:
            state = _unb64(query["$skiptoken"])
        elif "$deltatoken" in query:
            token = query["$deltatoken"]
            if token == "latest":
                state = {"gen": self._generation, "from": self.version, "to": self.version,
                         "select": query.get("$select"), "page": 0}
            else:
                if not token:  # the 410 Location form: an empty token = start over
                    state = {"gen": self._generation, "from": None, "to": self.version,
                             "select": query.get("$select"), "page": 0}
                else:
                    last = _unb64(token)
                    state = {**last, "from": last["to"], "to": self.version, "page": 0}
        else:
            ids = None
            if "$filter" in query:
                ids = _parse_id_filter(query["$filter"])
                if ids is None:
                    return self._graph_error(400, "Request_UnsupportedQuery",
                                             "Unsupported Query.")
                if len(ids) > 50:      # group-delta.md: "There is a limit of 50 filtered objects"
                    return self._graph_error(400, "Request_UnsupportedQuery",
                                             "The number of filtered objects is limited to 50.")
            state = {"gen": self._generation, "from": None, "to": self.version,
                     "select": query.get("$select"), "page": 0, "ids": ids}
        if state["gen"] != self._generation:
            raise _Expired()
        pages = self._delta_pages(kind, state)
        number = state["page"]
        page = pages[number] if number < len(pages) else []
        body = {"@odata.context": f"{self.base_url}/v1.0/$metadata#{kind}", "value": page}
        if number + 1 < len(pages):
            nxt = {**state, "page": number + 1}
            body["@odata.nextLink"] = f"{self.base_url}/v1.0/{kind}/delta?$skiptoken={_b64(nxt)}"
        else:
            done = {"gen": state["gen"], "to": state["to"], "select": state["select"],
                    "ids": state.get("ids")}
            body["@odata.deltaLink"] = (f"{self.base_url}/v1.0/{kind}/delta?$deltatoken="
                                        f"{_b64(done)}")
        return 200, {}, body

    def _delta_pages(self, kind: str, state: dict) -> list[list[dict]]:
        """The pages of one delta round, made when its first page is asked for and kept, so
        the round is one consistent snapshot (as a skip token is). Objects are packed in
        order, at most ``delta_page_size`` to a page and at most ``delta_page_members``
        members@delta entries to a page; a group object is never cut across pages (its
        members already come in objects of ``members_delta_chunk``). A round always has at
        least one page, possibly empty."""
        key = (kind, state["gen"], state["from"], state["to"], state.get("select"),
               tuple(state.get("ids") or ()))
        pages = self._rounds.get(key)
        if pages is not None:
            return pages
        items = (self._user_changes(state) if kind == "users" else self._group_changes(state))
        if state.get("ids") is not None:
            wanted = set(state["ids"])
            items = [item for item in items if item["id"] in wanted]
        pages, page, members = [], [], 0
        for item in items:
            weight = len(item.get("members@delta", ()))
            if page and (len(page) >= self.delta_page_size
                         or members + weight > self.delta_page_members):
                pages.append(page)
                page, members = [], 0
            page.append(item)
            members += weight
        pages.append(page)
        if len(self._rounds) > 16:
            self._rounds.clear()
        self._rounds[key] = pages
        return pages

    def _window(self, state: dict) -> list[tuple]:
        return self._log[state["from"]:state["to"]] if state["from"] is not None else []

    def _user_changes(self, state: dict) -> list[dict]:
        select = state.get("select")
        if state["from"] is None:
            return self._select_users(list(self.users.values()), {"$select": select} if select
                                      else {})
        touched: dict[str, str | None] = {}
        for entry in self._window(state):
            if entry[0] == "user":
                touched[entry[1]] = None
            elif entry[0] == "user-removed":
                touched[entry[1]] = entry[2]
        out = []
        for uid, removed in touched.items():
            if uid in self.users:       # current state wins (restored or changed again)
                out.append(self._user_view(self.users[uid], select))
            elif removed:
                out.append({"id": uid, "@removed": {"reason": removed}})
        return out

    def _group_changes(self, state: dict) -> list[dict]:
        select = state.get("select")
        names = select.split(",") if select else ("displayName", "description", "members")
        with_members = "members" in names
        touched: dict[str, dict] = {}
        if state["from"] is None:
            for gid, group in self.groups.items():
                # the initial round lists current members, and may also list members that
                # left, marked @removed (microsoft-graph-docs issues #5855, #17513)
                touched[gid] = {**{m: False for m in group.get("departed", ())},
                                **{m: True for m in group["members"]}}
        else:
            for entry in self._window(state):
                if entry[0] in ("group", "group-removed"):
                    touched.setdefault(entry[1], {})
                elif entry[0] == "member":
                    touched.setdefault(entry[1], {})[entry[2]] = entry[3]
        out: list[dict] = []
        later: list[list[dict]] = []
        for gid, changes in touched.items():
            if gid not in self.groups:
                out.append({"id": gid, "@removed": {"reason": "deleted"}})
                continue
            view = self._group_view(self.groups[gid], ",".join(n for n in names))
            entries = []
            for member, added in changes.items():
                kind = (GROUP_TYPE if member in self.groups else
                        "#microsoft.graph.device" if member in self.devices else
                        self.others.get(member, USER_TYPE))
                entry = {"@odata.type": kind, "id": member}
                if not added:
                    entry["@removed"] = {"reason": "deleted"}
                entries.append(entry)
            if not with_members or not entries:
                out.append(view)
                continue
            # a big group's members are spread over several objects (and pages) ...
            chunks = [{**view, "members@delta": entries[start:start + self.members_delta_chunk]}
                      for start in range(0, len(entries), self.members_delta_chunk)]
            out.append(chunks[0])
            later.append(chunks[1:])
        # ... and its later objects come after other groups: "the same group could show up
        # anywhere in the nextLink sequence" (delta-query-groups.md)
        for rank in range(max(map(len, later), default=0)):
            out.extend(chunks[rank] for chunks in later if rank < len(chunks))
        return out


def _parse_id_filter(text: str) -> list[str] | None:
    """``id eq 'a' or id eq 'b'`` -> ``['a', 'b']``; anything else None (delta queries
    filter on ids only)."""
    ids = []
    for part in text.split(" or "):
        part = part.strip()
        if not (part.startswith("id eq '") and part.endswith("'")) or "'" in part[7:-1]:
            return None
        ids.append(part[7:-1])
    return ids


def _parse_name_filter(text: str) -> str | None:
    """``displayName eq 'O''Brien'`` -> ``O'Brien`` (OData doubles single quotes)."""
    prefix = "displayName eq '"
    if not (text.startswith(prefix) and text.endswith("'")):
        return None
    inner = text[len(prefix):-1]
    if "'" in inner.replace("''", ""):
        return None
    return inner.replace("''", "'")


# ---------------------------------------------------------------------------------------------
# The server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    disable_nagle_algorithm = True   # headers and body go out in two writes
    fake: FakeEntra

    def log_message(self, *args):  # keep test output quiet
        pass

    def _serve(self, method: str):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        result = self.server.fake.handle(method, self.path, self.headers, body)  # type: ignore
        if result is None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, headers, payload = result
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that refuses our CA, or a connection we dropped on purpose, is expected
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, OSError)):
            super().handle_error(request, client_address)


class FakeEntraServer:
    """Runs :class:`FakeEntra` on ``https://127.0.0.1:<port>`` until :meth:`stop`."""

    def __init__(self, fake: FakeEntra, pki: Pki):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert_file, pki.key_file)
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        # the handshake happens in the handler thread, so a slow client cannot stall accept()
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self.httpd.fake = fake  # type: ignore[attr-defined]
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        fake.base_url = self.url
        self.fake = fake
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                         kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "FakeEntraServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def thumbprint(cert_pem: str) -> str:
    """SHA-1 hex of a PEM certificate, as the Entra portal shows it."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
