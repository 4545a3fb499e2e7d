"""Reading the target into the snapshot: on a first sync, after a lost snapshot, on reconcile,
and when a create meets an object that already exists. The records go through the pure
``agent/core/adopt.py``; what it returns is recorded, and the planner takes it from there."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from connectors.base import Target, TargetGroup, TargetUser

from ..core import adopt, references
from ..core.guard import GuardStop
from ..core.model import DesiredState, Group, Snapshot, User
from ..store.state import State

log = logging.getLogger(__name__)


@dataclass
class TargetRead:
    adopted: list[str] = field(default_factory=list)      # keys of objects adopted
    drifted: list[str] = field(default_factory=list)      # keys whose target copy differed
    vanished: list[str] = field(default_factory=list)     # keys gone from the target
    stopped: GuardStop | None = None                      # not recorded: it looked wrong
    drift: list[adopt.Drift] = field(default_factory=list)  # what changed there, in detail


def read_target(target: Target, state: State, desired: DesiredState, *, groups: bool = True,
                refresh: bool = False,
                guard: Callable[[adopt.Facts, Snapshot], GuardStop | None] | None = None
                ) -> TargetRead:
    """Read the target once (paged) and record what it holds (``adopt.observe``), unless
    ``guard`` finds what it holds implausible (then nothing is recorded)."""
    snapshot = state.snapshot()
    facts = adopt.observe(desired, snapshot, target.users(),
                          target.groups() if groups else (), refresh=refresh)
    stopped = guard(facts, snapshot) if guard is not None else None
    if stopped is None:
        state.record_facts(facts)
    return TargetRead(list(facts.adopted), list(facts.drifted), list(facts.vanished), stopped,
                      list(facts.drift))


class Learner:
    """What apply calls when a create meets an object the target already holds: the facts go
    through ``agent/core/adopt.py`` (which refuses to merge two people) into the snapshot."""

    def __init__(self, state: State, desired: DesiredState):
        self.state = state
        self.present = {sid: u.user_name for sid, u in desired.users.items()}
        self.present.update({p.source_id: p.key for p in desired.problems if p.kind == "user"})

    def user(self, user: User, record: TargetUser, user_ids: Mapping[str, str]) -> str:
        """Record ``record`` for ``user``; returns a conflict sentence instead when it would
        take the account of someone still in the source."""
        owner = next((sid for sid, scim in user_ids.items() if scim == record.id), None)
        source_ids = {scim: sid for sid, scim in user_ids.items()}
        record = replace(record, attributes=references.from_target(record.attributes, source_ids))
        facts = adopt.found_user(user, record, owner, self.present)
        if not facts.conflict:
            self.state.record_facts(facts)
        return facts.conflict

    def intents(self, target: Target, desired: DesiredState) -> int:
        """Creates a killed run left without an answer: each user is looked up on the target
        before anything is sent this cycle; one that landed is recorded (and, if it has left
        the source since, planned for deactivation like any leaver). Returns how many landed."""
        landed = 0
        user_ids, _groups = self.state.scim_ids()
        for intent in self.state.intents():
            if intent.source_id in user_ids:
                self.state.clear_intent(intent.kind, intent.source_id)
                continue
            record = target.find_user(intent.key)
            if record is None:
                log.info("the create of %s did not land; it is planned again", intent.key)
                self.state.clear_intent(intent.kind, intent.source_id)
                continue
            user = desired.users.get(intent.source_id) or User(
                intent.source_id, record.user_name, record.active, dict(record.attributes))
            conflict = self.user(user, record, user_ids)
            if conflict:
                log.warning("%s", conflict)
                self.state.clear_intent(intent.kind, intent.source_id)
            else:
                landed += 1
                log.info("the create of %s landed before the last run stopped; adopted",
                         intent.key)
        return landed

    def group(self, group: Group, record: TargetGroup, user_ids: Mapping[str, str]) -> None:
        source_of = {scim: sid for sid, scim in user_ids.items()}
        self.state.record_facts(adopt.found_group(group, record, source_of))
