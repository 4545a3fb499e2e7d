"""End to end against the fake Split: Split's own behaviour and failure modes.

The fake (tests/fakes/split.py) reproduces bearer auth and 401 on a regenerated token, 429
with Split's rate-limit headers, 5xx bursts, 409 on a duplicate userName, 400 on group names
of 25+ characters, and keeps a request log these tests assert on.
"""

from __future__ import annotations

import threading

from agent.core.outcome import Outcome
from agent.app import make_target
from agent.store.state import State
from tests.conftest import FakeTime, group, user


def people(n: int, domain: str = "example.org"):
    return [user(str(i), f"p{i:03d}@{domain}", f"G{i}", f"F{i}") for i in range(n)]


def failing_after_probe(split, n: int, status: int):
    """A target whose requests after the token probe meet ``n`` injected ``status`` errors."""
    def build(config):
        target = make_target(config)
        probe = target.probe

        def probe_then_fail():
            probe()
            split.fail_next(n, status=status)
        target.probe = probe_then_fail
        return target
    return build


def no_wait_target(config):
    fake_time = FakeTime()       # waits advance a fake clock instead of being spent
    return make_target(config, clock=fake_time.clock, sleep=fake_time.sleep)


def writes(split, method=None, prefix=""):
    return [r for r in split.writes() if (method is None or r.method == method)
            and r.path.startswith(prefix)]


def test_first_sync_then_nothing(fake_split, split_ws):
    split_ws.write_directory(people(5), [group("g", "Team", ["0", "1"])])
    agent = split_ws.agent()
    assert agent.sync().outcome is Outcome.OK
    assert len(fake_split.users) == 5
    fake_split.reset_log()
    assert agent.sync().outcome is Outcome.OK
    assert [(r.method, r.path) for r in fake_split.requests] == [("GET", "/Users")]   # the probe


def test_order_of_requests_and_never_a_user_delete(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(4), [group("g", "Team", ["0", "1", "2"]), group("h", "Old", ["3"])])
    agent = ws.agent()
    agent.sync()
    fake_split.reset_log()
    ws.write_directory(people(3) + [user("9", "new@example.org")],
                       [group("g", "Team", ["0", "1", "9"])])
    assert agent.sync(allow_mass_deactivation=True).outcome is Outcome.OK
    log = [(r.method, r.path.split("/")[1], r.body) for r in fake_split.writes()]
    kinds = []
    for method, resource, body in log:
        if method == "POST":
            kinds.append(f"create {resource}")
        elif method == "DELETE":
            kinds.append(f"delete {resource}")
        else:
            ops = body["Operations"]
            if resource == "Users":
                kinds.append("deactivate" if ops[-1].get("path") == "active" else "update user")
            else:
                kinds.append(ops[0]["op"].lower() + " members")   # Entra writes "Add"
    assert kinds == ["create Users", "add members", "remove members", "delete Groups", "deactivate"]
    assert not [r for r in fake_split.requests if r.method == "DELETE" and r.path.startswith("/Users")]
    p3 = next(u for u in fake_split.users.values() if u["userName"] == "p003@example.org")
    assert p3["active"] is False


def test_an_expired_token_stops_the_run_and_records_nothing_more(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(3), [])
    agent = ws.agent()
    agent.sync()
    fake_split.token = "regenerated"
    ws.write_directory(people(6), [group("g", "Team", ["0", "4"])])
    fake_split.reset_log()
    result = agent.sync()
    assert result.outcome is Outcome.ERROR
    assert "token was rejected" in result.message and "expired" in result.message
    assert len(fake_split.requests) <= ws.agent().config.target.concurrency  # stopped at once
    with State.open(ws.state, lock=False) as state:
        assert len(state.snapshot().users) == 3
        assert state.runs(1)[0].outcome == "error"
    # the admin installs the new token: the next run converges
    ws.token = "regenerated"
    ws.write_config()
    result = ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert len(fake_split.users) == 6


def target_on(fake_time):
    def build(config):
        return make_target(config, clock=fake_time.clock, sleep=fake_time.sleep)
    return build


def test_rate_limit_429_waits_as_told_then_succeeds(fake_split, split_ws):
    split_ws.write_directory(people(3), [])
    fake_time = FakeTime()
    target = target_on(fake_time)

    fake_split.fail_next(2, status=429, headers={"X-RateLimit-Reset-Seconds-Org": "7",
                                                  "X-RateLimit-Reset-Seconds-IP": "3"})
    result = split_ws.agent(target_factory=target).sync()
    assert result.outcome is Outcome.OK
    assert len(fake_split.users) == 3
    sleeps = fake_time.waits          # retry waits; pacing's millisecond gaps are not counted
    assert len(sleeps) == 2 and all(7 <= s < 8 for s in sleeps)   # the larger reset header


