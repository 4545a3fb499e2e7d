"""Source records -> desired state: attribute mapping, identity, nested-group flattening.

Pure: no I/O. Every source goes through the same rules, so an LDAP group and an Okta group
flatten the same way and a missing e-mail is handled the same way everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from connectors.base import USER_ATTRIBUTES, Directory, GroupRecord, UserRecord

from .model import DesiredState, Group, Problem, User

log = logging.getLogger(__name__)

DEFAULT_ADMIN_GROUP_NAME = "Split_Administrators"


@dataclass(frozen=True)
class MappingRules:
    """How raw records become SCIM values.

    ``user_attributes``: flat SCIM name -> raw attribute names tried in order (the first
    non-empty value wins). ``userName`` falls back to ``email`` and the other way round, so
    one of them is enough. ``admin_group`` names a source group (by id or name) whose members
    become Split's administrators, pushed as ``admin_group_name``.
    """

    user_attributes: Mapping[str, tuple[str, ...]]
    group_name: tuple[str, ...] = ("displayName",)
    admin_group: str = ""
    admin_group_name: str = DEFAULT_ADMIN_GROUP_NAME

    @classmethod
    def for_source(cls, source_cls: type, overrides: Mapping[str, str | Iterable[str]] = (),
                   **kwargs) -> "MappingRules":
        mapping = dict(source_cls.default_mapping)
        for scim_name, raw in dict(overrides).items():
            mapping[scim_name] = (raw,) if isinstance(raw, str) else tuple(raw)
        return cls(user_attributes=mapping, group_name=tuple(source_cls.group_name_attributes),
                   **kwargs)

    def unknown_attributes(self) -> list[str]:
        return sorted(set(self.user_attributes) - USER_ATTRIBUTES)


def lookup(attributes: Mapping[str, object], name: str) -> str:
    """The first non-empty value of ``name`` as a string; dotted names reach into nested
    dicts (``profile.email``) when no flat key of that name exists."""
    value = attributes.get(name)
    if type(value) is str:          # the common case, kept cheap: it runs per user per key
        return value.strip()
    if value is None and "." in name:
        node: object = attributes
        for part in name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        value = node
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if v not in (None, "")), None)
    if value is None or isinstance(value, Mapping):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def first_of(attributes: Mapping[str, object], names: Iterable[str]) -> str:
    for name in names:
        value = lookup(attributes, name)
        if value:
            return value
    return ""


@dataclass
class _Mapper:
    rules: MappingRules
    problems: list[Problem] = field(default_factory=list)

    def user(self, record: UserRecord) -> User | None:
        attrs: dict[str, str] = {}
        for scim_name, raw_names in self.rules.user_attributes.items():
            if scim_name not in USER_ATTRIBUTES:
                continue
            value = first_of(record.attributes, raw_names)
            if value:
                attrs[scim_name] = value
        user_name = attrs.get("userName") or attrs.get("email", "")
        email = attrs.get("email") or (user_name if "@" in user_name else "")
        if not user_name:
            self.problems.append(Problem("user", record.id, record.id,
                                         "no userName or e-mail in the source record",
                                         disabled=not record.active))
            return None
        attrs["userName"] = user_name
        if email:
            attrs["email"] = email
        if "displayName" not in attrs:
            full = " ".join(v for v in (attrs.get("name.givenName"), attrs.get("name.familyName")) if v)
            if full:
                attrs["displayName"] = full
        return User(source_id=record.id, user_name=user_name, active=record.active,
                    attributes=attrs)

    def group_name(self, record: GroupRecord) -> str:
        """The group's name on the target; "" (and a problem) when it has none or when it
        merely has the administrators group's name: only ``sync.admin_group`` feeds Split's
        administrators, so a look-alike never makes its members admins."""
        name = first_of(record.attributes, self.rules.group_name)
        wanted = self.rules.admin_group
        if wanted and (record.id == wanted or name.casefold() == wanted.casefold()):
            return self.rules.admin_group_name
        if name.casefold() == self.rules.admin_group_name.casefold():
            where = (f"sync.admin_group is {wanted!r}" if wanted else "sync.admin_group is not set")
            self.problems.append(Problem(
                "group", record.id, name,
                f"its name is that of Split's administrators group, but {where}: only "
                "the group named by sync.admin_group makes people administrators"))
            return ""
        if not name:
            self.problems.append(Problem("group", record.id, record.id, "the group has no name"))
        return name


def flatten_members(groups: Mapping[str, GroupRecord], user_ids: set[str]) -> dict[str, set[str]]:
    """Transitive user members of every group. Cycles are tolerated (a group reached twice is
    not walked twice); ids that are neither a known user nor a known group are ignored."""
    flat: dict[str, set[str]] = {}
    for gid in groups:
        seen_groups = {gid}
        stack = [gid]
        members: set[str] = set()
        while stack:
            current = groups[stack.pop()]
            for member in current.members:
                if member in user_ids:
                    members.add(member)
                elif member in groups and member not in seen_groups:
                    if member in flat:           # already flattened: reuse it
                        members |= flat[member]
                        seen_groups.add(member)
                    else:
                        seen_groups.add(member)
                        stack.append(member)
        flat[gid] = members
    return flat


def _drop_duplicates(objects: dict[str, object], key_of, kind: str, problems: list[Problem]):
    by_key: dict[str, list[str]] = {}
    for sid, obj in objects.items():
        by_key.setdefault(key_of(obj).casefold(), []).append(sid)
    for sids in by_key.values():
        if len(sids) > 1:
            for sid in sids:
                obj = objects.pop(sid)
                key = key_of(obj)
                problems.append(Problem(kind, sid, key,
                                        f"{len(sids)} source {kind}s share the name {key!r}",
                                        disabled=getattr(obj, "active", True) is False))


def map_directory(directory: Directory, rules: MappingRules) -> DesiredState:
    mapper = _Mapper(rules)
    users: dict[str, User] = {}
    for record in directory.users.values():
        user = mapper.user(record)
        if user is not None:
            users[record.id] = user
    _drop_duplicates(users, lambda u: u.user_name, "user", mapper.problems)

    active = {sid for sid, u in users.items() if u.active}
    flat = flatten_members(directory.groups, set(directory.users))
    strangers = sum(1 for g in directory.groups.values() for m in g.members
                    if m not in directory.users and m not in directory.groups)
    if strangers:
        log.info("%d group member reference(s) name no user or group read from the source "
                 "(outside its scope, or deleted); they are ignored", strangers)
    groups: dict[str, Group] = {}
    for gid, record in directory.groups.items():
        name = mapper.group_name(record)
        if not name:
            continue
        # Only active users are members on the target: a deactivated account keeps no access.
        groups[gid] = Group(source_id=gid, display_name=name, members=frozenset(flat[gid] & active))
    _drop_duplicates(groups, lambda g: g.display_name, "group", mapper.problems)

    if rules.admin_group and not any(g.display_name == rules.admin_group_name
                                     for g in groups.values()):
        mapper.problems.append(Problem("group", "", rules.admin_group,
                                       "sync.admin_group names no group in the source"))
    for name in rules.unknown_attributes():
        log.warning("attribute mapping %r is not a SCIM user attribute this agent sends; ignored",
                    name)
    if not directory.groups_read:
        mapper.problems.append(Problem("group", "", "(every group)",
                                       "the source said nothing about groups (no groups section "
                                       "in the export); groups are left as they are"))
    return DesiredState(users=users, groups=groups, problems=tuple(mapper.problems),
                        groups_read=directory.groups_read)
