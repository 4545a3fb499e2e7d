"""Building blocks for the planner's tests: desired users and groups, what the snapshot holds
after they were pushed, and short ways to read a plan."""

from __future__ import annotations

from agent.core.model import (DesiredState, Group, Problem, PushedGroup, PushedUser, Snapshot,
                              User, user_digest)
from agent.core.plan import OpKind, Plan, PlanOptions, make_plan

ADMINS = "Split_Administrators"


def user(sid: str, email: str, active: bool = True, **attributes: str) -> User:
    return User(sid, email, active, {"userName": email, "email": email, **attributes})


def pushed(u: User, active: bool | None = None) -> PushedUser:
    """What the snapshot holds after ``u`` was pushed (optionally with another active flag)."""
    active = u.active if active is None else active
    return PushedUser(u.source_id, f"scim-{u.source_id}", u.user_name, active,
                      dict(u.attributes), user_digest(u.attributes, active))


def group(sid: str, name: str, *members: str) -> Group:
    return Group(sid, name, frozenset(members))


def pushed_group(g: Group) -> PushedGroup:
    return PushedGroup(g.source_id, f"scim-{g.source_id}", g.display_name, g.digest, g.members)


def desired(*objects, problems: tuple[Problem, ...] = ()) -> DesiredState:
    return DesiredState(users={o.source_id: o for o in objects if isinstance(o, User)},
                        groups={o.source_id: o for o in objects if isinstance(o, Group)},
                        problems=problems)


def snapshot(*objects) -> Snapshot:
    return Snapshot(
        users={o.source_id: pushed(o) if isinstance(o, User) else o
               for o in objects if isinstance(o, (User, PushedUser))},
        groups={o.source_id: pushed_group(o) if isinstance(o, Group) else o
                for o in objects if isinstance(o, (Group, PushedGroup))})


def plan(want: DesiredState, have: Snapshot, **options) -> Plan:
    return make_plan(want, have, PlanOptions(**options))


def ops(p: Plan) -> list[tuple[str, str]]:
    return [(op.kind.value, op.key) for op in p.ops]


def the_op(p: Plan, kind: OpKind):
    matching = [op for op in p.ops if op.kind == kind]
    assert len(matching) == 1, ops(p)
    return matching[0]


ALICE = user("u1", "alice@example.org", displayName="Alice Archer", title="Engineer")
BOB = user("u2", "bob@example.org", displayName="Bob Baker")
CAROL = user("u3", "carol@example.org", displayName="Carol Chen")
