"""Sync under random faults converges: no duplicates, nothing lost, nothing deleted.

The fake Split is put in chaos mode: requests fail before they are processed, and writes are
carried out but their answers lost (a 502/504 from a gateway). The directory changes between
cycles. Whatever the faults did, once they stop the next sync must leave Split equal to the
source's projection, and a sync after that must plan nothing. Seeds make failures
replayable: a failing case names its seed.
"""

from __future__ import annotations

import random

import pytest

from agent.core.outcome import Outcome
from agent.app import make_target
from tests.conftest import FakeTime, group, user


def no_waiting(config):
    fake_time = FakeTime()      # backoff waits advance a fake clock instead of being spent
    return make_target(config, clock=fake_time.clock, sleep=fake_time.sleep)


def evolve(rnd: random.Random, people: dict, teams: dict) -> None:
    """One step of directory churn: joiners, leavers, renames, disables, team moves."""
    for _ in range(rnd.randint(1, 3)):
        n = rnd.randrange(1000)
        people[f"u{n}"] = user(f"u{n}", f"person{n}@example.org", f"G{n}", f"F{n}")
    for uid in rnd.sample(sorted(people), k=min(2, len(people))):
        choice = rnd.random()
        if choice < 0.3:
            del people[uid]
        elif choice < 0.6:
            people[uid] = {**people[uid], "active": not people[uid].get("active", True)}
        else:
            people[uid] = {**people[uid], "title": f"Title {rnd.randrange(5)}"}
    ids = sorted(people)
    for gid in list(teams):
        teams[gid] = group(gid, teams[gid]["displayName"],
                           rnd.sample(ids, k=min(len(ids), rnd.randint(0, 6))))
    if rnd.random() < 0.3:
        gid = f"g{rnd.randrange(100)}"
        teams[gid] = group(gid, f"Team {gid}", rnd.sample(ids, k=min(len(ids), 3)))
    if rnd.random() < 0.2 and len(teams) > 1:
        del teams[rnd.choice(sorted(teams))]


def assert_projection(split, people: dict, teams: dict) -> None:
    names = [u["userName"].lower() for u in split.users.values()]
    assert len(names) == len(set(names)), "a user was created twice"
    by_name = {u["userName"].lower(): u for u in split.users.values()}
    for person in people.values():
        pushed = by_name.get(person["userName"].lower())
        if person.get("active", True):
            assert pushed is not None and pushed["active"] is True, person["userName"]
            assert pushed.get("title") == person.get("title"), person["userName"]
        elif pushed is not None:
            assert pushed["active"] is False, person["userName"]
    source_names = {p["userName"].lower() for p in people.values()}
    for name, pushed in by_name.items():
        if name not in source_names:
            assert pushed["active"] is False, f"{name} left but is still active"
    group_names = [g["displayName"] for g in split.groups.values()]
    assert len(group_names) == len(set(group_names)), "a group was created twice"
    assert sorted(group_names) == sorted(t["displayName"] for t in teams.values())
    active = {uid for uid, p in people.items() if p.get("active", True)}
    scim_to_name = {sid: u["userName"].lower() for sid, u in split.users.items()}
    for team in teams.values():
        pushed = next(g for g in split.groups.values() if g["displayName"] == team["displayName"])
        expected = {people[m]["userName"].lower() for m in team["members"] if m in active}
        assert {scim_to_name[m["value"]] for m in pushed.get("members", [])} == expected, \
            team["displayName"]


@pytest.mark.parametrize("seed", range(6))
def test_sync_converges_whatever_the_faults(seed, fake_split, split_ws):
    rnd = random.Random(seed)
    people = {f"u{i}": user(f"u{i}", f"person{i}@example.org", f"G{i}", f"F{i}") for i in range(12)}
    teams = {"g1": group("g1", "Team g1", ["u0", "u1", "u2"]),
             "g2": group("g2", "Team g2", ["u3", "u4"])}
    split_ws.write_config(extra="[sync]\nmax_deactivations = \"100%\"\nmax_group_changes = \"100%\"\n")
    # Random churn can empty every group, which the group guard rightly stops; this test is
    # about faults (the guards have their own tests), so each cycle is let through.
    agent = split_ws.agent(target_factory=no_waiting)
    for step in range(4):
        split_ws.write_directory(list(people.values()), list(teams.values()))
        fake_split.chaos(seed * 100 + step, before=0.15, after=0.15)
        for _ in range(3):                           # the daemon would keep cycling
            result = agent.sync(allow_mass_deactivation=True)
            assert result.outcome in (Outcome.OK, Outcome.PARTIAL, Outcome.ERROR), result.message
            assert result.outcome is not Outcome.GUARD
        fake_split.chaos(None)
        result = agent.sync(allow_mass_deactivation=True)
        assert result.outcome is Outcome.OK, f"seed {seed} step {step}: {result.message}"
        assert_projection(fake_split, people, teams)
        assert agent.sync().plan.is_empty, f"seed {seed} step {step}: not converged"
        evolve(rnd, people, teams)
    faults = [r for r in fake_split.requests if r.status in (500, 502, 503, 504)]
    assert [r for r in faults if r.method != "GET"], "the chaos never struck writes"
    assert not [r for r in fake_split.requests if r.method == "DELETE" and r.path.startswith("/Users")]
