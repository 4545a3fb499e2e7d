"""Conformance of the request dialects: the bytes each one sends, operation by operation.

Each expected body is the shape of the vendor's own published request (the source is named
above each block); values are ours. A recording transport answers like a plain SCIM server,
so every port operation is exercised exactly as the engine calls it.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import httpx
import pytest

from connectors.base import TARGET_DIALECTS, Secret
from connectors.http import HttpPolicy
from connectors.scim import ScimTarget
from connectors.scim.dialects import DIALECTS
from tests.conftest import TOKEN, FakeTime

BASE = "https://split.example.test/scim/v2"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ALICE = {"userName": "alice@example.org", "email": "alice@example.org",
         "name.givenName": "Alice", "name.familyName": "Archer", "displayName": "Alice Archer",
         "department": "Eng"}
STORED = {"schemas": [CORE], "id": "u1", "userName": "alice@example.org",
          "name": {"givenName": "Alice", "familyName": "Archer"},
          "emails": [{"primary": True, "value": "alice@example.org", "type": "work",
                      "display": "alice@example.org"}],
          "active": True, "groups": [], "nickName": "Al", "meta": {"resourceType": "User"}}


class Recorder:
    """Answers like a plain SCIM server and keeps (method, path, query, body bytes)."""

    def __init__(self, found_group: bool = False):
        self.sent: list[tuple[str, str, dict, bytes]] = []
        self.found_group = found_group

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path[len("/scim/v2"):]
        query = dict(parse_qsl(request.url.query.decode()))
        self.sent.append((request.method, path, query, request.content))
        if request.method == "POST":
            return httpx.Response(201, json={**json.loads(request.content), "id": "new"})
        if request.method == "GET" and path == "/Users/u1":
            return httpx.Response(200, json=STORED)
        if request.method == "GET" and path == "/Groups" and self.found_group:
            return httpx.Response(200, json={"totalResults": 1, "Resources": [
                {"id": "g1", "displayName": "Team"}]})
        if request.method == "GET" and path == "/Groups/g1":
            return httpx.Response(200, json={"id": "g1", "displayName": "Team",
                                             "members": [{"value": "u9"}]})
        if request.method == "GET":
            return httpx.Response(200, json={"totalResults": 0, "Resources": []})
        if request.method == "PUT":
            return httpx.Response(200, json=json.loads(request.content))
        return httpx.Response(204)

    def bodies(self) -> list:
        return [json.loads(body) if body else None for _, _, _, body in self.sent]

    def lines(self) -> list[tuple[str, str, dict]]:
        return [(method, path, query) for method, path, query, _ in self.sent]


def target(dialect: str, recorder: Recorder) -> ScimTarget:
    fake_time = FakeTime()
    return ScimTarget(BASE, Secret(TOKEN), HttpPolicy(rate_limit=1000, max_attempts=1),
                      dialect=dialect, transport=httpx.MockTransport(recorder),
                      clock=fake_time.clock, sleep=fake_time.sleep)


def test_every_dialect_the_port_names_is_implemented():
    assert sorted(DIALECTS) == sorted(TARGET_DIALECTS) and TARGET_DIALECTS[0] == "entra"


# -------------------------------------------------------------------------- entra
# MicrosoftDocs/entra-docs docs/identity/app-provisioning/use-scim-to-provision-users-and-groups.md
# ("User Operations" and "Group Operations" request examples) and
# application-provisioning-config-problem-scim-compatibility.md (the default, unflagged job).

def test_entra_create_user():
    rec = Recorder()
    target("entra", rec).create_user(ALICE, True, "src-1")
    assert rec.lines() == [("POST", "/Users", {})]
    assert rec.sent[0][3] == json.dumps({
        "schemas": [CORE, ENT], "externalId": "src-1", "userName": "alice@example.org",
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": "alice@example.org"}],
        "meta": {"resourceType": "User"}, "displayName": "Alice Archer",
        "name": {"givenName": "Alice", "familyName": "Archer"},
        ENT: {"department": "Eng"}, "roles": []}).encode().replace(b", ", b",").replace(
            b": ", b":")


def test_entra_updates_email_change_and_deactivation():
    rec = Recorder()
    t = target("entra", rec)
    t.update_user("u1", {"name.familyName": "Arch", "email": "a.archer@example.org",
                         "userName": "a.archer@example.org", "department": None})
    t.update_user("u1", {}, active=False)
    t.update_user("u1", {}, active=True)
    assert rec.lines() == [("PATCH", "/Users/u1", {})] * 3
    assert rec.bodies() == [
        {"schemas": [PATCH], "Operations": [
            {"op": "Replace", "path": "name.familyName", "value": "Arch"},
            {"op": "Replace", "path": 'emails[type eq "work"].value',
             "value": "a.archer@example.org"},
            {"op": "Replace", "path": "userName", "value": "a.archer@example.org"},
            {"op": "Remove", "path": f"{ENT}:department"}]},
        {"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": False}]},
        {"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": True}]}]


def test_entra_groups_and_members():
    rec = Recorder()
    t = target("entra", rec)
    t.create_group("Team", "src-g")
    t.rename_group("g1", "Team B")
    t.add_members("g1", ["u1", "u2"])
    t.remove_members("g1", ["u2"])
    t.delete_group("g1")
    assert rec.lines() == [
        ("GET", "/Groups", {"excludedAttributes": "members", "filter": 'displayName eq "Team"'}),
        ("POST", "/Groups", {}), ("PATCH", "/Groups/g1", {}), ("PATCH", "/Groups/g1", {}),
        ("PATCH", "/Groups/g1", {}), ("DELETE", "/Groups/g1", {})]
    assert rec.bodies()[1:5] == [
        {"schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/"
                            "Group"],
         "externalId": "src-g", "displayName": "Team", "meta": {"resourceType": "Group"}},
        {"schemas": [PATCH], "Operations": [
            {"op": "Replace", "path": "displayName", "value": "Team B"}]},
        {"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [
            {"$ref": None, "value": "u1"}, {"$ref": None, "value": "u2"}]}]},
        {"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [
            {"$ref": None, "value": "u2"}]}]}]


def test_entra_lookups():
    rec = Recorder(found_group=True)
    t = target("entra", rec)
    assert t.find_user('o"neil@example.org') is None
    found = t.find_group("Team")
    assert found.members == {"u9"}           # read whole once found: the lookup left them out
    assert rec.lines() == [
        ("GET", "/Users", {"filter": 'userName eq "o\\"neil@example.org"'}),
        ("GET", "/Groups", {"excludedAttributes": "members", "filter": 'displayName eq "Team"'}),
        ("GET", "/Groups/g1", {})]


# -------------------------------------------------------------------------- okta
# okta/okta-developer-docs packages/@okta/vuepress-site/docs/reference/scim/scim-20/index.md
# ("Create Users", "Update a specific User (PUT)", "(PATCH)", "Create Groups", "Update a
# specific Group name", "Update specific Group membership").

def test_okta_create_user():
    rec = Recorder()
    target("okta", rec).create_user(ALICE, True, "00u1")
    assert rec.bodies() == [{
        "schemas": [CORE, ENT], "userName": "alice@example.org",
        "name": {"givenName": "Alice", "familyName": "Archer"},
        "emails": [{"primary": True, "value": "alice@example.org", "type": "work"}],
        "displayName": "Alice Archer", ENT: {"department": "Eng"}, "externalId": "00u1",
        "groups": [], "active": True}]


def test_okta_profile_update_is_get_then_put_of_the_whole_user():
    rec = Recorder()
    target("okta", rec).update_user("u1", {"email": "a.archer@example.org",
                                           "userName": "a.archer@example.org",
                                           "name.givenName": None})
    assert rec.lines() == [("GET", "/Users/u1", {}), ("PUT", "/Users/u1", {})]
    put = rec.bodies()[1]
    assert put == {**STORED, "userName": "a.archer@example.org",
                   "name": {"familyName": "Archer"},
                   "emails": [{"primary": True, "value": "a.archer@example.org",
                               "type": "work"}]}
    assert put["nickName"] == "Al" and put["groups"] == []    # what we do not manage stays


def test_okta_activation_is_a_no_path_replace_then_the_profile_put():
    rec = Recorder()
    t = target("okta", rec)
    t.update_user("u1", {}, active=False)
    t.update_user("u1", {"title": "Back"}, active=True)
    assert rec.lines() == [("PATCH", "/Users/u1", {}), ("PATCH", "/Users/u1", {}),
                           ("GET", "/Users/u1", {}), ("PUT", "/Users/u1", {})]
    assert rec.bodies()[:2] == [
        {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]},
        {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": True}}]}]
    assert rec.bodies()[3]["title"] == "Back"


def test_okta_groups_and_members():
    rec = Recorder()
    t = target("okta", rec)
    t.create_group("Team", "00g1")
    t.rename_group("g1", "Team B")
    t.add_members("g1", ["u1", "u2"])
    t.remove_members("g1", ["u1", "u2"])
    assert rec.lines()[0] == ("GET", "/Groups", {"filter": 'displayName eq "Team"'})
    assert rec.bodies()[1:] == [
        {"schemas": [GROUP], "displayName": "Team", "members": []},
        {"schemas": [PATCH], "Operations": [
            {"op": "replace", "value": {"id": "g1", "displayName": "Team B"}}]},
        {"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}]},
        {"schemas": [PATCH], "Operations": [
            {"op": "remove", "path": 'members[value eq "u1"]'},
            {"op": "remove", "path": 'members[value eq "u2"]'}]}]


def test_okta_user_lookup_pages_like_okta():
    rec = Recorder()
    target("okta", rec).find_user("test.user@okta.local")
    assert rec.lines() == [("GET", "/Users", {"filter": 'userName eq "test.user@okta.local"',
                                              "startIndex": "1", "count": "100"})]


# -------------------------------------------------------------------------- rfc
# RFC 7644 §3.5.2: lowercase ops, a path on every operation.

def test_rfc_requests():
    rec = Recorder()
    t = target("rfc", rec)
    t.create_user({"userName": "a@example.org", "email": "a@example.org"}, True, "s1")
    t.update_user("u1", {"email": "b@example.org"}, active=False)
    t.create_group("Team", "sg")
    t.rename_group("g1", "Team B")
    t.remove_members("g1", ["u1"])
    assert rec.bodies()[0] == {"schemas": [CORE], "externalId": "s1", "active": True,
                               "userName": "a@example.org",
                               "emails": [{"value": "a@example.org", "type": "work",
                                           "primary": True}]}
    assert rec.bodies()[1]["Operations"] == [
        {"op": "replace", "path": "emails",
         "value": [{"value": "b@example.org", "type": "work", "primary": True}]},
        {"op": "replace", "path": "active", "value": False}]
    assert rec.bodies()[3] == {"schemas": [GROUP], "displayName": "Team",
                               "externalId": "sg", "members": []}
    assert rec.bodies()[4]["Operations"] == [
        {"op": "replace", "path": "displayName", "value": "Team B"}]
    assert rec.bodies()[5]["Operations"] == [{"op": "remove", "path": 'members[value eq "u1"]'}]


# -------------------------------------------------------------------------- all dialects

@pytest.mark.parametrize("dialect", TARGET_DIALECTS)
def test_member_batches_are_at_most_100_and_a_create_is_one_request(dialect):
    rec = Recorder()
    t = target(dialect, rec)
    t.add_members("g1", [f"u{i}" for i in range(250)])
    t.create_user({"userName": "a@example.org"}, True, "s1")
    counts = [sum(len(op.get("value") or [None]) for op in body["Operations"])
              for body in rec.bodies()[:3]]
    assert counts == [100, 100, 50]
    assert [m for m, _, _ in rec.lines()[3:]] == ["POST"]


@pytest.mark.parametrize("dialect", TARGET_DIALECTS)
def test_a_conflict_is_looked_up_never_resent(dialect):
    answers = iter([httpx.Response(409, json={"status": "409", "scimType": "uniqueness"}),
                    httpx.Response(200, json={"totalResults": 1, "Resources": [
                        {"id": "u7", "userName": "a@example.org", "active": True}]})])
    sent = []

    def server(request):
        sent.append(request.method)
        return next(answers)
    fake_time = FakeTime()
    t = ScimTarget(BASE, Secret(TOKEN), HttpPolicy(rate_limit=1000, max_attempts=3),
                   dialect=dialect, transport=httpx.MockTransport(server),
                   clock=fake_time.clock, sleep=fake_time.sleep)
    created = t.create_user({"userName": "a@example.org"}, True, "s1")
    assert created.existed and created.record.id == "u7" and sent == ["POST", "GET"]
