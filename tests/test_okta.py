"""The Okta source against a fake Okta org on loopback (tests/fakes/okta.py).

Time is a shared FakeClock: the connector sleeps on it, the fake stamps Date, rate-limit
windows and token expiry with it, so waits are checked without really waiting.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.config import ConfigError, load
from connectors.base import (ChangeSet, SettingError, CursorExpired, Directory, Secret,
                             SourceAuthError, SourceError)
from connectors.okta import OktaSource
from tests.fakes.okta import ALL_STATUSES, FakeClock, FakeOkta
from tests.source_contract import PEOPLE, TEAMS, SourceContract, team_people

START = 1_700_000_000.0


# ---------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def okta(clock):
    with FakeOkta(clock=clock) as fake:
        yield fake


def source_for(okta: FakeOkta, **settings) -> OktaSource:
    if "client_id" not in settings:
        settings.setdefault("token", Secret(okta.api_token, "test"))
    src = OktaSource(OktaSource.Settings(org_url=okta.url, **settings),
                     clock=okta.clock.time, sleep=okta.clock.sleep)
    return src



def seed_contract(okta: FakeOkta) -> dict[str, str]:
    ids = {}
    for p in PEOPLE:
        ids[p.key] = okta.add_user(p.email, p.given, p.family,
                                   status="ACTIVE" if p.active else "DEPROVISIONED",
                                   title=p.title, department=p.department)
    for team in TEAMS:
        okta.add_group(team.name, [ids[k] for k in sorted(team_people(team.key))])
    okta.add_group("Everyone", list(ids.values()), type="BUILT_IN")
    okta.clock.advance(3600)
    return ids


def pem_key(kind: str = "rsa") -> tuple[str, str]:
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
           else ec.generate_private_key(ec.SECP256R1()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def emails(users) -> set[str]:
    return {u.attributes["profile.email"] for u in users.values()}


# ---------------------------------------------------------------------------------------------
# The shared contract


class TestOktaContract(SourceContract):
    source_cls = OktaSource

    @pytest.fixture
    def seeded_source(self, okta):
        seed_contract(okta)
        src = source_for(okta)
        yield src
        src.close()

    @pytest.fixture
    def failing_source(self, clock):
        with FakeOkta(clock=clock, page_cap=2) as fake:
            seed_contract(fake)
            fake.fail("/api/v1/users", page=2, action="drop")
            src = source_for(fake)
            yield src
            src.close()


# ---------------------------------------------------------------------------------------------
# Statuses


def test_every_status_maps_to_active_and_staged_users_need_include_staged(okta):
    ids = {s: okta.add_user(f"{s.lower()}@example.org", s.title(), "User", status=s)
           for s in ALL_STATUSES}
    directory = source_for(okta).read()
    expected = {"ACTIVE": True, "PASSWORD_EXPIRED": True, "LOCKED_OUT": True,
                "RECOVERY": True, "SUSPENDED": False, "DEPROVISIONED": False}
    assert {s: directory.users[ids[s]].active for s in expected} == expected
    assert ids["STAGED"] not in directory.users and ids["PROVISIONED"] not in directory.users
    # DEPROVISIONED users are asked for explicitly: the plain list leaves them out
    assert any(r.query.get("filter") == 'status eq "DEPROVISIONED"' for r in okta.requests)

    staged = source_for(okta, include_staged=True).read()
    assert staged.users[ids["STAGED"]].active and staged.users[ids["PROVISIONED"]].active
    assert len(staged.users) == len(ALL_STATUSES)


def test_records_keep_okta_names_flat_and_json_friendly(okta):
    uid = okta.add_user("ann@example.org", "Ann", "Lee", title="CTO",
                        displayName="Dr Ann Lee", nicknames=["al", None], manager={"id": "x"})
    user = source_for(okta).read().users[uid]
    assert user.attributes["profile.displayName"] == "Dr Ann Lee"
    assert user.attributes["profile.nicknames"] == ["al"]
    assert user.attributes["profile.manager"] == '{"id": "x"}'
    assert user.attributes["status"] == "ACTIVE"


def test_the_everyone_group_is_not_pushed(okta):
    seed_contract(okta)
    names = {g.attributes["profile.name"] for g in source_for(okta).read().groups.values()}
    assert "Everyone" not in names and "Engineering" in names
    # and its (huge) member list is not even read
    assert not any("/groups/" in r.path and r.path.endswith("/users")
                   and okta.groups.get(r.path.split("/")[4], {}).get("type") == "BUILT_IN"
                   for r in okta.requests)


# ---------------------------------------------------------------------------------------------
# Paging


def test_paging_follows_next_links_across_many_short_pages(clock):
    with FakeOkta(clock=clock, page_cap=7) as okta:
        ids = {okta.add_user(f"u{i}@example.org", "U", str(i)) for i in range(450)}
        okta.add_group("All", sorted(ids)[:300])
        directory = source_for(okta).read()
        assert set(directory.users) == ids
        group = next(iter(directory.groups.values()))
        assert len(group.members) == 300
        plain = [r for r in okta.requests if r.path == "/api/v1/users"
                 and "filter" not in r.query]
        assert len(plain) == math.ceil(450 / 7)
        assert plain[0].query["limit"] == "200"
        assert all("after" in r.query for r in plain[1:])   # followed, not constructed
        assert okta.count(prefix="/api/v1/groups/") == math.ceil(300 / 7)


def test_a_next_link_to_another_host_is_refused(clock):
    with FakeOkta(clock=clock, page_cap=2, link_base="http://127.0.0.2:1") as okta:
        for i in range(5):
            okta.add_user(f"u{i}@example.org", "U", str(i))
        with pytest.raises(SourceError, match="another host"):
            source_for(okta).read()


def test_a_next_link_that_repeats_stops_the_read():
    def looping(request):
        return httpx.Response(200, json=[{"id": "00g1", "profile": {"name": "G"}}], headers={
            "Link": '<https://acme.okta.com/api/v1/groups?after=00g1>; rel="next"'})
    clock = FakeClock(START)
    src = OktaSource(OktaSource.Settings(org_url="https://acme.okta.com", token=Secret("t")),
                     transport=httpx.MockTransport(looping), clock=clock.time,
                     sleep=clock.sleep)
    with pytest.raises(SourceError, match="GET /api/v1/groups on Okta acme.okta.com: the next "
                                          "page repeats an earlier one"):
        src.read()


# ---------------------------------------------------------------------------------------------
# Failures mid-read


@pytest.mark.parametrize("action", [500, 503, "drop"])
def test_a_failure_mid_paging_raises_source_error(clock, action):
    with FakeOkta(clock=clock, page_cap=3) as okta:
        for i in range(20):
            okta.add_user(f"u{i}@example.org", "U", str(i))
        okta.fail("/api/v1/users", page=3, action=action)
        src = source_for(okta)
        with pytest.raises(SourceError, match=r"/api/v1/users.*gave up after 6 attempts"):
            src.read()
        assert okta.count("/api/v1/users") == 2 + 6      # pages 1-2, then 6 tries of page 3


def test_a_fault_that_clears_is_retried(clock):
    with FakeOkta(clock=clock, page_cap=3) as okta:
        for i in range(20):
            okta.add_user(f"u{i}@example.org", "U", str(i))
        okta.fail("/api/v1/users", page=2, action="drop", times=1)
        okta.fail("/api/v1/users", page=4, action=500, times=2)
        assert len(source_for(okta).read().users) == 20


def test_a_failure_mid_paging_of_a_change_read_raises(clock):
    with FakeOkta(clock=clock, page_cap=2) as okta:
        ids = [okta.add_user(f"u{i}@example.org", "U", str(i)) for i in range(10)]
        src = source_for(okta)
        first = src.read()
        clock.advance(300)
        for uid in ids:
            okta.update_user(uid, title="new")
        okta.fail("/api/v1/users", page=3, action=502)
        with pytest.raises(SourceError):
            src.read_changes(first.cursor, first)


# ---------------------------------------------------------------------------------------------
# Incremental reads


def test_read_changes_reports_changed_users_memberships_and_deactivations(okta, clock):
    ids = seed_contract(okta)
    eng = next(g for g, v in okta.groups.items() if v["profile"]["name"] == "Engineering")
    src = source_for(okta)
    first = src.read()
    assert first.cursor

    clock.advance(600)
    okta.update_user(ids["bob"], title="Lead Designer")
    okta.add_member(eng, ids["zoe"])
    okta.remove_member(eng, ids["alice"])
    okta.set_status(ids["dave"], "DEPROVISIONED")
    clock.advance(120)                  # beyond the cursor's overlap
    changes = src.read_changes(first.cursor, first)

    assert isinstance(changes, ChangeSet)
    assert set(changes.users) == {ids["bob"], ids["dave"], ids["zoe"], *okta.members[eng]}
    assert changes.users[ids["bob"]].attributes["profile.title"] == "Lead Designer"
    assert changes.users[ids["dave"]].active is False          # deactivated, not vanished
    assert set(changes.groups) == {eng}
    assert changes.groups[eng].members == frozenset(okta.members[eng])
    assert ids["alice"] not in changes.groups[eng].members
    assert not changes.removed_users and not changes.removed_groups
    filters = [r.query.get("filter", "") for r in okta.requests[-20:]]
    assert any(f.startswith('lastUpdated gt "') for f in filters)
    assert any("lastMembershipUpdated gt" in f for f in filters)

    view = changes.apply_to(first)
    clock.advance(600)
    quiet = src.read_changes(changes.cursor, view)
    assert len(quiet) == 0 and quiet.cursor > changes.cursor


def pages(n: int, size: int) -> int:
    """Calls a listing of n objects takes at this page size (an empty one still takes one)."""
    return max(1, math.ceil(n / size))


def okta_calls(okta: FakeOkta) -> dict[str, int]:
    counted: dict[str, int] = {}
    for r in okta.requests:
        path = re.sub(r"/(groups|users)/[^/]+/", r"/\1/{id}/", r.path)
        if r.query.get("filter"):
            path += " (filter)"
        counted[path] = counted.get(path, 0) + 1
    return counted


@pytest.mark.parametrize("n_users, sizes", [(1300, [1200, 5, 0]), (30, [3] * 40)])
def test_okta_full_and_change_reads_cost_the_documented_formula(okta, clock, n_users, sizes):
    """Full read: groups in pages of 200, each group's members in pages of 1 000 (one call
    for most groups), users in pages of 200, DEPROVISIONED users in pages of 200. Change
    read: one filtered listing of groups and one of users, and the members of each changed
    group. Okta has no bulk membership listing (expand=stats gives counts, not members)."""
    users = [okta.add_user(f"u{i}@example.org", "U", str(i)) for i in range(n_users)]
    gone = [okta.add_user(f"d{i}@example.org", "D", str(i), status="DEPROVISIONED")
            for i in range(2)]
    groups = [okta.add_group(f"G{g}", members=[users[(g + k) % n_users] for k in range(m)])
              for g, m in enumerate(sizes)]
    clock.advance(600)                  # the directory is older than the cursor's overlap
    src = source_for(okta)
    first = src.read()
    assert len(first.users) == n_users + len(gone) and len(first.groups) == len(groups)
    assert okta_calls(okta) == {
        "/api/v1/groups": pages(len(groups), 200),
        "/api/v1/groups/{id}/users": sum(pages(m, 1000) for m in sizes),
        "/api/v1/users": pages(n_users, 200),
        "/api/v1/users (filter)": pages(len(gone), 200)}
    assert {r.query["limit"] for r in okta.requests if r.path.endswith("/users")
            and "/groups/" in r.path} == {"1000"}

    okta.requests.clear()
    clock.advance(600)
    okta.update_user(users[1], title="Changed")
    okta.add_member(groups[0], users[2])
    clock.advance(120)
    changes = src.read_changes(first.cursor, first)
    assert users[1] in changes.users and set(changes.groups) == {groups[0]}
    assert okta_calls(okta) == {
        "/api/v1/groups (filter)": 1,
        "/api/v1/users (filter)": 1,
        "/api/v1/groups/{id}/users": pages(len(okta.members[groups[0]]), 1000)}


def test_the_cursor_is_server_time_minus_an_overlap(clock):
    with FakeOkta(clock=clock, skew=7200) as okta:      # server clock two hours ahead
        okta.add_user("a@example.org", "A", "A")
        cursor = source_for(okta).read().cursor
        assert "since=2023-11-15T00:12:20.000Z" in cursor   # START + 2h - 60 s


def test_a_change_in_the_overlap_window_is_not_lost(okta, clock):
    uid = okta.add_user("a@example.org", "A", "A")
    clock.advance(600)
    src = source_for(okta)
    first = src.read()
    okta.update_user(uid, title="same second as the read")
    changes = src.read_changes(first.cursor, first)
    assert changes.users[uid].attributes["profile.title"] == "same second as the read"


def test_cursor_expires_when_a_full_read_is_due_or_settings_change(okta, clock):
    okta.add_user("a@example.org", "A", "A")
    src = source_for(okta, full_read_every=timedelta(hours=1))
    first = src.read()
    clock.advance(1800)
    src.read_changes(first.cursor, first)
    clock.advance(1801)
    with pytest.raises(CursorExpired, match="full"):
        src.read_changes(first.cursor, first)
    with pytest.raises(CursorExpired):
        src.read_changes("garbage", first)
    staged = source_for(okta, include_staged=True)
    with pytest.raises(CursorExpired, match="scope"):
        staged.read_changes(first.cursor, first)


def test_a_hard_deleted_group_member_and_deleted_group(okta, clock):
    ids = seed_contract(okta)
    src = source_for(okta)
    first = src.read()
    clock.advance(600)
    okta.delete_user(ids["bob"])      # vanishes; the full read will drop it
    changes = src.read_changes(first.cursor, first)
    eng = next(g for g in changes.groups.values() if g.attributes["profile.name"] == "Engineering")
    assert ids["bob"] not in eng.members
    full = src.read()
    assert ids["bob"] not in full.users


def test_a_group_deleted_while_reading_is_skipped_not_fatal(okta, clock):
    ids = seed_contract(okta)
    src = source_for(okta)
    first = src.read()
    eng = next(g for g, v in okta.groups.items() if v["profile"]["name"] == "Engineering")
    okta.fail(f"/api/v1/groups/{eng}/users", page=1, action=404)   # gone after the listing
    assert eng not in src.read().groups
    clock.advance(600)
    okta.add_member(eng, ids["zoe"])
    changes = src.read_changes(first.cursor, first)
    assert changes.removed_groups == {eng}


def test_a_404_past_the_first_page_of_members_fails_the_read_and_deletes_nothing(okta):
    """Only a group that is gone from its first page on was deleted; a 404 on a later page
    (a cursor no longer taken) once dropped the group, and the agent deleted it from Split."""
    seed_contract(okta)
    okta.page_cap = 1                                   # every page one member long
    eng = next(g for g, v in okta.groups.items() if v["profile"]["name"] == "Engineering")
    assert len(okta.members[eng]) >= 2
    okta.fail(f"/api/v1/groups/{eng}/users", page=2, action=404)
    with pytest.raises(SourceError, match="answered 404 after 1 page"):
        source_for(okta).read()


# ---------------------------------------------------------------------------------------------
# Scope


def scoped_org(okta: FakeOkta):
    a = okta.add_user("a@example.org", "A", "A")
    b = okta.add_user("b@example.org", "B", "B")
    c = okta.add_user("c@example.org", "C", "C")
    scope = okta.add_group("Split Users", [a, b])
    eng = okta.add_group("Engineering", [a, c])
    mkt = okta.add_group("Marketing", [c])
    okta.clock.advance(3600)
    return a, b, c, scope, eng, mkt


@pytest.mark.parametrize("by", ["name", "id"])
def test_scope_groups_limit_users_and_pushed_groups(okta, by):
    a, b, c, scope, eng, mkt = scoped_org(okta)
    wanted = "split users" if by == "name" else scope
    directory = source_for(okta, groups=(wanted,)).read()
    assert set(directory.users) == {a, b}
    # the scope group, plus every group with a member in scope (Marketing has none)
    assert set(directory.groups) == {scope, eng}


def test_an_unknown_scope_group_is_an_error(okta):
    scoped_org(okta)
    with pytest.raises(SourceError, match="'Nobody'.*no single group"):
        source_for(okta, groups=("Nobody",)).read()


def test_scoped_read_changes_follow_users_into_and_out_of_scope(okta, clock):
    a, b, c, scope, eng, mkt = scoped_org(okta)
    src = source_for(okta, groups=("Split Users",))
    first = src.read()

    clock.advance(600)
    okta.add_member(scope, c)        # c enters: Marketing now has a member in scope
    changes = src.read_changes(first.cursor, first)
    assert set(changes.users) == {a, b, c}
    assert mkt in changes.groups and changes.groups[mkt].members == {c}
    view = changes.apply_to(first)

    clock.advance(600)
    okta.remove_member(scope, c)     # c leaves: Marketing is left with nobody in scope
    changes = src.read_changes(changes.cursor, view)
    assert changes.removed_users == {c}
    assert changes.removed_groups == {mkt}
    assert eng in view.groups and eng not in changes.removed_groups


# ---------------------------------------------------------------------------------------------
# Rate limits


def test_the_agent_slows_down_instead_of_collecting_429s(clock):
    with FakeOkta(clock=clock, rate_limit=10, window=60, page_cap=5) as okta:
        for i in range(150):                       # 30 pages of users
            okta.add_user(f"u{i}@example.org", "U", str(i))
        directory = source_for(okta).read()
        assert len(directory.users) == 150
        assert okta.count(status=429) <= 1
        assert okta.count("/api/v1/users") >= 30
        # it waited for windows to reset: 31 requests to /api/v1/users at 9 per window
        assert clock.now - START >= 2 * 60


def test_a_429_waits_until_the_reset_measured_against_the_server_date(clock):
    with FakeOkta(clock=clock, skew=3600) as okta:   # our clock is an hour behind
        okta.add_user("a@example.org", "A", "A")
        clock.advance(10)                            # 10 s into a 60 s window
        okta.consume("/api/v1/groups", 600)          # someone else spent the budget
        expected = 60 - okta.now() % 60 + 1          # reset - Date + 1, by the server clock
        src = source_for(okta)
        assert len(src.read().users) == 1
        assert okta.count(status=429) == 1
        assert expected <= max(clock.slept) <= expected + 0.3   # not an hour


def test_the_concurrent_limit_429_is_waited_out(okta, clock):
    okta.add_user("a@example.org", "A", "A")
    okta.concurrent_429s = 2
    assert len(source_for(okta).read().users) == 1
    assert okta.count(status=429) == 2


def test_rate_limit_retries_are_bounded(clock):
    with FakeOkta(clock=clock, rate_limit=0) as okta:
        with pytest.raises(SourceError, match=r"429 E0000047.*6 attempts"):
            source_for(okta).read()
        assert okta.count(status=429) == 6


# ---------------------------------------------------------------------------------------------
# OAuth service app


def oauth_source(okta: FakeOkta, kind: str = "rsa", **settings) -> OktaSource:
    private, public = pem_key(kind)
    okta.add_app("0oa-service-app", public, scopes=settings.pop("granted", None))
    return source_for(okta, client_id="0oa-service-app",
                      private_key=Secret(private, "test"), **settings)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_oauth_service_app_reads_with_a_cached_token(okta, kind):
    seed_contract(okta)
    src = oauth_source(okta, kind)
    assert len(src.read().users) == len(PEOPLE)
    src.read()
    assert okta.count("/oauth2/v1/token", status=200) == 1   # after one DPoP nonce round trip
    assert okta.count(status=401) == 0


def test_the_access_token_is_renewed_before_it_expires(clock):
    with FakeOkta(clock=clock, token_lifetime=120) as okta:
        okta.add_user("a@example.org", "A", "A")
        src = oauth_source(okta)
        src.read()
        clock.advance(100)
        src.read()
        assert okta.count("/oauth2/v1/token", status=200) == 1    # still comfortably valid
        clock.advance(10)                               # inside the renewal margin
        src.read()
        assert okta.count("/oauth2/v1/token", status=200) == 2
        assert okta.count(status=401) == 0


def test_a_revoked_access_token_is_replaced_once(okta):
    okta.add_user("a@example.org", "A", "A")
    src = oauth_source(okta)
    src.read()
    okta.access_tokens.clear()
    assert len(src.read().users) == 1
    assert okta.count("/oauth2/v1/token", status=200) == 2


def test_oauth_failures_are_one_clear_sentence(okta):
    private, _ = pem_key()
    _, other_public = pem_key()
    okta.add_app("0oa-app", other_public)
    src = source_for(okta, client_id="0oa-app", private_key=Secret(private, "test"))
    with pytest.raises(SourceAuthError, match="invalid_client.*signature") as err:
        src.read()
    assert "BEGIN" not in str(err.value)

    src = oauth_source(okta, granted={"okta.users.read"})
    with pytest.raises(SourceAuthError, match="invalid_scope.*okta.groups.read"):
        src.read()


def test_a_wrong_api_token_is_a_source_auth_error_without_the_token(okta, caplog):
    caplog.set_level(logging.DEBUG)
    okta.add_user("a@example.org", "A", "A")
    src = source_for(okta, token=Secret("00wrong-token-value", "test"))
    with pytest.raises(SourceAuthError, match="401 E0000011") as err:
        src.read()
    assert "00wrong-token-value" not in str(err.value)
    assert "00wrong-token-value" not in caplog.text
    assert okta.api_token not in caplog.text


# ---------------------------------------------------------------------------------------------
# Settings: checked completely when the config is loaded


def write_config(tmp_path, source_lines: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[state]\npath = "state.db"\n\n[source]\ntype = "okta"\n'
                    + textwrap.dedent(source_lines)
                    + '\n[target]\nurl = "https://split.example.test/scim/v2"\n')
    return path


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


def key_file(tmp_path, text: str) -> str:
    (tmp_path / "okta.pem").write_text(text)
    (tmp_path / "okta.pem").chmod(0o600)
    return 'private_key = { file = "okta.pem" }'


@pytest.mark.parametrize("lines, key, message", [
    ('token = "t"\nclient_id = "x"\nprivate_key = "k"', "token", "not both"),
    ("", "token", "token"),
    ('client_id = "x"', "private_key", "private_key"),
    ('private_key = "k"', "client_id", "client_id"),
    ('client_id = "x"\nprivate_key = "not a key"', "private_key", "PEM"),
    ('client_id = "x"\nprivate_key = "k"\nscopes = []', "scopes", "okta.users.read"),
    ('token = "t"\ngroups = ["Engineering", " "]', "groups", "empty group name"),
    ('token = "t"\ntimeout = 0', "timeout", "positive"),
    ('token = "t"\nrate_limit_headroom = -1', "rate_limit_headroom", "negative"),
    ('token = "t"\nca_file = "missing-ca.pem"', "ca_file", "not a readable file"),
])
def test_config_errors_name_the_setting(tmp_path, lines, key, message):
    lines = lines.replace('private_key = "not a key"', key_file(tmp_path, "not a key"))
    path = write_config(tmp_path, 'org_url = "https://acme.okta.com"\n' + lines + "\n")
    error = load_error(path)
    assert f"[source] {key}: " in error and message in error


@pytest.mark.parametrize("url, message", [
    ("http://acme.okta.com", "https"),
    ("https://acme-admin.okta.com", "admin"),
    ("https://acme.okta.com/api/v1", "bare org URL"),
])
def test_org_url_is_checked(tmp_path, url, message):
    error = load_error(write_config(tmp_path, f'org_url = "{url}"\ntoken = "t"\n'))
    assert "[source] org_url: " in error and message in error


def test_a_key_okta_does_not_accept_is_refused_at_load(tmp_path):
    key = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    path = write_config(tmp_path, 'org_url = "https://acme.okta.com"\nclient_id = "x"\n'
                        + key_file(tmp_path, key) + "\n")
    error = load_error(path)
    assert "[source] private_key: uses curve secp256k1" in error


def test_unresolved_secrets_skip_the_key_check_but_not_the_either_or(tmp_path, monkeypatch):
    monkeypatch.delenv("OKTA_TOKEN", raising=False)
    path = write_config(tmp_path, 'org_url = "https://acme.okta.com"\nclient_id = "x"\n'
                        + key_file(tmp_path, "not a key") + "\n")
    config = load(path, resolve_source_secrets=False)       # e.g. `status`: no secret read
    assert not config.source.settings.private_key.resolved
    both = write_config(tmp_path, 'org_url = "https://acme.okta.com"\nclient_id = "x"\n'
                        'token = { env = "OKTA_TOKEN" }\n' + key_file(tmp_path, "k") + "\n")
    assert "[source] token: set either token" in load_error(both, resolve_source_secrets=False)


def test_validate_names_the_bare_key():
    with pytest.raises(SettingError) as info:
        OktaSource.Settings(org_url="https://acme.okta.com", client_id="x").validate()
    assert info.value.key == "private_key"
    OktaSource.Settings(org_url="https://acme.okta.com", token=Secret("t")).validate()
    private, _ = pem_key("ec")
    OktaSource.Settings(org_url="https://acme.okta.com", client_id="x",
                        private_key=Secret(private)).validate()


# ---------------------------------------------------------------------------------------------
# check()


def test_check_reports_counts_per_status_and_scope_group(okta):
    ids = seed_contract(okta)
    okta.add_user("new@example.org", "New", "Hire", status="STAGED")
    report = source_for(okta).check()
    assert report["users"] == len(PEOPLE)
    assert report["status ACTIVE"] == 5 and report["status DEPROVISIONED"] == 1
    assert report["status STAGED"] == 1 and report["not pushed (staged/provisioned)"] == 1
    assert report["auth"] == "API token (SSWS)"
    assert "rate limit /api/v1/users" in report

    scoped = source_for(okta, groups=("Platform",)).check()
    assert scoped["scope group Platform"] == 2
    assert scoped["users"] == 2 and scoped["inactive"] == 1
    assert ids


def test_read_returns_a_directory_with_a_cursor(okta):
    okta.add_user("a@example.org", "A", "A")
    directory = source_for(okta).read()
    assert isinstance(directory, Directory) and directory.cursor.startswith("okta1;")


# ---------------------------------------------------------------------------------------------
# The userName: profile.email (default) or profile.login


def okta_config(tmp_path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[state]\npath = "s.db"\n[source]\ntype = "okta"\n'
                    'org_url = "https://acme.okta.com"\ntoken = "t"\n' + extra
                    + '\n[target]\nurl = "https://split.example.test/scim/v2"\n')
    return path


def test_user_name_is_the_email_by_default_and_the_login_on_request(okta, tmp_path):
    from agent.config import load
    from agent.core.mapping import MappingRules, map_directory
    okta.add_user("ann@example.org", "Ann", "A", login="ann.a")
    okta.add_user("ann@example.org", "Ann", "Alt", login="ann.alt")   # Okta keeps no e-mail unique
    directory = source_for(okta).read()
    for extra, expected, problems in (("", set(), 2), ('username = "login"', {"ann.a", "ann.alt"}, 0)):
        config = load(okta_config(tmp_path, extra), resolve_target_secrets=False)
        rules = MappingRules.for_source(OktaSource, config.source.attributes)
        desired = map_directory(directory, rules)
        assert {u.user_name for u in desired.users.values()} == expected
        assert len(desired.problems) == problems          # two people, one e-mail: held
    explicit = load(okta_config(tmp_path, 'username = "login"\n[source.attributes]\n'
                                'userName = "profile.email"'), resolve_target_secrets=False)
    rules = MappingRules.for_source(OktaSource, explicit.source.attributes)
    assert {u.user_name for u in map_directory(directory, rules).users.values()} == set()
    # the table wins: back on the (shared) e-mail, so both are held as duplicates


def test_the_username_setting_is_checked_at_load(tmp_path):
    from agent.config import ConfigError, load
    with pytest.raises(ConfigError, match=r"\[source\] username: 'upn' is not one of email, login"):
        load(okta_config(tmp_path, 'username = "upn"'), resolve_target_secrets=False)
