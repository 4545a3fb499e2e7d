"""connectors/entra/ against the fake login + Graph in tests/fakes/graph.py (TLS on loopback).

The test CA is handed to every client explicitly (``ca_file``); the machine-wide
REQUESTS_CA_BUNDLE / SSL_CERT_FILE must neither help nor hurt. Time is a FakeTime (clock and
sleep), so throttling and pacing tests do not wait.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from pathlib import Path

import httpx
import pytest

from agent.core.mapping import MappingRules, map_directory
from agent.config import ConfigError, load
from connectors.base import (ChangeSet, SettingError, CursorExpired, Directory, Secret,
                             SourceAuthError, SourceError)
from connectors.entra import (EntraSource, clean_attributes, load_certificate,
                              merge_group_delta, odata_quote)
from connectors.entra.client import GRAPH_RATE_LIMIT, GraphClient
from connectors.http import HttpPolicy
from tests.fakes.graph import (FakeEntra, FakeEntraServer, make_client_certificate, make_pki,
                               thumbprint)
from tests.conftest import FakeTime
from tests.source_contract import PEOPLE, TEAMS, SourceContract

CLIENT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
SECRET = "s3cr3t~value.that-is-long"


def oid(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def app_cert():
    return make_client_certificate()


@pytest.fixture
def fake():
    # small pages so every listing and every delta round really pages
    fake = FakeEntra(page_cap=2, delta_page_size=2, members_delta_chunk=2, delta_page_members=4)
    fake.add_app(CLIENT_ID, secret=SECRET)
    return fake


@pytest.fixture
def server(fake, pki):
    server = FakeEntraServer(fake, pki).start()
    yield server
    server.stop()


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def sleeps(fake_time):
    return fake_time.sleeps


def settings_for(server, pki, **overrides) -> EntraSource.Settings:
    values = dict(tenant_id=server.fake.tenant_id, client_id=CLIENT_ID,
                  client_secret=Secret(SECRET), authority=server.url,
                  graph_url=server.url, ca_file=pki.ca_file)
    values.update(overrides)
    return EntraSource.Settings(**values)


@pytest.fixture
def make_source(server, pki, fake_time):
    """Sources on the fake's time; pacing far above what a test sends, so every sleep is a
    retry wait (the pacing tests set their own rate)."""
    made = []

    def make(*, attributes=(), policy=None, **overrides) -> EntraSource:
        settings = settings_for(server, pki, **overrides)
        source = EntraSource(settings, attributes=attributes,
                             clock=fake_time.clock, sleep=fake_time.sleep,
                             policy=policy or HttpPolicy(timeout=5, rate_limit=1000,
                                                         ca_file=settings.ca_file))
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


def seed(fake: FakeEntra) -> None:
    """The contract's people and teams, the Entra way: disabled = accountEnabled false."""
    for p in PEOPLE:
        fake.add_user(oid(p.key), mail=p.email, userPrincipalName=f"{p.key}@contoso.example",
                      givenName=p.given, surname=p.family, displayName=p.display,
                      jobTitle=p.title, department=p.department, accountEnabled=p.active,
                      mailNickname=p.key, employeeId=f"E-{p.key}")
    for t in TEAMS:
        fake.add_group(oid("g-" + t.key), displayName=t.name)
    for t in TEAMS:
        for member in [oid(k) for k in t.people] + [oid("g-" + k) for k in t.teams]:
            fake.add_member(oid("g-" + t.key), member)


# ---------------------------------------------------------------------------------------------
# The shared contract


class TestContract(SourceContract):
    source_cls = EntraSource

    @pytest.fixture
    def seeded_source(self, fake, make_source):
        seed(fake)
        fake.page_cap = 999     # check() reads one page, as Graph serves up to $top=999
        return make_source()

    @pytest.fixture
    def failing_source(self, fake, make_source):
        seed(fake)
        fake.inject("/v1.0/users", status=500, times=float("inf"), later_pages_only=True)
        return make_source()


# ---------------------------------------------------------------------------------------------
# Full read


