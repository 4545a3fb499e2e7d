"""A group whose stamp holds takes its pushed members (agent/core/stamps.py). That shortcut
must be invisible: on random directories (nesting, cycles, ids of nobody, an id both a user's
and a group's), pushed as a sync records them (all members or some), stamped as a sync's end
stamps them, then the snapshot written to at random the ways the engine writes it and the
directory changed at random, mapping with the stamps and without gives the same desired
state and the same plan, from a snapshot open to write and from one open to read only."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.adopt import Facts
from agent.core.mapping import map_directory
from agent.core.model import PushedGroup, PushedUser, StoredMembers, user_digest
from agent.core.plan import make_plan
from agent.store.state import State
from connectors.base import Directory, GroupRecord, UserRecord

from test_mapping_reuse import USER_IDS, changed, push, rules_for, same, user_record

GROUP_IDS = ("g0", "g1", "g2", "g3", "u7")      # u7: also a user's id, now and then


@st.composite
def group_list(draw, ids=GROUP_IDS) -> list[GroupRecord]:
    out = []
    for gid in sorted(draw(st.sets(st.sampled_from(ids)))):
        members = draw(st.frozensets(st.sampled_from(USER_IDS + GROUP_IDS + ("ghost",))))
        out.append(GroupRecord(gid, {"displayName": f"Team {gid}"}, members))
    return out


@st.composite
def directory(draw) -> Directory:
    uids = sorted(draw(st.sets(st.sampled_from(USER_IDS))))
    ids = GROUP_IDS if draw(st.integers(0, 4)) == 0 else GROUP_IDS[:-1]
    return Directory.of([draw(user_record(uid)) for uid in uids], draw(group_list(ids)))


@st.composite
def regrouped(draw, before: Directory) -> Directory:
    """``changed`` for users (or each kept); each group kept, given another member list,
    or gone."""
    after = draw(changed(before)) if draw(st.booleans()) else before
    groups = []
    for gid, group in before.groups.items():
        what = draw(st.sampled_from(["keep", "keep", "keep", "new", "gone"]))
        if what == "keep":
            groups.append(group)
        elif what == "new":
            groups.append(GroupRecord(gid, group.attributes, draw(st.frozensets(
                st.sampled_from(USER_IDS + GROUP_IDS + ("ghost",))))))
    return Directory.of(after.users.values(), groups)


def stamp(state: State, view: Directory, rules) -> int:
    """What a sync's end records (Cycle._sync)."""
    snapshot = state.snapshot()
    return state.record_group_stamps(
        map_directory(view, rules, snapshot.users, stamps=snapshot), snapshot)


def write(state: State, data, view: Directory, rules) -> None:
    """The snapshot written to as the engine writes it (apply, reconcile, forget)."""
    desired = map_directory(view, rules)
    users = list(desired.users.values())
    for _ in range(data.draw(st.integers(0, 2))):
        what = data.draw(st.sampled_from(["members", "forget_user", "active", "again",
                                          "facts", "forget_group", "rename", "user"]))
        gid = data.draw(st.sampled_from(sorted(view.groups) + list(GROUP_IDS)))
        uid = data.draw(st.sampled_from(sorted(view.users) + list(USER_IDS)))
        if what == "members":
            state.record_members(gid, added=data.draw(st.lists(st.sampled_from(USER_IDS))),
                                 removed=data.draw(st.lists(st.sampled_from(USER_IDS))))
        elif what == "forget_user":
            state.forget_user(uid)
        elif what == "active":
            state.record_user_active(uid, data.draw(st.booleans()))
        elif what in ("again", "user") and users:
            user = data.draw(st.sampled_from(users))
            active = user.active if what == "again" else data.draw(st.booleans())
            state.record_user(user, f"scim-{user.source_id}", active)
        elif what == "facts" and users:
            user = data.draw(st.sampled_from(users))
            attrs = dict(user.attributes)
            active = data.draw(st.booleans())
            members = frozenset(data.draw(st.lists(st.sampled_from(USER_IDS))))
            state.record_facts(Facts(
                users=(PushedUser(user.source_id, f"scim-{user.source_id}", user.user_name,
                                  active, attrs, user_digest(attrs, active)),),
                groups=(PushedGroup(gid, f"scim-{gid}", f"Team {gid}", "", members),)
                if data.draw(st.booleans()) else ()))
        elif what == "forget_group":
            state.forget_group(gid)
        elif what == "rename" and gid in desired.groups:
            state.record_group(desired.groups[gid], f"scim-{gid}")


