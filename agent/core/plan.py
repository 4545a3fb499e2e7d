"""(desired state, snapshot) -> Plan: the ordered list of operations.

Pure: no I/O. The dry run, the guard, the logs, ``apply`` and the tests all read the same
Plan value.

Order: users are created, reactivated and updated first; then groups are created and renamed;
then members are added and removed; then groups are deleted; deactivations come last, so a
leaver loses group access before the account is switched off and nothing is ever referenced
before it exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from .model import (MAX_GROUP_NAME, RESERVED_GROUP_NAMES, ROW_ACTIVE, ROW_DIGEST,
                    DesiredState, DesiredUsers, Group, Problem, PushedUser, PushedUsers,
                    Snapshot, User)


class OpKind(StrEnum):
    CREATE_USER = "create_user"
    UPDATE_USER = "update_user"
    DEACTIVATE_USER = "deactivate_user"
    REACTIVATE_USER = "reactivate_user"
    CREATE_GROUP = "create_group"
    UPDATE_GROUP = "update_group"
    DELETE_GROUP = "delete_group"
    ADD_MEMBERS = "add_members"
    REMOVE_MEMBERS = "remove_members"


PHASES = (
    (OpKind.CREATE_USER, OpKind.REACTIVATE_USER, OpKind.UPDATE_USER),
    (OpKind.CREATE_GROUP, OpKind.UPDATE_GROUP),
    (OpKind.ADD_MEMBERS,),
    (OpKind.REMOVE_MEMBERS,),
    (OpKind.DELETE_GROUP,),
    (OpKind.DEACTIVATE_USER,),
)
_PHASE_OF = {kind: i for i, kinds in enumerate(PHASES) for kind in kinds}
USER_OPS = frozenset({OpKind.CREATE_USER, OpKind.UPDATE_USER, OpKind.DEACTIVATE_USER,
                      OpKind.REACTIVATE_USER})
MEMBER_OPS = frozenset({OpKind.ADD_MEMBERS, OpKind.REMOVE_MEMBERS})

Change = tuple[str | None, str | None]


@dataclass(frozen=True)
class Op:
    kind: OpKind
    key: str                                   # userName, or the group's displayName
    source_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)   # create: everything sent
    changed: Mapping[str, Change] = field(default_factory=dict)   # update: old -> new
    members: tuple[str, ...] = ()              # member ops: user source ids
    member_keys: tuple[str, ...] = ()          # ... and their userNames, for people
    reason: str = ""                           # why (deactivations, deletions)
    refused: str = ""                          # not sent: what the target would refuse
    user: User | None = None                   # the desired value to record once applied
    group: Group | None = None
    wave: int = 0                              # within a phase: after the ops that free its key

    @property
    def phase(self) -> tuple[int, int]:
        """When it runs: phases in order, and within one, a wave after every op that frees a
        userName this op takes (a rename runs before the create that reuses its old name)."""
        return _PHASE_OF[self.kind], self.wave

    @property
    def weight(self) -> int:
        """What the summary counts: member references for member ops, else one."""
        return len(self.members) if self.kind in MEMBER_OPS else 1

    def to_dict(self) -> dict:
        out: dict = {"op": self.kind.value, "key": self.key}
        if self.kind in MEMBER_OPS:
            out["members"] = list(self.member_keys)
        else:
            out["source_id"] = self.source_id
        if self.kind in (OpKind.CREATE_USER, OpKind.CREATE_GROUP):
            out["attributes"] = dict(self.attributes)
        if self.changed:
            out["changed"] = {k: [old, new] for k, (old, new) in self.changed.items()}
        if self.reason:
            out["reason"] = self.reason
        if self.refused:
            out["refused"] = self.refused
        return out


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    problems: tuple[Problem, ...] = ()

    def summary(self) -> dict[str, int]:
        """What will be sent, by kind. Refused changes are listed in ``changes`` but not
        counted: they are never sent."""
        counts = {kind.value: 0 for kind in OpKind}
        for op in self.sendable:
            counts[op.kind.value] += op.weight
        return {kind: counts[kind] for kind in (
            "create_user", "update_user", "deactivate_user", "reactivate_user",
            "create_group", "update_group", "delete_group", "add_members", "remove_members")}

    @property
    def is_empty(self) -> bool:
        return not self.ops

    @property
    def sendable(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if not op.refused)

    @property
    def refused(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.refused)

    def count(self, kind: OpKind) -> int:
        return sum(op.weight for op in self.sendable if op.kind == kind)

    def to_dict(self) -> dict:
        out = {"summary": self.summary(), "changes": [op.to_dict() for op in self.ops]}
        if self.problems:
            out["problems"] = [{"kind": p.kind, "key": p.key, "source_id": p.source_id,
                                "reason": p.reason} for p in self.problems]
        return out

    def only(self, keys: Iterable[str]) -> "Plan":
        """The part of the plan that touches the named users or groups (case-insensitive)."""
        wanted = {k.casefold() for k in keys}
        return Plan(tuple(op for op in self.ops if op.key.casefold() in wanted), self.problems)


@dataclass(frozen=True)
class PlanOptions:
    deactivate: bool = True        # users who leave the source are deactivated
    groups: bool = True            # groups and memberships are managed at all
    admin_group_name: str = "Split_Administrators"


# ---------------------------------------------------------------------------------------------


def make_plan(desired: DesiredState, snapshot: Snapshot, options: PlanOptions = PlanOptions()) -> Plan:
    ops: list[Op] = []
    pushed = snapshot.users
    gone = pushed.keys() - desired.users.keys()      # (a set operation: no PushedUser made)
    held = desired.held_users
    departed = {pushed[sid].user_name.casefold(): pushed[sid] for sid in pushed
                if sid in gone and sid not in held} if gone else {}
    ops += _order_by_managers(_order_by_freed_names(_user_ops(desired, snapshot, options),
                                                    departed))
    if options.groups and desired.groups_read:
        ops += _group_ops(desired, snapshot, options)
    ops.sort(key=lambda op: (op.phase, op.kind.value, op.key.casefold(), op.source_id))
    return Plan(tuple(ops), tuple(desired.problems))


def _user_ops(desired: DesiredState, snapshot: Snapshot, options: PlanOptions) -> list[Op]:
    ops = []
    rows = PushedUsers.of(snapshot.users).rows
    # (a user kept as its row of this very snapshot has its digest: not even looked at)
    wanted = desired.users
    for sid, user in (wanted.changed(rows) if isinstance(wanted, DesiredUsers)
                      else wanted.items()):
        row = rows.get(sid)
        if row is None:
            if user.active:   # an account disabled before we ever saw it is not created
                ops.append(Op(OpKind.CREATE_USER, user.key, sid,
                              attributes=user.attributes, user=user))
            continue
        if row[ROW_DIGEST] == user.digest:
            continue
        pushed = snapshot.users[sid]
        changed = diff(pushed.attributes, user.attributes)
        manager = changed.get("manager", (None, None))[1]
        if manager is not None and not _can_be_referenced(manager, desired, snapshot):
            del changed["manager"]
        if user.active and not pushed.active:
            ops.append(Op(OpKind.REACTIVATE_USER, user.key, sid, changed=changed, user=user,
                          reason="active in the source, inactive in Split"))
        elif pushed.active and not user.active:
            ops.append(Op(OpKind.DEACTIVATE_USER, user.key, sid, changed=changed, user=user,
                          reason="disabled in the source"))
        elif changed:
            ops.append(Op(OpKind.UPDATE_USER, user.key, sid, changed=changed, user=user))
    # An explicit disable always wins: a pushed account whose record is disabled in the source
    # is switched off by its stored id even when that record cannot be pushed otherwise (its
    # e-mail was cleared at offboarding, a stale twin shares its name). Held for any other
    # reason, it is left alone (and reported).
    for problem in desired.problems:
        pushed = snapshot.users.get(problem.source_id) if problem.kind == "user" else None
        if problem.disabled and pushed is not None and pushed.active:
            ops.append(Op(OpKind.DEACTIVATE_USER, pushed.user_name, problem.source_id,
                          reason=f"disabled in the source (not pushed otherwise: "
                                 f"{problem.reason})"))
    gone = rows.keys() - desired.users.keys()
    if options.deactivate and gone:
        held = desired.held_users
        for sid in rows:
            if sid in gone and sid not in held and rows[sid][ROW_ACTIVE]:
                pushed = snapshot.users[sid]
                ops.append(Op(OpKind.DEACTIVATE_USER, pushed.user_name, sid,
                              reason="no longer in the source or its scope"))
    return ops


def _can_be_referenced(source_id: str, desired: DesiredState, snapshot: Snapshot) -> bool:
    """A user is on Split, or will be once this plan is applied: a reference to anyone else
    (a manager disabled in the source before it was ever pushed) cannot be sent, and is not
    planned every cycle for nothing. It is sent once that user is created."""
    if source_id in snapshot.users:
        return True
    wanted = desired.users.get(source_id)
    return wanted is not None and wanted.active


def _names_of(op: Op) -> tuple[str | None, str | None]:
    """(userName this op frees, userName it takes), casefolded; None where it does neither."""
    if op.kind == OpKind.CREATE_USER:
        return None, op.key.casefold()
    old, new = op.changed.get("userName", (None, None))
    if old is None or new is None or old.casefold() == new.casefold():
        return None, None
    return old.casefold(), new.casefold()


def _order_by_freed_names(ops: list[Op], departed: Mapping[str, PushedUser]) -> list[Op]:
    """Split keys users on userName, so an op that takes a name another op frees (a rename
    away, then a hire or a rename into it) must wait for it: each such op gets a later wave.
    Names that would swap (a cycle of renames) cannot be ordered at all: those ops are refused
    with a sentence naming everyone involved, and nothing else is held back. A rename into a
    name that the account of someone who left the source still holds is refused too (a hire
    of that name takes the old account over instead: see ``adopt.found_user``)."""
    first_phase = {OpKind.CREATE_USER, OpKind.REACTIVATE_USER, OpKind.UPDATE_USER}
    freed_by: dict[str, Op] = {}
    for op in ops:
        freed, _taken = _names_of(op) if op.kind in first_phase else (None, None)
        if freed is not None:
            freed_by[freed] = op
    if not freed_by and not departed:
        return ops
    wave: dict[int, int] = {}
    cycles: dict[int, str] = {}

    def place(op: Op, path: list[Op]) -> int:
        if id(op) in wave:
            return wave[id(op)]
        _freed, taken = _names_of(op)
        blocker = freed_by.get(taken) if taken is not None else None
        if blocker is None or blocker is op or op.kind not in first_phase:
            wave[id(op)] = 0
            return 0
        at = next((i for i, seen in enumerate(path) if seen is blocker), None)
        if at is not None:                          # a swap: a cycle of renames
            ring = path[at:]
            who = " and ".join(o.changed["userName"][0] for o in ring)
            for member in ring:
                cycles[id(member)] = (f"{who} would swap user names, and Split cannot hold two "
                                      "accounts with one name at once: rename one of them in "
                                      "Split by hand, then sync again")
                wave[id(member)] = 0
            return 0
        level = place(blocker, path + [blocker]) + 1
        wave[id(op)] = 0 if id(op) in cycles else level
        return wave[id(op)]

    out = []
    for op in ops:
        level = place(op, [op])
        refused = cycles.get(id(op), op.refused)
        _freed, taken = _names_of(op)
        holder = departed.get(taken) if taken is not None else None
        if holder is not None and op.kind != OpKind.CREATE_USER and not refused:
            refused = (f"{holder.user_name} is still the user name of the account of source id "
                       f"{holder.source_id}, who left the source (its account is kept, "
                       "deactivated); Split holds one account per user name: rename or remove "
                       "that account in Split, then sync again")
        out.append(replace(op, wave=level, refused=refused) if (level or refused != op.refused)
                   else op)
    return out


MANAGER_WAVES = 8       # how many levels of a management chain wait for the level above


def _order_by_managers(ops: list[Op]) -> list[Op]:
    """A user created in the same plan as their manager waits a wave for the manager's
    create, so the reference goes out in the create itself: one request, not a create and a
    PATCH once the manager exists (in a first sync, nearly every user). Only up to
    ``MANAGER_WAVES`` levels deep, and a loop of managers is left as it is: what waits
    longer gets its manager by the follow-up update, as before. Never earlier than the
    wave its user name asks for (``_order_by_freed_names``)."""
    creates = {op.source_id: op for op in ops if op.kind is OpKind.CREATE_USER}
    if not creates:
        return ops
    level: dict[str, int] = {}

    def place(source_id: str, chain: tuple[str, ...]) -> int:
        if source_id in level:
            return level[source_id]
        op = creates[source_id]
        manager = op.attributes.get("manager")
        if manager not in creates or manager in chain or len(chain) >= MANAGER_WAVES:
            level[source_id] = op.wave
        else:
            level[source_id] = max(op.wave, place(manager, chain + (source_id,)) + 1)
        return level[source_id]

    out = []
    for op in ops:
        if op.kind is OpKind.CREATE_USER and place(op.source_id, ()) != op.wave:
            op = replace(op, wave=level[op.source_id])
        out.append(op)
    return out


def _group_ops(desired: DesiredState, snapshot: Snapshot, options: PlanOptions) -> list[Op]:
    ops = []
    user_key = _UserKeys(desired, snapshot)
    # held users keep their memberships; a disabled one loses them, as any deactivated account
    held_users = desired.held_users - {p.source_id for p in desired.problems if p.disabled}
    admin = options.admin_group_name.casefold()
    for sid, group in desired.groups.items():
        pushed = snapshot.groups.get(sid)
        refusal = _refuse_name(group.display_name)
        if pushed is None:
            ops.append(Op(OpKind.CREATE_GROUP, group.key, sid,
                          attributes={"displayName": group.display_name}, group=group,
                          refused=refusal))
            if refusal:
                continue       # nothing to add members to
            to_add, to_remove = group.members, frozenset()
        else:
            renamed_admin = (pushed.display_name != group.display_name
                             and pushed.display_name.casefold() == admin)
            if renamed_admin:
                refusal = (f"{options.admin_group_name} is never renamed "
                           "(Split's Administrators group)")
            if pushed.display_name != group.display_name:
                ops.append(Op(OpKind.UPDATE_GROUP, group.key, sid, group=group, refused=refusal,
                              changed={"displayName": (pushed.display_name, group.display_name)}))
            if renamed_admin:
                continue    # another group's members must not flow into the administrators
            if group.members == pushed.members:
                continue    # (one pass over the members of a group that did not change)
            to_add = group.members - pushed.members
            to_remove = pushed.members - group.members - held_users
        # a refused rename keeps the old name on the target; members still follow the source
        name = pushed.display_name if pushed is not None and refusal else group.display_name
        if to_add:
            ops.append(_member_op(OpKind.ADD_MEMBERS, name, sid, to_add, user_key))
        if to_remove:
            refused = ""
            # additions run in an earlier phase, so handing admin over to someone else is fine
            if name.casefold() == admin and not ((pushed.members | to_add) - to_remove):
                refused = (f"{options.admin_group_name} must keep at least one member "
                           "(Split's Administrators group)")
            ops.append(_member_op(OpKind.REMOVE_MEMBERS, name, sid, to_remove, user_key, refused))
    for sid, pushed in snapshot.groups.items():
        if sid not in desired.groups and sid not in desired.held_groups:
            refused = ""
            if pushed.display_name.casefold() == admin:
                refused = f"{options.admin_group_name} is never deleted (Split's Administrators)"
            ops.append(Op(OpKind.DELETE_GROUP, pushed.display_name, sid, refused=refused,
                          reason="no longer in the source or its scope"))
    return ops


def _member_op(kind: OpKind, key: str, sid: str, members: Iterable[str],
               user_key: "_UserKeys", refused: str = "") -> Op:
    ordered = sorted(members, key=lambda m: (user_key.get(m, m).casefold(), m))
    return Op(kind, key, sid, members=tuple(ordered),
              member_keys=tuple(user_key.get(m, m) for m in ordered), refused=refused)


class _UserKeys:
    """A member's userName: the desired one, else the one pushed; looked up only for the
    members of member ops."""

    def __init__(self, desired: DesiredState, snapshot: Snapshot):
        self.desired = desired.users
        self.pushed = snapshot.users

    def get(self, sid: str, default: str) -> str:
        user = self.desired.get(sid) or self.pushed.get(sid)
        return user.user_name if user is not None else default


def _refuse_name(name: str) -> str:
    if len(name) > MAX_GROUP_NAME:
        return (f"Split group names must be shorter than 25 characters "
                f"({len(name)} characters)")
    if name.casefold() in RESERVED_GROUP_NAMES:
        return f"{name!r} is reserved in Split"
    return ""


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, Change]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)}