def test_full_read_selects_mapped_attributes_and_pages(fake, make_source):
    seed(fake)
    fake.users[oid("bob")]["mail"] = None           # no mailbox: userPrincipalName is used
    fake.devices.add("device-1")
    fake.add_member(oid("g-eng"), "device-1")       # not a user or group: ignored
    directory = make_source().read()

    assert set(directory.users) == {oid(p.key) for p in PEOPLE}
    alice = directory.users[oid("alice")]
    assert alice.attributes["mail"] == "alice@example.org"
    assert alice.attributes["jobTitle"] == "Engineer"
    assert alice.attributes["employeeId"] == "E-alice"
    assert "mailNickname" not in alice.attributes             # not mapped, not selected
    assert directory.users[oid("carol")].active is False
    assert directory.users[oid("bob")].attributes["userPrincipalName"] == "bob@contoso.example"

    eng = directory.groups[oid("g-eng")]
    assert eng.attributes["displayName"] == "Engineering"
    assert eng.members == {oid("alice"), oid("bob"), oid("g-platform")}

    users_calls = [q for _, p, q in fake.requests if p == "/v1.0/users"]
    assert users_calls[0]["$top"] == "999"
    selected = set(users_calls[0]["$select"].split(","))
    assert {"id", "accountEnabled", "mail", "userPrincipalName", "givenName", "surname",
            "displayName", "jobTitle", "department", "employeeId",
            "userType", "otherMails", "externalUserState"} == selected   # always, for guests
    assert len(users_calls) == 3                      # 6 users, pages of 2, via nextLink
    assert all("$skiptoken" in q for q in users_calls[1:])
    assert directory.cursor is not None


def calls(fake: FakeEntra) -> dict[str, int]:
    """Graph requests by path (members lists and single groups lumped together; the
    ``$deltatoken=latest`` calls apart), signing in left out."""
    counted: dict[str, int] = {}
    for _, path, query in fake.requests:
        if not path.startswith("/v1.0/"):
            continue                                   # signing in
        if path.startswith("/v1.0/groups/") and path != "/v1.0/groups/delta":
            path = "/v1.0/groups/{id}/..."
        if query.get("$deltatoken") == "latest":
            path += " (latest)"
        counted[path] = counted.get(path, 0) + 1
    return counted


def delta_pages_at_most(fake: FakeEntra, member_counts: list[int]) -> int:
    """The pages a groups delta round over groups of these sizes may take on the fake: at
    most delta_page_size objects (a group of m members is max(1, ceil(m / chunk)) objects)
    and delta_page_members entries per page; the member budget can leave a page up to half
    empty, hence the 2."""
    objects = sum(max(1, math.ceil(m / fake.members_delta_chunk)) for m in member_counts)
    return (math.ceil(objects / fake.delta_page_size)
            + math.ceil(2 * sum(member_counts) / fake.delta_page_members) + 1)


@pytest.mark.parametrize("n_users, n_groups, per_group", [
    (40, 3, 12),        # few big groups: each spans several objects and pages
    (40, 60, 2),        # many small groups: many to a page
    (40, 60, 0),        # empty groups
])
def test_a_full_read_costs_pages_not_a_call_per_group(fake, make_source, n_users, n_groups,
                                                      per_group):
    fake.page_cap = 10
    fake.delta_page_size, fake.members_delta_chunk, fake.delta_page_members = 8, 5, 10
    users = [fake.add_user(oid(f"u{i}"), mail=f"u{i}@example.org") for i in range(n_users)]
    groups = [fake.add_group(oid(f"g{g}"), displayName=f"G{g}",
                             members=[users[(g * 7 + k) % n_users] for k in range(per_group)])
              for g in range(n_groups)]
    directory = make_source().read()

    assert {gid: directory.groups[gid].members for gid in groups} == \
        {gid: set(fake.groups[gid]["members"]) for gid in groups}
    counted = calls(fake)
    assert "/v1.0/groups/{id}/..." not in counted and "/v1.0/groups" not in counted
    assert counted["/v1.0/users"] == math.ceil(n_users / 10)
    assert counted["/v1.0/users/delta (latest)"] == counted["/v1.0/groups/delta (latest)"] == 1
    assert "/v1.0/users/delta" not in counted
    assert counted["/v1.0/groups/delta"] <= delta_pages_at_most(fake, [per_group] * n_groups)


def test_the_realistic_fake_reads_1000_groups_in_a_dozen_calls(fake, make_source):
    fake.page_cap, fake.delta_page_size = 999, 200
    fake.members_delta_chunk = fake.delta_page_members = 500
    users = [fake.add_user(oid(f"u{i}"), mail=f"u{i}@example.org") for i in range(500)]
    for g in range(1000):
        fake.add_group(oid(f"g{g}"), displayName=f"G{g}",
                       members=[users[(g + k) % 500] for k in range(5)])
    directory = make_source().read()
    assert len(directory.groups) == 1000
    assert sum(len(g.members) for g in directory.groups.values()) == 5000
    counted = calls(fake)
    assert counted == {"/v1.0/users/delta (latest)": 1, "/v1.0/groups/delta (latest)": 1,
                       "/v1.0/users": 1, "/v1.0/groups/delta": counted["/v1.0/groups/delta"]}
    # 5 000 members at 500 a page: 10 pages, and up to as many again at worst
    assert 10 <= counted["/v1.0/groups/delta"] <= delta_pages_at_most(fake, [5] * 1000)