def test_retry_after_comes_first(fake_split, split_ws):
    split_ws.write_directory(people(1), [])
    fake_time = FakeTime()
    target = target_on(fake_time)

    fake_split.fail_next(1, status=429, retry_after=2,
                         headers={"X-RateLimit-Reset-Seconds-Org": "30"})
    assert split_ws.agent(target_factory=target).sync().outcome is Outcome.OK
    sleeps = fake_time.waits
    assert len(sleeps) == 1 and 2 <= sleeps[0] < 3


def test_a_burst_of_server_errors_is_retried(fake_split, split_ws):
    split_ws.write_directory(people(2), [group("g", "Team", ["0", "1"])])
    fake_split.fail_next(3, status=503)
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert len(fake_split.users) == 2
    assert len(fake_split.groups) == 1


def test_errors_that_do_not_clear_fail_the_operation_not_the_run(fake_split, split_ws):
    split_ws.write_directory(people(1), [])
    split_ws.agent().sync()
    split_ws.write_directory(people(2), [])
    fake_split.reset_log()
    result = split_ws.agent(target_factory=failing_after_probe(fake_split, 50, 503)).sync()
    assert result.outcome is Outcome.FAILED           # its one operation failed
    assert len(result.report.failed) == 1
    attempts = [r for r in fake_split.requests if r.method == "POST"]
    assert len(attempts) == split_ws.agent().config.target.max_attempts


def test_a_create_answered_by_a_gateway_error_is_looked_up_not_resent(fake_split, split_ws):
    split_ws.write_directory(people(1), [])
    split_ws.agent().sync()
    split_ws.write_directory(people(2), [])
    fake_split.reset_log()
    # the POST may have been carried out
    result = split_ws.agent(target_factory=failing_after_probe(fake_split, 1, 504)).sync()
    assert result.outcome is Outcome.FAILED         # not there: fails for this cycle
    assert [r.method for r in fake_split.requests] == ["GET", "POST", "GET"]
    assert "not resent" in result.report.failed[0][1]
    assert split_ws.agent().sync().outcome is Outcome.OK   # the next cycle creates it
    assert len(fake_split.users) == 2


def test_the_agent_stays_under_its_rate_and_never_collects_429s(fake_split, split_ws):
    split_ws.write_directory(people(24), [])
    text = split_ws.config.read_text().replace("rate_limit = 1000.0", "rate_limit = 8.0")
    split_ws.config.write_text(text)
    fake_split.rate_limit(10, window_seconds=1.0)
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK
    assert [r for r in fake_split.requests if r.status == 429] == []
    assert len(fake_split.users) == 24


def test_concurrency_is_bounded(fake_split, split_ws):
    split_ws.write_directory(people(16), [])
    fake_split.latency = 0.05
    assert split_ws.agent().sync().outcome is Outcome.OK
    assert 2 <= fake_split.max_in_flight <= 4


def test_a_duplicate_username_in_another_case_is_adopted_not_duplicated(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(1), [])
    ws.agent().sync()                                   # the snapshot is no longer empty
    existing = fake_split.seed_user("Zed@Example.org", active=False)
    ws.write_directory(people(1) + [user("z", "zed@example.org", "Zed", "Z")], [])
    fake_split.reset_log()
    result = ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert result.report.adopted == 1
    zeds = [u for u in fake_split.users.values() if u["userName"].lower() == "zed@example.org"]
    assert [u["id"] for u in zeds] == [existing]
    assert zeds[0]["active"] is True                      # made to match the source
    methods = [r.method for r in fake_split.requests]
    assert methods == ["GET", "POST", "GET", "PATCH"]     # probe, create -> 409 -> look up -> fix


def test_onboarding_adopts_what_the_target_already_holds(fake_split, split_ws):
    ws = split_ws
    alice = fake_split.seed_user("ALICE@example.org", name={"givenName": "Alice", "familyName": "A"})
    team = fake_split.seed_group("Team", [alice])
    ws.write_directory([user("a", "alice@example.org", "Alice", "A"), user("b", "bob@example.org")],
                       [group("g", "Team", ["a", "b"])])
    result = ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert result.adopted == 2
    posts = [r.path for r in fake_split.writes() if r.method == "POST"]
    assert posts == ["/Users"]                            # only bob is new
    assert len(fake_split.users) == 2 and len(fake_split.groups) == 1
    assert {m["value"] for m in fake_split.groups[team]["members"]} == set(fake_split.users)


