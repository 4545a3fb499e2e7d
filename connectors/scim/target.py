"""The SCIM 2.0 Target, with Split's profile, speaking one request dialect.

What goes on the wire is a dialect's (:mod:`.dialects`, ``[target] dialect``): the shapes
Microsoft Entra's provisioning service sends (the default), Okta's SCIM client's, or RFC 7644
read literally. Split accepts both IdPs as clients, so copying one is the surest way to be
accepted on first contact (``docs/targets/dialects.md`` has them side by side). What holds in
every dialect:

- users are keyed by ``userName`` = the e-mail, which is also the one primary work e-mail;
  deactivation is ``active false``, never DELETE;
- groups are created empty, then members are added by PATCH, at most 100 per request;
- PATCH answers may be 204 or 200 with a body; error bodies may carry ``status`` as a string
  or a number; a 501 is the target's "not supported" and is never retried.

Creates cost one request: POST, and only on a 409 or an unknown outcome (a timeout after the
request went out, a 5xx) look the object up by ``userName``/``displayName`` and answer what
the target holds (``Created(existed=True)``). Group creates look the name up first: Split
links an existing group of that name rather than creating a second one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from ..base import (ConflictError, Created, FatalTargetError, NotFoundError, RejectedError,
                    Secret, TargetGroup, TargetUser, TransientError)
from ..http import HttpPolicy, RateLimiter
from . import answers
from .answers import Malformed
from .client import ScimClient
from .codec import PATCH_OP, chunks
from .dialects import Dialect, dialect_named

log = logging.getLogger(__name__)


def _user(resource: Mapping[str, Any], where: str = "the target") -> TargetUser:
    return answers.user_of(where, resource)


def _group(resource: Mapping[str, Any], where: str = "the target") -> TargetGroup:
    return answers.group_of(where, resource)


@contextlib.contextmanager
def _reading():
    """A listing or a lookup of the wrong shape stops the run: nothing can be planned from it."""
    try:
        yield
    except Malformed as exc:
        raise FatalTargetError(str(exc)) from None


class ScimTarget:
    """A SCIM 2.0 service provider, reached over one pooled, rate-limited client."""

    def __init__(self, url: str, token: Secret, policy: HttpPolicy = HttpPolicy(), *,
                 dialect: str | Dialect = "entra",
                 transport: httpx.BaseTransport | None = None,
                 limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.dialect = dialect_named(dialect) if isinstance(dialect, str) else dialect
        self.wire = ScimClient(url, token, policy, transport=transport, limiter=limiter,
                               clock=clock, sleep=sleep)

    # The engine sets ``cancel``; the counters are for reports and tests.
    @property
    def cancel(self):
        return self.wire.cancel

    @cancel.setter
    def cancel(self, event) -> None:
        self.wire.cancel = event

    @property
    def requests_sent(self) -> int:
        return self.wire.requests_sent

    @property
    def write_requests(self) -> int:
        return self.wire.write_requests

    def close(self) -> None:
        self.wire.close()

    def probe(self) -> None:
        self.wire.call("GET", "Users", params={"count": 1, "startIndex": 1,
                                               "attributes": "userName"})

    def check(self) -> dict[str, int | str]:
        return {"users": self._count("Users"), "groups": self._count("Groups")}

    def _count(self, path: str) -> int:
        params: dict[str, Any] = {"count": 1, "startIndex": 1}
        if path == "Groups":
            params["excludedAttributes"] = "members"
        response = self.wire.call("GET", path, params=params)
        with _reading():
            _, total = answers.page_of(f"GET {path}", answers.json_of(f"GET {path}", response))
        return total or 0

    # -- reading --------------------------------------------------------------------------

    def users(self) -> Iterator[TargetUser]:
        with _reading():
            for resource in self.wire.pages("Users"):
                yield _user(resource, "GET Users")

    def groups(self) -> Iterator[TargetGroup]:
        with _reading():
            for resource in self.wire.pages("Groups"):
                yield _group(resource, "GET Groups")

    def _find(self, path: str, attribute: str, value: str, params: Mapping[str, Any],
              decode):
        where = f"GET {path}"
        response = self.wire.call("GET", path, params=params)
        with _reading():
            resources, _ = answers.page_of(where, answers.json_of(where, response))
            for resource in resources:
                if str(resource.get(attribute, "")).casefold() == value.casefold():
                    return decode(resource, where)
        return None

    def find_user(self, user_name: str) -> TargetUser | None:
        return self._find("Users", "userName", user_name, self.dialect.user_lookup(user_name),
                          _user)

    def find_group(self, display_name: str) -> TargetGroup | None:
        found = self._find("Groups", "displayName", display_name,
                           self.dialect.group_lookup(display_name), _group)
        if found is None or not self.dialect.group_lookup_omits_members:
            return found
        # The lookup left the members out (as Entra asks); what the group holds matters to
        # the one who links it, so read it whole. Only when found: rare, on onboarding.
        where = f"GET Groups/{found.id}"
        response = self.wire.call("GET", f"Groups/{found.id}")
        with _reading():
            return _group(answers.json_of(where, response), where)

    # -- writing --------------------------------------------------------------------------

    def _create(self, path: str, body: dict, find: Callable[[], Any], what: str, decode) -> Created:
        """One POST. A 409, or an outcome we cannot know (timeout after sending, a gateway
        error), is resolved by looking the object up; it is never sent a second time here. If
        the lookup finds nothing the operation fails and the next cycle tries again, when a
        late-landing first request shows up as a 409 or in the lookup."""
        try:
            response = self.wire.call("POST", path, json=body, idempotent=False)
        except ConflictError:
            found = find()
            if found is None:
                raise ConflictError(f"{what} already exists on the target but cannot be "
                                    "found by a filter query", 409)
            return Created(found, existed=True)
        except TransientError as exc:
            if not exc.sent:
                raise
            found = find()              # did the lost request land after all?
            if found is not None:
                return Created(found, existed=True)
            raise TransientError(f"{exc}; the create may still land, so it is not resent "
                                 "until the next cycle", exc.status, sent=True) from None
        where = f"POST {path}"
        try:
            resource = answers.json_of(where, response) if response.content else {}
            if not isinstance(resource, dict) or not resource.get("id"):
                raise Malformed(f"{what}: the target answered {response.status_code} but "
                                "returned no id")
            return Created(decode(resource, where), existed=False)
        except Malformed as exc:
            # The create may well have landed: the next cycle's POST meets a 409 and adopts it.
            raise RejectedError(str(exc), response.status_code) from None

    def create_user(self, attributes: Mapping[str, str], active: bool,
                    external_id: str) -> Created:
        user_name = attributes["userName"]
        return self._create("Users", self.dialect.user_body(attributes, active, external_id),
                            lambda: self.find_user(user_name), f"user {user_name}", _user)

    def update_user(self, user_id: str, changed: Mapping[str, str | None],
                    active: bool | None = None) -> None:
        if not self.dialect.updates_by_put:
            self._patch(f"Users/{user_id}", self.dialect.user_patch(changed, active))
            return
        # Okta: (de)activation is a PATCH of its own, a profile change a GET and a PUT of the
        # whole user (taken after the PATCH, so it carries the new ``active``)
        if active is not None:
            self._patch(f"Users/{user_id}", [self.dialect.active_op(active)])
        if changed:
            where = f"GET Users/{user_id}"
            try:
                current = answers.object_of(where, answers.json_of(
                    where, self.wire.call("GET", f"Users/{user_id}")))
            except Malformed as exc:    # nothing to PUT back: this update fails, not the run
                raise RejectedError(str(exc), 200) from None
            self.wire.call("PUT", f"Users/{user_id}",
                           json=self.dialect.put_body(current, changed))

    def _patch(self, path: str, operations: list[dict]) -> None:
        if operations:
            self.wire.call("PATCH", path, json={"schemas": [PATCH_OP], "Operations": operations})

    def create_group(self, display_name: str, external_id: str) -> Created:
        found = self.find_group(display_name)
        if found is not None:
            return Created(found, existed=True)
        body = self.dialect.group_body(display_name, external_id)
        return self._create("Groups", body, lambda: self.find_group(display_name),
                            f"group {display_name}", _group)

    def rename_group(self, group_id: str, display_name: str) -> None:
        self._patch(f"Groups/{group_id}", self.dialect.rename_ops(group_id, display_name))

    def add_members(self, group_id: str, member_ids: Sequence[str],
                    on_chunk: Callable[[Sequence[str]], None] = lambda ids: None) -> None:
        for chunk in chunks(list(member_ids), self.dialect.members_per_patch):
            self._patch(f"Groups/{group_id}", self.dialect.add_member_ops(chunk))
            on_chunk(chunk)

    def remove_members(self, group_id: str, member_ids: Sequence[str],
                       on_chunk: Callable[[Sequence[str]], None] = lambda ids: None) -> None:
        for chunk in chunks(list(member_ids), self.dialect.members_per_patch):
            try:
                self._patch(f"Groups/{group_id}", self.dialect.remove_member_ops(chunk))
            except RejectedError as exc:
                # RFC 7644 §3.5.2.2: a filter that matches nothing is "noTarget". The members
                # are already gone (a lost response, a manual change): the goal is reached.
                if exc.scim_type != "noTarget":
                    raise
                log.info("group %s: members already absent on the target", group_id)
            on_chunk(chunk)

    def delete_group(self, group_id: str) -> None:
        try:
            self.wire.call("DELETE", f"Groups/{group_id}")
        except NotFoundError:
            pass        # already gone: the goal is reached