def test_a_change_read_costs_its_delta_pages_and_one_round_per_50_new_groups(fake,
                                                                             make_source):
    seed(fake)
    source = make_source()
    known = source.read()
    fake.requests.clear()
    fake.update_user(oid("alice"), jobTitle="CTO")
    fresh = [fake.add_group(oid(f"new{g}"), displayName=f"New {g}",
                            members=[oid("alice"), oid("bob")]) for g in range(60)]
    changes = source.read_changes(known.cursor, known)
    assert set(changes.users) == {oid("alice")}
    assert all(changes.groups[gid].members == {oid("alice"), oid("bob")} for gid in fresh)
    counted = calls(fake)
    assert counted["/v1.0/users/delta"] == 1
    assert "/v1.0/groups/{id}/..." not in counted
    filtered = [q for _, p, q in fake.requests if p == "/v1.0/groups/delta" and "$filter" in q]
    assert [q["$filter"].count(" eq ") for q in filtered] == [50, 10]   # new groups, batched
    # the groups round and the two filtered ones, each in pages
    rounds = delta_pages_at_most(fake, [2] * 60)
    assert counted["/v1.0/groups/delta"] <= rounds + 2 * delta_pages_at_most(fake, [2] * 50)


def test_expanded_members_are_capped_at_20_which_is_why_reads_use_delta(fake, make_source):
    users = [fake.add_user(oid(f"u{i}"), mail=f"u{i}@example.org") for i in range(25)]
    big = fake.add_group(displayName="Big", members=users)
    fake.page_cap = 999
    page = make_source().graph.get("/v1.0/groups", {"$expand": "members", "$top": "999"})
    (group,) = page["value"]
    assert len(group["members"]) == 20 and "members@odata.nextLink" not in group
    assert make_source().read().groups[big].members == set(users)     # all 25


def test_a_groups_delta_filter_is_limited_to_50_ids(fake, make_source):
    gid = fake.add_group(displayName="One")
    source = make_source()
    too_many = " or ".join(f"id eq '{oid(str(i))}'" for i in range(51))
    with pytest.raises(SourceError, match="400"):
        source.graph.delta(f"/v1.0/groups/delta?$select=displayName,members&$filter="
                           f"{too_many}")
    assert set(source._groups_by_id({gid: "One"})) == {gid}


def test_user_name_falls_back_to_user_principal_name(fake, make_source):
    seed(fake)
    fake.users[oid("bob")]["mail"] = None
    desired = map_directory(make_source().read(), MappingRules.for_source(EntraSource))
    assert desired.users[oid("bob")].user_name == "bob@contoso.example"


def test_overridden_attributes_are_selected(fake, make_source):
    seed(fake)
    fake.users[oid("alice")]["onPremisesExtensionAttributes"] = {"extensionAttribute1": "CC-7"}
    source = make_source(attributes=["onPremisesExtensionAttributes.extensionAttribute1"])
    directory = source.read()
    assert directory.users[oid("alice")].attributes[
        "onPremisesExtensionAttributes.extensionAttribute1"] == "CC-7"
    assert all("onPremisesExtensionAttributes" in q["$select"].split(",")
               for _, p, q in fake.requests if p == "/v1.0/users" and "$select" in q)


def test_token_is_cached_across_requests(fake, make_source):
    seed(fake)
    source = make_source()
    source.read()
    source.check()
    assert fake.token_requests == 1


def test_check_reports_counts(fake, make_source):
    seed(fake)
    report = make_source().check()
    assert report["users"] == 2 and report["groups"] == 2       # first page (server caps at 2)
    assert "first page" in report["counted"]
    assert report["credential"] == "client secret"
    fake.page_cap = 999
    report = make_source().check()
    assert (report["users"], report["groups"], report["disabled users"]) == (6, 5, 1)


def test_tls_uses_the_configured_ca_not_the_environment(fake, make_source, monkeypatch,
                                                        tmp_path):
    seed(fake)
    bogus = tmp_path / "nothing.pem"
    bogus.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("SSL_CERT_FILE", str(bogus))
    assert len(make_source().read().users) == len(PEOPLE)


def test_tls_fails_clearly_without_the_ca(fake, make_source):
    with pytest.raises(SourceError, match="TLS verification of the sign-in host"):
        make_source(ca_file=None).read()


# ---------------------------------------------------------------------------------------------
# Credentials and sign-in errors


def test_certificate_credential(fake, make_source, app_cert):
    pem, public = app_cert
    fake.add_app(CLIENT_ID, certificate=public)
    seed(fake)
    source = make_source(client_secret=None, certificate=Secret(pem, "file app.pem"))
    assert len(source.read().users) == len(PEOPLE)
    report = source.check()
    assert report["credential"] == f"certificate {thumbprint(public)}"
    assert "certificate expires" in report


def test_load_certificate_computes_sha1_thumbprint(app_cert):
    pem, public = app_cert
    cred = load_certificate(pem)
    assert cred.msal_value["thumbprint"] == thumbprint(public)
    assert "PRIVATE KEY" in cred.msal_value["private_key"]


