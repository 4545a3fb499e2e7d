"""A loopback fake of Split's SCIM 2.0 service, for tests of the agent.

What is faked, and why
----------------------
Split publishes little about its SCIM service beyond what its Okta and Entra set-up guides
imply (see the project's SCIM research notes, section 5). The agent must still be tested
against the rules that matter, so this fake reproduces the documented Split facts and the
RFC 7643/7644 behaviour that real SCIM servers show, and it lets a test inject the failures
that are hard to provoke on a real tenant:

* Bearer-token auth on every endpoint. Assigning ``token`` models a regenerated or expired
  token: the old one then gets 401 with ``WWW-Authenticate``.
* Users are keyed on ``userName`` (the email): uniqueness is case-insensitive (409
  ``uniqueness``). The IdP side never deletes users, but DELETE is accepted and logged so
  that tests can assert it never happened.
* Groups: names must be shorter than 25 characters, ``Administrators`` is reserved, a
  duplicate name gives 409, ``Split_Administrators`` must keep at least one member and
  cannot be deleted. Entra's ``Remove`` of ``members`` with a value list removes exactly
  those members: read literally, RFC 7644 §3.5.2.2 would empty the group, but Split accepts
  Entra as a provisioning client and Entra sends this shape by default (MicrosoftDocs/
  entra-docs, use-scim-to-provision-users-and-groups.md, "Update Group [Remove Members]"),
  so Split must read it as a selector, as django-scim2 and SCIMMY do. A ``remove`` of
  ``members`` with no value and no filter is refused rather than emptying the group.
* ``eq`` filters on userName, externalId, emails and displayName, with JSON string escapes;
  1-based paging capped by ``max_page_size``; PATCH in both the Okta and the Entra shapes.
* Injected trouble: ``fail_next`` (5xx with an optional Retry-After), ``rate_limit`` (429
  with Split's ``X-RateLimit-*`` headers, fixed windows aligned on the server's clock), ``latency`` (before handling), ``answer_latency``
  (after the write is done, before the answer), and ``hang_after_write_next`` (the
  write is applied but answered late, so the client cannot tell the outcome).

Everything a test may want to assert on is public: the stored ``users`` and ``groups``,
the request log (``requests``, ``writes()``) and ``max_in_flight``.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import random
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

SCHEMA_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCHEMA_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCHEMA_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCHEMA_LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCHEMA_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCHEMA_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCHEMA_SPC = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"

BASE_PATH = "/scim/v2"
SCIM_CONTENT_TYPE = "application/scim+json"
ACCEPTED_CONTENT_TYPES = frozenset({"application/scim+json", "application/json"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_GROUP_NAME = 24  # "Group name length should be less than 25 characters."
RESERVED_GROUP_NAMES = frozenset({"administrators"})

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_FILTER_RE = re.compile(
    r"^\s*(?P<attr>[A-Za-z][\w.:-]*(?:\[[^\]]*\])?(?:\.\w+)?)\s+(?P<op>\w+)\s+(?P<value>.+?)\s*$"
)
_TYPED_EMAIL_RE = re.compile(r'^emails\[\s*type\s+eq\s+"([^"]*)"\s*\]\.value$', re.I)
_PATH_RE = re.compile(
    r'^(?P<attr>\w+)(?:\[\s*(?P<fattr>\w+)\s+eq\s+(?P<fval>' + _QUOTED + r')\s*\])?'
    r"(?:\.(?P<sub>\w+))?$",
    re.I,
)
_MEMBER_SELECTOR_RE = re.compile(r"^members\[(?P<expr>.*)\]$", re.I | re.S)
_VALUE_EQ = r"\s*value\s+eq\s+(" + _QUOTED + r")\s*"
_MEMBER_EXPR_RE = re.compile(r"^" + _VALUE_EQ + r"(?:or" + _VALUE_EQ + r")*$", re.I)


# --------------------------------------------------------------------------- records


@dataclass
class RequestRecord:
    """One request as the fake saw it; ``path`` is relative to the SCIM base (``/Users/1``)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int = 0  # 0 while the request is still being handled
    headers: dict[str, str] = field(default_factory=dict)


