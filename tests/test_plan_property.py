"""The planner as a property of a whole sync: after applying each plan to a target, the
target is the source's projection, planning again yields nothing, and nothing outside scope is
touched."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.mapping import MappingRules, map_directory
from agent.core.model import (DesiredState, PushedGroup, PushedUser, Snapshot, group_digest,
                              user_digest)
from agent.core.plan import Plan, make_plan
from connectors.base import Directory, GroupRecord, UserRecord
from connectors.files import FileSource


USER_IDS = tuple(f"u{i}" for i in range(6))
GROUP_IDS = tuple(f"g{i}" for i in range(4))
RULES = MappingRules.for_source(FileSource)


@st.composite
def user_records(draw, uid: str) -> UserRecord:
    # The id inside the userName keeps names unique (no duplicate-name problems); the random
    # local part makes renames happen.
    local = draw(st.sampled_from(["ann", "ben", "cy"]))
    user_name = f"{local}.{uid}@example.org"
    attributes = {"userName": user_name}
    if draw(st.booleans()):
        attributes["email"] = user_name.upper() if draw(st.booleans()) else user_name
    for key, choices in (("givenName", ["Ann", "Ben"]), ("familyName", ["Ng", "Li"]),
                         ("displayName", ["A. N.", "B. L."]), ("title", ["Dev", "Ops"])):
        value = draw(st.sampled_from([None, *choices]))
        if value:
            attributes[key] = value
    return UserRecord(uid, attributes, draw(st.booleans()))


@st.composite
def directories(draw) -> Directory:
    users = [draw(user_records(uid)) for uid in sorted(draw(st.sets(st.sampled_from(USER_IDS))))]
    groups = []
    for gid in sorted(draw(st.sets(st.sampled_from(GROUP_IDS)))):
        name = f"{draw(st.sampled_from(['Eng', 'Ops', 'Sales']))} {gid}"
        members = draw(st.frozensets(st.sampled_from(USER_IDS + GROUP_IDS + ("ghost",))))
        groups.append(GroupRecord(gid, {"displayName": name}, members))
    return Directory.of(users, groups)


@dataclass
class TargetUser:
    attributes: dict[str, str]
    active: bool
    managed: bool = True


@dataclass
class TargetGroup:
    name: str
    members: set[str] = field(default_factory=set)
    managed: bool = True


@dataclass
class InMemoryTarget:
    """What a SCIM target holds, keyed by source id; only what the ops say reaches it."""

    users: dict[str, TargetUser] = field(default_factory=dict)
    groups: dict[str, TargetGroup] = field(default_factory=dict)

    @classmethod
    def with_foreign_objects(cls) -> "InMemoryTarget":
        # Objects someone else created on the target: the agent must never touch them.
        return cls(users={"ext-1": TargetUser({"userName": "ceo@example.org"}, True, False)},
                   groups={"ext-g": TargetGroup("Board", {"ext-1"}, False)})

    def apply(self, plan: Plan) -> None:
        phases = [op.phase for op in plan.ops]
        assert phases == sorted(phases), "ops out of phase order"
        for op in plan.ops:
            assert not op.refused, op
            assert op.source_id not in self.foreign_ids(), op
            getattr(self, op.kind.value)(op)

    def foreign_ids(self) -> set[str]:
        return ({sid for sid, u in self.users.items() if not u.managed}
                | {sid for sid, g in self.groups.items() if not g.managed})

    def create_user(self, op):
        assert op.source_id not in self.users
        self.users[op.source_id] = TargetUser(dict(op.attributes), True)

    def _patch(self, op, active: bool | None):
        target = self.users[op.source_id]
        for key, (_, new) in op.changed.items():
            if new is None:
                target.attributes.pop(key, None)
            else:
                target.attributes[key] = new
        if active is not None:
            target.active = active

    def update_user(self, op):
        self._patch(op, None)

    def reactivate_user(self, op):
        self._patch(op, True)

    def deactivate_user(self, op):
        self._patch(op, False)

    def create_group(self, op):
        assert op.source_id not in self.groups
        self.groups[op.source_id] = TargetGroup(op.attributes["displayName"])

    def update_group(self, op):
        self.groups[op.source_id].name = op.changed["displayName"][1]

    def add_members(self, op):
        group = self.groups[op.source_id]
        for member in op.members:
            assert self.users[member].active, "an inactive or missing user added to a group"
        group.members |= set(op.members)

    def remove_members(self, op):
        self.groups[op.source_id].members -= set(op.members)

    def delete_group(self, op):
        del self.groups[op.source_id]

    def snapshot(self) -> Snapshot:
        users = {sid: PushedUser(sid, f"scim-{sid}", u.attributes["userName"], u.active,
                                 dict(u.attributes), user_digest(u.attributes, u.active))
                 for sid, u in self.users.items() if u.managed}
        groups = {sid: PushedGroup(sid, f"scim-{sid}", g.name, group_digest(g.name),
                                   frozenset(g.members))
                  for sid, g in self.groups.items() if g.managed}
        return Snapshot(users, groups)


def assert_target_is_the_projection(target: InMemoryTarget, want: DesiredState,
                                    ever_active: set[str]) -> None:
    for sid, u in want.users.items():
        if u.active or sid in ever_active:
            assert sid in target.users, sid
            assert target.users[sid].active is u.active, sid
            assert target.users[sid].attributes == dict(u.attributes), sid
        else:
            assert sid not in target.users, "an inactive user was created"
    for sid, u in target.users.items():
        if u.managed and sid not in want.users:
            assert not u.active, f"{sid} left the source but is still active"
    managed_groups = {sid: g for sid, g in target.groups.items() if g.managed}
    assert set(managed_groups) == set(want.groups)
    for sid, g in want.groups.items():
        assert managed_groups[sid].name == g.display_name
        assert managed_groups[sid].members == set(g.members)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(directories(), min_size=1, max_size=5))
def test_applied_plans_make_the_target_the_source_projection(steps):
    target = InMemoryTarget.with_foreign_objects()
    foreign = copy.deepcopy((target.users, target.groups))
    ever_active: set[str] = set()
    for directory in steps:
        want = map_directory(directory, RULES)
        assert not want.problems
        target.apply(make_plan(want, target.snapshot()))
        ever_active |= {sid for sid, u in want.users.items() if u.active}

        assert_target_is_the_projection(target, want, ever_active)
        assert make_plan(want, target.snapshot()).is_empty

    assert {k: target.users[k] for k in foreign[0]} == foreign[0]
    assert {k: target.groups[k] for k in foreign[1]} == foreign[1]
