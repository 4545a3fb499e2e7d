"""What the target answered, checked before anything is made of it: private to this package.

Every SCIM answer the Target reads passes through here. An answer of the wrong shape (an
HTML page where JSON was due, a list or ``null`` for an object, an ``id`` that is an object,
``Resources`` that is not a list, ``members`` or ``active`` of the wrong type, a
``totalResults`` that is not a count) raises :class:`Malformed` with one sentence naming the
request and what was wrong; the caller turns it into the right error of the tree: a listing
or a lookup that cannot be read stops the run (FatalTargetError: nothing can be planned from
it), the answer to one write fails that operation (RejectedError).

Attributes the agent only compares (``title``, ``name``, ``emails``...) are read leniently
(:func:`connectors.scim.codec.flat_user`): a value of the wrong type reads as absent, and the
next update puts it right. What identifies an object or decides an operation is read
strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..base import TargetGroup, TargetUser
from .codec import flat_user

MAX_ID_LENGTH = 1024


class Malformed(ValueError):
    """An answer the target should not have given; the message says what and where."""


def json_of(where: str, response: httpx.Response) -> Any:
    """The JSON body of an answer, or :class:`Malformed` naming what came instead."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no type"
        shown = "an empty body" if not response.content else f"{kind}"
        hint = " (a proxy or a login page?)" if "html" in kind else ""
        raise Malformed(f"{where}: the target answered HTTP {response.status_code} with "
                        f"{shown}, not SCIM JSON{hint}") from None
    except RecursionError:
        raise Malformed(f"{where}: the target's answer is nested too deeply to read") from None


def object_of(where: str, body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise Malformed(f"{where}: expected a SCIM object, the target sent {_kind(body)}")
    return body


def page_of(where: str, body: Any) -> tuple[list[Mapping[str, Any]], int | None]:
    """The resources of a ListResponse and its ``totalResults`` (None when not given)."""
    body = object_of(where, body)
    resources = _objects(where, body, "Resources")
    for i, resource in enumerate(resources):
        id_of(f"{where}: Resources[{i}]", resource)
    return resources, count_of(where, body.get("totalResults"))


def _objects(where: str, body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """``body[key]``: a list of objects (absent or null: none), or :class:`Malformed`."""
    items = body.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise Malformed(f"{where}: {key} should be a list, the target sent {_kind(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed(f"{where}: {key}[{i}] should be an object, the target sent "
                            f"{_kind(item)}")
    return items


def count_of(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 19:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10 ** 18:
        raise Malformed(f"{where}: totalResults should be a count, the target sent "
                        f"{_kind(value)}")
    return value


def id_of(where: str, resource: Mapping[str, Any]) -> str:
    return _text(where, resource, "id", required=True, limit=MAX_ID_LENGTH)


def user_of(where: str, resource: Any) -> TargetUser:
    resource = object_of(where, resource)
    user_id = id_of(where, resource)
    user_name = _text(where, resource, "userName", required=True)
    attributes, _ = flat_user(resource)
    return TargetUser(id=user_id, user_name=user_name, active=_active(where, resource),
                      attributes=attributes,
                      external_id=_text(where, resource, "externalId") or None)


def group_of(where: str, resource: Any) -> TargetGroup:
    resource = object_of(where, resource)
    group_id = id_of(where, resource)
    ids = set()
    for i, member in enumerate(_objects(f"{where}: group {group_id}", resource, "members")):
        value = _text(f"{where}: group {group_id}: members[{i}]", member, "value",
                      limit=MAX_ID_LENGTH)
        if value:
            ids.add(value)
    return TargetGroup(id=group_id, display_name=_text(where, resource, "displayName",
                                                       required=True),
                       members=frozenset(ids),
                       external_id=_text(where, resource, "externalId") or None)


def _active(where: str, resource: Mapping[str, Any]) -> bool:
    value = resource.get("active", True)
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"     # some servers (old Entra-facing ones)
    raise Malformed(f"{where}: user {resource.get('id')}: active should be true or false, the "
                    f"target sent {_kind(value)}")


def _text(where: str, resource: Mapping[str, Any], key: str, *, required: bool = False,
          limit: int | None = None) -> str:
    value = resource.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        if required:
            raise Malformed(f"{where}: an object without {key}")
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{where}: {key} should be text, the target sent {_kind(value)}")
    if limit is not None and len(value) > limit:
        raise Malformed(f"{where}: {key} is {len(value)} characters long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{where}: {key} holds a lone surrogate, which is not text") from None
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "text", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)
