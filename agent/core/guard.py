"""The safety guard: refuse a plan that looks like a bad read rather than a real change.

Pure: it reads the Plan, the desired state and the snapshot, and says whether to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import DesiredState, Snapshot
from .plan import OpKind, Plan


@dataclass(frozen=True)
class GuardStop:
    reason: str


def guard(plan: Plan, desired: DesiredState, snapshot: Snapshot, max_deactivations) -> GuardStop | None:
    """Refuse a plan that looks like a bad read rather than a real change.

    ``max_deactivations`` is a ``config.Threshold`` (anything with ``limit(managed)``).
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
    return None
