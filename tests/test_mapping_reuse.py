"""A record unchanged since its value was pushed takes that value from the snapshot instead of
being mapped again (``map_directory(..., pushed)``). That shortcut must be invisible: on
random directories, pushed as a sync records them, then changed at random (attributes,
disables, leavers, hires, renames into another's name, managers named by id, e-mail or DN
whose target leaves or is replaced, scope rules, nested groups), mapping with and without
the snapshot gives the same desired state and the same plan."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.adopt import Facts
from agent.core.guard import guard
from agent.core.mapping import MappingRules, map_directory
from agent.core.model import PushedUser, user_digest
from agent.core.plan import make_plan
from agent.core.scope import Scope
from agent.store.state import State
from connectors.base import Directory, GroupRecord, SourceError, UserRecord
from connectors.files import FileSource

USER_IDS = tuple(f"u{i}" for i in range(8))
GROUP_IDS = tuple(f"g{i}" for i in range(4))
NAMES = ("ann", "ben", "cy", "dee")


def rules_for(variant: int) -> MappingRules:
    scope = Scope.parse([{"action": "exclude", "attribute": "title", "equals": "Ops"}]) \
        if variant & 1 else Scope()
    overrides = {"displayName": "{givenName} {familyName | upper}"} if variant & 2 else {}
    return MappingRules.for_source(FileSource, overrides, scope=scope)


@st.composite
def user_record(draw, uid: str) -> UserRecord:
    local = draw(st.sampled_from(NAMES))
    user_name = f"{local}@example.org" if draw(st.booleans()) else f"{local}.{uid}@example.org"
    attributes: dict = {"userName": user_name, "dn": f"CN={uid},DC=example"}
    for key, choices in (("givenName", ["Ann", "Ben"]), ("familyName", ["Ng", "Li"]),
                         ("title", ["Dev", "Ops"]), ("department", ["R&D", "\ud800"])):
        value = draw(st.sampled_from([None, *choices]))
        if value:
            attributes[key] = value
    reference = draw(st.sampled_from([None, "id", "mail", "dn", "nobody", "self"]))
    other = draw(st.sampled_from(USER_IDS))
    if reference is not None:
        attributes["manager"] = {"id": other, "mail": f"{NAMES[int(other[1:]) % 4]}@EXAMPLE.org",
                                 "dn": f"cn={other}, dc=example", "nobody": "u-none",
                                 "self": uid}[reference]
    return UserRecord(uid, attributes, draw(st.booleans()))


@st.composite
def groups(draw) -> list[GroupRecord]:
    out = []
    for gid in sorted(draw(st.sets(st.sampled_from(GROUP_IDS)))):
        name = draw(st.sampled_from(["Eng", "Ops", "Eng"])) + ("" if draw(st.booleans()) else gid)
        members = draw(st.frozensets(st.sampled_from(USER_IDS + GROUP_IDS + ("ghost",))))
        out.append(GroupRecord(gid, {"displayName": name}, members))
    return out


@st.composite
def directory(draw) -> Directory:
    uids = sorted(draw(st.sets(st.sampled_from(USER_IDS))))
    return Directory.of([draw(user_record(uid)) for uid in uids], draw(groups()))


@st.composite
def changed(draw, before: Directory) -> Directory:
    """Each user kept as is, changed anew, or gone; hires; groups kept or drawn again."""
    users = []
    for uid in USER_IDS:
        what = draw(st.sampled_from(["keep", "keep", "keep", "new", "gone", "flip"]))
        record = before.users.get(uid)
        if record is None:
            if what == "new":
                users.append(draw(user_record(uid)))
        elif what == "keep":
            users.append(record)
        elif what == "new":
            users.append(draw(user_record(uid)))
        elif what == "flip":
            users.append(UserRecord(uid, dict(record.attributes), not record.active))
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(users)
    kept = list(before.groups.values()) if draw(st.booleans()) else draw(groups())
    return Directory.of(users, kept)


def push(state: State, desired, how: list[int], every: int = 2) -> None:
    """Record the desired state as a sync would: most users as applied, some with another
    active state (the target kept a leaver), some adopted (a fact: no source digest)."""
    for n, user in enumerate(desired.users.values()):
        way = how[n % len(how)]
        if way == 0:
            state.record_user(user, f"scim-{user.source_id}")
        elif way == 1:
            state.record_user(user, f"scim-{user.source_id}", not user.active)
        else:
            attrs = dict(user.attributes)
            state.record_facts(Facts(users=(PushedUser(
                user.source_id, f"scim-{user.source_id}", user.user_name, user.active, attrs,
                user_digest(attrs, user.active)),)))
    for group in desired.groups.values():
        state.record_group(group, f"scim-{group.source_id}")
        state.record_members(group.source_id, added=sorted(group.members)[::every])


def same(a, b) -> None:
    assert a.users == b.users
    assert {k: (u.digest, u.user_name, u.active) for k, u in a.users.items()} == \
        {k: (u.digest, u.user_name, u.active) for k, u in b.users.items()}
    assert a.groups == b.groups
    assert a.problems == b.problems
    assert a.digest() == b.digest()


class _Limit:
    """A guard threshold (config.Threshold's ``limit``): a fixed count."""

    def __init__(self, count: int):
        self.count = count

    def limit(self, managed: int) -> int:
        return self.count

    def __str__(self) -> str:
        return str(self.count)


def planned_alike(full, fast, snapshot, state: State | None = None) -> None:
    """The desired states are the same, and so are the plans made from them, and what the
    guard says of them. ``state``: also planned against the same snapshot read anew (users
    kept as rows of the first read are then compared like any other)."""
    same(full, fast)
    assert make_plan(full, snapshot) == make_plan(fast, snapshot)
    assert make_plan(full, snapshot).to_dict() == make_plan(fast, snapshot).to_dict()
    for limit in (0, 1):
        assert guard(make_plan(full, snapshot), full, snapshot, _Limit(limit), _Limit(limit)) \
            == guard(make_plan(fast, snapshot), fast, snapshot, _Limit(limit), _Limit(limit))
    if state is not None:
        again = state._read_snapshot()
        assert again.users is not snapshot.users
        assert make_plan(fast, again).to_dict() == make_plan(full, again).to_dict()
        assert make_plan(fast, again) == make_plan(full, snapshot)


# a snapshot pushed in some of these ways (see push), then the directory changed
def random_cases(test):
    """The hypothesis settings both properties share (applied to the test itself: settings
    wrapped around ``given`` alone would leave hypothesis at its default 100 examples)."""
    return settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])(
        given(data=st.data(), variant=st.integers(0, 3),
              how=st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=1, max_size=4))(test))


