"""Recorded vendor shapes (tests/vectors/, each with its source) fed through the connectors as
the real services serve them, and compared with what the fakes serve: a fake kinder than the
recorded shape is a bug in the fake."""

from __future__ import annotations

import copy
import email.utils
from urllib.parse import unquote

import httpx
import pytest

from agent.core.mapping import MappingRules, map_directory
from connectors.base import CursorExpired, Secret
from connectors.entra import EntraSource
from connectors.entra.client import GraphClient
from connectors.entra.delta import merge_group_delta, merge_user_delta
from connectors.http import HttpPolicy
from connectors.okta import OktaSource
from tests.conftest import FakeTime
from tests.fakes.graph import FakeEntra
from tests.fakes.okta import FakeClock, FakeOkta
from tests.vectors import graph as G
from tests.vectors import okta as O

NOW = 1_700_000_000


# ------------------------------------------------------------------------------------ Okta

def okta_user(uid: str, status: str, email: str) -> dict:
    user = copy.deepcopy(O.USER_WITH_NULLS)
    user.update(id=uid, status=status)
    user["profile"].update(login=email, email=email)
    return user


class OktaReplay:
    """Serves the recorded shapes the way Okta pages them (a bare array, Link headers)."""

    def __init__(self):
        self.users = [okta_user(f"00u{i:017d}", status, f"{status.lower()}@example.com")
                      for i, status in enumerate(O.STATUSES)]
        self.users[0] = O.USER_WITH_NULLS
        self.groups = [O.OKTA_GROUP, O.APP_GROUP, O.BUILT_IN]
        self.throttle_once = True
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, query = request.url.path, dict(request.url.params)
        self.seen.append(path)
        headers = {"Date": email.utils.formatdate(NOW, usegmt=True),
                   "X-Rate-Limit-Limit": "600", "X-Rate-Limit-Remaining": "599",
                   "X-Rate-Limit-Reset": str(NOW + 60)}
        if path == "/api/v1/users" and self.throttle_once:
            self.throttle_once = False
            return httpx.Response(429, json=O.THROTTLED_BODY,
                                  headers={**headers, "X-Rate-Limit-Remaining": "0",
                                           "X-Rate-Limit-Reset": str(NOW + 7)})
        if path == "/api/v1/users":
            deprovisioned = query.get("filter") == 'status eq "DEPROVISIONED"'
            body = [u for u in self.users if (u["status"] == "DEPROVISIONED") == deprovisioned]
        elif path == "/api/v1/groups":
            body = self.groups
        elif path.endswith("/users"):
            body = [O.USER_WITH_NULLS]
        else:
            return httpx.Response(404, json={"errorCode": "E0000007"}, headers=headers)
        return httpx.Response(200, json=body, headers=headers)


def test_recorded_okta_shapes_read_through_the_connector():
    replay = OktaReplay()
    clock = FakeClock(NOW)
    src = OktaSource(OktaSource.Settings(org_url="https://acme.okta.com",
                                         token=Secret("00token", "test")),
                     transport=httpx.MockTransport(replay), clock=clock.time, sleep=clock.sleep,
                     policy=HttpPolicy(rate_limit=1000, max_attempts=3))
    directory = src.read()
    # every status: active, inactive, or (STAGED/PROVISIONED) not pushed by default
    by_status = {r.attributes["status"]: r.active for r in directory.users.values()}
    assert by_status == {s: a for s, a in O.STATUSES.items() if a is not None}
    alice = directory.users[O.USER_WITH_NULLS["id"]].attributes
    assert alice["profile.mobilePhone"] is None and alice["activated"] is None
    desired = map_directory(directory, MappingRules.for_source(OktaSource))
    assert desired.users[O.USER_WITH_NULLS["id"]].attributes == {
        "userName": "alice.smith@example.com", "email": "alice.smith@example.com",
        "name.givenName": "Alice", "name.familyName": "Smith", "displayName": "Alice Smith"}
    # APP_GROUP pushed with its AD profile kept; BUILT_IN "Everyone" never pushed or read
    assert set(directory.groups) == {O.OKTA_GROUP["id"], O.APP_GROUP["id"]}
    app = directory.groups[O.APP_GROUP["id"]].attributes
    assert app["type"] == "APP_GROUP" and app["profile.dn"].startswith("CN=Engineering Users")
    assert f"/api/v1/groups/{O.BUILT_IN['id']}/users" not in replay.seen
    # the throttled answer (E0000047, limit headers) was waited out by the server's clock
    assert 7 <= sum(s for s in clock.slept if s >= 1) <= 9


@pytest.fixture
def fake_okta():
    with FakeOkta(clock=FakeClock(NOW)) as fake:
        yield fake


