"""The per-object back-off at the edges of apply: refused operations whose wait is not over
are left out of the plan before it is applied, and each operation the target refused gets its
next attempt recorded (the decisions are :mod:`agent.core.quarantine`'s)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable

from ..core.model import DesiredState
from ..core.plan import USER_OPS, Op, Plan
from ..core.quarantine import next_attempt, record_digest, waiting
from ..store.state import State

log = logging.getLogger(__name__)


def _kind(op: Op) -> str:
    return "user" if op.kind in USER_OPS else "group"


def defer_refused(plan: Plan, state: State, desired: DesiredState,
                  now: dt.datetime, target: str = "") -> tuple[Plan, list[Op]]:
    """(the plan without the operations still waiting, those operations). Other objects,
    and other operations of the same object, are untouched."""
    deferrals = state.deferrals()
    if not deferrals:
        return plan, []
    digests = {(d.kind, d.source_id): record_digest(d.kind, d.source_id, desired, target)
               for d in deferrals}
    wait = waiting(deferrals, digests, now)
    kept, held = [], []
    for op in plan.ops:
        entry = wait.get((_kind(op), op.source_id, op.kind.value))
        if entry is None:
            kept.append(op)
            continue
        held.append(op)
        log.info("%s %s: %s held back, refused %d time(s) by the target; next attempt %s "
                 "(or as soon as its source record changes): %s", entry.kind, op.key,
                 op.kind.value, entry.count, entry.next_attempt.isoformat(timespec="minutes"),
                 entry.error)
    if not held:
        return plan, []
    return dataclasses.replace(plan, ops=tuple(kept)), held


def quarantine(rejected: Iterable[Op], state: State, desired: DesiredState,
               now: dt.datetime, target: str = "") -> None:
    """Record when each refused operation may be sent again (one transaction each)."""
    for op in rejected:
        kind = _kind(op)
        count = state.failure_count(kind, op.source_id, op.kind.value)
        if not count:
            continue
        when = next_attempt(count, now)
        state.defer(kind, op.source_id, op.kind.value, when,
                    record_digest(kind, op.source_id, desired, target))
        log.warning("%s %s: the target refused %s (%d time(s) in a row); not sent again "
                    "before %s unless its source record changes", kind, op.key, op.kind.value,
                    count, when.isoformat(timespec="minutes"))
