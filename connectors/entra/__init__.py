"""Microsoft Entra ID (Azure AD) through Microsoft Graph v1.0, signed in with msal.

Vendor traps handled here (wire details: ../shared/reference/sources.md section 2):

- msal needs its own HTTP client. msal's ``verify=`` is ignored when ``REQUESTS_CA_BUNDLE``
  is set (requests prefers the environment), so msal gets a ``requests.Session`` with
  ``trust_env=False`` and ``verify`` = ``ca_file`` (or the certifi bundle). Graph goes through
  the shared httpx policy (``connectors/http.py``), which ignores the environment too.
- A certificate credential is a PEM file holding the private key and the certificate; msal
  wants the key and the certificate's SHA-1 thumbprint, computed here with ``cryptography``.
- Token errors come back as ``AADSTSnnnn`` codes; the common ones (bad or expired secret,
  rejected certificate, missing consent, unknown tenant, unknown app) become one sentence
  telling the operator what to fix. A 403 from Graph means the app lacks the application
  permissions or their admin consent.
- Tokens are cached by msal (one app object per source): a token is asked for before each
  Graph request, which costs nothing until it nears expiry, so long reads never run on an
  expired token.
- ``/users`` returns a default property set without ``accountEnabled``: the read always asks
  for ``$select`` of the mapped attributes plus ``id`` and ``accountEnabled``, with
  ``$top=999`` (the maximum), following ``@odata.nextLink`` to the end.
- Group members are directoryObjects of several types: only users and groups are kept
  (``@odata.type``); nesting is left to the engine. With ``groups`` set, only the transitive
  members of those groups are in scope, and the groups in scope are those groups and the
  groups nested in them.
- Delta queries: a full read first takes ``$deltatoken=latest`` links for users and groups
  (before reading, so that a change made during the read is replayed, not lost), then reads
  everything; later cycles follow the stored delta links. The cursor holds both links in one
  JSON string, with the ``$select`` and scope it was made for (a config change forces a full
  read). ``members@delta`` of one group may be spread over several objects and pages: they
  are merged in order. ``@removed`` on a user (soft ``changed`` or hard ``deleted``) removes
  it from the view (the engine deactivates it); on a group, deletes the group.
- An expired delta token (``410 Gone`` or ``400 syncStateNotFound``, after 7 days for
  directory objects) raises CursorExpired: the engine then does one full read.
- Throttling: 429/503 (and other 5xx, dropped connections) are retried with ``Retry-After``
  honoured, else exponential backoff, a bounded number of times; then the read fails.
- A failure anywhere in a read raises SourceError: a half-read directory must never look
  like deletions. Links handed back by Graph are only followed on Graph's own origin, so the
  bearer token never goes elsewhere.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import certifi
import httpx
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..base import (ChangeSet, SettingError, CursorExpired, Directory, GroupRecord, Secret,
                   SourceAuthError, SourceError, TransientError, UserRecord, Value)
from ..http import HttpPolicy, build_client, retrying, server_wait_hint

log = logging.getLogger(__name__)

PAGE_SIZE = 999                      # Graph's maximum $top for users and groups
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
CURSOR_FORMAT = 1
MAX_PAGES = 100_000                  # a loop guard, far above any real tenant
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_AADSTS = re.compile(r"AADSTS(\d+)")

# What an operator should do about the token errors people actually meet.
AADSTS_ADVICE: dict[int, str] = {
    7000215: "the client secret is wrong (use the secret's Value, not its Secret ID)",
    7000222: "the client secret has expired; add a new one under Certificates & secrets",
    700027: "the certificate was rejected: upload its public part to the app registration, "
            "or replace it if it has expired",
    7000218: "neither a client secret nor a certificate was sent",
    65001: "admin consent is missing; grant admin consent for the app's API permissions",
    90002: "the tenant does not exist in this cloud; check tenant_id and authority",
    700016: "no application with this client_id exists in the tenant; check client_id and "
            "tenant_id",
    1002012: "the scope was refused; check graph_url",
    70011: "the scope was refused; check graph_url",
}


def _cert_advice(description: str) -> str:
    if "expired" in description.lower():
        return "the certificate has expired; upload a new one and point certificate at it"
    return AADSTS_ADVICE[700027]


class _NotFound(SourceError):
    """Graph answered 404 (an id that does not exist)."""


@dataclass(frozen=True)
class Credential:
    """What msal needs, and what check() may show about it (never the secret itself)."""

    msal_value: Any = field(repr=False)   # the secret or the private key: never shown
    description: str
    expires: dt.datetime | None = None


def load_certificate(pem: str) -> Credential:
    """A PEM holding an unencrypted private key and its certificate -> msal's dict.

    msal (1.30+) wants ``{"private_key": PEM, "thumbprint": SHA-1 hex}``; the portal shows
    the same SHA-1 thumbprint, so an operator can match them.
    """
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise SettingError("", "certificate: the private key is encrypted; store it unencrypted in "
                          "a file only the agent can read") from None
    except ValueError:
        raise SettingError("", "certificate: no PEM private key found (the file must hold the "
                          "private key and the certificate)") from None
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        certs = []
    wanted = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    cert = next((c for c in certs if c.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == wanted),
        None)
    if cert is None:
        raise SettingError("", "certificate: no PEM certificate matching the private key found "
                          "(the file must hold the private key and the certificate)")
    thumb = cert.fingerprint(hashes.SHA1()).hex().upper()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return Credential({"private_key": key_pem, "thumbprint": thumb},
                      f"certificate {thumb}", cert.not_valid_after_utc)


def clean_attributes(raw: Mapping[str, Any]) -> dict[str, Value]:
    """Graph JSON -> record attributes: OData annotations and ``id`` dropped, nested objects
    flattened to dotted names (``onPremisesExtensionAttributes.extensionAttribute1``), lists
    kept as lists of strings."""
    out: dict[str, Value] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if "@" not in key:
                    put(f"{prefix}.{key}", inner)
        elif isinstance(value, (list, tuple)):
            out[prefix] = [str(v) for v in value if isinstance(v, (str, int, float))]
        elif value is None or isinstance(value, (str, bool, int, float)):
            out[prefix] = value
        else:
            out[prefix] = str(value)

    for key, value in raw.items():
        if key == "id" or "@" in key:
            continue
        put(key, value)
    return out


def odata_quote(value: str) -> str:
    """A string literal for an OData ``$filter``: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