@random_cases
def test_the_snapshot_shortcut_maps_and_plans_exactly_what_mapping_does(data, variant, how):
    rules = rules_for(variant)
    before = data.draw(directory())
    after = data.draw(changed(before))
    with tempfile.TemporaryDirectory() as folder:
        with State.open(Path(folder) / "state.db") as state:
            push(state, map_directory(before, rules), how)
            snapshot = state.snapshot()
            full = map_directory(after, rules)
            fast = map_directory(after, rules, snapshot.users)
            planned_alike(full, fast, snapshot, state)


def test_an_unchanged_directory_is_not_mapped_again():
    rules = rules_for(0)
    records = [UserRecord(f"u{i}", {"userName": f"p{i}@example.org", "manager": "u0"})
               for i in range(5)]
    view = Directory.of(records, [GroupRecord("g", {"displayName": "Eng"},
                                              frozenset({"u1", "u2"}))])
    with tempfile.TemporaryDirectory() as folder:
        with State.open(Path(folder) / "state.db") as state:
            push(state, map_directory(view, rules), [0], every=1)
            pushed = state.snapshot().users
            desired = map_directory(view, rules, pushed)
            # the very value pushed: its attributes are still the snapshot's, unread
            assert all(desired.users[sid].attributes is pushed[sid].attributes for sid in pushed
                       if sid != "u0")
            # and no User is made for any (u0 too: naming itself, it names nobody, as when
            # pushed) until one is looked up (model.DesiredUsers)
            assert all(u is None for u in desired.users.users.values())
            assert make_plan(desired, state.snapshot()).is_empty


def test_another_mapping_maps_every_record_again():
    view = Directory.of([UserRecord("u1", {"userName": "p@example.org", "givenName": "Ann",
                                           "familyName": "Ng"})])
    with tempfile.TemporaryDirectory() as folder:
        with State.open(Path(folder) / "state.db") as state:
            push(state, map_directory(view, rules_for(0)), [0])
            desired = map_directory(view, rules_for(2), state.snapshot().users)
            assert desired.users["u1"].attributes["name.familyName"] == "Ng"
            plan = make_plan(desired, state.snapshot())
            assert [op.kind.value for op in plan.ops] == ["update_user"]


# ---------------------------------------------------------------------------------------------
# The file source digests each parsed object and builds a record only when asked for: the
# same shortcut through its digests, with every kind of value an export may hold (padded
# text, numbers, true/false, empty and null values, keys in another order, ids written as
# numbers or "yes" for active, which take the long way) plans exactly what mapping every
# record does.

