"""Flat attributes <-> SCIM JSON, attribute paths and filter quoting: private to this package.

The engine speaks flat attribute names (``userName``, ``email``, ``name.givenName``, ...; see
``connectors.base.USER_ATTRIBUTES``); this module alone knows where each lives in a SCIM
resource (RFC 7643 §4.1 core, §4.3 enterprise extension). What each request looks like is
the dialect's business (:mod:`.dialects`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

TOP_LEVEL = ("userName", "displayName", "nickName", "title", "userType", "preferredLanguage",
              "locale", "timezone", "profileUrl")
NAME_PARTS = ("givenName", "familyName", "middleName", "formatted", "honorificPrefix",
               "honorificSuffix")
ENTERPRISE_ATTRIBUTES = ("employeeNumber", "costCenter", "organization", "division", "department")


def user_resource(attributes: Mapping[str, str], active: bool, external_id: str) -> dict:
    """The POST body for a user from flat attributes (see agent/core/model.py)."""
    body: dict[str, Any] = {"schemas": [CORE_USER], "externalId": external_id, "active": active}
    name = {}
    enterprise: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in TOP_LEVEL:
            body[key] = value
        elif key.startswith("name.") and key[5:] in NAME_PARTS:
            name[key[5:]] = value
        elif key == "email":
            body["emails"] = [{"value": value, "type": "work", "primary": True}]
        elif key == "phoneNumber":
            body["phoneNumbers"] = [{"value": value, "type": "work", "primary": True}]
        elif key in ENTERPRISE_ATTRIBUTES:
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
    """Flat attributes and ``active`` of a user the target returned (for adoption). A value
    of the wrong type (an object where text was due) reads as absent: these attributes are
    only compared, and the next update puts them right."""
    flat: dict[str, str] = {}
    for key in TOP_LEVEL:
        if _scalar(resource.get(key)) is not None:
            flat[key] = _scalar(resource[key])
    name = resource.get("name")
    for part, value in (name.items() if isinstance(name, dict) else ()):
        if part in NAME_PARTS and _scalar(value) is not None:
            flat[f"name.{part}"] = _scalar(value)
    for attr, flat_key in (("emails", "email"), ("phoneNumbers", "phoneNumber")):
        listed = resource.get(attr)
        values = [v for v in (listed if isinstance(listed, list) else [])
                  if isinstance(v, dict) and _scalar(v.get("value")) is not None]
        if values:
            best = next((v for v in values if v.get("primary") is True), None) \
                or next((v for v in values if v.get("type") == "work"), values[0])
            flat[flat_key] = _scalar(best["value"])
    enterprise = resource.get(ENTERPRISE_USER)
    enterprise = enterprise if isinstance(enterprise, dict) else {}
    for key in ENTERPRISE_ATTRIBUTES:
        if _scalar(enterprise.get(key)) is not None:
            flat[key] = _scalar(enterprise[key])
    manager = enterprise.get("manager")
    if isinstance(manager, dict) and _scalar(manager.get("value")) is not None:
        flat["manager"] = _scalar(manager["value"])
    active = resource.get("active", True)
    if isinstance(active, str):       # some servers (old Entra-facing ones) speak "False"
        active = active.strip().lower() != "false"
    return flat, bool(active)


def _scalar(value: Any) -> str | None:
    """A single value as text; None for nothing, or for a value that is not a single one."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")       # a lone surrogate is not text: nothing could print it
        except UnicodeEncodeError:
            return None
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return None


def flat_path(key: str) -> str:
    """The PATCH path of a flat attribute (RFC 7644 §3.5.2, attribute path grammar)."""
    if key in TOP_LEVEL:
        return key
    if key.startswith("name."):
        return key
    if key == "email":
        return "emails"
    if key == "phoneNumber":
        return "phoneNumbers"
    if key in ENTERPRISE_ATTRIBUTES:
        return f"{ENTERPRISE_USER}:{key}"
    if key == "manager":
        return f"{ENTERPRISE_USER}:manager"
    raise ValueError(f"no SCIM path for attribute {key!r}")


def filter_value(value: str) -> str:
    """A SCIM filter string literal: quoted, with ``\\`` and ``"`` escaped (RFC 7644 §3.4.2.2)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