def test_certificate_file_without_certificate_is_a_config_error(app_cert):
    pem, _ = app_cert
    key_only = pem[:pem.index("-----BEGIN CERTIFICATE-----")]
    with pytest.raises(SettingError, match="certificate"):
        load_certificate(key_only)


@pytest.mark.parametrize("setup, code, words", [
    (lambda f: f.add_app(CLIENT_ID, secret="another"), "AADSTS7000215", "secret is wrong"),
    (lambda f: f.add_app(CLIENT_ID, secret=SECRET, secret_expired=True), "AADSTS7000222",
     "expired"),
    (lambda f: f.add_app(CLIENT_ID, secret=SECRET, consented=False), "AADSTS65001",
     "admin consent"),
    (lambda f: f.apps.clear(), "AADSTS700016", "client_id"),
])
def test_token_errors_become_one_sentence(fake, make_source, setup, code, words):
    setup(fake)
    with pytest.raises(SourceAuthError) as caught:
        make_source().read()
    message = str(caught.value)
    assert code in message and words in message
    assert SECRET not in message and "Trace ID" not in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_unknown_tenant(fake, make_source):
    with pytest.raises(SourceAuthError, match="AADSTS90002.*tenant does not exist"):
        make_source(tenant_id="contoso-typo.onmicrosoft.com").check()


def test_unregistered_and_expired_certificates(fake, make_source, app_cert):
    pem, _ = app_cert
    _, other = make_client_certificate()
    fake.add_app(CLIENT_ID, certificate=other)
    with pytest.raises(SourceAuthError, match="AADSTS700027.*upload its public part"):
        make_source(client_secret=None, certificate=Secret(pem)).check()
    old_pem, old_public = make_client_certificate(expired=True)
    fake.add_app(CLIENT_ID, certificate=old_public)
    with pytest.raises(SourceAuthError, match="AADSTS700027.*certificate has expired"):
        make_source(client_secret=None, certificate=Secret(old_pem)).check()


def test_missing_graph_permissions(fake, make_source):
    fake.add_app(CLIENT_ID, secret=SECRET, roles=())
    with pytest.raises(SourceAuthError, match="403 Authorization_RequestDenied.*User.Read.All"):
        make_source().check()


# ---------------------------------------------------------------------------------------------
# Settings: checked completely when the config is loaded


def write_config(tmp_path, name: str = "config.toml", **source) -> Path:
    """A config whose [source] is an entra source with these keys (Python values)."""
    values = {"type": "entra", "tenant_id": "11111111-2222-3333-4444-555555555555",
              "client_id": CLIENT_ID, "client_secret": SECRET, **source}
    lines = [f"{k} = {json.dumps(v)}" if not isinstance(v, dict) else
             f"{k} = {{ {', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items())} }}"
             for k, v in values.items() if v is not None]
    path = tmp_path / name
    path.write_text('[state]\npath = "state.db"\n\n[source]\n' + "\n".join(lines)
                    + '\n\n[target]\nurl = "https://split.example.test/scim/v2"\n')
    return path


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


@pytest.mark.parametrize("overrides, key, words", [
    ({"certificate": "x"}, "certificate", "exactly one"),
    ({"client_secret": None}, "client_secret", "exactly one"),
    ({"authority": "http://login.example"}, "authority", "must be an https"),
    ({"graph_url": "graph.microsoft.com"}, "graph_url", "must be an https"),
    ({"tenant_id": " "}, "tenant_id", "is empty"),
    ({"tenant_id": "common"}, "tenant_id", "not one tenant"),
    ({"tenant_id": "contoso/onmicrosoft"}, "tenant_id", "neither a GUID nor a domain"),
    ({"client_id": ""}, "client_id", "is empty"),
    ({"client_id": "my-app"}, "client_id", "GUID"),
    ({"groups": ["Engineering", ""]}, "groups", "empty group name"),
    ({"timeout": 0}, "timeout", "positive"),
    ({"ca_file": "missing-ca.pem"}, "ca_file", "not a readable file"),
])
def test_config_errors(tmp_path, overrides, key, words):
    message = load_error(write_config(tmp_path, **overrides))
    assert f"[source] {key}: " in message and words in message


def test_a_certificate_file_is_checked_at_load(tmp_path, app_cert):
    pem, _ = app_cert
    (tmp_path / "app.pem").write_text(pem[:pem.index("-----BEGIN CERTIFICATE-----")])
    path = write_config(tmp_path, client_secret=None, certificate={"file": "app.pem"})
    assert "[source] certificate: no PEM certificate" in load_error(path)
    # a command that reads no source secret (status) does not open the file ...
    assert not load(path, resolve_source_secrets=False).source.settings.certificate.resolved
    # ... but still sees that both credentials are set
    both = write_config(tmp_path, "both.toml", certificate={"file": "app.pem"})
    assert "[source] certificate: set exactly one" in load_error(both,
                                                                 resolve_source_secrets=False)
    (tmp_path / "app.pem").write_text(pem)
    assert load(path).source.settings.certificate.resolved


