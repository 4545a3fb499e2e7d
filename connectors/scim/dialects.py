"""Request dialects: the exact shapes Okta's and Microsoft Entra's SCIM clients send, and ours.

Split accepts Okta and Entra as SCIM clients today, so sending what one of them sends is the
surest way to be accepted on first contact (``[target] dialect``). Each dialect builds the
bodies, paths and query parameters of every request the Target makes; :mod:`.target` sends
them and reads the answers the same way for all. Side by side, with sources:
``docs/targets/dialects.md``.

- ``entra``: Microsoft Entra provisioning service (``scim`` job, default behaviour), from
  MicrosoftDocs/entra-docs ``use-scim-to-provision-users-and-groups.md`` (request examples)
  and ``application-provisioning-config-problem-scim-compatibility.md`` (what changes with
  the ``aadOptscim062020`` flag): capitalised ``Replace``/``Add``/``Remove``, e-mail as
  ``emails[type eq "work"].value``, members removed as ``Remove members`` with a value list,
  groups looked up with ``excludedAttributes=members``.
- ``okta``: Okta's SCIM 2.0 client for OIN integrations, from okta/okta-developer-docs
  ``reference/scim/scim-20/index.md``: profile updates as GET then PUT of the whole user,
  activation as a no-path ``replace`` of ``{"active": ...}``, rename as a no-path ``replace``
  of ``{"id", "displayName"}``, members removed by ``members[value eq "id"]``.
- ``rfc``: RFC 7644 read literally (§3.5.2): lowercase ops with a path each, no vendor habit.

All three keep the house rules the port promises: a create is one POST (a 409 or an unknown
outcome is looked up, never resent), lookups are ``eq`` filters with quoted, escaped values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ..base import TARGET_DIALECTS
from .codec import (CORE_USER, ENTERPRISE_USER, GROUP, NAME_PARTS, TOP_LEVEL,
                    ENTERPRISE_ATTRIBUTES, filter_value, flat_path, user_resource)

# Entra's group create names its own schema next to the core one (request-7 of the Entra doc).
ENTRA_GROUP_SCHEMA = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
# Neither Okta nor Microsoft publishes how many members one PATCH carries; 100 is the limit
# AWS IAM Identity Center enforces and idp-scim-sync chunks at (reference/anchors.md).
MEMBERS_PER_PATCH = 100


class Dialect:
    """RFC 7644 as written; the vendor dialects override what their client does differently."""

    name = "rfc"
    members_per_patch = MEMBERS_PER_PATCH
    updates_by_put = False          # True: GET the user, PUT it back changed (Okta)
    group_lookup_omits_members = False

    def op(self, verb: str) -> str:
        return verb

    # -- users ---------------------------------------------------------------------------

    def user_body(self, attributes: Mapping[str, str], active: bool, external_id: str) -> dict:
        return user_resource(attributes, active, external_id)

    def user_lookup(self, user_name: str) -> dict[str, Any]:
        return {"filter": f"userName eq {filter_value(user_name)}"}

    def user_patch(self, changed: Mapping[str, str | None], active: bool | None) -> list[dict]:
        """PATCH operations for changed flat attributes (None removes one) and ``active``."""
        ops = [self.attribute_op(key, new) for key, new in changed.items()]
        if active is not None:
            ops.append(self.active_op(active))
        return ops

    def attribute_op(self, key: str, new: str | None) -> dict:
        # Multi-valued e-mail and phone are replaced whole: the agent owns the one primary
        # work value, and a value-filter path fails on servers that hold none to match yet.
        path = flat_path(key)
        if new in (None, ""):
            return {"op": self.op("remove"), "path": path}
        if key in ("email", "phoneNumber"):
            return {"op": self.op("replace"), "path": path,
                    "value": [{"value": new, "type": "work", "primary": True}]}
        if key == "manager":
            return {"op": self.op("replace"), "path": path, "value": {"value": new}}
        return {"op": self.op("replace"), "path": path, "value": new}

    def active_op(self, active: bool) -> dict:
        return {"op": self.op("replace"), "path": "active", "value": active}

    def put_body(self, current: Mapping[str, Any], changed: Mapping[str, str | None]) -> dict:
        """The user the server returned, with the changed attributes applied (Okta's PUT)."""
        raise NotImplementedError(f"the {self.name} dialect updates users by PATCH")

    # -- groups --------------------------------------------------------------------------

    def group_body(self, display_name: str, external_id: str) -> dict:
        return {"schemas": [GROUP], "displayName": display_name, "externalId": external_id,
                "members": []}

    def group_lookup(self, display_name: str) -> dict[str, Any]:
        return {"filter": f"displayName eq {filter_value(display_name)}"}

    def rename_ops(self, group_id: str, display_name: str) -> list[dict]:
        return [{"op": self.op("replace"), "path": "displayName", "value": display_name}]

    def add_member_ops(self, member_ids: Sequence[str]) -> list[dict]:
        return [{"op": self.op("add"), "path": "members",
                 "value": [{"value": m} for m in member_ids]}]

    def remove_member_ops(self, member_ids: Sequence[str]) -> list[dict]:
        return [{"op": self.op("remove"), "path": f"members[value eq {filter_value(m)}]"}
                for m in member_ids]


class EntraDialect(Dialect):
    """What Microsoft Entra's provisioning service sends (its default, unflagged ``scim`` job)."""

    name = "entra"
    group_lookup_omits_members = True

    def op(self, verb: str) -> str:
        return verb.capitalize()        # "Add", "Replace", "Remove": Entra's own spelling

    def user_body(self, attributes: Mapping[str, str], active: bool, external_id: str) -> dict:
        # request "Create User": both schemas always, meta.resourceType, an empty roles list,
        # the work e-mail marked primary; no phone or manager unless mapped.
        plain = user_resource(attributes, active, external_id)
        body: dict[str, Any] = {"schemas": [CORE_USER, ENTERPRISE_USER],
                                "externalId": external_id,
                                "userName": plain.get("userName"), "active": active}
        if "emails" in plain:
            body["emails"] = [{"primary": True, "type": "work",
                               "value": plain["emails"][0]["value"]}]
        body["meta"] = {"resourceType": "User"}
        for key, value in plain.items():
            if key not in body and key not in ("schemas", ENTERPRISE_USER):
                body[key] = value
        if plain.get(ENTERPRISE_USER):
            body[ENTERPRISE_USER] = plain[ENTERPRISE_USER]
        body["roles"] = []
        return body

    def attribute_op(self, key: str, new: str | None) -> dict:
        # request-4: the work e-mail is addressed by a value filter and set as a string
        if key in ("email", "phoneNumber"):
            path = ('emails[type eq "work"].value' if key == "email"
                    else 'phoneNumbers[type eq "work"].value')
            if new in (None, ""):
                return {"op": "Remove", "path": path}
            return {"op": "Replace", "path": path, "value": new}
        return super().attribute_op(key, new)

    def group_body(self, display_name: str, external_id: str) -> dict:
        # request-7: "Groups are created with an empty members list" (no members key at all)
        return {"schemas": [GROUP, ENTRA_GROUP_SCHEMA], "externalId": external_id,
                "displayName": display_name, "meta": {"resourceType": "Group"}}

    def group_lookup(self, display_name: str) -> dict[str, Any]:
        # request-9: GET /Groups?excludedAttributes=members&filter=displayName eq "..."
        return {"excludedAttributes": "members", **super().group_lookup(display_name)}

    def add_member_ops(self, member_ids: Sequence[str]) -> list[dict]:
        # request-11: {"$ref": null, "value": id}
        return [{"op": "Add", "path": "members",
                 "value": [{"$ref": None, "value": m} for m in member_ids]}]

    def remove_member_ops(self, member_ids: Sequence[str]) -> list[dict]:
        # request-12 (the default job; aadOptscim062020 switches Entra to the filter form)
        return [{"op": "Remove", "path": "members",
                 "value": [{"$ref": None, "value": m} for m in member_ids]}]


class OktaDialect(Dialect):
    """What Okta's SCIM 2.0 client sends to an OIN integration."""

    name = "okta"
    updates_by_put = True

    def user_body(self, attributes: Mapping[str, str], active: bool, external_id: str) -> dict:
        # "Create Users": userName, name, emails (primary first), displayName, externalId,
        # an empty groups list, active; Okta's generated password is never sent by us.
        plain = user_resource(attributes, active, external_id)
        body: dict[str, Any] = {"schemas": plain["schemas"], "userName": plain.get("userName")}
        for key in ("name", "emails", "displayName"):
            if key in plain:
                body[key] = ([{"primary": True, "value": e["value"], "type": e["type"]}
                              for e in plain[key]] if key == "emails" else plain[key])
        for key, value in plain.items():
            if key not in body and key not in ("active", "externalId"):
                body[key] = value
        body["externalId"] = external_id
        body["groups"] = []
        body["active"] = active
        return body

    def user_lookup(self, user_name: str) -> dict[str, Any]:
        # "filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100"
        return {**super().user_lookup(user_name), "startIndex": 1, "count": 100}

    def active_op(self, active: bool) -> dict:
        # "Update a specific User (PATCH)": no path, a value object
        return {"op": "replace", "value": {"active": active}}

    def put_body(self, current: Mapping[str, Any], changed: Mapping[str, str | None]) -> dict:
        # "Update a specific User (PUT)": Okta GETs the user, changes what changed, PUTs it all
        body = copy.deepcopy(dict(current))
        for key, new in changed.items():
            _set_flat(body, key, new)
        return body

    def group_body(self, display_name: str, external_id: str) -> dict:
        # "Create Groups": Okta sends no externalId for a pushed group
        return {"schemas": [GROUP], "displayName": display_name, "members": []}

    def rename_ops(self, group_id: str, display_name: str) -> list[dict]:
        # "Update a specific Group name": no path, the id repeated in the value
        return [{"op": "replace", "value": {"id": group_id, "displayName": display_name}}]


def _set_flat(body: dict, key: str, new: str | None) -> None:
    """Apply one flat attribute change to a whole user resource, keeping everything else."""
    empty = new in (None, "")
    if key in TOP_LEVEL:
        body.pop(key, None) if empty else body.__setitem__(key, new)
    elif key.startswith("name.") and key[5:] in NAME_PARTS:
        name = body.setdefault("name", {})
        name.pop(key[5:], None) if empty else name.__setitem__(key[5:], new)
        if not name:
            body.pop("name")
    elif key in ("email", "phoneNumber"):
        attr = "emails" if key == "email" else "phoneNumbers"
        values = [v for v in body.get(attr) or [] if isinstance(v, dict)]
        ours = next((v for v in values if v.get("primary")), None) \
            or next((v for v in values if v.get("type") == "work"), None)
        if empty:
            values = [v for v in values if v is not ours]
        elif ours is None:
            values.insert(0, {"primary": True, "value": new, "type": "work"})
        else:
            ours["value"] = new
            ours.pop("display", None)          # a stale display would contradict the value
        if values:
            body[attr] = values
        else:
            body.pop(attr, None)
    elif key in ENTERPRISE_ATTRIBUTES or key == "manager":
        extension = body.setdefault(ENTERPRISE_USER, {})
        value = {"value": new} if key == "manager" else new
        extension.pop(key, None) if empty else extension.__setitem__(key, value)
        schemas = body.setdefault("schemas", [CORE_USER])
        if extension and ENTERPRISE_USER not in schemas:
            schemas.append(ENTERPRISE_USER)
        if not extension:
            body.pop(ENTERPRISE_USER)
    else:
        raise ValueError(f"no SCIM attribute for {key!r}")


DIALECTS: dict[str, Dialect] = {d.name: d for d in (EntraDialect(), OktaDialect(), Dialect())}
assert tuple(sorted(DIALECTS)) == tuple(sorted(TARGET_DIALECTS))


def dialect_named(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown SCIM dialect {name!r} (one of {', '.join(DIALECTS)})") \
            from None