def alike(after: Directory, rules, snapshot) -> None:
    full = map_directory(after, rules, snapshot.users)
    fast = map_directory(after, rules, snapshot.users, stamps=snapshot)
    same(full, fast)
    assert {g: set(x.members) for g, x in full.groups.items()} == \
        {g: set(x.members) for g, x in fast.groups.items()}
    assert make_plan(full, snapshot) == make_plan(fast, snapshot)
    assert make_plan(full, snapshot).to_dict() == make_plan(fast, snapshot).to_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), variant=st.integers(0, 3),
       how=st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=1, max_size=4),
       every=st.sampled_from([1, 1, 2]))
def test_stamped_groups_map_and_plan_exactly_what_mapping_does(data, variant, how, every):
    rules = rules_for(variant)
    before = data.draw(directory())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        with State.open(path) as state:
            push(state, map_directory(before, rules), how, every)
            stamp(state, before, rules)
            middle = data.draw(regrouped(before))
            if data.draw(st.booleans()):        # a cycle between: written to, stamped again
                write(state, data, middle, rules)
                stamp(state, middle, rules)
            write(state, data, middle, rules)
            after = data.draw(regrouped(middle)) if data.draw(st.booleans()) else middle
            alike(after, rules, state.snapshot())
        with State.read(path) as state:         # (its members read only when asked for)
            alike(after, rules, state.snapshot())


def test_a_group_whose_stamp_holds_is_not_read_from_the_store(tmp_path):
    rules = rules_for(0)
    users = [UserRecord(f"u{i}", {"userName": f"p{i}@example.org"}) for i in range(4)]
    view = Directory.of(users, [GroupRecord("g", {"displayName": "Eng"},
                                            frozenset({"u1", "u2", "n"})),
                                GroupRecord("h", {"displayName": "All"},
                                            frozenset({"g", "u3"}))])
    with State.open(tmp_path / "state.db") as state:
        push(state, map_directory(view, rules), [0], every=1)
        assert stamp(state, view, rules) == 2
        assert stamp(state, view, rules) == 0           # (stamped already)
    with State.read(tmp_path / "state.db") as state:
        snapshot = state.snapshot()
        desired = map_directory(view, rules, snapshot.users, stamps=snapshot)
        assert all(desired.groups[g].members is snapshot.groups[g].members for g in "gh")
        assert make_plan(desired, snapshot).is_empty
        members = snapshot.groups["h"].members
        assert isinstance(members, StoredMembers) and members._members is None
        assert len(members) == 3 and members == {"u1", "u2", "u3"}     # read when asked
        # a user made inactive in the source: the groups reaching it are worked out
        moved = Directory.of([UserRecord("u3", {"userName": "p3@example.org"}, False),
                              *users[:3]], view.groups.values())
        desired = map_directory(moved, rules, snapshot.users, stamps=snapshot)
        assert desired.groups["g"].members is snapshot.groups["g"].members
        assert desired.groups["h"].members == {"u1", "u2"}
        # a member list changed, nested or not
        for gid, gone, left in (("g", "u1", {"u2", "u3"}), ("h", "g", {"u3"})):
            groups = dict(view.groups)
            groups[gid] = GroupRecord(gid, groups[gid].attributes,
                                      groups[gid].members - {gone})
            desired = map_directory(Directory.of(users, groups.values()), rules,
                                    snapshot.users, stamps=snapshot)
            assert desired.groups["h"].members == left


def test_the_member_epoch_moves_with_every_write_stamps_stand_on(tmp_path):
    rules = rules_for(0)
    users = [UserRecord(f"u{i}", {"userName": f"p{i}@example.org"}) for i in range(3)]
    view = Directory.of(users, [GroupRecord("g", {"displayName": "Eng"},
                                            frozenset({"u1", "u2"}))])
    desired = map_directory(view, rules)
    with State.open(tmp_path / "state.db") as state:
        push(state, desired, [0], every=1)
        writes = {
            "members added": lambda: state.record_members("g", added=["u0"]),
            "members removed": lambda: state.record_members("g", removed=["u0"]),
            "a user made inactive": lambda: state.record_user_active("u1", False),
            "a user made active": lambda: state.record_user(desired.users["u1"], "s", True),
            "a user forgotten": lambda: state.forget_user("u2"),
            "a user recorded": lambda: state.record_user(desired.users["u2"], "s2"),
            "a group forgotten": lambda: state.forget_group("g"),
            "facts": lambda: state.record_facts(Facts(groups=(
                PushedGroup("g", "s", "Eng", "", frozenset({"u1"})),))),
            "a target forgotten": lambda: state.forget_target("https://other.example"),
        }
        for what, how in writes.items():
            epoch = state.member_epoch()
            how()
            assert state.member_epoch() > epoch, what
        state.record_user(desired.users["u2"], "s2")
        epoch = state.member_epoch()
        state.record_user(desired.users["u2"], "s2")        # again as it was
        state.record_user(desired.users["u2"], "s3")        # another SCIM id, as active
        state.record_group(desired.groups["g"], "s")
        assert state.member_epoch() == epoch