class EntraSource:
    type_name: ClassVar[str] = "entra"
    supports_changes: ClassVar[bool] = True
    default_mapping: ClassVar[dict[str, tuple[str, ...]]] = {
        "userName": ("mail", "userPrincipalName"),
        "email": ("mail", "userPrincipalName"),
        "name.givenName": ("givenName",),
        "name.familyName": ("surname",),
        "displayName": ("displayName",),
        "title": ("jobTitle",),
        "department": ("department",),
        "employeeNumber": ("employeeId",),
    }
    group_name_attributes: ClassVar[tuple[str, ...]] = ("displayName",)

    @dataclass(frozen=True)
    class Settings:
        tenant_id: str = field(metadata={"help": "the directory (tenant) id, a GUID or a "
                                                 "verified domain"})
        client_id: str = field(metadata={"help": "the application (client) id of the app "
                                                 "registration"})
        client_secret: Secret | None = field(default=None, metadata={
            "help": "a client secret value of the app registration (or use certificate)"})
        certificate: Secret | None = field(default=None, metadata={
            "help": "PEM with the private key and certificate, usually {file = \"...\"}"})
        groups: tuple[str, ...] = field(default=(), metadata={
            "help": "group names or ids whose transitive members are in scope; empty = all"})
        authority: str = field(default="https://login.microsoftonline.com", metadata={
            "help": "sign-in host (national clouds: login.microsoftonline.us, "
                    "login.chinacloudapi.cn)"})
        graph_url: str = field(default="https://graph.microsoft.com", metadata={
            "help": "Graph host (national clouds: graph.microsoft.us, "
                    "microsoftgraph.chinacloudapi.cn)"})
        ca_file: Path | None = field(default=None, metadata={
            "help": "CA bundle to verify sign-in and Graph TLS with (default: public CAs)"})
        full_read_every: dt.timedelta = field(default=dt.timedelta(days=7), metadata={
            "help": "full read at least this often (delta tokens live 7 days)"})
        timeout: float = field(default=30.0, metadata={"help": "seconds per HTTP request"})

    def __init__(self, settings: "EntraSource.Settings", *,
                 attributes: Iterable[str] | Mapping[str, str | Iterable[str]] = (),
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 policy: HttpPolicy | None = None):
        """``attributes``: the Graph property names used in ``[source.attributes]`` (or that
        table itself), so that they are part of ``$select``. ``transport``, ``sleep`` and
        ``policy`` are for tests."""
        self.settings = settings
        self._validate()
        self._credential = self._load_credential()
        extra: list[str] = []
        for raw in (attributes.values() if isinstance(attributes, Mapping) else attributes):
            extra.extend([raw] if isinstance(raw, str) else raw)
        self.user_select = user_select([*self.default_mapping.values(), extra])
        self._policy = policy or HttpPolicy(timeout=settings.timeout, ca_file=settings.ca_file)
        self._sleep = sleep
        self._graph_origin = _origin(settings.graph_url)
        self._client = build_client(settings.graph_url.rstrip("/"), self._policy,
                                    transport=transport)
        self._login = _login_session(settings.ca_file, settings.timeout)
        self._token_cache = msal.TokenCache()
        self._msal: msal.ConfidentialClientApplication | None = None

    # -- configuration --------------------------------------------------------------------

    def _validate(self) -> None:
        s = self.settings
        if not s.tenant_id.strip():
            raise SettingError("", "tenant_id is empty")
        if not s.client_id.strip():
            raise SettingError("", "client_id is empty")
        if (s.client_secret is None) == (s.certificate is None):
            raise SettingError("", "set exactly one of client_secret and certificate")
        for name in ("authority", "graph_url"):
            url = urlsplit(getattr(s, name))
            if url.scheme != "https" or not url.hostname:
                raise SettingError("", f"{name} must be an https:// URL (TLS is always verified)")
        for entry in s.groups:
            if not entry.strip():
                raise SettingError("", "groups holds an empty group name")

    def _load_credential(self) -> Credential:
        if self.settings.client_secret is not None:
            return Credential(self.settings.client_secret.reveal(), "client secret")
        assert self.settings.certificate is not None
        return load_certificate(self.settings.certificate.reveal())

    @property
    def _scoped(self) -> bool:
        return bool(self.settings.groups)

    # -- sign-in ----------------------------------------------------------------------------

    @property
    def _authority_url(self) -> str:
        return f"{self.settings.authority.rstrip('/')}/{self.settings.tenant_id}"

    def _app(self) -> msal.ConfidentialClientApplication:
        if self._msal is None:
            try:
                # msal fetches the tenant's OpenID configuration here
                self._msal = msal.ConfidentialClientApplication(
                    self.settings.client_id,
                    client_credential=self._credential.msal_value,
                    authority=self._authority_url,
                    http_client=self._login,
                    instance_discovery=False,   # a specific tenant; no call to a fixed host
                    token_cache=self._token_cache,
                )
            except requests.RequestException as exc:
                raise self._login_unreachable(exc) from None
            except ValueError as exc:
                raise self._discovery_error(exc) from None
        return self._msal

    def _access_token(self) -> str:
        app = self._app()
        try:
            result = app.acquire_token_for_client(
                scopes=[f"{self.settings.graph_url.rstrip('/')}/.default"])
        except requests.RequestException as exc:
            raise self._login_unreachable(exc) from None
        except ValueError as exc:          # a non-JSON answer from the token endpoint
            raise SourceError(f"the token endpoint of {self._authority_url} gave an "
                              f"unreadable answer ({type(exc).__name__})") from None
        if "access_token" in result:
            log.debug("Graph token from %s", result.get("token_source", "identity provider"))
            return result["access_token"]
        raise self._token_error(result)

    def _token_error(self, result: Mapping[str, Any]) -> SourceError:
        description = str(result.get("error_description") or "")
        codes = result.get("error_codes") or []
        match = _AADSTS.search(description)
        code = int(codes[0]) if codes else int(match.group(1)) if match else None
        where = f"app {self.settings.client_id} in tenant {self.settings.tenant_id}"
        if code == 700027:
            advice = _cert_advice(description)
        elif code in AADSTS_ADVICE:
            advice = AADSTS_ADVICE[code]
        else:  # the service's own first sentence, without trace ids
            advice = (_AADSTS.sub("", description).split(". ")[0].strip(" :.")
                      or str(result.get("error") or "unknown error"))
        label = f"AADSTS{code}" if code is not None else str(result.get("error"))
        return SourceAuthError(f"Entra ID refused a token for {where} ({label}): {advice}.")

    def _discovery_error(self, exc: ValueError) -> SourceError:
        text = f"{exc} {exc.__context__ or ''}"
        match = _AADSTS.search(text)
        if match and int(match.group(1)) in AADSTS_ADVICE:
            code = int(match.group(1))
            return SourceAuthError(f"Entra ID sign-in at {self._authority_url} failed "
                                   f"(AADSTS{code}): {AADSTS_ADVICE[code]}.")
        return SourceError(f"OpenID discovery at {self._authority_url} failed; check "
                           "authority and tenant_id.")

    def _login_unreachable(self, exc: requests.RequestException) -> SourceError:
        host = urlsplit(self.settings.authority).netloc
        if isinstance(exc, requests.exceptions.SSLError):
            return SourceError(f"TLS verification of the sign-in host {host} failed; set "
                               "ca_file to the CA that signed its certificate.")
        return SourceError(f"cannot reach the sign-in host {host} ({type(exc).__name__}).")

    # -- Graph requests ---------------------------------------------------------------------

    def _get(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One Graph GET, retried while throttled or failing transiently; the JSON body."""
        path = urlsplit(url).path
        if url.startswith("http") and _origin(url) != self._graph_origin:
            raise SourceError(f"Graph returned a link to another host ({_origin(url)}); "
                              "refusing to send the token there.")
        try:
            return retrying(self._policy, sleep=self._sleep)(self._get_once, url, params)
        except TransientError as exc:
            raise SourceError(f"Graph GET {path} kept failing: {exc} (gave up after "
                              f"{self._policy.max_attempts} attempts).") from None

    def _get_once(self, url: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        path = urlsplit(url).path
        headers = {"Authorization": f"Bearer {self._access_token()}"}
        try:
            response = self._client.get(url, params=params, headers=headers)
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise SourceError(f"TLS verification of {self._graph_origin} failed; set "
                                  "ca_file to the CA that signed its certificate.") from None
            raise TransientError(f"{type(exc).__name__}", sent=True) from None
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError:
                raise SourceError(f"Graph GET {path} returned a body that is not JSON.") \
                    from None
        code = _graph_error_code(response)
        label = f"{status} {code}".strip()
        if status in RETRY_STATUSES:
            raise TransientError(f"HTTP {label}", status=status,
                                 retry_after=server_wait_hint(response))
        if "/delta" in path and (status == 410 or code.lower() in RESYNC_CODES):
            kind = "users" if path.rstrip("/").endswith("users/delta") else "groups"
            # the engine logs the full read that follows; once is enough
            log.debug("Graph says the %s delta token is no longer valid (%s)", kind, label)
            raise CursorExpired(f"the Graph delta token for {kind} expired ({label}).")
        if status == 401:
            raise SourceAuthError(f"Graph rejected the access token for GET {path} ({label}); "
                                  "check that graph_url belongs to the same cloud as "
                                  "authority.")
        if status == 403:
            raise SourceAuthError(f"Graph refused GET {path} ({label}): grant the app the "
                                  "application permissions User.Read.All and "
                                  "GroupMember.Read.All, with admin consent.")
        if status == 404:
            raise _NotFound(f"Graph GET {path} found nothing ({label}).")
        raise SourceError(f"Graph GET {path} failed with HTTP {label}.")

    def _pages(self, path: str, params: Mapping[str, str] | None
               ) -> Iterator[dict[str, Any]]:
        """Every page of a collection, following ``@odata.nextLink`` as given (httpx would
        replace a link's query with ``params``, so links go with ``params=None``)."""
        url: str = path
        query: Mapping[str, str] | None = params
        for _ in range(MAX_PAGES):
            body = self._get(url, query)
            yield body
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return
            if next_link == url:
                raise SourceError(f"Graph GET {urlsplit(url).path} returned itself as the "
                                  "next page.")
            url, query = next_link, None
        raise SourceError(f"Graph GET {path} returned more than {MAX_PAGES} pages.")

    def _list(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        return [item for page in self._pages(path, params) for item in page.get("value", [])]

    def _delta(self, url: str) -> tuple[list[dict[str, Any]], str]:
        """Follow a delta round to its end: (every object in order, the new deltaLink)."""
        items: list[dict[str, Any]] = []
        for page in self._pages(url, None):
            items.extend(page.get("value", []))
            if "@odata.deltaLink" in page:
                return items, page["@odata.deltaLink"]
        raise SourceError(f"Graph delta round on {urlsplit(url).path} ended without a "
                          "deltaLink.")

    # -- full read ----------------------------------------------------------------------------

    def read(self) -> Directory:
        # Delta links first: a change made while we read shows up (again) in the next delta.
        cursor = self._latest_cursor()
        if self._scoped:
            scope_users, scope_groups = self._scope()
            users = [user_record(raw) for raw in scope_users.values()]
            groups = [self._group_with_members(gid, name)
                      for gid, name in scope_groups.items()]
        else:
            users = [user_record(raw) for raw in self._list(
                "/v1.0/users", {"$select": ",".join(self.user_select), "$top": str(PAGE_SIZE)})]
            groups = [self._group_with_members(raw["id"], raw.get("displayName"))
                      for raw in self._list("/v1.0/groups", {"$select": "id,displayName",
                                                             "$top": str(PAGE_SIZE)})]
        log.info("read %d users and %d groups from Entra ID", len(users), len(groups))
        return Directory.of(users, groups, cursor)

    def _group_with_members(self, gid: str, name: Any) -> GroupRecord:
        members = self._list(f"/v1.0/groups/{gid}/members",
                             {"$select": "id", "$top": str(PAGE_SIZE)})
        return GroupRecord(gid, {"displayName": name},
                           frozenset(m["id"] for m in members
                                     if m.get("@odata.type") in (USER_TYPE, GROUP_TYPE)))

    def _scope_group_ids(self) -> dict[str, str]:
        """The ``groups`` setting resolved: id -> display name."""
        found: dict[str, str] = {}
        for entry in self.settings.groups:
            if _GUID.match(entry):
                try:
                    group = self._get(f"/v1.0/groups/{entry}", {"$select": "id,displayName"})
                except _NotFound:
                    raise SourceError(f"scope group {entry} (groups setting) does not exist "
                                      "in the tenant.") from None
                found[group["id"]] = group.get("displayName") or ""
                continue
            matches = self._list("/v1.0/groups", {
                "$filter": f"displayName eq {odata_quote(entry)}", "$select": "id,displayName"})
            if not matches:
                raise SourceError(f"no group named {entry!r} (groups setting) in the tenant.")
            if len(matches) > 1:
                raise SourceError(f"{len(matches)} groups are named {entry!r} (groups "
                                  "setting); use the group's id instead.")
            found[matches[0]["id"]] = matches[0].get("displayName") or entry
        return found

    def _scope(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Users (raw, with the selected properties) and groups (id -> name) in scope: the
        transitive members of the scope groups, and those groups themselves."""
        groups = self._scope_group_ids()
        users: dict[str, dict[str, Any]] = {}
        select = ",".join(dict.fromkeys([*self.user_select, "displayName"]))
        for gid in list(groups):
            for obj in self._list(f"/v1.0/groups/{gid}/transitiveMembers",
                                  {"$select": select, "$top": str(PAGE_SIZE)}):
                if obj.get("@odata.type") == USER_TYPE:
                    users[obj["id"]] = obj
                elif obj.get("@odata.type") == GROUP_TYPE:
                    groups.setdefault(obj["id"], obj.get("displayName") or "")
        log.debug("scope groups hold %d users and %d groups", len(users), len(groups))
        return users, groups

    # -- change reads -------------------------------------------------------------------------

    def _latest_cursor(self) -> str:
        users_link = self._delta(self._users_delta_start() + "&$deltatoken=latest")[1]
        groups_link = self._delta(self._groups_delta_start() + "&$deltatoken=latest")[1]
        return self._cursor(users_link, groups_link)

    def _users_delta_start(self) -> str:
        return f"/v1.0/users/delta?$select={','.join(self.user_select)}"

    def _groups_delta_start(self) -> str:
        return "/v1.0/groups/delta?$select=displayName,members"

    def _cursor(self, users_link: str, groups_link: str) -> str:
        return json.dumps({"format": CURSOR_FORMAT, "users": users_link, "groups": groups_link,
                           "select": list(self.user_select),
                           "scope": sorted(self.settings.groups)}, separators=(",", ":"))

    def _parse_cursor(self, cursor: str) -> tuple[str, str]:
        try:
            state = json.loads(cursor)
            users_link, groups_link = state["users"], state["groups"]
            fmt, select, scope = state["format"], state["select"], state["scope"]
        except (ValueError, TypeError, KeyError):
            raise CursorExpired("the stored Entra cursor is not one this version "
                                "understands.") from None
        if fmt != CURSOR_FORMAT:
            raise CursorExpired("the stored Entra cursor has an older format.")
        if select != list(self.user_select):
            raise CursorExpired("the mapped user attributes changed since the last full read.")
        if scope != sorted(self.settings.groups):
            raise CursorExpired("the groups setting changed since the last full read.")
        for link in (users_link, groups_link):
            if not isinstance(link, str) or _origin(link) != self._graph_origin:
                raise CursorExpired("the stored delta links belong to another graph_url.")
        return users_link, groups_link

    def read_changes(self, cursor: str, known: Directory) -> ChangeSet:
        users_link, groups_link = self._parse_cursor(cursor)
        user_items, users_link = self._delta(users_link)
        group_items, groups_link = self._delta(groups_link)
        users, removed_users = merge_user_delta(user_items, known)
        groups, removed_groups = merge_group_delta(group_items, known)
        if self._scoped:
            users, removed_users, groups, removed_groups = self._rescope(
                known, users, removed_users, groups, removed_groups)
        else:
            # a group the view has never seen must be complete, not just its member changes
            for gid in [g for g in groups if g not in known.groups]:
                groups[gid] = self._group_with_members(gid, groups[gid].attributes.get(
                    "displayName"))
        changes = ChangeSet(users=users, groups=groups, removed_users=frozenset(removed_users),
                            removed_groups=frozenset(removed_groups),
                            cursor=self._cursor(users_link, groups_link))
        log.info("Entra delta: %d users changed, %d removed; %d groups changed, %d removed",
                 len(users), len(removed_users), len(groups), len(removed_groups))
        return changes

    def _rescope(self, known: Directory, users: dict[str, UserRecord], removed_users: set[str],
                 groups: dict[str, GroupRecord], removed_groups: set[str]):
        """Limit a change set to the scope as it is now: members that joined the scope groups
        come in whole, those that left are removed."""
        scope_users, scope_groups = self._scope()
        # the scope listing was read after the delta and is complete: it has the last word
        users = {uid: user_record(raw) for uid, raw in scope_users.items()
                 if uid in users or uid not in known.users}
        removed_users = {uid for uid in known.users if uid not in scope_users}
        groups = {gid: rec for gid, rec in groups.items()
                  if gid in scope_groups and gid in known.groups}
        for gid, name in scope_groups.items():
            if gid not in known.groups:
                groups[gid] = self._group_with_members(gid, name)
        removed_groups = {gid for gid in known.groups if gid not in scope_groups}
        return users, removed_users, groups, removed_groups

    # -- check ------------------------------------------------------------------------------

    def check(self) -> dict[str, int | str]:
        self._access_token()
        report: dict[str, int | str] = {"tenant": self.settings.tenant_id,
                                        "credential": self._credential.description}
        if self._credential.expires is not None:
            report["certificate expires"] = self._credential.expires.date().isoformat()
        users = self._get("/v1.0/users", {"$select": "id,accountEnabled",
                                          "$top": str(PAGE_SIZE)})
        groups = self._get("/v1.0/groups", {"$select": "id", "$top": str(PAGE_SIZE)})
        values = users.get("value", [])
        report["users"] = len(values)
        report["disabled users"] = sum(1 for u in values if u.get("accountEnabled") is False)
        report["groups"] = len(groups.get("value", []))
        if "@odata.nextLink" in users or "@odata.nextLink" in groups:
            report["counted"] = f"first page only (up to {PAGE_SIZE} each)"
        if self._scoped:
            scope_users, scope_groups = self._scope()
            report["users in scope"] = len(scope_users)
            report["groups in scope"] = len(scope_groups)
        return report

    def close(self) -> None:
        self._client.close()
        self._login.close()


# ---------------------------------------------------------------------------------------------
# Pure helpers


def user_select(raw_names: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """``$select`` for users: id, accountEnabled and the top-level property of every mapped
    attribute (``onPremisesExtensionAttributes.extensionAttribute1`` selects the whole
    complex property)."""
    names = {"id", "accountEnabled"}
    for raws in raw_names:
        names.update(raw.split(".")[0] for raw in raws if raw)
    return tuple(sorted(names))


def user_record(raw: Mapping[str, Any]) -> UserRecord:
    return UserRecord(raw["id"], clean_attributes(raw), raw.get("accountEnabled") is not False)


def merge_user_delta(items: Iterable[Mapping[str, Any]], known: Directory
                     ) -> tuple[dict[str, UserRecord], set[str]]:
    """User delta objects -> (changed records, removed ids). An update may carry only the
    changed properties, so it is laid over what the view knew. The same user may appear
    more than once (replays); the last word wins."""
    changed: dict[str, UserRecord] = {}
    removed: set[str] = set()
    for item in items:
        uid = item["id"]
        if "@removed" in item:
            removed.add(uid)
            changed.pop(uid, None)
            continue
        removed.discard(uid)
        base = changed.get(uid) or known.users.get(uid)
        attrs = dict(base.attributes) if base else {}
        attrs.update(clean_attributes(item))
        if "accountEnabled" in item:
            active = item["accountEnabled"] is not False
        else:
            active = base.active if base else True
        changed[uid] = UserRecord(uid, attrs, active)
    return changed, removed


def merge_group_delta(items: Iterable[Mapping[str, Any]], known: Directory
                      ) -> tuple[dict[str, GroupRecord], set[str]]:
    """Group delta objects -> (changed records, removed ids). One group may come back in
    several objects, each with part of its ``members@delta``: applied in order over the
    members the view knew."""
    attrs: dict[str, dict[str, Value]] = {}
    members: dict[str, set[str]] = {}
    removed: set[str] = set()
    for item in items:
        gid = item["id"]
        if "@removed" in item:
            removed.add(gid)
            attrs.pop(gid, None)
            members.pop(gid, None)
            continue
        removed.discard(gid)
        if gid not in attrs:
            base = known.groups.get(gid)
            attrs[gid] = dict(base.attributes) if base else {}
            members[gid] = set(base.members) if base else set()
        attrs[gid].update(clean_attributes({k: v for k, v in item.items()
                                            if not k.startswith("members")}))
        for entry in item.get("members@delta", []):
            if "@removed" in entry:
                members[gid].discard(entry["id"])
            elif entry.get("@odata.type", USER_TYPE) in (USER_TYPE, GROUP_TYPE):
                members[gid].add(entry["id"])
    return ({gid: GroupRecord(gid, attrs[gid], frozenset(members[gid])) for gid in attrs},
            removed)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _graph_error_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return ""
    if isinstance(error, Mapping):
        return str(error.get("code") or "")
    return str(error or "")


def _login_session(ca_file: Path | None, timeout: float) -> requests.Session:
    """The HTTP client msal uses: TLS verified against ca_file (else certifi), and blind to
    REQUESTS_CA_BUNDLE / proxies / .netrc from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_file) if ca_file else certifi.where()
    session.request = functools.partial(session.request, timeout=timeout)  # type: ignore
    return session