def shape(value):
    """The key structure of a JSON value (dict keys, recursively; lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def test_the_fake_okta_serves_the_recorded_user_and_group_shapes(fake_okta):
    uid = fake_okta.add_user("a@example.com", "A", "B")
    groups = {t: fake_okta.add_group(f"G {t}", type=t)
              for t in ("OKTA_GROUP", "APP_GROUP", "BUILT_IN")}
    with httpx.Client(base_url=fake_okta.url, trust_env=False,
                      headers={"Authorization": f"SSWS {fake_okta.api_token}"}) as client:
        served_user = client.get("/api/v1/users").json()[0]
        served_groups = {g["type"]: g for g in client.get("/api/v1/groups").json()}
    recorded = shape(O.USER_WITH_NULLS)
    served = shape(served_user)
    recorded["_links"] = served["_links"] = None
    assert served == recorded and served_user["id"] == uid
    for kind, vector in (("OKTA_GROUP", O.OKTA_GROUP), ("APP_GROUP", O.APP_GROUP),
                         ("BUILT_IN", O.BUILT_IN)):
        got = served_groups[kind]
        assert set(got) == set(vector), kind
        assert set(got["profile"]) == set(vector["profile"]), kind
        assert got["objectClass"] == vector["objectClass"], kind
    assert set(groups) == set(served_groups)


def test_the_fake_okta_throttles_with_the_recorded_body_and_headers(fake_okta):
    fake_okta.rate_limit = 1
    with httpx.Client(base_url=fake_okta.url, trust_env=False,
                      headers={"Authorization": f"SSWS {fake_okta.api_token}"}) as client:
        client.get("/api/v1/users")
        throttled = client.get("/api/v1/users")
    assert throttled.status_code == 429
    assert set(throttled.json()) == set(O.THROTTLED_BODY)
    assert throttled.json()["errorCode"] == "E0000047"
    assert all(h in throttled.headers for h in O.THROTTLED_HEADERS)


# ------------------------------------------------------------------------------------ Graph

class NoAuth:
    def headers(self, request):
        return {"Authorization": "Bearer recorded"}

    def renew(self, request, response):
        return False


def graph_replay(pages: dict[str, tuple[int, dict, dict]]):
    """A Graph that answers each path+query (as a link) with a recorded (status, headers, body)."""
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        key = str(request.url).replace("%24", "$")
        calls.append(key)
        for prefix, (status, headers, body) in pages.items():
            if key.startswith(prefix):
                return httpx.Response(status, headers=headers, json=body)
        return httpx.Response(404, json={"error": {"code": "Request_ResourceNotFound"}})
    return handle, calls


def graph_client(handler, fake_time=None) -> GraphClient:
    fake_time = fake_time or FakeTime()
    return GraphClient(G.BASE, NoAuth(), HttpPolicy(rate_limit=1000, max_attempts=3),
                       transport=httpx.MockTransport(handler), clock=fake_time.clock,
                       sleep=fake_time.sleep)


def test_recorded_delta_rounds_merge_removals_and_members_across_pages():
    handler, _ = graph_replay({
        f"{G.BASE}/v1.0/users/delta?$skiptoken": (200, {}, G.USERS_DELTA_PAGE_2),
        f"{G.BASE}/v1.0/users/delta": (200, {}, G.USERS_DELTA_PAGE_1),
        f"{G.BASE}/v1.0/groups/delta?$skiptoken": (200, {}, G.GROUPS_DELTA_PAGE_2),
        f"{G.BASE}/v1.0/groups/delta": (200, {}, G.GROUPS_DELTA_PAGE_1),
    })
    client = graph_client(handler)
    from connectors.base import Directory, GroupRecord, UserRecord
    known = Directory.of(
        [UserRecord("86462606-fde0-4fc4-9e0c-a20eb73e54c6", {"mail": "gone@contoso.com"}),
         UserRecord("2e8d2a0c-5a2b-4b7d-8e0a-4d7b2f0d5c11", {"mail": "soft@contoso.com"})],
        [GroupRecord("184e0d4e-e9c5-4d25-bd7d-b6bbd4d5e2b3", {"displayName": "TestGroup1"},
                     frozenset({"632f8cd8-fa4e-4bd6-8c07-6a1dbdea8a8a"})),
         GroupRecord("0b5c1a7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", {"displayName": "Old"})])
    items, link = client.delta(f"{G.BASE}/v1.0/users/delta")
    assert link.endswith("$deltatoken=oEcOySpF_hWYmTIUZBOIfPzcwisr_rPe")
    users, removed = merge_user_delta(items, known)
    assert removed == {"86462606-fde0-4fc4-9e0c-a20eb73e54c6",          # deleted
                       "2e8d2a0c-5a2b-4b7d-8e0a-4d7b2f0d5c11"}          # changed (soft)
    guest = users["5b1f1c3a-8e2a-4f7c-a0e3-1c2d3e4f5a6b"].attributes
    assert "userPrincipalName" not in guest and guest["otherMails"] == ["bo@partner.example"]
    items, _ = client.delta(f"{G.BASE}/v1.0/groups/delta")
    groups, gone = merge_group_delta(items, known)
    assert gone == {"0b5c1a7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"}
    # both pages' members@delta applied in order; the device dropped, the group kept
    assert groups["184e0d4e-e9c5-4d25-bd7d-b6bbd4d5e2b3"].members == {
        "ffff7b1a-13ef-4e5e-8d4d-8a6a0e5e4b33", "7c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"}


def entra_source_on(handler) -> EntraSource:
    src = EntraSource(EntraSource.Settings(
        tenant_id="11111111-2222-3333-4444-555555555555",
        client_id="0f8fad5b-d9cb-469f-a165-70867728950e", client_secret=Secret("x", "test")))
    src.graph.close()
    src.graph = graph_client(handler)
    return src


def test_recorded_members_of_every_directory_object_kind_keep_users_and_groups():
    # the recorded member kinds, as a groups delta round carries them (id and type only)
    page = {"value": [{"id": "g1", "displayName": "Team", "members@delta": [
                {"@odata.type": m["@odata.type"], "id": m["id"]}
                for m in G.GROUP_MEMBERS["value"]]}],
            "@odata.deltaLink": f"{G.BASE}/v1.0/groups/delta?$deltatoken=x"}
    handler, calls = graph_replay({f"{G.BASE}/v1.0/groups/delta": (200, {}, page)})
    src = entra_source_on(handler)
    record = src._groups_by_id({"g1": "Team"})["g1"]
    assert record.members == {m["id"] for m in G.GROUP_MEMBERS["value"]
                              if m["@odata.type"] in G.KEPT_MEMBER_TYPES}
    assert [unquote(c) for c in calls] == [
        f"{G.BASE}/v1.0/groups/delta?$select=displayName,members&$filter=id eq 'g1'"]
    src.close()


@pytest.mark.parametrize("status, headers, body", [
    (410, G.RESYNC_410_HEADERS, {"error": {"code": "resyncRequired", "message": "Resync"}}),
    (400, {}, G.SYNC_STATE_NOT_FOUND),
])
def test_recorded_expired_delta_tokens_mean_a_full_read(status, headers, body):
    handler, _ = graph_replay({f"{G.BASE}/v1.0/users/delta": (status, headers, body)})
    with pytest.raises(CursorExpired):
        graph_client(handler).delta(f"{G.BASE}/v1.0/users/delta?$deltatoken=old")


def test_recorded_throttling_is_waited_out():
    answers = iter([(429, G.THROTTLED_HEADERS, G.THROTTLED_BODY),
                    (200, {}, {"value": [], "@odata.deltaLink": f"{G.BASE}/v1.0/users/delta?$deltatoken=x"})])

    def handler(request):
        status, headers, body = next(answers)
        return httpx.Response(status, headers=headers, json=body)
    fake_time = FakeTime()
    graph_client(handler, fake_time).delta(f"{G.BASE}/v1.0/users/delta")
    assert 5 <= fake_time.waits[0] <= 5.25


def test_the_fake_graph_serves_members_of_every_kind_and_throttles_like_graph():
    fake = FakeEntra()
    user = fake.add_user(mail="a@contoso.com")
    sp, contact = "sp-1", "contact-1"
    fake.others.update({sp: "#microsoft.graph.servicePrincipal",
                        contact: "#microsoft.graph.orgContact"})
    fake.devices.add("device-1")
    gid = fake.add_group(displayName="Team", members=[user, sp, contact, "device-1"])
    served = fake._route(["groups", gid, "members"], {})[2]["value"]
    recorded = {m["@odata.type"] for m in G.GROUP_MEMBERS["value"]} - {"#microsoft.graph.group"}
    assert {m["@odata.type"] for m in served} == recorded
    fake.inject("/v1.0/users", status=429, retry_after="5")
    status, headers, body = fake.handle("GET", "/v1.0/users", {}, b"")
    assert status == 429 and set(body["error"]) == set(G.THROTTLED_BODY["error"])
    assert set(body["error"]["innerError"]) == set(G.THROTTLED_BODY["error"]["innerError"])
    assert {"Retry-After", "request-id", "client-request-id"} <= set(headers)