def _stamped(folder: Path, users, groups, rules) -> State:
    view = Directory.of(users, groups)
    folder.mkdir(exist_ok=True)
    state = State.open(folder / "state.db")
    push(state, map_directory(view, rules), [0], every=1)
    assert stamp(state, view, rules) == len(groups)
    return state


def test_a_change_deep_in_a_groups_nesting_is_its_change(tmp_path):
    rules = rules_for(0)
    users = [UserRecord(f"u{i}", {"userName": f"p{i}@example.org"}) for i in range(4)]
    groups = [GroupRecord("g", {"displayName": "All"}, frozenset({"h", "u1"})),
              GroupRecord("h", {"displayName": "Mid"}, frozenset({"k"})),
              GroupRecord("k", {"displayName": "Deep"}, frozenset({"u2"}))]
    with _stamped(tmp_path, users, groups, rules) as state:
        snapshot = state.snapshot()
        deeper = groups[:2] + [GroupRecord("k", {"displayName": "Deep"},
                                           frozenset({"u2", "u3"}))]
        desired = map_directory(Directory.of(users, deeper), rules, snapshot.users,
                                stamps=snapshot)
        assert desired.groups["g"].members == {"u1", "u2", "u3"}
    # an id on a list that was nobody and is now a group, or the other way round
    listed = [GroupRecord("g", {"displayName": "All"}, frozenset({"h", "u1", "x"})),
              *groups[1:]]
    extra = GroupRecord("x", {"displayName": "New"}, frozenset({"u3"}))
    for n, (stamped_with, now, members) in enumerate((
            (listed, listed + [extra], {"u1", "u2", "u3"}),
            (listed + [extra], listed, {"u1", "u2"}))):
        with _stamped(tmp_path / str(n), users, stamped_with, rules) as state:
            snapshot = state.snapshot()
            desired = map_directory(Directory.of(users, now), rules, snapshot.users,
                                    stamps=snapshot)
            assert desired.groups["g"].members == members


def test_an_id_both_a_users_and_a_groups_leaves_no_group_stamped(tmp_path):
    rules = rules_for(0)
    users = [UserRecord(f"u{i}", {"userName": f"p{i}@example.org"}) for i in range(3)]
    groups = [GroupRecord("g", {"displayName": "All"}, frozenset({"u2", "u1"})),
              GroupRecord("u2", {"displayName": "Odd"}, frozenset({"u0"}))]
    with State.open(tmp_path / "state.db") as state:
        view = Directory.of(users, groups)
        push(state, map_directory(view, rules), [0], every=1)
        snapshot = state.snapshot()
        desired = map_directory(view, rules, snapshot.users, stamps=snapshot)
        assert desired.group_stamps == {}
        assert state.record_group_stamps(desired, snapshot) == 0


def test_a_row_made_inactive_since_the_stamp_unstamps_every_group(tmp_path):
    # the source makes u1 inactive as the row was: no user's active differs from its row's,
    # but the members were stamped with u1 active
    rules = rules_for(0)
    users = [UserRecord(f"u{i}", {"userName": f"p{i}@example.org"}) for i in range(3)]
    groups = [GroupRecord("g", {"displayName": "All"}, frozenset({"u1", "u2"}))]
    with _stamped(tmp_path, users, groups, rules) as state:
        state.record_user_active("u1", False)
        snapshot = state.snapshot()
        assert snapshot.groups["g"].stamp == ""
        gone = [UserRecord("u1", {"userName": "p1@example.org"}, False), users[0], users[2]]
        desired = map_directory(Directory.of(gone, groups), rules, snapshot.users,
                                stamps=snapshot)
        assert desired.groups["g"].members == {"u2"}