def test_a_lost_response_to_a_create_is_resolved_by_lookup(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(1), [])
    ws.agent().sync()
    ws.write_directory(people(2), [])
    text = ws.config.read_text().replace("timeout = 5", "timeout = 0.5")
    ws.config.write_text(text)
    fake_split.hang_seconds = 2
    fake_split.hang_after_write_next(1)
    fake_split.reset_log()
    result = ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert len(fake_split.users) == 2                     # no duplicate
    assert len([r for r in fake_split.requests if r.method == "POST"]) == 1


def test_group_names_split_refuses_are_reported_and_not_sent(fake_split, split_ws):
    ws = split_ws
    long_name = "Customer Success Managers EMEA"          # 30 characters
    ws.write_directory(people(2), [group("g1", long_name, ["0"]), group("g2", "Short", ["1"])])
    result = ws.agent().sync()
    assert result.outcome is Outcome.REFUSED and result.report.failed == []
    assert [(op.kind.value, op.key) for op in result.report.refused] == [("create_group", long_name)]
    assert "25 characters" in result.report.refused[0].refused
    assert [g["displayName"] for g in fake_split.groups.values()] == ["Short"]
    assert not [r for r in fake_split.requests if r.body and long_name in str(r.body)]
    with State.open(ws.state, lock=False) as state:
        assert state.failures()[0]["key"] == long_name
        assert state.failures()[0]["op"] == "refused"


def test_a_rejected_user_fails_alone(fake_split, split_ws):
    ws = split_ws
    ws.write_directory([user("1", "ok@example.org"), user("2", "bad@example.org")], [])
    original = fake_split.users

    def target(config):
        t = make_target(config)
        create = t.create_user

        def failing(attributes, active, external_id):
            if attributes["userName"] == "bad@example.org":
                from connectors.base import RejectedError
                raise RejectedError("POST Users: HTTP 400: invalid value (invalidValue)", 400)
            return create(attributes, active, external_id)

        t.create_user = failing
        return t

    result = ws.agent(target_factory=target).sync()
    assert result.outcome is Outcome.REFUSED         # the target said no: a refusal, not a failure
    assert [u["userName"] for u in original.values()] == ["ok@example.org"]


def test_guard_stops_on_an_empty_source_and_sends_nothing(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(5), [group("g", "Team", ["0"])])
    ws.agent().sync()
    ws.write_directory([], [])
    fake_split.reset_log()
    result = ws.agent().sync()
    assert result.outcome is Outcome.GUARD
    assert "no users" in result.guard.reason
    assert fake_split.writes() == []
    assert all(u["active"] for u in fake_split.users.values())


def test_guard_threshold_and_its_override(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(20), [])
    ws.write_config(extra='[sync]\nmax_deactivations = 2\n')
    ws.agent().sync()
    ws.write_directory(people(17), [])                    # 3 leave: more than 2
    fake_split.reset_log()
    result = ws.agent().sync()
    assert result.outcome is Outcome.GUARD
    assert "3 deactivations" in result.guard.reason
    assert fake_split.writes() == []
    result = ws.agent().sync(allow_mass_deactivation=True)
    assert result.outcome is Outcome.OK
    assert sum(1 for u in fake_split.users.values() if not u["active"]) == 3


def test_deactivate_false_leaves_leavers_alone(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(3), [])
    ws.write_config(extra='[sync]\ndeactivate = false\n')
    ws.agent().sync()
    ws.write_directory(people(2), [])
    result = ws.agent().sync()
    assert result.plan.is_empty
    assert all(u["active"] for u in fake_split.users.values())


def test_only_limits_the_sync_to_named_objects(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(3), [group("g", "Team", ["0"])])
    result = ws.agent().sync(only=["P001@example.org"])
    assert result.outcome is Outcome.OK
    assert [u["userName"] for u in fake_split.users.values()] == ["p001@example.org"]
    assert fake_split.groups == {}