class ScimError(Exception):
    """An error answer: HTTP status, SCIM ``scimType`` and extra response headers."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = headers or {}


@dataclass
class _Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hold the answer back (hang_after_write_next)


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fold(value: Any) -> str:
    return str(value).casefold()


def _unquote(quoted: str, error_type: str) -> str:
    """Decode a SCIM string literal (a JSON string: \\" and \\\\ escapes)."""
    try:
        value = json.loads(quoted)
    except ValueError:
        raise ScimError(400, f"bad string literal {quoted}", error_type) from None
    if not isinstance(value, str):
        raise ScimError(400, f"bad string literal {quoted}", error_type)
    return value


def _find_key(obj: dict, name: str) -> str:
    """The key of ``obj`` matching ``name`` case-insensitively, or ``name`` itself."""
    for key in obj:
        if key.casefold() == name.casefold():
            return key
    return name


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ScimError(400, f"{name} must be an integer, got {raw!r}", "invalidValue") from None


def _page(resources: list[dict], query: dict[str, str], max_page_size: int) -> dict:
    """A ListResponse for one page: 1-based startIndex, count capped by the server maximum."""
    start = max(1, _int_param(query, "startIndex", 1))
    count = min(max(0, _int_param(query, "count", max_page_size)), max_page_size)
    page = resources[start - 1:start - 1 + count]
    return {"schemas": [SCHEMA_LIST], "totalResults": len(resources), "startIndex": start,
            "itemsPerPage": len(page), "Resources": page}


def _project(resource: dict, query: dict[str, str]) -> dict:
    """A copy of ``resource`` without the top-level ``excludedAttributes``."""
    result = copy.deepcopy(resource)
    excluded = {name.strip().casefold() for name in query.get("excludedAttributes", "").split(",")}
    for key in list(result):
        if key.casefold() in excluded and key not in ("id", "schemas", "meta"):
            del result[key]
    return result


# --------------------------------------------------------------------------- filters


def _parse_filter(text: str) -> tuple[str, str]:
    """``attr eq "value"`` -> (attr, unescaped value); anything else is ``invalidFilter``."""
    match = _FILTER_RE.match(text)
    if not match:
        raise ScimError(400, f"unsupported filter {text!r}", "invalidFilter")
    if match["op"].lower() != "eq":
        raise ScimError(400, f"operator {match['op']!r} is not supported", "invalidFilter")
    if not re.fullmatch(_QUOTED, match["value"]):
        raise ScimError(400, f"filter value must be a quoted string: {match['value']}",
                        "invalidFilter")
    return match["attr"], _unquote(match["value"], "invalidFilter")


def _email_matches(email: Any, value: str, email_type: str | None) -> bool:
    if not isinstance(email, dict) or _fold(email.get("value", "")) != value.casefold():
        return False
    return email_type is None or _fold(email.get("type", "")) == email_type.casefold()


def _user_matcher(attr: str, value: str) -> Callable[[dict], bool]:
    name = attr.casefold()
    if name == "username":  # caseExact=false
        return lambda user: _fold(user.get("userName", "")) == value.casefold()
    if name in ("externalid", "id"):  # caseExact=true
        key = "externalId" if name == "externalid" else "id"
        return lambda user: user.get(key) == value
    typed = _TYPED_EMAIL_RE.match(attr)
    if name == "emails.value" or typed:
        email_type = typed.group(1) if typed else None
        return lambda user: any(_email_matches(e, value, email_type)
                                for e in user.get("emails") or [])
    raise ScimError(400, f"filtering Users on {attr!r} is not supported", "invalidFilter")


def _group_matcher(attr: str, value: str) -> Callable[[dict], bool]:
    name = attr.casefold()
    if name == "displayname":
        return lambda group: _fold(group.get("displayName", "")) == value.casefold()
    if name in ("externalid", "id"):
        key = "externalId" if name == "externalid" else "id"
        return lambda group: group.get(key) == value
    raise ScimError(400, f"filtering Groups on {attr!r} is not supported", "invalidFilter")


# --------------------------------------------------------------------------- PATCH


def _patch_operations(body: Any) -> list[tuple[str, str | None, Any]]:
    """Validate a PatchOp body -> [(op in lowercase, path or None, value)]."""
    if not isinstance(body, dict) or SCHEMA_PATCH not in (body.get("schemas") or []):
        raise ScimError(400, f"a PATCH body must declare the {SCHEMA_PATCH} schema",
                        "invalidSyntax")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not operations:
        raise ScimError(400, "Operations must be a non-empty list", "invalidSyntax")
    parsed = []
    for operation in operations:
        kind = str(operation.get("op", "")).lower() if isinstance(operation, dict) else ""
        if kind not in ("add", "replace", "remove"):
            raise ScimError(400, f"unsupported operation {operation!r}", "invalidSyntax")
        path = operation.get("path")
        if kind == "remove" and not path:
            raise ScimError(400, "remove needs a path", "noTarget")
        if not path and not isinstance(operation.get("value"), dict):
            raise ScimError(400, f"{kind} without a path needs an object value", "invalidValue")
        parsed.append((kind, path or None, operation.get("value")))
    return parsed


@dataclass(frozen=True)
class _Path:
    """A user attribute path: ``[urn:...:]attr[fattr eq "fval"][.sub]``."""

    container: str | None  # the extension schema URN holding the attribute, or None (core)
    attr: str
    selector: tuple[str, str] | None = None
    sub: str | None = None


def _parse_user_path(path: str) -> _Path:
    text = path.strip()
    for schema, container in ((SCHEMA_ENTERPRISE, SCHEMA_ENTERPRISE), (SCHEMA_USER, None)):
        if text.casefold() == schema.casefold():
            return _Path(None, schema)  # the extension object itself
        if text.casefold().startswith(schema.casefold() + ":"):
            return _parse_user_path_in(container, text[len(schema) + 1:], path)
    return _parse_user_path_in(None, text, path)


def _parse_user_path_in(container: str | None, text: str, original: str) -> _Path:
    match = _PATH_RE.match(text)
    if not match:
        raise ScimError(400, f"unsupported path {original!r}", "invalidPath")
    selector = None
    if match["fattr"]:
        selector = (match["fattr"], _unquote(match["fval"], "invalidPath"))
    return _Path(container, match["attr"], selector, match["sub"])


def _apply_user_op(user: dict, kind: str, path: _Path, value: Any) -> None:
    if path.container is None:
        target = user
    elif kind == "remove" and path.container not in user:
        return
    else:
        target = user.setdefault(path.container, {})
    key = _find_key(target, path.attr)
    if key.casefold() in ("id", "meta"):
        raise ScimError(400, f"{key} is read-only", "mutability")
    if path.selector:
        _apply_selected(target, key, kind, path, value)
    elif path.sub:
        _apply_sub_attribute(target, key, kind, path.sub, value)
    elif kind == "remove":
        target.pop(key, None)
    else:
        _set_attribute(target, key, kind, value)


def _set_attribute(target: dict, key: str, kind: str, value: Any) -> None:
    current = target.get(key)
    if kind == "add" and isinstance(current, list) and isinstance(value, list):
        current.extend(item for item in value if item not in current)
    elif isinstance(current, dict) and isinstance(value, dict):
        current.update(value)  # complex attribute: unspecified sub-attributes stay
    else:
        target[key] = copy.deepcopy(value)


def _apply_sub_attribute(target: dict, key: str, kind: str, sub: str, value: Any) -> None:
    parent = target.get(key)
    if kind == "remove":
        if isinstance(parent, dict):
            parent.pop(_find_key(parent, sub), None)
        return
    if parent is None:
        parent = target[key] = {}
    if not isinstance(parent, dict):
        raise ScimError(400, f"{key} is not a complex attribute", "invalidPath")
    parent[_find_key(parent, sub)] = copy.deepcopy(value)


def _apply_selected(target: dict, key: str, kind: str, path: _Path, value: Any) -> None:
    """``emails[type eq "work"].value`` and friends; add/replace create the entry if absent."""
    items = target.get(key) or []
    if not isinstance(items, list):
        raise ScimError(400, f"{key} is not multi-valued", "invalidPath")
    fattr, fval = path.selector

    def selected(item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        return _fold(item.get(_find_key(item, fattr), "")) == fval.casefold()

    matches = [item for item in items if selected(item)]
    if kind == "remove":
        if path.sub:
            for item in matches:
                item.pop(_find_key(item, path.sub), None)
        else:
            items = [item for item in items if not selected(item)]
        if items:
            target[key] = items
        else:
            target.pop(key, None)
        return
    if not matches:
        matches = [{fattr: fval}]
        items.append(matches[0])
        target[key] = items
    for item in matches:
        if path.sub:
            item[_find_key(item, path.sub)] = copy.deepcopy(value)
        elif isinstance(value, dict):
            item.update(value)
        else:
            raise ScimError(400, f"{key}[...] needs an object value", "invalidValue")


def _apply_user_patch(user: dict, operations: list[tuple[str, str | None, Any]]) -> dict:
    """Apply PATCH operations to a copy of ``user`` (atomic: the caller commits the copy)."""
    result = copy.deepcopy(user)
    for kind, path, value in operations:
        if path is not None:
            _apply_user_op(result, kind, _parse_user_path(path), value)
            continue
        for key, item in value.items():  # no path: each key is itself a path
            _apply_user_op(result, kind, _parse_user_path(key), item)
    return result


def _members(value: Any) -> list[dict]:
    """Normalise a members value list to [{"value": id, "display"?: str}]."""
    if not isinstance(value, list):
        raise ScimError(400, "members must be a list", "invalidValue")
    members: list[dict] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise ScimError(400, f"bad member {item!r}: needs a string value", "invalidValue")
        member = {"value": item["value"]}           # Entra's "$ref": null is dropped
        if isinstance(item.get("display"), str):
            member["display"] = item["display"]
        if all(existing["value"] != member["value"] for existing in members):
            members.append(member)
    return members


def _selected_member_ids(path: str) -> set[str] | None:
    """``members[value eq "a" or value eq "b"]`` -> {"a", "b"}; None for another path."""
    match = _MEMBER_SELECTOR_RE.match(path.strip())
    if not match:
        return None
    if not _MEMBER_EXPR_RE.match(match["expr"]):
        raise ScimError(400, f"unsupported member filter {path!r}", "invalidFilter")
    return {_unquote(quoted, "invalidFilter") for quoted in re.findall(_QUOTED, match["expr"])}


def _apply_group_op(group: dict, kind: str, path: str, value: Any) -> None:
    name = path.strip().casefold()
    selected = _selected_member_ids(path)
    if selected is not None:
        if kind != "remove":
            raise ScimError(400, f"{kind} on {path!r} is not supported", "invalidPath")
        group["members"] = [m for m in group.get("members", []) if m["value"] not in selected]
    elif name == "members":
        _apply_members_op(group, kind, value)
    elif name in ("displayname", "externalid"):
        key = "displayName" if name == "displayname" else "externalId"
        if kind == "remove":
            group.pop(key, None)
        else:
            group[key] = value
    elif name == "id":
        if value != group["id"]:  # Okta repeats the id in its rename value; changing it fails
            raise ScimError(400, "id is read-only", "mutability")
    else:
        raise ScimError(400, f"unsupported group path {path!r}", "invalidPath")


def _apply_members_op(group: dict, kind: str, value: Any) -> None:
    current = group.get("members", [])
    if kind == "remove":
        if value is None:
            raise ScimError(400, 'remove of "members" without a value list or a filter would '
                            'remove every member', "noTarget")
        gone = {m["value"] for m in _members(value)}      # Entra's shape: a selector
        group["members"] = [m for m in current if m["value"] not in gone]
    elif kind == "add":
        group["members"] = _members(current + _members(value))
    else:
        group["members"] = _members(value)


def _apply_group_patch(group: dict, operations: list[tuple[str, str | None, Any]]) -> dict:
    result = copy.deepcopy(group)
    for kind, path, value in operations:
        if path is not None:
            _apply_group_op(result, kind, path, value)
            continue
        for key, item in value.items():
            _apply_group_op(result, kind, key, item)
    return result


# --------------------------------------------------------------------------- the fake


class FakeSplit:
    """Split's SCIM 2.0 service on 127.0.0.1 (a random port), state kept in memory."""

    def __init__(self, token: str = "tok", *, max_page_size: int = 100,
                 patch_returns_body: bool = False, status_as_int: bool = False,
                 latency: float = 0.0, answer_latency: float = 0.0, hang_seconds: float = 5.0,
                 admin_group: str = "Split_Administrators", fast: bool = False):
        self.token = token
        # Names looked up through an index instead of a scan of every user (benchmarks at
        # 100 000 users); the store must then change only through requests and seeds.
        self.fast = fast
        self._named: dict[str, dict[str, str]] = {"userName": {}, "displayName": {}}
        self.max_page_size = max_page_size
        self.patch_returns_body = patch_returns_body
        self.status_as_int = status_as_int
        self.latency = latency                  # before a request is handled
        self.answer_latency = answer_latency    # after it is carried out, before the answer:
                                                # a client killed then never hears of it
        self.hang_seconds = hang_seconds
        self.admin_group = admin_group
        self.users: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self._store_lock = threading.RLock()  # store and injected-trouble counters
        self._log_lock = threading.Lock()  # request log and in-flight counters
        self._requests: list[RequestRecord] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._hang_posts = 0
        self._refusals: dict[tuple[str, str], tuple[int, str, str | None]] = {}
        self._chaos: tuple[random.Random, float, float] | None = None
        self._rate: tuple[int, float] | None = None
        self._rate_clock: Callable[[], float] = time.monotonic
        self._window_index: int | None = None
        self._window_used = 0
        self._version = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeSplit:
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="fake-split", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: open connections are cut, hanging handlers are not waited for."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self._thread.join(timeout=2)
        self._server = self._thread = None

    def __enter__(self) -> FakeSplit:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSplit is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}{BASE_PATH}"

    # ---------------------------------------------------------------- observation

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, in arrival order."""
        with self._log_lock:
            return list(self._requests)

    def writes(self) -> list[RequestRecord]:
        return [record for record in self.requests if record.method in WRITE_METHODS]

    def reset_log(self) -> None:
        """Forget logged requests and restart the ``max_in_flight`` observation."""
        with self._log_lock:
            self._requests.clear()
            self._max_in_flight = self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._log_lock:
            return self._max_in_flight

    # ---------------------------------------------------------------- injected trouble

    def fail_next(self, n: int, status: int = 503, retry_after: int | str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """Answer the next ``n`` requests (any path) with ``status`` and a SCIM error body."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        with self._store_lock:
            self._failures.extend([(status, extra)] * n)

    def rate_limit(self, n_per_window: int | None, window_seconds: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> None:
        """Admit ``n_per_window`` requests per fixed window, answer 429 beyond; None disables.

        A fixed window, as Split documents its limiter (429 with "how long to wait until the
        next window", in whole seconds) and as Okta's per-minute ``X-Rate-Limit-Reset`` is:
        a counter per window, the windows aligned on the server's own ``clock`` (window k is
        [k·w, (k+1)·w)), never started by the client's first request, so a client cannot
        choose its phase and a pause that ends mid-window resumes into what is left of it.
        Every request counts, refused ones too. The reset is rounded *up* to whole seconds
        (at least 1), as an integer header must be for a client that honours it. Kinder
        would be a bug: a window opened by the client's own first request after a pause, or
        a reset given to the millisecond.
        """
        with self._store_lock:
            self._rate = None if n_per_window is None else (n_per_window, window_seconds)
            self._rate_clock = clock
            self._window_index = None
            self._window_used = 0

    def chaos(self, seed: int | None, before: float = 0.1, after: float = 0.1) -> None:
        """Random faults until turned off with ``chaos(None)``: with probability ``before`` a
        request fails unprocessed (500, 502, 503 or 504); with probability ``after`` a write is
        carried out but its answer is replaced by a 502 or 504, as a gateway losing the
        backend's reply would. Seeded, so a failing run can be replayed."""
        with self._store_lock:
            self._chaos = None if seed is None else (random.Random(seed), before, after)

    def _roll(self, which: int) -> int | None:
        with self._store_lock:
            if self._chaos is None:
                return None
            rnd, before, after = self._chaos
            if rnd.random() < (before, after)[which]:
                return rnd.choice(((500, 502, 503, 504), (502, 504))[which])
        return None

    def refuse(self, method: str, path: str, status: int = 400,
               detail: str = "refused by a rule of the service", scim_type: str | None =
               "invalidValue") -> None:
        """Answer every ``method path`` (e.g. ``PATCH /Users/<id>``) with ``status`` until
        :meth:`stop_refusing`: a service-side rule the agent cannot know in advance."""
        with self._store_lock:
            self._refusals[(method, path)] = (status, detail, scim_type)

    def stop_refusing(self) -> None:
        with self._store_lock:
            self._refusals.clear()

    def hang_after_write_next(self, n: int) -> None:
        """Apply the next ``n`` POSTs but hold each answer back for ``hang_seconds``."""
        with self._store_lock:
            self._hang_posts += n

    # ---------------------------------------------------------------- seeding

    def seed_user(self, userName: str, **attrs: Any) -> str:
        """Store a pre-existing user without logging a request; returns its SCIM id.

        Like real Split users, it gets a primary work email equal to ``userName`` and
        ``active: true`` unless ``attrs`` say otherwise.
        """
        user = {"schemas": [SCHEMA_USER], "userName": userName, "active": True,
                "emails": [{"value": userName, "type": "work", "primary": True}], **attrs}
        with self._store_lock:
            if self._user_named(userName):
                raise ValueError(f"user {userName!r} already exists")
            return self._insert("Users", self.users, user)

    def seed_group(self, displayName: str, member_ids: tuple[str, ...] | list[str] = ()) -> str:
        """Store a pre-existing group (no name-length check: Split itself may hold any name)."""
        with self._store_lock:
            if self._group_named(displayName):
                raise ValueError(f"group {displayName!r} already exists")
            unknown = [m for m in member_ids if m not in self.users]
            if unknown:
                raise ValueError(f"unknown member ids {unknown}")
            group = {"schemas": [SCHEMA_GROUP], "displayName": displayName,
                     "members": [{"value": member} for member in member_ids]}
            return self._insert("Groups", self.groups, group)

    # ---------------------------------------------------------------- request handling

    def _handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Response:
        """Log the request, answer it, and hold the answer back when asked to."""
        url = urlsplit(target)
        query = {key: values[0] for key, values in
                 parse_qs(url.query, keep_blank_values=True).items()}
        # Split serves SCIM under its base path only: /Users outside it is not found
        inside = url.path == BASE_PATH or url.path.startswith(BASE_PATH + "/")
        path = url.path[len(BASE_PATH):] if inside else url.path
        body, body_error = _parse_body(headers, raw)
        record = RequestRecord(method, path, query, body, headers=headers)
        with self._log_lock:
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.latency:
                self._stopping.wait(self.latency)
            response = (self._respond(method, path, query, headers, body, body_error) if inside
                        else self._error(ScimError(404, f"no such endpoint {url.path!r}")))
            record.status = response.status
            if response.delay or self.answer_latency:
                self._stopping.wait(response.delay or self.answer_latency)
            return response
        finally:
            with self._log_lock:
                self._in_flight -= 1

    def _respond(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                 body: Any, body_error: ScimError | None) -> _Response:
        rate_headers: dict[str, str] = {}
        try:
            self._take_injected_failure()
            lost = self._roll(0)
            if lost:
                raise ScimError(lost, f"chaos: failed before processing ({lost})")
            rate_headers = self._admit()
            self._authenticate(headers)
            if body_error is not None:
                raise body_error
            with self._store_lock:
                refusal = self._refusals.get((method, path))
            if refusal is not None:
                raise ScimError(refusal[0], refusal[1], refusal[2])
            delay = self._take_hang() if method == "POST" else 0.0
            with self._store_lock:
                response = self._route(method, path, query, body)
            response.delay = delay
            lost = self._roll(1) if method != "GET" else None
            if lost:
                raise ScimError(lost, f"chaos: carried out, answer lost ({lost})")
        except ScimError as error:
            response = self._error(error)
        except Exception:  # a bug in the fake: make it visible to the test, not a hang
            response = self._error(ScimError(500, traceback.format_exc()))
        response.headers = {**rate_headers, **response.headers}
        return response

    def _take_injected_failure(self) -> None:
        with self._store_lock:
            if not self._failures:
                return
            status, headers = self._failures.pop(0)
        raise ScimError(status, f"injected failure ({status})", headers=headers)

    def _admit(self) -> dict[str, str]:
        """Fixed-window rate limit (see :meth:`rate_limit`); returns the quota headers for an
        admitted request."""
        with self._store_lock:
            if self._rate is None:
                return {}
            limit, window = self._rate
            now = self._rate_clock()
            index = math.floor(now / window)
            if index != self._window_index:
                self._window_index, self._window_used = index, 0
            self._window_used += 1
            if self._window_used <= limit:
                remaining = str(limit - self._window_used)
                return {"X-RateLimit-Remaining-Org": remaining,
                        "X-RateLimit-Remaining-IP": remaining}
            reset = str(max(1, math.ceil((index + 1) * window - now)))
        raise ScimError(429, "rate limit exceeded", headers={
            "X-RateLimit-Remaining-Org": "0", "X-RateLimit-Remaining-IP": "0",
            "X-RateLimit-Reset-Seconds-Org": reset, "X-RateLimit-Reset-Seconds-IP": reset})

    def _authenticate(self, headers: dict[str, str]) -> None:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), str(self.token).encode()):
            raise ScimError(401, "invalid or expired bearer token",
                            headers={"WWW-Authenticate": 'Bearer realm="SCIM"'})

    def _take_hang(self) -> float:
        with self._store_lock:
            if self._hang_posts <= 0:
                return 0.0
            self._hang_posts -= 1
            return self.hang_seconds

    def _error(self, error: ScimError) -> _Response:
        status = error.status if self.status_as_int else str(error.status)
        body: dict[str, Any] = {"schemas": [SCHEMA_ERROR], "status": status,
                                "detail": error.detail}
        if error.scim_type:
            body["scimType"] = error.scim_type
        return _Response(error.status, body, dict(error.headers))

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> _Response:
        parts = [part for part in path.split("/") if part]
        if not parts or len(parts) > 2 or parts[0] not in _ROUTES:
            raise ScimError(404, f"no such endpoint {path!r}")
        handlers = _ROUTES[parts[0]]
        name = handlers.get((method, len(parts) == 2))
        if name is None:
            raise ScimError(405, f"{method} is not allowed on {path!r}")
        return getattr(self, name)(parts[1] if len(parts) == 2 else None, query, body)

    # ---------------------------------------------------------------- store

    def _insert(self, kind: str, store: dict[str, dict], resource: dict) -> str:
        resource = copy.deepcopy(resource)
        resource.pop("meta", None)
        resource["id"] = uuid.uuid4().hex
        self._stamp(kind, resource, created=None)
        store[resource["id"]] = resource
        self._index(kind, resource)
        return resource["id"]

    def _index(self, kind: str, resource: dict) -> None:
        if self.fast:
            key = "userName" if kind == "Users" else "displayName"
            self._named[key][_fold(resource.get(key, ""))] = resource["id"]

    def _indexed(self, store: dict[str, dict], key: str, name: str,
                 other_than: str | None) -> dict | None:
        """The resource of that name by the index; an entry a rename or a delete left behind
        is checked against the resource itself."""
        rid = self._named[key].get(name.casefold())
        found = store.get(rid) if rid is not None and rid != other_than else None
        return found if found is not None and _fold(found.get(key, "")) == name.casefold() \
            else None

    def _stamp(self, kind: str, resource: dict, created: str | None) -> None:
        self._version += 1
        now = _now()
        resource["meta"] = {"resourceType": kind[:-1], "created": created or now,
                            "lastModified": now,
                            "location": f"{self._url_prefix()}/{kind}/{resource['id']}",
                            "version": f'W/"{self._version}"'}

    def _url_prefix(self) -> str:
        return self.base_url if self._server is not None else BASE_PATH  # seeded before start()

    def _replace(self, kind: str, store: dict[str, dict], old: dict, new: dict) -> dict:
        new["id"] = old["id"]
        self._stamp(kind, new, created=old["meta"]["created"])
        store[old["id"]] = new
        self._index(kind, new)
        return new

    def _user_named(self, user_name: str, other_than: str | None = None) -> dict | None:
        if self.fast:
            return self._indexed(self.users, "userName", user_name, other_than)
        return next((u for u in self.users.values() if u["id"] != other_than
                     and _fold(u.get("userName", "")) == user_name.casefold()), None)

    def _group_named(self, name: str, other_than: str | None = None) -> dict | None:
        if self.fast:
            return self._indexed(self.groups, "displayName", name, other_than)
        return next((g for g in self.groups.values() if g["id"] != other_than
                     and _fold(g.get("displayName", "")) == name.casefold()), None)

    def _get(self, kind: str, store: dict[str, dict], rid: str) -> dict:
        if rid not in store:
            raise ScimError(404, f"{kind[:-1]} {rid} not found")
        return store[rid]

    def _resource_response(self, status: int, resource: dict, query: dict[str, str]) -> _Response:
        headers = {"ETag": resource["meta"]["version"]}
        if status == 201:
            headers["Location"] = resource["meta"]["location"]
        return _Response(status, _project(resource, query), headers)

    # ---------------------------------------------------------------- validation

    def _check_user(self, user: Any, own_id: str | None = None) -> dict:
        if not isinstance(user, dict):
            raise ScimError(400, "a user must be a JSON object", "invalidSyntax")
        user_name = user.get("userName")
        if not isinstance(user_name, str) or not user_name.strip():
            raise ScimError(400, "userName is required", "invalidValue")
        if "active" in user and not isinstance(user["active"], bool):
            raise ScimError(400, f"active must be a boolean, got {user['active']!r}",
                            "invalidValue")
        if self._user_named(user_name, other_than=own_id):
            raise ScimError(409, f"a user with userName {user_name!r} already exists",
                            "uniqueness")
        user.setdefault("schemas", [SCHEMA_USER])
        return user

    def _check_group(self, group: Any, own_id: str | None = None) -> dict:
        if not isinstance(group, dict):
            raise ScimError(400, "a group must be a JSON object", "invalidSyntax")
        name = group.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise ScimError(400, "displayName is required", "invalidValue")
        if len(name) > MAX_GROUP_NAME:
            raise ScimError(400, f"Group name length should be less than 25 characters "
                            f"({len(name)} given)", "invalidValue")
        if name.casefold() in RESERVED_GROUP_NAMES:
            raise ScimError(400, f"{name!r} is a reserved group name", "invalidValue")
        if self._group_named(name, other_than=own_id):
            raise ScimError(409, f"a group named {name!r} already exists", "uniqueness")
        group["members"] = _members(group.get("members") or [])
        unknown = [m["value"] for m in group["members"] if m["value"] not in self.users]
        if unknown:
            raise ScimError(400, f"unknown member ids: {', '.join(unknown)}", "invalidValue")
        group.setdefault("schemas", [SCHEMA_GROUP])
        return group

    def _is_admin_group(self, group: dict) -> bool:
        return _fold(group.get("displayName", "")) == self.admin_group.casefold()

    def _protect_admin_group(self, old: dict, new: dict) -> None:
        if self._is_admin_group(old) and old.get("members") and not new.get("members"):
            raise ScimError(400, f"{self.admin_group} must keep at least one member",
                            "invalidValue")

    # ---------------------------------------------------------------- /Users

    def _list_users(self, _rid: None, query: dict[str, str], _body: Any) -> _Response:
        return self._list(self.users, _user_matcher, query)

    def _list_groups(self, _rid: None, query: dict[str, str], _body: Any) -> _Response:
        return self._list(self.groups, _group_matcher, query)

    def _list(self, store: dict[str, dict], matcher: Callable[[str, str], Callable[[dict], bool]],
              query: dict[str, str]) -> _Response:
        resources = list(store.values())
        if query.get("filter"):
            matches = matcher(*_parse_filter(query["filter"]))
            resources = [resource for resource in resources if matches(resource)]
        page = _page(resources, query, self.max_page_size)
        page["Resources"] = [_project(resource, query) for resource in page["Resources"]]
        return _Response(200, page)

    def _create_user(self, _rid: None, query: dict[str, str], body: Any) -> _Response:
        user = self._check_user(copy.deepcopy(body))
        user.setdefault("active", True)
        user_id = self._insert("Users", self.users, user)
        return self._resource_response(201, self.users[user_id], query)

    def _get_user(self, rid: str, query: dict[str, str], _body: Any) -> _Response:
        return self._resource_response(200, self._get("Users", self.users, rid), query)

    def _put_user(self, rid: str, query: dict[str, str], body: Any) -> _Response:
        old = self._get("Users", self.users, rid)
        new = self._check_user(copy.deepcopy(body), own_id=rid)
        new.pop("meta", None)
        return self._resource_response(200, self._replace("Users", self.users, old, new), query)

    def _patch_user(self, rid: str, query: dict[str, str], body: Any) -> _Response:
        old = self._get("Users", self.users, rid)
        new = self._check_user(_apply_user_patch(old, _patch_operations(body)), own_id=rid)
        return self._patch_response(self._replace("Users", self.users, old, new), query)

    def _delete_user(self, rid: str, _query: dict[str, str], _body: Any) -> _Response:
        """Accepted (the IdP side should never send it; tests assert on the log)."""
        self._get("Users", self.users, rid)
        del self.users[rid]
        for group in self.groups.values():
            group["members"] = [m for m in group.get("members", []) if m["value"] != rid]
        return _Response(204)

    def _patch_response(self, resource: dict, query: dict[str, str]) -> _Response:
        if self.patch_returns_body:
            return self._resource_response(200, resource, query)
        return _Response(204, headers={"ETag": resource["meta"]["version"]})

    # ---------------------------------------------------------------- /Groups

    def _create_group(self, _rid: None, query: dict[str, str], body: Any) -> _Response:
        group_id = self._insert("Groups", self.groups, self._check_group(copy.deepcopy(body)))
        return self._resource_response(201, self.groups[group_id], query)

    def _get_group(self, rid: str, query: dict[str, str], _body: Any) -> _Response:
        return self._resource_response(200, self._get("Groups", self.groups, rid), query)

    def _put_group(self, rid: str, query: dict[str, str], body: Any) -> _Response:
        old = self._get("Groups", self.groups, rid)
        new = self._check_group(copy.deepcopy(body), own_id=rid)
        new.pop("meta", None)
        self._protect_admin_group(old, new)
        return self._resource_response(200, self._replace("Groups", self.groups, old, new), query)

    def _patch_group(self, rid: str, query: dict[str, str], body: Any) -> _Response:
        old = self._get("Groups", self.groups, rid)
        new = self._check_group(_apply_group_patch(old, _patch_operations(body)), own_id=rid)
        self._protect_admin_group(old, new)
        return self._patch_response(self._replace("Groups", self.groups, old, new), query)

    def _delete_group(self, rid: str, _query: dict[str, str], _body: Any) -> _Response:
        group = self._get("Groups", self.groups, rid)
        if self._is_admin_group(group):
            raise ScimError(400, f"{self.admin_group} cannot be deleted", "invalidValue")
        del self.groups[rid]
        return _Response(204)

    # ---------------------------------------------------------------- discovery

    def _service_provider_config(self, _rid: None, _query: dict[str, str],
                                 _body: Any) -> _Response:
        return _Response(200, {
            "schemas": [SCHEMA_SPC], "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": self.max_page_size},
            "changePassword": {"supported": False}, "sort": {"supported": False},
            "etag": {"supported": False},
            "authenticationSchemes": [{"type": "oauthbearertoken", "name": "Bearer token",
                                       "description": "Split SCIM access token"}]})