def test_validate_names_the_bare_key():
    settings = EntraSource.Settings(tenant_id="contoso.onmicrosoft.com", client_id=CLIENT_ID)
    with pytest.raises(SettingError) as info:
        settings.validate()
    assert info.value.key == "client_secret"
    EntraSource.Settings(tenant_id="contoso.onmicrosoft.com", client_id=CLIENT_ID,
                         client_secret=Secret(SECRET)).validate()


# ---------------------------------------------------------------------------------------------
# Incremental reads


def same_view(a: Directory, b: Directory) -> None:
    """The same users and groups, and the same members among the objects that exist. (A view
    built from deltas keeps the ids of soft-deleted members, as Entra restores a user with
    its memberships; the engine ignores ids it does not know.)"""
    assert {u.id: (dict(u.attributes), u.active) for u in a.users.values()} == \
        {u.id: (dict(u.attributes), u.active) for u in b.users.values()}

    def groups(view: Directory):
        live = set(view.users) | set(view.groups)
        return {g.id: (g.attributes["displayName"], g.members & live)
                for g in view.groups.values()}

    assert groups(a) == groups(b)


def test_no_changes_gives_an_empty_change_set_and_a_new_cursor(fake, make_source):
    seed(fake)
    source = make_source()
    known = source.read()
    changes = source.read_changes(known.cursor, known)
    assert len(changes) == 0 and changes.cursor


def test_incremental_read_matches_a_full_read(fake, make_source):
    seed(fake)
    fake.members_delta_chunk = 2
    source = make_source()
    known = source.read()

    fake.update_user(oid("alice"), jobTitle="Staff Engineer")        # changed
    fake.update_user(oid("bob"), accountEnabled=False)                # disabled
    fake.delete_user(oid("dave"))                                     # soft delete
    fake.delete_user(oid("obrien"), hard=True)                        # hard delete
    newbie = fake.add_user(oid("newbie"), mail="new@example.org", givenName="New",
                           surname="Bie", displayName="New Bie")
    big = fake.add_group(oid("g-big"), displayName="Big")
    for key in ("alice", "bob", "carol", "zoe", "newbie"):            # 5 adds, chunks of 2
        fake.add_member(big, oid(key) if key != "newbie" else newbie)
    fake.remove_member(oid("g-eng"), oid("bob"))                     # membership change
    fake.rename_group(oid("g-platform"), "Platform Team")
    fake.delete_group(oid("g-loop-b"))                                # group removed

    changes = source.read_changes(known.cursor, known)
    assert isinstance(changes, ChangeSet)
    assert changes.users[oid("alice")].attributes["jobTitle"] == "Staff Engineer"
    assert changes.users[oid("bob")].active is False
    assert changes.removed_users == {oid("dave"), oid("obrien")}
    assert changes.removed_groups == {oid("g-loop-b")}
    assert changes.groups[big].members == {oid(k) for k in ("alice", "bob", "carol", "zoe",
                                                            "newbie")}
    assert oid("bob") not in changes.groups[oid("g-eng")].members
    # members@delta of the big group really came in several objects, over several pages
    delta_pages = [q for _, p, q in fake.requests if p == "/v1.0/groups/delta"]
    assert len(delta_pages) >= 3

    same_view(changes.apply_to(known), make_source().read())

    # and the next round starts from the new cursor
    fake.update_user(oid("zoe"), department="Ops")
    again = source.read_changes(changes.cursor, changes.apply_to(known))
    assert set(again.users) == {oid("zoe")} and not again.groups


def test_restored_user_comes_back(fake, make_source):
    seed(fake)
    source = make_source()
    known = source.read()
    saved = dict(fake.users[oid("dave")])
    fake.delete_user(oid("dave"))
    first = source.read_changes(known.cursor, known)
    assert first.removed_users == {oid("dave")}
    view = first.apply_to(known)
    fake.add_user(**saved)           # restored from deleted items: no annotation, full object
    second = source.read_changes(first.cursor, view)
    assert second.users[oid("dave")].attributes["mail"] == "dave@example.org"
    assert not second.removed_users


def test_member_delta_merging_is_ordered():
    known = Directory.of(groups=[])
    items = [{"id": "g", "displayName": "G", "members@delta": [
                 {"@odata.type": "#microsoft.graph.user", "id": "u1"},
                 {"@odata.type": "#microsoft.graph.user", "id": "u2"}]},
             {"id": "g", "displayName": "G", "members@delta": [
                 {"@odata.type": "#microsoft.graph.user", "id": "u1",
                  "@removed": {"reason": "deleted"}},
                 {"@odata.type": "#microsoft.graph.device", "id": "d1"},
                 {"@odata.type": "#microsoft.graph.group", "id": "g2"}]}]
    groups, removed = merge_group_delta(items, known)
    assert groups["g"].members == {"u2", "g2"} and not removed


