"""The safety guard: refuse a plan that looks like a bad read rather than a real change.

Pure: it reads the Plan, the desired state and the snapshot, and says whether to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from .adopt import Facts
from .model import DesiredState, Snapshot
from .plan import OpKind, Plan


@dataclass(frozen=True)
class GuardStop:
    reason: str


def guard(plan: Plan, desired: DesiredState, snapshot: Snapshot, max_deactivations,
          max_group_changes=None) -> GuardStop | None:
    """Refuse a plan that looks like a bad read rather than a real change.

    The thresholds are ``config.Threshold`` values (anything with ``limit(managed)``). The
    group checks apply when the plan manages groups: a source that suddenly returns no
    groups, or groups without a single member, while groups and memberships are managed, is
    a bad read; so are more group deletions or member removals than ``max_group_changes``.
    """
    managed = snapshot.active_users
    if managed and not desired.users and not desired.held_users:   # held ones were read too
        return GuardStop(f"the source returned no users while {managed} are managed; "
                         "refusing to deactivate everyone")
    count = plan.count(OpKind.DEACTIVATE_USER)
    if count:
        limit = max_deactivations.limit(managed)
        if count > limit:
            return GuardStop(f"{count} deactivations planned, more than sync.max_deactivations "
                             f"allows ({max_deactivations} of {managed} managed users = {limit})")
    if max_group_changes is not None and desired.groups_read:
        return _group_guard(plan, desired, snapshot, max_group_changes)
    return None


def _group_guard(plan: Plan, desired: DesiredState, snapshot: Snapshot,
                 max_group_changes) -> GuardStop | None:
    groups = len(snapshot.groups)
    memberships = sum(len(g.members) for g in snapshot.groups.values())
    if groups and not desired.groups and not desired.held_groups:
        return GuardStop(f"the source returned no groups while {groups} are managed; "
                         "refusing to delete them all")
    if memberships and desired.groups and not any(g.members for g in desired.groups.values()):
        return GuardStop(f"no group in the source has a single member while {memberships} "
                         "memberships are managed; refusing to empty every group")
    deletions = plan.count(OpKind.DELETE_GROUP)
    if deletions > max_group_changes.limit(groups):
        return GuardStop(f"{deletions} group deletions planned, more than "
                         f"sync.max_group_changes allows ({max_group_changes} of {groups} "
                         f"managed groups = {max_group_changes.limit(groups)})")
    # Removals that follow a leaver or a disabled account are the user guard's business; what
    # is counted here is people who stay but lose their groups.
    # (only the members removed are looked up: the desired users are not all made Users)
    wanted = desired.users
    removals = sum(1 for op in plan.sendable if op.kind == OpKind.REMOVE_MEMBERS
                   for member in op.members if member in wanted and wanted[member].active)
    if removals > max_group_changes.limit(memberships):
        return GuardStop(f"{removals} member removals of people who stay planned, more than "
                         f"sync.max_group_changes allows ({max_group_changes} of {memberships} "
                         f"managed memberships = {max_group_changes.limit(memberships)})")
    return None


def guard_target_read(facts: Facts, snapshot: Snapshot, max_deactivations,
                      max_group_changes) -> GuardStop | None:
    """Refuse what a reconcile read found when it looks like the wrong target or a broken
    listing rather than hand edits: objects the snapshot manages "gone" from Split in bulk
    would all be created again."""
    users, groups = len(snapshot.users), len(snapshot.groups)
    gone_users, gone_groups = len(facts.forget_users), len(facts.forget_groups)
    if users and gone_users > max_deactivations.limit(users):
        return GuardStop(f"{gone_users} of the {users} users the snapshot manages are gone "
                         "from Split; refusing to create them again (is [target] url the right "
                         "Split organisation?)")
    if groups and gone_groups > max_group_changes.limit(groups):
        return GuardStop(f"{gone_groups} of the {groups} groups the snapshot manages are gone "
                         "from Split; refusing to create them again")
    return None
