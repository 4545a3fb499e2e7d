"""Self-test of tests/fakes/split.py: the fake must behave as Split's SCIM service is known to."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.fakes.split import FakeSplit

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
AUTH = {"Authorization": "Bearer tok"}


def ops(*operations: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(operations)}


@pytest.fixture(params=[False, True], ids=["scan", "indexed"])
def split(request):
    """Every check runs on both ways of finding a name (``fast`` indexes them)."""
    with FakeSplit(token="tok", fast=request.param) as fake:
        yield fake


@pytest.fixture
def client(split):
    with httpx.Client(base_url=split.base_url, headers=AUTH, timeout=5) as http:
        yield http


def create_user(client, user_name: str, **attrs) -> str:
    response = client.post("/Users", json={"userName": user_name, **attrs})
    assert response.status_code == 201, response.text
    return response.json()["id"]


# ------------------------------------------------------------------ auth and errors


def test_missing_or_wrong_token_is_401_with_scim_error(split):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic tok"}):
        response = httpx.get(f"{split.base_url}/Users", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="SCIM"'
        assert response.headers["Content-Type"] == "application/scim+json"
        body = response.json()
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert body["status"] == "401" and body["detail"]
    assert httpx.get(f"{split.base_url}/Users", headers=AUTH).status_code == 200


def test_token_rotation_makes_the_old_token_401(split, client):
    assert client.get("/Groups").status_code == 200
    split.token = "new"
    assert client.get("/Groups").status_code == 401
    ok = client.get("/Groups", headers={"Authorization": "Bearer new"})
    assert ok.status_code == 200


def test_unknown_id_is_404_and_status_can_be_an_int(split, client):
    response = client.get("/Users/does-not-exist")
    assert response.status_code == 404 and response.json()["status"] == "404"
    split.status_as_int = True
    assert client.patch("/Groups/nope", json=ops({"op": "remove", "path": "members"})
                        ).json()["status"] == 404


# ------------------------------------------------------------------ users


def test_create_user_and_case_insensitive_uniqueness(split, client):
    response = client.post("/Users", json={"userName": "Alice@Example.org", "externalId": "e1"},
                           headers={"Content-Type": "application/scim+json"})
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/scim+json"
    created = response.json()
    assert created["id"] in split.users and created["meta"]["resourceType"] == "User"
    assert created["active"] is True
    assert response.headers["Location"] == created["meta"]["location"]

    duplicate = client.post("/Users", json={"userName": "alice@EXAMPLE.org"})
    assert duplicate.status_code == 409 and duplicate.json()["scimType"] == "uniqueness"
    missing = client.post("/Users", json={"displayName": "No Name"})
    assert missing.status_code == 400 and missing.json()["scimType"] == "invalidValue"
    assert len(split.users) == 1


def test_filters_unescape_quotes_and_compare_usernames_case_insensitively(client):
    odd = 'we"ird\\name@example.org'
    user_id = create_user(client, odd, externalId="Ext-1",
                          emails=[{"value": "w@example.org", "type": "work", "primary": True}])
    create_user(client, "other@example.org")

    def found(filter_text: str) -> list[str]:
        response = client.get("/Users", params={"filter": filter_text})
        assert response.status_code == 200, response.text
        return [user["id"] for user in response.json()["Resources"]]

    assert found('userName eq "WE\\"IRD\\\\NAME@example.org"') == [user_id]
    assert found('externalId eq "Ext-1"') == [user_id]
    assert found('externalId eq "ext-1"') == []  # externalId is caseExact
    assert found('emails[type eq "work"].value eq "W@example.org"') == [user_id]
    assert found('emails.value eq "w@example.org"') == [user_id]
    unquoted = client.get("/Users", params={"filter": "userName eq bob@example.org"})
    assert unquoted.status_code == 400 and unquoted.json()["scimType"] == "invalidFilter"


def test_paging_over_250_users_with_a_server_page_cap(split, client):
    for n in range(250):
        split.seed_user(f"user{n:03}@example.org")
    seen, start = [], 1
    while True:
        page = client.get("/Users", params={"startIndex": start, "count": 500}).json()
        assert page["totalResults"] == 250 and page["startIndex"] == start
        assert page["itemsPerPage"] == len(page["Resources"]) <= 100
        if not page["Resources"]:
            break
        seen += [user["userName"] for user in page["Resources"]]
        start += len(page["Resources"])
    assert len(seen) == len(set(seen)) == 250
    assert client.get("/Users", params={"count": 0}).json()["Resources"] == []
    split.max_page_size = 30
    assert client.get("/Users").json()["itemsPerPage"] == 30


@pytest.mark.parametrize("operation", [
    {"op": "replace", "value": {"active": False}},  # Okta
    {"op": "Replace", "path": "active", "value": False},  # Entra
])
def test_deactivate_in_okta_and_entra_shapes(split, client, operation):
    user_id = create_user(client, "bob@example.org")
    response = client.patch(f"/Users/{user_id}", json=ops(operation))
    assert response.status_code == 204 and response.content == b""
    assert split.users[user_id]["active"] is False


def test_patch_attribute_paths_and_body_option(split, client):
    user_id = create_user(client, "carol@example.org", name={"givenName": "C", "familyName": "X"},
                          emails=[{"value": "carol@example.org", "type": "work"}])
    split.patch_returns_body = True
    response = client.patch(f"/Users/{user_id}", json=ops(
        {"op": "replace", "path": "name.givenName", "value": "Carol"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "c2@example.org"},
        {"op": "add", "path": "title", "value": "Engineer"},
        {"op": "replace", "path": "displayName", "value": "Carol X"},
        {"op": "add", "path": f"{ENTERPRISE}:department", "value": "R&D"},
    ))
    assert response.status_code == 200
    user = split.users[user_id]
    assert response.json() == user
    assert user["name"] == {"givenName": "Carol", "familyName": "X"}
    assert user["emails"] == [{"value": "c2@example.org", "type": "work"}]
    assert (user["title"], user["displayName"]) == ("Engineer", "Carol X")
    assert user[ENTERPRISE] == {"department": "R&D"}

    removed = client.patch(f"/Users/{user_id}", json=ops({"op": "REMOVE", "path": "title"}))
    assert removed.status_code == 200 and "title" not in split.users[user_id]
    no_schema = client.patch(f"/Users/{user_id}", json={"Operations": [{"op": "remove",
                                                                        "path": "title"}]})
    assert no_schema.status_code == 400


def test_put_user_and_delete_is_accepted_but_logged(split, client):
    user_id = create_user(client, "dave@example.org")
    put = client.put(f"/Users/{user_id}", json={"userName": "dave@example.org", "title": "Ops"})
    assert put.status_code == 200 and split.users[user_id]["title"] == "Ops"
    assert client.delete(f"/Users/{user_id}").status_code == 204
    assert [(r.method, r.path) for r in split.writes()][-1] == ("DELETE", f"/Users/{user_id}")


# ------------------------------------------------------------------ groups


def test_group_name_rules(split, client):
    too_long = client.post("/Groups", json={"displayName": "x" * 25})
    assert too_long.status_code == 400 and too_long.json()["scimType"] == "invalidValue"
    assert "25" in too_long.json()["detail"]
    assert client.post("/Groups", json={"displayName": "y" * 24}).status_code == 201
    assert client.post("/Groups", json={"displayName": "Administrators"}).status_code == 400
    split.seed_group("Engineering")
    duplicate = client.post("/Groups", json={"displayName": "ENGINEERING"})
    assert duplicate.status_code == 409 and duplicate.json()["scimType"] == "uniqueness"
    found = client.get("/Groups", params={"filter": 'displayName eq "engineering"',
                                          "excludedAttributes": "members"}).json()
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]


def test_group_membership_patches(split, client):
    alice, bob = split.seed_user("alice@example.org"), split.seed_user("bob@example.org")
    group_id = client.post("/Groups", json={"displayName": "Eng", "members": []}).json()["id"]

    def members() -> set[str]:
        return {member["value"] for member in split.groups[group_id]["members"]}

    add = ops({"op": "add", "path": "members", "value": [{"value": alice}, {"value": bob}]})
    assert client.patch(f"/Groups/{group_id}", json=add).status_code == 204
    assert members() == {alice, bob}
    remove = ops({"op": "remove", "path": f'members[value eq "{alice}"]'})
    assert client.patch(f"/Groups/{group_id}", json=remove).status_code == 204
    assert members() == {bob}

    everyone = ops({"op": "remove", "path": "members"})
    assert client.patch(f"/Groups/{group_id}", json=everyone).status_code == 400
    assert members() == {bob}                     # never "remove every member"
    entra = ops({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": bob}]})
    assert client.patch(f"/Groups/{group_id}", json=entra).status_code == 204
    assert members() == set()                     # Entra's shape removes just those listed
    client.patch(f"/Groups/{group_id}", json=ops({"op": "Add", "path": "members",
                                                  "value": [{"$ref": None, "value": bob}]}))
    unknown = ops({"op": "add", "path": "members", "value": [{"value": "ghost"}]})
    assert client.patch(f"/Groups/{group_id}", json=unknown).status_code == 400

    rename_path = ops({"op": "replace", "path": "displayName", "value": "Engineering"})
    assert client.patch(f"/Groups/{group_id}", json=rename_path).status_code == 204
    rename_okta = ops({"op": "replace", "value": {"id": group_id, "displayName": "R&D"}})
    assert client.patch(f"/Groups/{group_id}", json=rename_okta).status_code == 204
    assert split.groups[group_id]["displayName"] == "R&D" and members() == {bob}


def test_split_administrators_keeps_a_member_and_cannot_be_deleted(split, client):
    alice = split.seed_user("alice@example.org")
    admins = split.seed_group("Split_Administrators", member_ids=[alice])
    last = ops({"op": "remove", "path": f'members[value eq "{alice}"]'})
    response = client.patch(f"/Groups/{admins}", json=last)
    assert response.status_code == 400
    assert split.groups[admins]["members"] == [{"value": alice}]
    assert client.delete(f"/Groups/{admins}").status_code == 400
    other = split.seed_group("Other")
    assert client.delete(f"/Groups/{other}").status_code == 204
    assert client.get(f"/Groups/{other}").status_code == 404


# ------------------------------------------------------------------ injected trouble


def test_rate_limit_answers_429_with_split_headers(split, client):
    split.rate_limit(3, window_seconds=5)
    remaining = [client.get("/Users").headers["X-RateLimit-Remaining-Org"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    limited = client.get("/Users")
    assert limited.status_code == 429
    for scope in ("Org", "IP"):
        assert limited.headers[f"X-RateLimit-Remaining-{scope}"] == "0"
        assert 1 <= int(limited.headers[f"X-RateLimit-Reset-Seconds-{scope}"]) <= 5
    split.rate_limit(None)
    assert client.get("/Users").status_code == 200


def test_fail_next_then_recover(split, client):
    split.fail_next(2, status=503, retry_after=7)
    for _ in range(2):
        failed = client.post("/Users", json={"userName": "eve@example.org"})
        assert failed.status_code == 503 and failed.headers["Retry-After"] == "7"
        assert failed.json()["status"] == "503"
    assert split.users == {}
    assert client.post("/Users", json={"userName": "eve@example.org"}).status_code == 201


def test_request_log(split, client):
    split.seed_user("seeded@example.org")  # seeding is not a request
    user_id = create_user(client, "frank@example.org")
    client.get("/Users", params={"filter": 'userName eq "frank@example.org"'})
    client.patch(f"/Users/{user_id}", json=ops({"op": "replace", "path": "title", "value": "T"}))
    log = split.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("POST", "/Users", 201), ("GET", "/Users", 200), ("PATCH", f"/Users/{user_id}", 204)]
    assert log[0].body == {"userName": "frank@example.org"}
    assert log[1].query == {"filter": 'userName eq "frank@example.org"'}
    assert [r.method for r in split.writes()] == ["POST", "PATCH"]
    split.reset_log()
    assert split.requests == [] and split.writes() == []


def test_max_in_flight_observes_concurrency(split):
    split.latency = 0.4
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        httpx.get(f"{split.base_url}/Users", headers=AUTH, timeout=5)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert split.max_in_flight == 4
    split.reset_log()
    split.latency = 0
    httpx.get(f"{split.base_url}/Users", headers=AUTH)
    assert split.max_in_flight == 1


def test_hung_write_is_applied_and_stop_is_prompt():
    fake = FakeSplit(token="tok", hang_seconds=30).start()
    try:
        fake.hang_after_write_next(1)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{fake.base_url}/Users", json={"userName": "gina@example.org"},
                       headers=AUTH, timeout=0.5)
        assert [u["userName"] for u in fake.users.values()] == ["gina@example.org"]
        assert fake.requests[0].status == 201
        with httpx.Client(base_url=fake.base_url, headers=AUTH, timeout=2) as pooled:
            fake.hang_after_write_next(1)
            with pytest.raises(httpx.ReadTimeout):
                pooled.post("/Users", json={"userName": "ian@example.org"}, timeout=0.3)
            assert pooled.post("/Users", json={"userName": "hal@example.org"}).status_code == 201
            started = time.monotonic()
            fake.stop()
            assert time.monotonic() - started < 2
            with pytest.raises(httpx.TransportError):  # a stopped fake is gone, keep-alive too
                pooled.get("/Users")
    finally:
        fake.stop()