@pytest.mark.parametrize("mode", ["410", "syncStateNotFound"])
def test_expired_delta_token_raises_cursor_expired(fake, make_source, mode):
    seed(fake)
    source = make_source()
    known = source.read()
    fake.expire_delta_tokens(mode)
    code = "410 resyncRequired" if mode == "410" else "400 syncStateNotFound"
    with pytest.raises(CursorExpired, match=f"delta token for users expired \\({code}\\)"):
        source.read_changes(known.cursor, known)
    fresh = source.read()                              # the engine's one full read
    fake.update_user(oid("alice"), jobTitle="CTO")
    assert set(source.read_changes(fresh.cursor, fresh).users) == {oid("alice")}


def test_cursor_for_other_settings_is_expired(fake, make_source):
    seed(fake)
    known = make_source().read()
    with pytest.raises(CursorExpired, match="attributes changed"):
        make_source(attributes={"costCenter": "companyName"}).read_changes(known.cursor, known)
    with pytest.raises(CursorExpired, match="groups setting"):
        make_source(groups=("Engineering",)).read_changes(known.cursor, known)
    with pytest.raises(CursorExpired):
        make_source().read_changes("not json", known)
    moved = json.loads(known.cursor)
    moved["users"] = "https://graph.example.net/v1.0/users/delta?$deltatoken=x"
    with pytest.raises(CursorExpired, match="another graph_url"):
        make_source().read_changes(json.dumps(moved), known)


# ---------------------------------------------------------------------------------------------
# Scope groups


def test_scope_group_by_name_reads_transitive_members(fake, make_source):
    seed(fake)
    directory = make_source(groups=("Engineering",)).read()
    assert set(directory.users) == {oid(k) for k in ("alice", "bob", "dave", "carol")}
    assert set(directory.groups) == {oid("g-eng"), oid("g-platform")}
    assert directory.users[oid("carol")].active is False
    filters = [q["$filter"] for _, p, q in fake.requests if p == "/v1.0/groups" and
               "$filter" in q]
    assert filters == ["displayName eq 'Engineering'"]


def test_scope_group_by_id_and_quoted_name(fake, make_source):
    seed(fake)
    quoted = fake.add_group(displayName="O'Brien's crew", members=[oid("obrien")])
    directory = make_source(groups=(oid("g-platform"), "O'Brien's crew")).read()
    assert set(directory.users) == {oid("dave"), oid("carol"), oid("obrien")}
    assert set(directory.groups) == {oid("g-platform"), quoted}
    assert odata_quote("O'Brien's crew") == "'O''Brien''s crew'"


@pytest.mark.parametrize("groups, words", [
    (("Nobody",), "no group named 'Nobody'"),
    ((str(uuid.uuid4()),), "does not exist"),
])
def test_unknown_scope_group(fake, make_source, groups, words):
    seed(fake)
    with pytest.raises(SourceError, match=words):
        make_source(groups=groups).read()


def test_ambiguous_scope_group_name(fake, make_source):
    seed(fake)
    fake.add_group(displayName="Engineering")
    with pytest.raises(SourceError, match="2 groups are named 'Engineering'.*id"):
        make_source(groups=("Engineering",)).read()


def test_scoped_incremental_read(fake, make_source):
    seed(fake)
    source = make_source(groups=("Engineering",))
    known = source.read()
    fake.add_member(oid("g-platform"), oid("zoe"))          # joins the scope (nested)
    fake.remove_member(oid("g-eng"), oid("bob"))            # leaves the scope
    fake.update_user(oid("alice"), department="R&D")        # in scope: changed
    fake.update_user(oid("obrien"), department="Elsewhere")  # out of scope: ignored
    changes = source.read_changes(known.cursor, known)
    assert set(changes.users) == {oid("zoe"), oid("alice")}
    assert changes.users[oid("zoe")].attributes["mail"] == "zoe.unal@example.org"
    assert changes.removed_users == {oid("bob")}
    assert set(changes.groups) == {oid("g-eng"), oid("g-platform")}
    same_view(changes.apply_to(known), make_source(groups=("Engineering",)).read())


# ---------------------------------------------------------------------------------------------
# Throttling and failures


def test_429_honours_retry_after(fake, make_source, sleeps):
    seed(fake)
    fake.inject("/v1.0/users", status=429, times=2, retry_after="7")
    directory = make_source().read()
    assert len(directory.users) == len(PEOPLE)
    assert len(sleeps) == 2 and all(7 <= s <= 7.25 for s in sleeps)