# (method, has id) -> FakeSplit method name, per resource type
_ROUTES: dict[str, dict[tuple[str, bool], str]] = {
    "Users": {("GET", False): "_list_users", ("POST", False): "_create_user",
              ("GET", True): "_get_user", ("PUT", True): "_put_user",
              ("PATCH", True): "_patch_user", ("DELETE", True): "_delete_user"},
    "Groups": {("GET", False): "_list_groups", ("POST", False): "_create_group",
               ("GET", True): "_get_group", ("PUT", True): "_put_group",
               ("PATCH", True): "_patch_group", ("DELETE", True): "_delete_group"},
    "ServiceProviderConfig": {("GET", False): "_service_provider_config"},
}


def _parse_body(headers: dict[str, str], raw: bytes) -> tuple[Any, ScimError | None]:
    """(parsed JSON or None, the error to answer once the caller is authenticated)."""
    if not raw:
        return None, None
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_CONTENT_TYPES:
        return None, ScimError(415, f"unsupported Content-Type {media_type!r}")
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return None, ScimError(400, f"body is not JSON: {exc}", "invalidSyntax")


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    """Threaded server that can drop its open connections, so that a stopped fake is gone."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a handler that is hanging on purpose
    fake: FakeSplit

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut idle keep-alive and hanging connections (their handler threads then end)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a client hanging up is expected


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out as two writes: no 40 ms stall
    server: _Server

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        self._send(self.server.fake._handle(self.command, self.path, headers, raw))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _send(self, response: _Response) -> None:
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != 204:
            self.send_header("Content-Type", SCIM_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass
