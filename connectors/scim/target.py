"""The SCIM 2.0 target client, with Split's profile.

What it sends is the intersection of what Okta and Entra send as SCIM clients (see
reference/scim.md §4), since that is what Split's service was built to accept:

- users are keyed by ``userName`` = the e-mail, which is also the one primary work e-mail;
- PATCH ops are lowercase; deactivation is ``replace active false``, never DELETE;
- groups are created empty, then members are added by PATCH, at most 100 per request;
  a member is removed with ``members[value eq "id"]`` (never the legacy Entra form, which
  a conforming server reads as "remove every member");
- PATCH answers may be 204 or 200 with a body; error bodies may carry ``status`` as a string
  or a number.

Creates cost one request: POST, and only on a 409 or an unknown outcome (a timeout after the
request went out, a 5xx) look the object up by ``userName``/``displayName`` and adopt it.
Errors are raised as the ``connectors.base`` tree says, so the caller knows what to do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..base import (ConflictError, FatalTargetError, Interrupted, NotFoundError, RejectedError,
                   Secret, TargetError, TransientError, is_loopback)
from ..http import HttpPolicy, RateLimiter, build_client, retrying, server_wait_hint

log = logging.getLogger(__name__)

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_JSON = "application/scim+json"

MEMBERS_PER_PATCH = 100
PAGE_SIZE = 100
TOKEN_HINT = ("the SCIM token was rejected (expired after one year, or regenerated?): "
              "create a new one in Split under Admin settings > Security > SCIM and update "
              "[target] token")


def _cause(exc: Exception) -> str:
    """The OS-level reason of a connection error ("Connection refused", a DNS failure, a
    certificate problem), without the URL."""
    text = str(exc).strip() or type(exc).__name__
    return text.split("] ", 1)[-1] if text.startswith("[") else text

_TOP_LEVEL = ("userName", "displayName", "nickName", "title", "userType", "preferredLanguage",
              "locale", "timezone", "profileUrl")
_NAME_PARTS = ("givenName", "familyName", "middleName", "formatted", "honorificPrefix",
               "honorificSuffix")
_ENTERPRISE = ("employeeNumber", "costCenter", "organization", "division", "department")


# ---------------------------------------------------------------------------------------------
# Flat attributes <-> SCIM JSON


def user_resource(attributes: Mapping[str, str], active: bool, external_id: str) -> dict:
    """The POST body for a user from flat attributes (see agent/core/model.py)."""
    body: dict[str, Any] = {"schemas": [CORE_USER], "externalId": external_id, "active": active}
    name = {}
    enterprise: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in _TOP_LEVEL:
            body[key] = value
        elif key.startswith("name.") and key[5:] in _NAME_PARTS:
            name[key[5:]] = value
        elif key == "email":
            body["emails"] = [{"value": value, "type": "work", "primary": True}]
        elif key == "phoneNumber":
            body["phoneNumbers"] = [{"value": value, "type": "work", "primary": True}]
        elif key in _ENTERPRISE:
            enterprise[key] = value
        elif key == "manager":
            enterprise["manager"] = {"value": value}
    if name:
        body["name"] = name
    if enterprise:
        body["schemas"].append(ENTERPRISE_USER)
        body[ENTERPRISE_USER] = enterprise
    return body


def flat_user(resource: Mapping[str, Any]) -> tuple[dict[str, str], bool]:
    """Flat attributes and ``active`` of a user the target returned (for adoption)."""
    flat: dict[str, str] = {}
    for key in _TOP_LEVEL:
        if resource.get(key) not in (None, ""):
            flat[key] = str(resource[key])
    for part, value in (resource.get("name") or {}).items():
        if part in _NAME_PARTS and value not in (None, ""):
            flat[f"name.{part}"] = str(value)
    for attr, flat_key in (("emails", "email"), ("phoneNumbers", "phoneNumber")):
        values = [v for v in resource.get(attr) or [] if isinstance(v, dict) and v.get("value")]
        if values:
            best = next((v for v in values if v.get("primary")), None) \
                or next((v for v in values if v.get("type") == "work"), values[0])
            flat[flat_key] = str(best["value"])
    enterprise = resource.get(ENTERPRISE_USER) or {}
    for key in _ENTERPRISE:
        if enterprise.get(key) not in (None, ""):
            flat[key] = str(enterprise[key])
    manager = enterprise.get("manager")
    if isinstance(manager, dict) and manager.get("value"):
        flat["manager"] = str(manager["value"])
    active = resource.get("active", True)
    if isinstance(active, str):       # some servers (old Entra-facing ones) speak "False"
        active = active.strip().lower() != "false"
    return flat, bool(active)


def _path(key: str) -> str:
    if key in _TOP_LEVEL:
        return key
    if key.startswith("name."):
        return key
    if key == "email":
        return "emails"
    if key == "phoneNumber":
        return "phoneNumbers"
    if key in _ENTERPRISE:
        return f"{ENTERPRISE_USER}:{key}"
    if key == "manager":
        return f"{ENTERPRISE_USER}:manager"
    raise ValueError(f"no SCIM path for attribute {key!r}")


def user_patch(changed: Mapping[str, tuple[str | None, str | None]],
               active: bool | None = None) -> list[dict]:
    """PATCH operations for changed flat attributes (old, new); ``active`` when it changes.

    Multi-valued e-mail and phone are replaced whole: we own the one primary work value, and
    a value-filter path would fail on servers that have none to match yet.
    """
    ops = []
    for key, (_old, new) in changed.items():
        path = _path(key)
        if new in (None, ""):
            ops.append({"op": "remove", "path": path})
        elif key == "email":
            ops.append({"op": "replace", "path": path,
                        "value": [{"value": new, "type": "work", "primary": True}]})
        elif key == "phoneNumber":
            ops.append({"op": "replace", "path": path,
                        "value": [{"value": new, "type": "work", "primary": True}]})
        elif key == "manager":
            ops.append({"op": "replace", "path": path, "value": {"value": new}})
        else:
            ops.append({"op": "replace", "path": path, "value": new})
    if active is not None:
        ops.append({"op": "replace", "path": "active", "value": active})
    return ops


def filter_value(value: str) -> str:
    """A SCIM filter string literal: quoted, with ``\\`` and ``"`` escaped (RFC 7644 §3.4.2.2)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    scim_id: str
    adopted: bool           # it already existed on the target and was adopted
    resource: dict | None = None


class ScimTarget:
    """A SCIM 2.0 service provider, reached over one pooled, rate-limited httpx client."""

    def __init__(self, url: str, token: Secret, policy: HttpPolicy = HttpPolicy(), *,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        self._where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        if not _https_or_loopback(self.url):
            raise FatalTargetError(f"[target] url must use https:// (only a loopback address "
                                   f"may use http://): {self.url}")
        self.policy = policy
        self.limiter = RateLimiter(policy.rate_limit, burst=1.0,  # a ceiling, not an average
                                   sleep=sleep)
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

    # -- transport ------------------------------------------------------------------------

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

    def _call(self, method: str, path: str, json: Any = None,
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

    def probe(self) -> None:
        """One cheap authenticated read, so a rejected token or an unreachable endpoint is
        reported even by a cycle that has nothing to send."""
        self._call("GET", "Users", params={"count": 1, "startIndex": 1, "attributes": "userName"})

    # -- reading --------------------------------------------------------------------------

    def _iter(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every resource of a list, paged by 1-based startIndex, advancing by what came back."""
        start, seen = 1, 0
        while True:
            page = self._call("GET", path, params={**(params or {}), "startIndex": start,
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

    def iter_users(self) -> Iterator[dict]:
        return self._iter("Users")

    def iter_groups(self) -> Iterator[dict]:
        return self._iter("Groups")

    def find_user(self, user_name: str) -> dict | None:
        page = self._call("GET", "Users",
                          params={"filter": f"userName eq {filter_value(user_name)}"}).json()
        for resource in page.get("Resources") or []:
            if str(resource.get("userName", "")).casefold() == user_name.casefold():
                return resource
        return None

    def find_group(self, display_name: str) -> dict | None:
        page = self._call("GET", "Groups",
                          params={"filter": f"displayName eq {filter_value(display_name)}"}).json()
        for resource in page.get("Resources") or []:
            if str(resource.get("displayName", "")).casefold() == display_name.casefold():
                return resource
        return None

    def count(self, path: str) -> int:
        params = {"count": 1, "startIndex": 1}
        if path == "Groups":
            params["excludedAttributes"] = "members"
        return int(self._call("GET", path, params=params).json().get("totalResults", 0))

    # -- writing --------------------------------------------------------------------------

    def _create(self, path: str, body: dict, find: Callable[[], dict | None], what: str) -> Created:
        """One POST. A 409, or an outcome we cannot know (timeout after sending, a gateway
        error), is resolved by looking the object up; it is never sent a second time here. If
        the lookup finds nothing the operation fails and the next cycle tries again, when a
        late-landing first request shows up as a 409 or in the lookup."""
        try:
            response = self._call("POST", path, json=body, idempotent=False)
        except ConflictError:
            found = find()
            if found is None:
                raise ConflictError(f"{what} already exists on the target but cannot be "
                                    "found by a filter query", 409)
            return Created(str(found["id"]), adopted=True, resource=found)
        except TransientError as exc:
            if not exc.sent:
                raise
            found = find()              # did the lost request land after all?
            if found is not None:
                return Created(str(found["id"]), adopted=True, resource=found)
            raise TransientError(f"{exc}; the create may still land, so it is not resent "
                                 "until the next cycle", exc.status, sent=True) from None
        resource = response.json() if response.content else {}
        scim_id = resource.get("id") if isinstance(resource, dict) else None
        if not scim_id:
            raise RejectedError(f"{what}: the target answered {response.status_code} but "
                                "returned no id", response.status_code)
        return Created(str(scim_id), adopted=False, resource=resource)

    def create_user(self, attributes: Mapping[str, str], active: bool, external_id: str) -> Created:
        user_name = attributes["userName"]
        return self._create("Users", user_resource(attributes, active, external_id),
                            lambda: self.find_user(user_name), f"user {user_name}")

    def patch_user(self, scim_id: str, operations: list[dict]) -> None:
        if operations:
            self._call("PATCH", f"Users/{scim_id}",
                       json={"schemas": [PATCH_OP], "Operations": operations})

    def create_group(self, display_name: str) -> Created:
        """Link a group of that name if Split has one (it must be adopted, not created twice,
        and not every server answers a duplicate name with 409), else create it empty."""
        found = self.find_group(display_name)
        if found is not None:
            return Created(str(found["id"]), adopted=True, resource=found)
        body = {"schemas": [GROUP], "displayName": display_name, "members": []}
        return self._create("Groups", body, lambda: self.find_group(display_name),
                            f"group {display_name}")

    def rename_group(self, scim_id: str, display_name: str) -> None:
        self._call("PATCH", f"Groups/{scim_id}", json={"schemas": [PATCH_OP], "Operations": [
            {"op": "replace", "path": "displayName", "value": display_name}]})

    def add_members(self, scim_id: str, member_ids: list[str],
                    on_chunk: Callable[[list[str]], None] = lambda ids: None) -> None:
        """Add members, at most 100 per PATCH; ``on_chunk`` is told each confirmed chunk so
        the caller can record progress that a later failure must not lose."""
        for chunk in chunks(member_ids, MEMBERS_PER_PATCH):
            self._call("PATCH", f"Groups/{scim_id}", json={"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": m} for m in chunk]}]})
            on_chunk(chunk)

    def remove_members(self, scim_id: str, member_ids: list[str],
                       on_chunk: Callable[[list[str]], None] = lambda ids: None) -> None:
        for chunk in chunks(member_ids, MEMBERS_PER_PATCH):
            try:
                self._call("PATCH", f"Groups/{scim_id}", json={"schemas": [PATCH_OP], "Operations": [
                    {"op": "remove", "path": f"members[value eq {filter_value(m)}]"} for m in chunk]})
            except RejectedError as exc:
                # RFC 7644 §3.5.2.2: a filter that matches nothing is "noTarget". The members
                # are already gone (a lost response, a manual change): the goal is reached.
                if exc.scim_type != "noTarget":
                    raise
                log.info("group %s: members already absent on the target", scim_id)
            on_chunk(chunk)

    def delete_group(self, scim_id: str) -> None:
        try:
            self._call("DELETE", f"Groups/{scim_id}")
        except NotFoundError:
            pass        # already gone: the goal is reached

    def check(self) -> dict[str, int | str]:
        return {"users": self.count("Users"), "groups": self.count("Groups")}


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


__all__ = ["ScimTarget", "Created", "TargetError", "user_resource", "flat_user", "user_patch",
           "filter_value"]
