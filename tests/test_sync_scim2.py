"""End to end against a real third-party SCIM server (scim2-server, pinned).

The agent reads a file source and pushes to scim2-server on loopback; assertions read the
server back over HTTP, as any SCIM client would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent.core.outcome import Outcome
from agent.app import make_target
from tests.conftest import group, user

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "directory.json"


class CountingTargets:
    """A target factory that remembers the targets it built, to count requests."""

    def __init__(self):
        self.built = []

    def __call__(self, config):
        target = make_target(config)
        self.built.append(target)
        return target

    @property
    def last(self):
        return self.built[-1]


def by_name(resources, key):
    return {r[key]: r for r in resources}


def member_names(server, group_resource):
    users = {u["id"]: u["userName"] for u in server.dump("Users")}
    return {users[m["value"]] for m in group_resource.get("members") or []}


def test_bundled_example_syncs_and_a_second_sync_writes_nothing(scim2, scim2_ws):
    shutil.copy(EXAMPLE, scim2_ws.source)
    targets = CountingTargets()
    agent = scim2_ws.agent(target_factory=targets)

    first = agent.sync()
    assert first.outcome is Outcome.OK, first.message

    source = json.loads(EXAMPLE.read_text())
    active = [u for u in source["users"] if u["active"]]
    users = by_name(scim2.dump("Users"), "userName")
    assert set(users) == {u["userName"] for u in active}      # disabled, never pushed: not created
    alice = users["alice.archer@example.org"]
    assert alice["name"] == {"givenName": "Alice", "familyName": "Archer"}
    assert alice["emails"] == [{"value": "alice.archer@example.org", "type": "work", "primary": True}]
    assert alice["externalId"] == "u-1000" and alice["active"] is True
    assert alice["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"] == "Engineering"

    groups = by_name(scim2.dump("Groups"), "displayName")
    assert set(groups) == {g["displayName"] for g in source["groups"]}
    # nested: Engineering holds its own members and Platform Team's
    eng = member_names(scim2, groups["Engineering"])
    platform = member_names(scim2, groups["Platform Team"])
    assert platform <= eng and len(eng) > len(platform)

    second = agent.sync()
    assert second.outcome is Outcome.OK
    assert second.plan.is_empty
    assert targets.last.write_requests == 0
    assert targets.last.requests_sent == 1             # the token probe, nothing else


def test_each_kind_of_change_reaches_the_server(scim2, scim2_ws):
    ws = scim2_ws
    people = [user("1", "ann@example.org", "Ann", "A"), user("2", "ben@example.org", "Ben", "B"),
              user("3", "cat@example.org", "Cat", "C"), user("4", "dan@example.org", "Dan", "D")]
    teams = [group("g1", "Sales", ["1", "2"]), group("g2", "Legal", ["3"])]
    ws.write_directory(people, teams)
    targets = CountingTargets()
    agent = ws.agent(target_factory=targets)
    assert agent.sync().outcome is Outcome.OK

    # one changed attribute -> exactly one PATCH
    people[0] = user("1", "ann@example.org", "Ann", "Anderson")
    ws.write_directory(people, teams)
    result = agent.sync()
    assert result.outcome is Outcome.OK
    assert [op.kind.value for op in result.plan.ops] == ["update_user"]
    assert targets.last.write_requests == 1
    assert by_name(scim2.dump("Users"), "userName")["ann@example.org"]["name"]["familyName"] == "Anderson"

    # disable Ben, remove Dan, move Cat into Sales, delete Legal
    people = [people[0], user("2", "ben@example.org", "Ben", "B", active=False),
              user("3", "cat@example.org", "Cat", "C")]
    teams = [group("g1", "Sales", ["1", "2", "3"])]
    ws.write_directory(people, teams)
    assert agent.sync().outcome is Outcome.GUARD                  # 2 of 4 is above the 10% guard
    assert agent.sync(allow_mass_deactivation=True).outcome is Outcome.OK
    users = by_name(scim2.dump("Users"), "userName")
    assert users["ben@example.org"]["active"] is False
    assert users["dan@example.org"]["active"] is False          # deactivated, never deleted
    assert users["cat@example.org"]["active"] is True
    groups = by_name(scim2.dump("Groups"), "displayName")
    assert set(groups) == {"Sales"}
    assert member_names(scim2, groups["Sales"]) == {"ann@example.org", "cat@example.org"}

    # Ben returns, and Sales is renamed
    people[1] = user("2", "ben@example.org", "Ben", "B")
    teams = [group("g1", "Sales EMEA", ["1", "2", "3"])]
    ws.write_directory(people, teams)
    result = agent.sync()
    assert result.outcome is Outcome.OK
    assert {op.kind.value for op in result.plan.ops} == {"reactivate_user", "update_group", "add_members"}
    assert by_name(scim2.dump("Users"), "userName")["ben@example.org"]["active"] is True
    groups = by_name(scim2.dump("Groups"), "displayName")
    assert member_names(scim2, groups["Sales EMEA"]) == {"ann@example.org", "ben@example.org",
                                                        "cat@example.org"}
    assert agent.sync().plan.is_empty


def test_an_email_change_is_an_update_of_the_same_account(scim2, scim2_ws):
    ws = scim2_ws
    ws.write_directory([user("1", "old@example.org")], [group("g", "Team", ["1"])])
    agent = ws.agent()
    agent.sync()
    before = scim2.dump("Users")
    ws.write_directory([user("1", "new@example.org")], [group("g", "Team", ["1"])])
    result = agent.sync()
    assert [op.kind.value for op in result.plan.ops] == ["update_user"]
    after = scim2.dump("Users")
    assert len(after) == 1 and after[0]["id"] == before[0]["id"]
    assert after[0]["userName"] == "new@example.org"
    assert after[0]["emails"][0]["value"] == "new@example.org"


def test_a_generated_directory_larger_than_a_page_syncs(scim2, scim2_ws):
    ws = scim2_ws
    people = [user(str(i), f"user{i:04d}@example.org", f"G{i}", f"F{i}", title=f"T{i % 7}")
              for i in range(260)]
    teams = [group(f"g{j}", f"Team {j}", [str(i) for i in range(j, 260, 13)]) for j in range(13)]
    ws.write_directory(people, teams)
    agent = ws.agent()
    assert agent.sync().outcome is Outcome.OK
    assert len(scim2.dump("Users")) == 260
    groups = scim2.dump("Groups")
    assert sorted(len(g["members"]) for g in groups) == [20] * 13

    # a lost snapshot: the next sync adopts everything (reading the target in pages)
    ws.state.unlink()
    targets = CountingTargets()
    result = ws.agent(target_factory=targets).sync()
    assert result.outcome is Outcome.OK, result.message
    assert result.adopted == 260 + 13
    assert targets.last.write_requests == 0
    assert len(scim2.dump("Users")) == 260
