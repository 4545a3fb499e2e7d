"""Reading the target into the snapshot: on a first sync, after a lost snapshot, on reconcile,
and when a create meets an object that already exists. The records go through the pure
``agent/core/adopt.py``; what it returns is recorded, and the planner takes it from there."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.base import Target, TargetGroup, TargetUser

from ..core import adopt
from ..core.model import DesiredState, Group, User
from ..store.state import State


@dataclass
class TargetRead:
    adopted: list[str] = field(default_factory=list)      # keys of objects adopted
    drifted: list[str] = field(default_factory=list)      # keys whose target copy differed
    vanished: list[str] = field(default_factory=list)     # keys gone from the target


def read_target(target: Target, state: State, desired: DesiredState, *, groups: bool = True,
                refresh: bool = False) -> TargetRead:
    """Read the target once (paged) and record what it holds (``adopt.observe``)."""
    facts = adopt.observe(desired, state.snapshot(), target.users(),
                          target.groups() if groups else (), refresh=refresh)
    state.record_facts(facts)
    return TargetRead(list(facts.adopted), list(facts.drifted), list(facts.vanished))


def learn_user(state: State, user: User, record: TargetUser, user_ids: dict[str, str]) -> None:
    """A create for ``user`` met ``record``: remember it as the target holds it."""
    owner = next((sid for sid, scim in user_ids.items() if scim == record.id), None)
    state.record_facts(adopt.found_user(user, record, owner))


def learn_group(state: State, group: Group, record: TargetGroup, user_ids: dict[str, str]) -> None:
    source_of = {scim: sid for sid, scim in user_ids.items()}
    state.record_facts(adopt.found_group(group, record, source_of))
