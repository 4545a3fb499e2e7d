"""What reading the target teaches the snapshot: adoption, drift and vanished objects, as facts.

Pure: no I/O. The engine reads the target (all of it on a first sync, after a lost snapshot or
on reconcile; one object when a create meets an account that already exists) and hands the
records here. The :class:`Facts` returned are written to the snapshot as "what the target
holds", and the ordinary planner then sends only what differs. Nothing here decides what to
send: adoption is an observation that feeds the next plan.

Only attributes the agent manages are taken over (what the source maps, and what was pushed
before): Split may hold attributes the agent never set, and those are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.base import TargetGroup, TargetUser

from . import references
from .model import (DesiredState, Group, PushedGroup, PushedUser, Snapshot, User, group_digest,
                    user_digest)


@dataclass(frozen=True)
class Drift:
    """What a reconcile found changed in the target by hand, attribute by attribute:
    ``changed`` maps an attribute (``active``, ``displayName``, ``members``...) to (what the
    snapshot says was pushed, what the target holds now)."""

    kind: str          # "user" | "group"
    key: str
    changed: Mapping[str, tuple]


@dataclass(frozen=True)
class Facts:
    """Snapshot rows as the target holds them, rows to forget, and what to tell the operator."""

    users: tuple[PushedUser, ...] = ()
    groups: tuple[PushedGroup, ...] = ()
    forget_users: tuple[str, ...] = ()        # source ids; forgotten before rows are written
    forget_groups: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()             # keys of objects found and taken over
    drifted: tuple[str, ...] = ()             # keys whose target copy differed from the snapshot
    vanished: tuple[str, ...] = ()            # keys gone from the target
    conflict: str = ""                        # not adopted: taking it would merge two people
    drift: tuple[Drift, ...] = ()             # the drifted objects' changes, for people

    def __bool__(self) -> bool:
        return bool(self.users or self.groups or self.forget_users or self.forget_groups)


def managed(attributes: Mapping[str, str], *keysets: Iterable[str]) -> dict[str, str]:
    """Only the attributes the agent manages for this object (what the source maps, or what
    was pushed before): Split may hold attributes we never set, and those are left alone."""
    keep = set().union(*keysets) | {"userName"}
    return {k: v for k, v in attributes.items() if k in keep}


def _pushed_user(source_id: str, record: TargetUser, user_name: str,
                 attributes: Mapping[str, str]) -> PushedUser:
    attrs = dict(attributes)
    return PushedUser(source_id, record.id, user_name, record.active, attrs,
                      user_digest(attrs, record.active))


def _pushed_group(source_id: str, record: TargetGroup,
                  source_of: Mapping[str, str]) -> PushedGroup:
    members = frozenset(source_of[m] for m in record.members if m in source_of)
    return PushedGroup(source_id, record.id, record.display_name,
                       group_digest(record.display_name), members)


def observe(desired: DesiredState, snapshot: Snapshot, users: Iterable[TargetUser],
            groups: Iterable[TargetGroup] = (), *, refresh: bool = False) -> Facts:
    """Facts from a complete read of the target.

    Adoption: objects the snapshot does not know yet are matched to desired ones, users by
    userName (case-insensitive), groups by displayName. ``refresh`` (reconcile): objects the
    snapshot does know are compared too (drift), and those gone from the target are forgotten,
    so the planner creates them again.
    """
    rows_u: list[PushedUser] = []
    rows_g: list[PushedGroup] = []
    adopted: list[str] = []
    drifted: list[str] = []
    drift: list[Drift] = []
    vanished: list[str] = []
    forget_u: list[str] = []
    forget_g: list[str] = []

    known_users = {u.scim_id: u for u in snapshot.users.values()}
    wanted_users = {u.user_name.casefold(): u for u in desired.users.values()
                    if u.source_id not in snapshot.users}
    source_of = {u.scim_id: sid for sid, u in snapshot.users.items()}
    adopted_rows: list[int] = []
    seen: set[str] = set()
    for record in users:
        if not record.id:
            continue
        known = known_users.get(record.id)
        if known is not None:
            seen.add(record.id)
            if not refresh:
                continue
            wanted = desired.users.get(known.source_id)
            current = references.from_target(
                managed(record.attributes, known.attributes, wanted.attributes if wanted else ()),
                source_of)
            if current != dict(known.attributes) or record.active != known.active:
                drifted.append(known.user_name)
                drift.append(Drift("user", known.user_name, _user_changes(known, current,
                                                                          record.active)))
                rows_u.append(_pushed_user(known.source_id, record, known.user_name, current))
            continue
        user = wanted_users.pop(record.user_name.casefold(), None)
        if user is None:
            continue
        rows_u.append(_pushed_user(user.source_id, record, user.user_name,
                                   managed(record.attributes, user.attributes)))
        adopted_rows.append(len(rows_u) - 1)
        source_of[record.id] = user.source_id
        adopted.append(user.user_name)
    # references (manager) as source ids, now that every adopted user's SCIM id is known
    for i in adopted_rows:
        row = rows_u[i]
        attrs = references.from_target(row.attributes, source_of)
        rows_u[i] = PushedUser(row.source_id, row.scim_id, row.user_name, row.active, attrs,
                               user_digest(attrs, row.active))
    if refresh:
        for pushed in snapshot.users.values():
            if pushed.scim_id not in seen:
                forget_u.append(pushed.source_id)
                source_of.pop(pushed.scim_id, None)
                vanished.append(pushed.user_name)

    known_groups = {g.scim_id: g for g in snapshot.groups.values()}
    wanted_groups = {g.display_name.casefold(): g for g in desired.groups.values()
                     if g.source_id not in snapshot.groups}
    seen_groups: set[str] = set()
    for record in groups:
        if not record.id:
            continue
        known_group = known_groups.get(record.id)
        if known_group is not None:
            seen_groups.add(record.id)
            row = _pushed_group(known_group.source_id, record, source_of)
            if refresh and (row.display_name != known_group.display_name
                            or row.members != known_group.members):
                drifted.append(known_group.display_name)
                drift.append(Drift("group", known_group.display_name,
                                   _group_changes(known_group, row, snapshot)))
                rows_g.append(row)
            continue
        group = wanted_groups.pop(record.display_name.casefold(), None)
        if group is None:
            continue
        rows_g.append(_pushed_group(group.source_id, record, source_of))
        adopted.append(group.display_name)
    if refresh:
        for pushed_group in snapshot.groups.values():
            if pushed_group.scim_id not in seen_groups:
                forget_g.append(pushed_group.source_id)
                vanished.append(pushed_group.display_name)

    return Facts(tuple(rows_u), tuple(rows_g), tuple(forget_u), tuple(forget_g),
                 tuple(adopted), tuple(drifted), tuple(vanished), drift=tuple(drift))


def _user_changes(known: PushedUser, current: Mapping[str, str], active: bool) -> dict:
    changes: dict[str, tuple] = {k: (known.attributes.get(k), current.get(k))
                                 for k in sorted(set(known.attributes) | set(current))
                                 if known.attributes.get(k) != current.get(k)}
    if active != known.active:
        changes["active"] = (known.active, active)
    return changes


def _group_changes(known: PushedGroup, found: PushedGroup, snapshot: Snapshot) -> dict:
    def names(sids) -> list[str]:
        return sorted(snapshot.users[s].user_name if s in snapshot.users else s for s in sids)
    changes: dict[str, tuple] = {}
    if found.display_name != known.display_name:
        changes["displayName"] = (known.display_name, found.display_name)
    if found.members != known.members:
        changes["members"] = (names(known.members - found.members),     # removed in Split
                              names(found.members - known.members))     # added in Split
    return changes


def refreshed(snapshot: Snapshot, facts: Facts) -> Snapshot:
    """The snapshot as it would be once ``facts`` were recorded (for ``plan --refresh``,
    which reads the target but writes nothing)."""
    users = {sid: u for sid, u in snapshot.users.items() if sid not in facts.forget_users}
    groups = {sid: g for sid, g in snapshot.groups.items() if sid not in facts.forget_groups}
    users.update({u.source_id: u for u in facts.users})
    groups.update({g.source_id: g for g in facts.groups})
    return Snapshot(users, groups)


def found_user(user: User, record: TargetUser, owner: str | None,
               present: Mapping[str, str]) -> Facts:
    """A create for ``user`` met ``record`` on the target (a 409, or a create whose answer was
    lost). ``owner`` is the source id the snapshot maps to that account, if any; ``present``
    maps the source id of every user still in the source (held ones included) to its name.

    The account is never taken from someone still in the source: that would merge two people
    into one account (a rename that has not reached Split yet, and a hire who takes the old
    name). It is a conflict, named in a sentence, and nothing is recorded. An account whose
    owner left the source (deleted and re-created there with the same e-mail) is handed to the
    new record, and the old one is forgotten, never deactivated on its way out."""
    for other in (owner, record.external_id):
        if other is not None and other != user.source_id and other in present:
            return Facts(conflict=(
                f"cannot create {user.user_name} (source id {user.source_id}): Split's account "
                f"{record.user_name} belongs to {present[other]} (source id {other}), who is "
                "still in the source; nothing was changed for either. Give one of them another "
                "user name, or rename the account in Split, then sync again"))
    forget = (owner,) if owner is not None and owner != user.source_id else ()
    row = _pushed_user(user.source_id, record, user.user_name,
                       managed(record.attributes, user.attributes))
    return Facts(users=(row,), forget_users=forget, adopted=(user.user_name,))


def found_group(group: Group, record: TargetGroup, source_of: Mapping[str, str]) -> Facts:
    """A create for ``group`` found a group of that name on the target: it is linked (Split
    requires it), with the members it holds that the snapshot knows (target id -> source id
    in ``source_of``)."""
    return Facts(groups=(_pushed_group(group.source_id, record, source_of),),
                 adopted=(group.display_name,))