def test_503_without_retry_after_backs_off(fake, make_source, sleeps):
    seed(fake)
    fake.inject("/v1.0/groups", status=503, times=3)
    assert len(make_source().read().groups) == len(TEAMS)
    assert len(sleeps) == 3 and all(0 <= s <= 30 for s in sleeps)


def test_throttling_that_never_clears_gives_up(fake, make_source, sleeps):
    seed(fake)
    fake.inject("/v1.0/users", status=429, times=float("inf"), retry_after="1")
    with pytest.raises(SourceError, match="kept failing.*429.*6 attempts"):
        make_source().read()
    assert len(sleeps) == 5


@pytest.mark.parametrize("rule", [
    dict(prefix="/v1.0/users", drop=True, times=float("inf"), later_pages_only=True),
    dict(prefix="/v1.0/groups", status=400, later_pages_only=True),
])
def test_failure_mid_paging_raises(fake, make_source, rule):
    seed(fake)
    fake.inject(**rule)
    with pytest.raises(SourceError):
        make_source().read()


@pytest.mark.parametrize("body", [{}, {"value": None}, {"value": {"id": "x"}},
                                  {"value": ["x"]}])
@pytest.mark.parametrize("prefix", ["/v1.0/users", "/v1.0/groups"])
def test_a_page_without_a_value_list_is_refused_not_read_as_the_end(fake, make_source, body,
                                                                    prefix):
    """A 200 without ``value`` (a proxy's ``{}``) mid-listing once ended the listing there:
    every later user would have looked gone."""
    seed(fake)
    fake.page_cap = 2
    fake.inject(prefix, status=200, body=body, later_pages_only=True)
    with pytest.raises(SourceError, match="without a list of objects in 'value'"):
        make_source().read()


def test_failure_mid_delta_raises_and_keeps_the_old_cursor_usable(fake, make_source):
    seed(fake)
    fake.delta_page_size = 1
    source = make_source()
    known = source.read()
    for key in ("alice", "bob", "dave"):
        fake.update_user(oid(key), jobTitle="Changed")
    fake.inject("/v1.0/users/delta", status=500, times=float("inf"), later_pages_only=True)
    with pytest.raises(SourceError):
        source.read_changes(known.cursor, known)
    fake.rules.clear()
    changes = source.read_changes(known.cursor, known)
    assert set(changes.users) == {oid("alice"), oid("bob"), oid("dave")}


def test_links_to_other_hosts_are_not_followed(make_source):
    with pytest.raises(SourceError, match="another host"):
        make_source().graph.get("https://evil.example/v1.0/users")


def test_a_next_link_that_repeats_stops_the_read():
    class Signed:
        def headers(self, request):
            return {"Authorization": "Bearer t"}

        def renew(self, request, response):
            return False

    def looping(request):
        return httpx.Response(200, json={"value": [{"id": "u1"}], "@odata.nextLink":
                                         "https://graph.example/v1.0/users?$skiptoken=X"})
    fake_time = FakeTime()
    graph = GraphClient("https://graph.example", Signed(), HttpPolicy(rate_limit=1000),
                        transport=httpx.MockTransport(looping), clock=fake_time.clock,
                        sleep=fake_time.sleep)
    with pytest.raises(SourceError, match="Graph GET /v1.0/users: the next page repeats"):
        graph.list("/v1.0/users", {"$top": "999"})


# ---------------------------------------------------------------------------------------------
# Pacing: Graph is paced like every other remote


def graph_requests(fake: FakeEntra) -> int:
    return sum(1 for _, p, _ in fake.requests if p.startswith("/v1.0/"))


def test_graph_requests_are_paced(fake, make_source, fake_time, pki):
    seed(fake)
    for i in range(20):                      # pages of 2: enough requests to outrun a burst
        fake.add_user(oid(f"extra-{i}"), mail=f"extra{i}@example.org", accountEnabled=True)
    source = make_source(policy=HttpPolicy(timeout=5, rate_limit=4, ca_file=pki.ca_file))
    start = fake_time.now
    source.read()
    sent = graph_requests(fake)
    assert sent > 3 * 4                      # enough to outrun a burst of 4
    # a burst of one second's worth, then 4 per second: the waits were spent on the clock
    assert fake_time.now - start >= (sent - 4) / 4 - 1e-6
    assert fake_time.waits == []             # pacing takes small steps, never a long wait


