"""Identity rules: two people are never merged into one Split account (issue 11).

A rename that frees a userName runs before the hire that takes it; a create that meets an
account the snapshot maps to someone still in the source fails with a sentence naming both,
and nothing else is touched.
"""

from __future__ import annotations

import datetime as dt

from agent.app import make_target
from agent.core.outcome import Outcome
from agent.core.quarantine import BACKOFF
from agent.store.state import State
from connectors.base import RejectedError
from tests.conftest import user


def accounts(split) -> dict[str, str]:
    """userName -> externalId of every account the fake Split holds."""
    return {u["userName"].lower(): u.get("externalId") for u in split.users.values()}


def test_a_rename_and_a_hire_of_the_old_name_in_one_cycle_give_two_accounts(fake_split,
                                                                           split_ws):
    split_ws.write_directory([user("u1", "alice@example.org", "Alice", "Old")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    alice_account = next(iter(fake_split.users))
    split_ws.write_directory([user("u1", "alice.old@example.org", "Alice", "Old"),
                              user("u9", "alice@example.org", "Alice", "New")], [])
    fake_split.reset_log()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert fake_split.users[alice_account]["userName"] == "alice.old@example.org"
    assert accounts(fake_split) == {"alice.old@example.org": "u1", "alice@example.org": "u9"}
    assert [r.status for r in fake_split.requests if r.method == "POST"] == [201]   # no 409


class RenamesFail:
    """The real target, except that renaming a user is refused (a server-side rule)."""

    def __init__(self, config):
        self.inner = make_target(config)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def update_user(self, user_id, changed, active=None):
        if "userName" in changed:
            raise RejectedError("renames are refused here", 400)
        return self.inner.update_user(user_id, changed, active)


def test_a_create_never_takes_the_account_of_someone_still_in_the_source(fake_split, split_ws):
    split_ws.write_directory([user("u1", "alice@example.org", "Alice", "Old")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    alice_account = next(iter(fake_split.users))
    split_ws.write_directory([user("u1", "alice.old@example.org", "Alice", "Old"),
                              user("u9", "alice@example.org", "Alice", "New")], [])
    result = split_ws.agent(target_factory=RenamesFail).sync()
    assert result.outcome is Outcome.FAILED          # both failed, nothing else to apply
    errors = {op.source_id: error for op, error in result.report.failed}
    assert set(errors) == {"u1", "u9"}
    assert "alice.old@example.org (source id u1)" in errors["u9"]
    assert "cannot create alice@example.org (source id u9)" in errors["u9"]
    with State.open(split_ws.state, lock=False) as state:
        snapshot = state.snapshot()
    assert snapshot.users["u1"].scim_id == alice_account        # Alice keeps her account
    assert "u9" not in snapshot.users                            # the hire got nothing
    assert fake_split.users[alice_account]["name"]["familyName"] == "Old"   # untouched
    # once the rename goes through (the refused rename is tried again when its back-off is
    # over: agent/core/quarantine.py), that cycle creates the hire's own account
    later = dt.datetime.now(dt.timezone.utc) + BACKOFF[0] + dt.timedelta(minutes=1)
    assert split_ws.agent(now=lambda: later).sync().outcome is Outcome.OK
    assert accounts(fake_split) == {"alice.old@example.org": "u1", "alice@example.org": "u9"}


def test_an_account_whose_owner_left_the_source_is_handed_to_the_new_record(fake_split,
                                                                           split_ws):
    # deleted and re-created in the directory with the same e-mail: a new id, the same person
    split_ws.write_directory([user("old-id", "dana@example.org", "Dana", "D")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.write_directory([user("new-id", "dana@example.org", "Dana", "D")], [])
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    with State.open(split_ws.state, lock=False) as state:
        snapshot = state.snapshot()
    assert set(snapshot.users) == {"new-id"} and snapshot.users["new-id"].active
    assert len(fake_split.users) == 1 and next(iter(fake_split.users.values()))["active"]


# -------------------------------------------------------------------------------------------
# Property: random renames, hires and leavers (with renames sometimes refused by the target)
# never map two source ids to one account, and never hand one present person's account to
# another.

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.conftest import TOKEN, Workspace  # noqa: E402
from tests.fakes.split import FakeSplit  # noqa: E402

NAMES = ("ann", "ben", "cy", "dee")
IDS = tuple(f"p{i}" for i in range(5))


@st.composite
def directories(draw) -> dict[str, str]:
    """source id -> local part; names may collide across steps (a freed name is reused)."""
    present = draw(st.sets(st.sampled_from(IDS), max_size=4))
    names = draw(st.permutations(NAMES))
    return {sid: names[i] for i, sid in enumerate(sorted(present))}


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck),
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(st.lists(st.tuples(directories(), st.booleans()), min_size=2, max_size=5))
def test_no_two_source_ids_ever_share_an_account(steps):
    with FakeSplit(token=TOKEN) as split, tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp), split.base_url)
        pushed: set[str] = set()
        for directory, renames_fail in steps + [(steps[-1][0], False)]:
            ws.write_directory([user(sid, f"{name}@example.org", name, sid)
                                for sid, name in directory.items()], [])
            agent = ws.agent(target_factory=RenamesFail) if renames_fail else ws.agent()
            result = agent.sync(allow_mass_deactivation=True)
            assert result.outcome in (Outcome.OK, Outcome.REFUSED, Outcome.PARTIAL,
                                      Outcome.FAILED), \
                result.message
            with State.open(ws.state, lock=False) as state:
                mapped = {sid: u for sid, u in state.snapshot().users.items()}
            scim_ids = [u.scim_id for u in mapped.values()]
            assert len(set(scim_ids)) == len(scim_ids), mapped          # one account, one id
            still_here = (pushed & set(directory)) - set(mapped)
            assert not still_here, f"{still_here} lost their account while in the source"
            pushed = set(mapped)
        # after a step without injected refusals, everyone present has their own account under
        # their own name, or a failure that says why (a swap, a name a leaver still holds)
        failed = {op.source_id: error for op, error in result.report.failed}
        failed.update({op.source_id: op.refused for op in result.report.refused})
        # a rename the target refused in an earlier step waits out its back-off (a failure
        # that says why, in status); it is not sent again in the very next cycle
        failed.update({op.source_id: "held back" for op in result.report.deferred})
        assert not any("internal error" in e for e in failed.values()), failed
        for sid, name in directory.items():
            if sid in failed:
                continue
            account = split.users[mapped[sid].scim_id]
            assert account["userName"] == f"{name}@example.org" and account["active"], sid


# -------------------------------------------------------------------------------------------
# Held records: an explicit disable wins; any other hold of a pushed account is loud.


def test_a_disabled_user_is_deactivated_even_when_a_stale_twin_holds_its_record(fake_split,
                                                                                split_ws):
    split_ws.write_directory([user("u1", "alice@example.org")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.write_directory([user("u1", "alice@example.org", active=False),
                              user("u7", "ALICE@example.org")], [])     # both are held
    result = split_ws.agent().sync()
    assert [u["active"] for u in fake_split.users.values()] == [False]
    assert result.outcome is Outcome.OK               # u7 was never pushed: a plan problem
    assert {p.source_id for p in result.plan.problems} == {"u1", "u7"}
    assert ("deactivate_user", "u1") in {(op.kind.value, op.source_id)
                                         for op in result.report.applied}


def test_a_pushed_account_held_for_another_reason_is_left_alone_and_reported(fake_split,
                                                                              split_ws):
    split_ws.write_directory([user("u1", "alice@example.org", title="Dev")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.write_directory([user("u1", "alice@example.org", title="Boss"),
                              user("u7", "alice@EXAMPLE.org")], [])
    fake_split.reset_log()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.REFUSED and "held" in result.message
    assert fake_split.writes() == []                   # neither updated nor deactivated
    with State.open(split_ws.state, lock=False) as state:
        failures = state.failures()
    assert [(f["source_id"], f["op"]) for f in failures] == [("u1", "held")]
    assert "share the name" in failures[0]["error"]
    split_ws.write_directory([user("u1", "alice@example.org", title="Boss")], [])
    assert split_ws.agent().sync().outcome is Outcome.OK    # fixed: the hold and its report go
    with State.open(split_ws.state, lock=False) as state:
        assert state.failures() == []


def test_a_group_deleted_in_split_by_hand_is_created_again_when_members_are_added(fake_split,
                                                                                  split_ws):
    from tests.conftest import group
    people = [user(f"u{i}", f"p{i}@example.org") for i in range(3)]
    split_ws.write_directory(people, [group("g", "Team", ["u0"])])
    assert split_ws.agent().sync().outcome is Outcome.OK
    fake_split.groups.clear()                                 # someone deleted it in Split
    split_ws.write_directory(people, [group("g", "Team", ["u0", "u1", "u2"])])
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    [team] = fake_split.groups.values()
    assert team["displayName"] == "Team" and len(team["members"]) == 3


# -------------------------------------------------------------------------------------------
# The group guard at work: a bad export never deletes every group.


def test_an_export_that_lost_its_groups_section_leaves_every_group_alone(fake_split,
                                                                        split_ws):
    import json
    from tests.conftest import group
    people = [user(f"u{i}", f"p{i}@example.org") for i in range(3)]
    split_ws.write_directory(people, [group("g", "Team", ["u0", "u1"])])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.source.write_text(json.dumps({"users": people}))       # no "groups" key at all
    fake_split.reset_log()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK and fake_split.writes() == []
    assert any("said nothing about groups" in p.reason for p in result.plan.problems)


def test_an_empty_groups_section_is_stopped_by_the_guard_before_anything_is_sent(fake_split,
                                                                                split_ws):
    from tests.conftest import group
    people = [user(f"u{i}", f"p{i}@example.org") for i in range(3)]
    split_ws.write_directory(people, [group("g", "Team", ["u0"]), group("h", "Ops", ["u1"])])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.write_directory(people, [])
    fake_split.reset_log()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.GUARD and "no groups while 2 are managed" in result.message
    assert fake_split.writes() == [] and len(fake_split.groups) == 2
    assert split_ws.agent().sync(allow_mass_deactivation=True).outcome is Outcome.OK
    assert fake_split.groups == {}


def test_a_reconcile_that_finds_split_empty_stops_instead_of_creating_everyone_again(
        fake_split, split_ws):
    people = [user(f"u{i}", f"p{i}@example.org") for i in range(4)]
    split_ws.write_directory(people, [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    with State.open(split_ws.state, lock=False) as state:
        before = state.snapshot()
    fake_split.users.clear()                     # the wrong org, or a listing that broke
    fake_split.reset_log()
    result = split_ws.agent().sync(reconcile=True)
    assert result.outcome is Outcome.GUARD and "gone from Split" in result.message
    assert fake_split.writes() == []
    with State.open(split_ws.state, lock=False) as state:
        assert state.snapshot() == before        # nothing forgotten