def test_a_stop_request_lets_in_flight_work_finish_and_sends_nothing_new(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(30), [])
    fake_split.latency = 0.05
    stop = threading.Event()
    done = []

    def progress(n, total):
        done.append(n)
        if n == 5:
            stop.set()

    result = ws.agent().sync(stop=stop, progress=progress)
    assert result.report.interrupted
    created = len(fake_split.users)
    assert 5 <= created < 30
    with State.open(ws.state, lock=False) as state:
        assert len(state.snapshot().users) == created      # every confirmed create recorded
    fake_split.latency = 0
    assert ws.agent().sync().outcome is Outcome.OK
    assert len(fake_split.users) == 30
    assert len({u["userName"] for u in fake_split.users.values()}) == 30


def test_a_group_of_many_members_is_sent_in_chunks_of_100(fake_split, split_ws):
    ws = split_ws
    ws.write_directory(people(250), [group("g", "Everyone", [str(i) for i in range(250)])])
    assert ws.agent().sync().outcome is Outcome.OK
    patches = writes(fake_split, "PATCH", "/Groups")
    assert [len(r.body["Operations"][0]["value"]) for r in patches] == [100, 100, 50]
    ws.write_directory(people(250), [group("g", "Everyone", [str(i) for i in range(120)])])
    fake_split.reset_log()
    assert ws.agent().sync(allow_mass_deactivation=True).outcome is Outcome.OK
    patches = writes(fake_split, "PATCH", "/Groups")
    # the default (Entra's) dialect lists the members to remove in one operation's value
    assert [len(r.body["Operations"][0]["value"]) for r in patches] == [100, 30]
    assert all(op == {"op": "Remove", "path": "members", "value": op["value"]}
               for r in patches for op in r.body["Operations"])


def test_the_rfc_dialect_removes_members_by_filter_in_chunks_of_100(fake_split, split_ws):
    ws = split_ws
    ws.dialect = "rfc"
    ws.write_config()
    ws.write_directory(people(250), [group("g", "Everyone", [str(i) for i in range(250)])])
    assert ws.agent().sync().outcome is Outcome.OK
    ws.write_directory(people(250), [group("g", "Everyone", [str(i) for i in range(120)])])
    fake_split.reset_log()
    assert ws.agent().sync(allow_mass_deactivation=True).outcome is Outcome.OK
    patches = writes(fake_split, "PATCH", "/Groups")
    assert [len(r.body["Operations"]) for r in patches] == [100, 30]
    assert all(op["path"].startswith('members[value eq "') for r in patches for op in r.body["Operations"])


def test_admin_group_keeps_a_member(fake_split, split_ws):
    ws = split_ws
    ws.write_config(extra='[sync]\nadmin_group = "Split_Administrators"\n')
    other = group("b", "Other", ["1"])      # not every group emptied: the group guard passes
    ws.write_directory(people(2), [group("a", "Split_Administrators", ["0"]), other])
    ws.agent().sync()
    ws.write_directory(people(2), [group("a", "Split_Administrators", []), other])
    result = ws.agent().sync()
    assert result.outcome is Outcome.REFUSED
    assert "at least one member" in result.report.refused[0].refused
    admins = next(g for g in fake_split.groups.values() if g["displayName"] == "Split_Administrators")
    assert len(admins["members"]) == 1


def test_when_the_target_cannot_be_read_for_adoption_the_cycle_stops(fake_split, split_ws):
    split_ws.write_directory(people(2), [])
    fake_split.fail_next(50, status=502)
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.ERROR
    assert "reading the target failed" in result.message
    assert fake_split.writes() == []


def test_an_account_recreated_in_the_source_keeps_its_split_user_active(fake_split, split_ws):
    """Deleted and re-created in the directory: new source id, same e-mail. The new record
    adopts the Split account; the old record's departure must not switch it off."""
    ws = split_ws
    ws.write_directory(people(3), [group("g", "Team", ["0"])])
    ws.agent().sync()
    ws.write_directory(people(3)[1:] + [user("new-0", "p000@example.org", "G0", "F0")],
                       [group("g", "Team", ["new-0"])])
    result = ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    p0 = [u for u in fake_split.users.values() if u["userName"] == "p000@example.org"]
    assert len(p0) == 1 and p0[0]["active"] is True
    assert ws.agent().sync().plan.is_empty
    with State.open(ws.state, lock=False) as state:
        assert set(state.snapshot().users) == {"1", "2", "new-0"}