def test_graph_pacing_defaults_to_a_documented_ceiling(fake, server, pki, fake_time):
    seed(fake)
    for i in range(90):                      # enough pages to outrun the default burst
        fake.add_user(oid(f"extra-{i}"), mail=f"extra{i}@example.org", accountEnabled=True)
    source = EntraSource(settings_for(server, pki), clock=fake_time.clock,
                         sleep=fake_time.sleep)
    try:
        start = fake_time.now
        source.read()
    finally:
        source.close()
    sent = graph_requests(fake)
    assert sent > 2 * GRAPH_RATE_LIMIT
    elapsed = fake_time.now - start
    assert elapsed >= (sent - GRAPH_RATE_LIMIT) / GRAPH_RATE_LIMIT - 1e-6
    assert elapsed < sent / GRAPH_RATE_LIMIT + 1     # and no slower than the ceiling


def test_clean_attributes_flattens_and_drops_annotations():
    raw = {"id": "x", "@odata.type": "#microsoft.graph.user", "mail": "a@b",
           "businessPhones": ["1", "2"], "accountEnabled": True,
           "onPremisesExtensionAttributes": {"extensionAttribute1": "v",
                                             "extensionAttribute2": None},
           "identities": [{"signInType": "emailAddress"}]}
    assert clean_attributes(raw) == {
        "mail": "a@b", "businessPhones": ["1", "2"], "accountEnabled": True,
        "onPremisesExtensionAttributes.extensionAttribute1": "v",
        "onPremisesExtensionAttributes.extensionAttribute2": None, "identities": []}


def test_settings_fields_have_help():
    for f in dataclasses.fields(EntraSource.Settings):
        assert f.metadata.get("help"), f.name


def test_a_credential_repr_never_shows_the_secret():
    from connectors.entra import Credential
    assert "s3cr3t-value" not in repr(Credential("s3cr3t-value", "client secret"))


# ---------------------------------------------------------------------------------------------
# Guests (userType, otherMails, externalUserState: Graph v1.0 user resource)

GUEST_UPN = "ann_partner.example#EXT#@contoso.onmicrosoft.com"


def seed_guests(fake: FakeEntra) -> None:
    fake.add_user(oid("member"), mail=None, userPrincipalName="max@contoso.example",
                  givenName="Max", surname="M", userType="Member")
    fake.add_user(oid("redeemed"), mail="ann@partner.example", userPrincipalName=GUEST_UPN,
                  otherMails=["ann@partner.example"], userType="Guest",
                  externalUserState="Accepted")
    fake.add_user(oid("invited"), mail=None,
                  userPrincipalName="bo_partner.example#EXT#@contoso.onmicrosoft.com",
                  otherMails=["bo@partner.example"], userType="Guest",
                  externalUserState="PendingAcceptance")
    fake.add_user(oid("nowhere"), mail=None,
                  userPrincipalName="cy_partner.example#EXT#@contoso.onmicrosoft.com",
                  otherMails=[], userType="Guest", externalUserState="PendingAcceptance")


def test_guests_are_pushed_with_a_deliverable_address_never_their_ext_upn(fake, make_source):
    seed_guests(fake)
    source = make_source()
    directory = source.read()
    desired = map_directory(directory, MappingRules.for_source(EntraSource))
    names = {u.source_id: u.user_name for u in desired.users.values()}
    assert names == {oid("member"): "max@contoso.example",          # a member keeps its UPN
                     oid("redeemed"): "ann@partner.example",
                     oid("invited"): "bo@partner.example"}          # the invited address
    assert all("#EXT#" not in (u.attributes.get("email") or "") for u in desired.users.values())
    # no address at all: reported, not pushed under a mailbox nobody reads
    assert [p.source_id for p in desired.problems] == [oid("nowhere")]
    guest = directory.users[oid("invited")].attributes
    assert guest["userType"] == "Guest" and guest["externalUserState"] == "PendingAcceptance"
    assert "userPrincipalName" not in guest


def test_a_guest_who_later_gets_mail_keeps_the_same_user_name(fake, make_source):
    seed_guests(fake)
    source = make_source()
    first = source.read()
    fake.update_user(oid("invited"), mail="bo@partner.example", externalUserState="Accepted")
    changes = source.read_changes(first.cursor, first)
    view = changes.apply_to(first)
    desired = map_directory(view, MappingRules.for_source(EntraSource))
    assert {u.user_name for u in desired.users.values() if u.source_id == oid("invited")} == \
        {"bo@partner.example"}
    assert "userPrincipalName" not in view.users[oid("invited")].attributes


def test_guests_skip_leaves_them_out_and_a_member_turned_guest_leaves_the_scope(fake,
                                                                                 make_source):
    seed_guests(fake)
    source = make_source(guests="skip")
    first = source.read()
    assert set(first.users) == {oid("member")}
    fake.update_user(oid("member"), userType="Guest")
    changes = source.read_changes(first.cursor, first)
    assert changes.removed_users == {oid("member")} and not changes.users


def test_guests_setting_is_checked_at_load(tmp_path):
    path = write_config(tmp_path, guests="invite")
    assert "[source] guests: 'invite' is not one of push, skip" in load_error(path)
