"""The manager seam: source ids in the core, Split's ids on the wire (agent/core/references.py,
and the engine's use of it in apply and adoption), end to end against the fake Split."""

from __future__ import annotations

from agent.core import references
from agent.core.model import User
from agent.core.outcome import Outcome
from tests.conftest import user

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def manager_of(split, user_name: str) -> str | None:
    found = next(u for u in split.users.values() if u["userName"] == user_name)
    return (found.get(ENTERPRISE) or {}).get("manager", {}).get("value")


def split_id(split, user_name: str) -> str:
    return next(sid for sid, u in split.users.items() if u["userName"] == user_name)


# ------------------------------------------------------------------ the pure helpers


def test_to_target_translates_known_ids_and_defers_the_others():
    sent, deferred = references.to_target({"title": "x", "manager": "src-boss"},
                                          {"src-boss": "scim-9"})
    assert (sent, deferred) == ({"title": "x", "manager": "scim-9"}, ())
    sent, deferred = references.to_target({"manager": "src-new"}, {})
    assert (sent, deferred) == ({}, ("manager",))
    assert references.to_target({"manager": None}, {}) == ({"manager": None}, ())   # a removal


def test_from_target_keeps_ids_the_snapshot_does_not_know():
    assert references.from_target({"manager": "scim-9"}, {"scim-9": "src-boss"}) == \
        {"manager": "src-boss"}
    assert references.from_target({"manager": "scim-x"}, {}) == {"manager": "scim-x"}


def test_as_recorded_keeps_what_the_target_still_holds():
    u = User("u1", "a@example.org", True, {"userName": "a@example.org", "manager": "src-new"})
    assert "manager" not in references.as_recorded(u, ("manager",)).attributes
    assert references.as_recorded(u, ("manager",), {"manager": "src-old"}).attributes[
        "manager"] == "src-old"
    assert references.as_recorded(u, ()) is u


# ------------------------------------------------------------------ through the engine


def test_a_manager_created_in_the_same_cycle_is_referenced_by_split_id(fake_split, split_ws):
    split_ws.write_directory([user("boss", "boss@example.org"),
                              user("u1", "ann@example.org", manager="boss"),
                              user("u2", "bob@example.org", manager="ann@example.org")], [])
    agent = split_ws.agent()
    result = agent.sync()
    assert result.outcome is Outcome.OK, result.message
    # each report waits a wave for their manager's create, so the reference goes out in the
    # create itself: one request per person, no follow-up PATCH
    writes = fake_split.writes()
    assert [r.method for r in writes] == ["POST", "POST", "POST"]
    assert [r.body["userName"] for r in writes] == ["boss@example.org", "ann@example.org",
                                                    "bob@example.org"]
    assert manager_of(fake_split, "ann@example.org") == split_id(fake_split, "boss@example.org")
    assert manager_of(fake_split, "bob@example.org") == split_id(fake_split, "ann@example.org")
    assert manager_of(fake_split, "boss@example.org") is None

    fake_split.reset_log()
    again = agent.sync()
    assert again.outcome is Outcome.OK and again.plan.is_empty
    assert fake_split.writes() == []


def test_a_new_manager_is_an_update_by_split_id(fake_split, split_ws):
    people = [user("boss", "boss@example.org"), user("boss2", "chief@example.org"),
              user("u1", "ann@example.org", manager="boss")]
    split_ws.write_directory(people, [])
    agent = split_ws.agent()
    assert agent.sync().outcome is Outcome.OK
    fake_split.reset_log()
    people[2] = user("u1", "ann@example.org", manager="chief@example.org")
    split_ws.write_directory(people, [])
    result = agent.sync()
    assert result.outcome is Outcome.OK, result.message
    changed = [op.changed for op in result.plan.ops]
    assert changed == [{"manager": ("boss", "boss2")}]
    assert manager_of(fake_split, "ann@example.org") == split_id(fake_split, "chief@example.org")
    assert len(fake_split.writes()) == 1


def test_adoption_reads_managers_back_as_source_ids(fake_split, split_ws):
    # Split already holds the people (a first sync after onboarding by hand), managers set
    split_ws.write_directory([user("boss", "boss@example.org"),
                              user("u1", "ann@example.org", manager="boss")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.state.unlink()                                 # a lost snapshot: adopt everyone
    fake_split.reset_log()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert result.adopted == 2
    assert result.plan.is_empty, result.plan.to_dict()
    assert fake_split.writes() == []


def test_a_chain_deeper_than_the_waves_and_a_loop_of_managers_still_end_referenced(
        fake_split, split_ws):
    from agent.core.plan import MANAGER_WAVES
    depth = MANAGER_WAVES + 3
    chain = [user("c0", "c0@example.org")] + [
        user(f"c{i}", f"c{i}@example.org", manager=f"c{i - 1}") for i in range(1, depth)]
    loop = [user("x", "x@example.org", manager="y"), user("y", "y@example.org", manager="x")]
    split_ws.write_directory(chain + loop, [])
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    for i in range(1, depth):
        assert manager_of(fake_split, f"c{i}@example.org") == split_id(fake_split,
                                                                    f"c{i - 1}@example.org")
    assert manager_of(fake_split, "x@example.org") == split_id(fake_split, "y@example.org")
    assert manager_of(fake_split, "y@example.org") == split_id(fake_split, "x@example.org")
    posts = [r for r in fake_split.writes() if r.method == "POST"]
    patches = [r for r in fake_split.writes() if r.method == "PATCH"]
    assert len(posts) == depth + 2
    assert len(patches) <= depth - MANAGER_WAVES + 2       # only past the waves, and the loop
