"""``plan --explain KEY``: one user or group, from its source record to what the plan does.

Given what ``plan`` computed anyway (the directory read, the rules, the desired state, the
snapshot and the plan), :func:`explain` finds the objects ``KEY`` names (a userName or e-mail,
a group name, a source id or an LDAP DN, case-insensitively) and says, for each: the source
record's attributes, which scope rule admitted or excluded it, how each SCIM attribute was
computed (expression, value, which alternative or fallback gave it), and what the plan does
with it and why.

Pure: nothing is read or sent here, and nothing here can raise for odd source data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connectors.base import USER_ATTRIBUTES, Directory, GroupRecord, UserRecord

from .expressions import MAX_VALUE
from .mapping import ManagerIndex, MappingRules, complete, in_scope, is_admin_group, normalise_dn
from .model import DesiredState, Snapshot
from .plan import USER_OPS, Op, OpKind, Plan
from .scope import Decision, Objects


@dataclass(frozen=True)
class Step:
    """How one SCIM attribute came out: its expression (as the config writes it, and as
    TOML gives it), its value (None: nothing), and a note (which alternative gave it, a
    fallback, a reference, bad data)."""

    name: str
    expression: str
    value: str | None
    note: str = ""
    config: object = None


@dataclass(frozen=True)
class Planned:
    op: Op
    why: str


@dataclass(frozen=True)
class Explanation:
    kind: str                               # "user" | "group"
    key: str                                # userName / group name (as mapped, or as pushed)
    source_id: str
    record: Mapping[str, object] | None     # the raw source attributes; None: not in the source
    active: bool | None                     # users: as the source says
    scope: Decision | None
    steps: tuple[Step, ...] = ()
    related: tuple[str, ...] = ()           # users: groups it is in; groups: member userNames
    problems: tuple[str, ...] = ()          # why it is not pushed
    planned: tuple[Planned, ...] = ()
    verdict: str = ""
    notes: tuple[str, ...] = ()             # anything else worth knowing

    def to_dict(self) -> dict:
        out: dict = {"kind": self.kind, "key": self.key, "source_id": self.source_id,
                     "in_source": self.record is not None}
        if self.active is not None:
            out["active"] = self.active
        if self.record is not None:
            out["record"] = {k: plain(v) for k, v in sorted(self.record.items())}
        if self.scope is not None:
            out["scope"] = {"in_scope": self.scope.in_scope,
                            "rule": self.scope.rule.number if self.scope.rule else None,
                            "reason": self.scope.reason}
        out["attributes"] = [{"name": s.name, "expression": s.config, "value": s.value,
                              **({"note": s.note} if s.note else {})} for s in self.steps]
        out["groups" if self.kind == "user" else "members"] = list(self.related)
        out["problems"] = list(self.problems)
        out["plan"] = [{**p.op.to_dict(), "why": p.why} for p in self.planned]
        out["verdict"] = self.verdict
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def plain(value: object, _depth: int = 0) -> object:
    """A raw value in a form JSON and a terminal can show, whatever it is."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value if len(value) <= MAX_VALUE else value[:200] + f"... ({len(value)} characters)"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int):
        try:
            return int(str(value))
        except ValueError:
            return "(a number of more than 4300 digits)"
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, (list, tuple)) and _depth < 3:
        return [plain(v, _depth + 1) for v in value]
    if isinstance(value, Mapping) and _depth < 3:
        return {str(k): plain(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return f"(binary, {len(value)} bytes)"
    return f"({type(value).__name__})"


@dataclass
class _Context:
    directory: Directory
    rules: MappingRules
    desired: DesiredState
    snapshot: Snapshot
    plan: Plan
    users_in_scope: dict[str, UserRecord] = field(default_factory=dict)

    def __post_init__(self):
        self.users_in_scope, _groups = in_scope(self.directory, self.rules.scope)

    def user_name_of(self, sid: str) -> str:
        if sid in self.desired.users:
            return self.desired.users[sid].user_name
        if sid in self.snapshot.users:
            return self.snapshot.users[sid].user_name
        return sid


def explain(key: str, directory: Directory, rules: MappingRules, desired: DesiredState,
            snapshot: Snapshot, plan: Plan) -> list[Explanation]:
    """Every user and group ``key`` names; [] when it names nothing."""
    ctx = _Context(directory, rules, desired, snapshot, plan)
    wanted = key.strip().casefold()
    dn = normalise_dn(key) if "=" in key else None
    found: list[Explanation] = []

    user_ids: list[str] = []
    for sid, record in directory.users.items():
        names = {sid.casefold()}
        attrs, _steps, _bad = _user_values(record, rules)
        names |= {attrs.get("userName", "").casefold(), attrs.get("email", "").casefold()}
        raw_dn = record.attributes.get("dn")
        if sid.casefold() == wanted or wanted in names - {""} or (
                dn is not None and isinstance(raw_dn, str) and normalise_dn(raw_dn) == dn):
            user_ids.append(sid)
    for sid, pushed in snapshot.users.items():
        if sid not in directory.users and wanted in (sid.casefold(), pushed.user_name.casefold()):
            user_ids.append(sid)
    found += [_explain_user(sid, ctx) for sid in user_ids]

    group_ids: list[str] = []
    for gid, group_record in directory.groups.items():
        name = rules.group_name.trace(group_record.attributes).value
        assert rules.source_group_name is not None
        own = rules.source_group_name.trace(group_record.attributes).value
        mapped = desired.groups.get(gid)
        names = {gid.casefold(), name.casefold(), own.casefold(),
                 mapped.display_name.casefold() if mapped else ""}
        if wanted in names - {""}:
            group_ids.append(gid)
    for gid, pushed_group in snapshot.groups.items():
        if gid not in directory.groups and wanted in (gid.casefold(),
                                                      pushed_group.display_name.casefold()):
            group_ids.append(gid)
    found += [_explain_group(gid, ctx) for gid in group_ids]
    return found


# ---------------------------------------------------------------------------------------------
# Users


def _user_values(record: UserRecord, rules: MappingRules
                 ) -> tuple[dict[str, str], list[Step], list[str]]:
    """The user's attributes as mapping computes them (fallbacks included), a step per
    attribute, and the bad data met."""
    values: dict[str, str] = {}
    steps: list[Step] = []
    bad: list[str] = []
    for name, expression in rules.user_attributes.items():
        if name not in USER_ATTRIBUTES:
            continue
        trace = expression.trace(record.attributes)
        note = ""
        if trace.error:
            note = f"bad data: {trace.error}"
            bad.append(f"{name}: {trace.error}")
        elif trace.value and len(expression.alternatives) > 1:
            note = f"from alternative {(trace.alternative or 0) + 1} of " \
                   f"{len(expression.alternatives)}"
        if trace.value:
            values[name] = trace.value
        steps.append(Step(name, expression.written, trace.value or None, note,
                          expression.config_value))
    completed, notes = complete(values)
    for name, note in notes.items():
        at = next((i for i, s in enumerate(steps) if s.name == name), None)
        step = Step(name, steps[at].expression if at is not None else "(not mapped)",
                    completed[name], note, steps[at].config if at is not None else None)
        if at is None:
            steps.append(step)
        else:
            steps[at] = step
    return completed, steps, bad


def _explain_user(sid: str, ctx: _Context) -> Explanation:
    record = ctx.directory.users.get(sid)
    pushed = ctx.snapshot.users.get(sid)
    ops = [op for op in ctx.plan.ops if op.source_id == sid and op.kind in USER_OPS]
    member_ops = [op for op in ctx.plan.ops if sid in op.members]
    planned = tuple(Planned(op, _why(op, ctx)) for op in ops + member_ops)
    problems = tuple(p.reason for p in ctx.desired.problems
                     if p.kind == "user" and p.source_id == sid)
    groups = tuple(sorted(g.display_name for g in ctx.desired.groups.values()
                          if sid in g.members))
    if record is None:
        key = pushed.user_name if pushed else sid
        verdict = ("not in the source (deleted there, or outside the source's own filters and "
                   "scope groups): " + ("the plan deactivates its Split account" if ops
                                        else "its Split account is already deactivated"
                                        if pushed and not pushed.active
                                        else "nothing to do"))
        return Explanation("user", key, sid, None, None, None, (), groups, problems, planned,
                           verdict)

    decision = ctx.rules.scope.decide(Objects.USERS, record.attributes)
    values, steps, _bad = _user_values(record, ctx.rules)
    steps = _with_manager(steps, values, sid, ctx)
    user = ctx.desired.users.get(sid)
    key = user.user_name if user else values.get("userName") or (pushed.user_name if pushed
                                                                   else sid)
    if not decision.in_scope:
        tail = ("the plan deactivates its Split account" if ops else
                "its Split account is already deactivated" if pushed and not pushed.active else
                "it was never pushed: nothing to do" if pushed is None else "nothing to do")
        verdict = f"{decision.reason}: {tail}"
    elif problems:
        verdict = f"not pushed: {'; '.join(problems)}" + (
            "; its Split account is deactivated (it is disabled in the source)" if ops
            else "; what was pushed before is left alone until the record is fixed" if pushed
            else "")
    elif ops:
        verdict = "; ".join(p.why for p in planned if p.op.kind in USER_OPS)
    elif user is not None and not user.active and pushed is None:
        verdict = "disabled in the source and never pushed: it is not created"
    else:
        verdict = ("nothing to do: Split holds what the source says, as far as the snapshot "
                   "knows (sync --reconcile re-reads Split)")
    return Explanation("user", key, sid, record.attributes, record.active, decision,
                       tuple(steps), groups, problems, planned, verdict)


def _with_manager(steps: list[Step], values: Mapping[str, str], sid: str,
                  ctx: _Context) -> list[Step]:
    reference = values.get("manager")
    if reference is None:
        return steps
    manager = ManagerIndex(ctx.users_in_scope, ctx.desired.users).resolve(reference)
    if manager is None or manager == sid:
        note = ("refers to the user themself: not sent" if manager == sid else
                "names no user in scope (by source id, DN, userName or e-mail): not sent")
        value = None
    else:
        note = f"refers to {ctx.user_name_of(manager)} (source id {manager}); Split gets " \
               "that user's Split id"
        value = manager
    return [Step(s.name, s.expression, value, note, s.config) if s.name == "manager" else s
            for s in steps]


# ---------------------------------------------------------------------------------------------
# Groups


def _explain_group(gid: str, ctx: _Context) -> Explanation:
    record = ctx.directory.groups.get(gid)
    pushed = ctx.snapshot.groups.get(gid)
    planned = tuple(Planned(op, _why(op, ctx)) for op in ctx.plan.ops
                    if op.source_id == gid and op.kind not in USER_OPS)
    problems = tuple(p.reason for p in ctx.desired.problems
                     if p.kind == "group" and p.source_id == gid)
    group = ctx.desired.groups.get(gid)
    members = tuple(sorted(ctx.user_name_of(m) for m in group.members)) if group else ()
    if record is None:
        key = pushed.display_name if pushed else gid
        verdict = ("not in the source (deleted there, or outside the source's own filters): "
                   + ("the plan deletes it from Split" if planned else "nothing to do"))
        return Explanation("group", key, gid, None, None, None, (), members, problems, planned,
                           verdict)
    decision = ctx.rules.scope.decide(Objects.GROUPS, record.attributes)
    trace = ctx.rules.group_name.trace(record.attributes)
    note = f"bad data: {trace.error}" if trace.error else ""
    if group is not None and group.display_name != trace.value:
        note = f"pushed as {group.display_name} (named by sync.admin_group)"
    elif ctx.rules.admin_group and is_admin_group(record, trace.value, ctx.rules):
        note = f"named by sync.admin_group: pushed as {ctx.rules.admin_group_name}"
    steps = (Step("displayName", ctx.rules.group_name.written, trace.value or None, note,
                  ctx.rules.group_name.config_value),)
    key = group.display_name if group else trace.value or (pushed.display_name if pushed
                                                            else gid)
    if not decision.in_scope:
        verdict = f"{decision.reason}: " + ("the plan deletes it from Split" if planned
                                            else "it was never pushed: nothing to do"
                                            if pushed is None else "nothing to do")
    elif problems:
        verdict = f"not pushed: {'; '.join(problems)}" + (
            "; what was pushed before is left alone" if pushed else "")
    elif planned:
        verdict = "; ".join(p.why for p in planned)
    else:
        verdict = ("nothing to do: Split holds this group and its members, as far as the "
                   "snapshot knows")
    notes = ()
    if group is not None:
        outside = _outside_members(record, ctx)
        if outside:
            notes = (f"{outside} direct member(s) are not members on Split (out of scope, "
                     "disabled, or not pushed)",)
    return Explanation("group", key, gid, record.attributes, None, decision, steps, members,
                       problems, planned, verdict, notes)


def _outside_members(record: GroupRecord, ctx: _Context) -> int:
    group = ctx.desired.groups[record.id]
    direct_users = {m for m in record.members if m in ctx.directory.users}
    return len(direct_users - group.members)


# ---------------------------------------------------------------------------------------------
# Why an operation is planned


def _why(op: Op, ctx: _Context) -> str:
    if op.refused:
        return f"{op.kind.value} is planned but refused, not sent: {op.refused}"
    if op.kind is OpKind.CREATE_USER:
        return ("not pushed before (no snapshot entry): the plan creates it; a sync adopts "
                "Split's account of the same userName instead, if there is one")
    if op.kind is OpKind.UPDATE_USER:
        return "changed since the last push: " + _changes(op)
    if op.kind is OpKind.REACTIVATE_USER:
        return f"{op.reason}: the plan reactivates it" + (f" and sets {_changes(op)}"
                                                         if op.changed else "")
    if op.kind is OpKind.DEACTIVATE_USER:
        return f"{op.reason}: the plan deactivates it (never deleted)"
    if op.kind is OpKind.CREATE_GROUP:
        return "not pushed before: the plan creates it (or links Split's group of that name)"
    if op.kind is OpKind.UPDATE_GROUP:
        return "its name changed since the last push: " + _changes(op)
    if op.kind is OpKind.DELETE_GROUP:
        return f"{op.reason}: the plan deletes it from Split"
    names = ", ".join(op.member_keys[:10]) + (f" and {len(op.member_keys) - 10} more"
                                              if len(op.member_keys) > 10 else "")
    if op.kind is OpKind.ADD_MEMBERS:
        return f"the plan adds {names} to {op.key}"
    return f"the plan removes {names} from {op.key}"


def _changes(op: Op) -> str:
    return ", ".join(f"{k} {_shown(old)} -> {_shown(new)}" for k, (old, new) in op.changed.items())


def _shown(value: str | None) -> str:
    return "(none)" if value is None else repr(value)


__all__ = ["Explanation", "Planned", "Step", "explain", "plain"]