MISSING = object()


@st.composite
def raw_user(draw, uid: str, odd: bool = False) -> dict:
    """``odd``: the id may be padded and ``active`` may be text (the export is read the long
    way)."""
    local = draw(st.sampled_from(NAMES))
    obj: dict = {"id": draw(st.sampled_from([uid, f" {uid}"])) if odd else uid,
                 "userName": f"{local}@example.org" if draw(st.booleans())
                 else f"{local}.{uid}@example.org"}
    for key, choices in (("givenName", ["Ann", " Ben", ""]), ("familyName", ["Ng", "Li", None]),
                         ("title", ["Dev", "Ops", 7, 7.5]), ("department", ["R&D", True]),
                         ("dn", [f"CN={uid},DC=example"]),
                         ("active", [True, False, True, "yes"] if odd else [True, False])):
        value = draw(st.sampled_from([MISSING, *choices]))
        if value is not MISSING:
            obj[key] = value
    reference = draw(st.sampled_from([None, "id", "mail", "dn", "nobody", "self"]))
    other = draw(st.sampled_from(USER_IDS))
    if reference is not None:
        obj["manager"] = {"id": other, "mail": f"{NAMES[int(other[1:]) % 4]}@EXAMPLE.org",
                          "dn": f"cn={other}, dc=example", "nobody": "u-none",
                          "self": uid}[reference]
    if draw(st.booleans()):
        obj = dict(reversed(list(obj.items())))
    return obj


@st.composite
def raw_groups(draw) -> list[dict]:
    return [{"id": g.id, "displayName": g.attributes["displayName"], "members": sorted(g.members)}
            for g in draw(groups())]


@st.composite
def export(draw) -> dict:
    uids = sorted(draw(st.sets(st.sampled_from(USER_IDS))))
    odd = draw(st.integers(0, 3)) == 0
    return {"users": [draw(raw_user(uid, odd)) for uid in uids], "groups": draw(raw_groups())}


@st.composite
def changed_export(draw, before: dict) -> dict:
    by_id = {u["id"].strip(): u for u in before["users"]}
    users = []
    for uid in USER_IDS:
        what = draw(st.sampled_from(["keep", "keep", "keep", "new", "gone", "flip", "edit"]))
        obj = by_id.get(uid)
        odd = draw(st.integers(0, 9)) == 0
        if obj is None:
            if what == "new":
                users.append(draw(raw_user(uid, odd)))
        elif what == "keep":
            users.append(dict(obj))
        elif what == "new":
            users.append(draw(raw_user(uid, odd)))
        elif what == "flip":
            users.append({**obj, "active": obj.get("active", True) is False})
        elif what == "edit":
            key = draw(st.sampled_from(["givenName", "title", "manager", "userName", "dn"]))
            users.append({**obj, key: draw(st.sampled_from(["Zed", "u1", "ann@example.org",
                                                            " Ann", 3]))})
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(users)
    kept = before["groups"] if draw(st.booleans()) else draw(raw_groups())
    return {"users": users, "groups": kept}


def read_export(folder: Path, document: dict, name: str) -> Directory:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document))
    return FileSource(FileSource.Settings(path=path)).read()


def every_record(view: Directory) -> Directory:
    """The same directory with every record built and no source digests: mapped the long way."""
    return Directory(dict(view.users), dict(view.groups), view.cursor, view.groups_read)


@random_cases
def test_the_file_sources_digests_map_and_plan_exactly_what_mapping_does(data, variant, how):
    rules = rules_for(variant)
    before = data.draw(export())
    after = data.draw(changed_export(before))
    with tempfile.TemporaryDirectory() as folder:
        try:
            before_view = read_export(Path(folder), before, "before")
            after_view = read_export(Path(folder), after, "after")
        except SourceError:
            return                       # (two ids that strip to one: refused, either way)
        with State.open(Path(folder) / "state.db") as state:
            push(state, map_directory(before_view, rules), how)
            snapshot = state.snapshot()
            full = map_directory(every_record(after_view), rules)
            # read again: records built for the long way must not serve the short one
            fast = map_directory(read_export(Path(folder), after, "after"), rules,
                                 snapshot.users)
            planned_alike(full, fast, snapshot, state)
            # the users found standing in bulk are those the test of one user finds: with
            # none found in bulk, every user held as its row is held so all the same
            with mock.patch("agent.core.mapping.standing_users", lambda *a: (set(), {})):
                by_hand = map_directory(read_export(Path(folder), after, "after"), rules,
                                        snapshot.users)
            assert fast.users.users == by_hand.users.users
            planned_alike(by_hand, fast, snapshot)