def test_reconcile_puts_right_what_was_changed_in_split_by_hand(fake_split, split_ws):
    ws = split_ws
    ws.write_directory([user("1", "ann@example.org", "Ann", "A", title="Engineer"),
                        user("2", "ben@example.org", "Ben", "B")],
                       [group("g", "Team", ["1", "2"])])
    ws.agent().sync()
    ann = next(sid for sid, u in fake_split.users.items() if u["userName"] == "ann@example.org")
    ben = next(sid for sid, u in fake_split.users.items() if u["userName"] == "ben@example.org")
    team = next(iter(fake_split.groups))
    fake_split.users[ann].update(active=False, title="hand-edited")
    fake_split.groups[team]["members"] = [{"value": ann}]
    del fake_split.users[ben]                          # deleted in Split by hand
    assert ws.agent().sync().plan.is_empty             # the snapshot cannot know

    result = ws.agent().sync(reconcile=True)
    assert result.outcome is Outcome.OK, result.message
    assert result.target_read.drifted == ["ann@example.org", "Team"]
    assert result.target_read.vanished == ["ben@example.org"]
    users = {u["userName"]: u for u in fake_split.users.values()}
    assert users["ann@example.org"]["active"] is True
    assert users["ann@example.org"]["title"] == "Engineer"
    assert "ben@example.org" in users                  # created again
    members = {m["value"] for m in fake_split.groups[team]["members"]}
    assert members == {users["ann@example.org"]["id"], users["ben@example.org"]["id"]}
    assert ws.agent().sync(reconcile=True).plan.is_empty


def test_adoption_leaves_attributes_the_source_does_not_map_alone(fake_split, split_ws):
    ws = split_ws
    fake_split.seed_user("ann@example.org", nickName="Annie", title="Old title",
                         name={"givenName": "Ann", "familyName": "A"})
    ws.write_directory([user("1", "ann@example.org", "Ann", "A", title="New title")], [])
    result = ws.agent().sync()
    assert result.outcome is Outcome.OK
    ann = next(iter(fake_split.users.values()))
    assert ann["nickName"] == "Annie"                  # never ours: never removed
    assert ann["title"] == "New title"
    patches = [r for r in fake_split.writes() if r.method == "PATCH"]
    assert [op["path"] for r in patches for op in r.body["Operations"]] == ["displayName", "title"]


def test_a_rejected_token_is_reported_even_with_nothing_to_send(fake_split, split_ws):
    split_ws.write_directory(people(2), [])
    split_ws.agent().sync()
    fake_split.token = "regenerated"
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.ERROR
    assert result.message.startswith("the SCIM token was rejected")
    assert "HTTP 401" in result.message


def test_an_unreachable_target_stops_the_run_at_once(split_ws):
    split_ws.url = "http://127.0.0.1:9/scim/v2"            # discard port: nothing listens
    split_ws.write_config()
    split_ws.write_directory(people(3), [])
    result = split_ws.agent(target_factory=no_wait_target).sync()
    assert result.outcome is Outcome.ERROR
    assert "cannot connect to the SCIM target at 127.0.0.1:9" in result.message
    assert "[target] url" in result.message


def test_only_with_a_name_that_matches_nothing_is_an_error(fake_split, split_ws):
    split_ws.write_directory(people(2), [])
    result = split_ws.agent().sync(only=["nobody@example.org"])
    assert result.outcome is Outcome.ERROR
    assert "nobody@example.org" in result.message
    assert fake_split.requests == []


def test_only_a_rejected_token_holds_the_daemon_an_outage_does_not(fake_split, split_ws):
    split_ws.write_directory(people(1), [])
    fake_split.token = "regenerated"
    assert "token was rejected" in split_ws.agent().sync().hold.reason
    split_ws.url = "http://127.0.0.1:9/scim/v2"            # nothing listens: an outage
    split_ws.write_config()
    result = split_ws.agent(target_factory=no_wait_target).sync()
    assert result.outcome is Outcome.ERROR and result.hold is None


def test_a_stop_requested_before_the_cycle_sends_nothing(fake_split, split_ws):
    split_ws.write_directory(people(3), [])
    stop = threading.Event()
    stop.set()
    result = split_ws.agent().sync(stop=stop)
    assert result.report.interrupted
    assert fake_split.requests == []


def test_a_sync_while_another_agent_holds_the_snapshot_attempts_nothing(fake_split, split_ws):
    split_ws.write_directory(people(1), [])
    with State.open(split_ws.state):                       # another agent, mid-cycle
        result = split_ws.agent().sync()
    assert result.busy and result.outcome is Outcome.ERROR
    assert "is using this snapshot" in result.message
    assert fake_split.requests == []
