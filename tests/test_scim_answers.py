"""connectors/scim/answers.py: whatever the target answers, the agent raises an error of the
tree with a sentence, or reads something sensible; never a KeyError, a TypeError or a
traceback. Named malformed shapes first, then hypothesis feeding arbitrary JSON and bytes to
every read the Target makes, and arbitrary page sequences to the pager."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import (ConnectorError, Created, FatalTargetError, RejectedError, Secret,
                             TargetError, TargetGroup, TargetUser)
from connectors.http import HttpPolicy
from connectors.scim import ScimTarget
from tests.conftest import FakeTime

URL = "https://split.example.test/scim/v2"
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


_ANSWER: list = [None]
_TARGET: list = []


def target(answer) -> ScimTarget:
    """A target whose every answer comes from ``answer(request) -> httpx.Response``. One is
    built and reused (a TLS context costs more than an example), its counters reset."""
    if not _TARGET:
        fake = FakeTime()
        _TARGET.append(ScimTarget(URL, Secret("tok-answers-test"),
                                  HttpPolicy(rate_limit=1000.0, max_attempts=2),
                                  transport=httpx.MockTransport(lambda r: _ANSWER[0](r)),
                                  clock=fake.clock, sleep=fake.sleep))
    _ANSWER[0] = answer
    _TARGET[0].wire.http.requests_sent = _TARGET[0].wire.http.write_requests = 0
    return _TARGET[0]


def always(status: int, body=None, *, raw: bytes | None = None,
           content_type: str = "application/scim+json"):
    content = raw if raw is not None else json.dumps(body).encode()
    return lambda request: httpx.Response(status, content=content,
                                          headers={"Content-Type": content_type})


def page(*resources, total=None) -> dict:
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": len(resources) if total is None else total,
            "Resources": list(resources)}


USER = {"id": "u1", "userName": "ann@example.org", "active": True}
GROUP = {"id": "g1", "displayName": "Team", "members": [{"value": "u1"}]}


# ------------------------------------------------------------------ named shapes

MALFORMED_LISTINGS = {
    "an HTML page": (always(200, raw=b"<html><body>Please sign in</body></html>",
                            content_type="text/html"),
                     "GET Users: the target answered HTTP 200 with text/html, not SCIM JSON "
                     "(a proxy or a login page?)"),
    "an empty body": (always(200, raw=b""), "answered HTTP 200 with an empty body"),
    "a JSON list": (always(200, [USER]), "GET Users: expected a SCIM object, the target sent "
                                         "a list"),
    "null": (always(200, None), "expected a SCIM object, the target sent null"),
    "Resources as an object": (always(200, {"Resources": {"0": USER}, "totalResults": 1}),
                               "Resources should be a list, the target sent an object"),
    "Resources as text": (always(200, {"Resources": "none"}), "Resources should be a list"),
    "a resource that is a number": (always(200, page(7)), "Resources[0] should be an object, "
                                                          "the target sent a number"),
    "an id that is an object": (always(200, page({**USER, "id": {"v": 1}})),
                                "Resources[0]: id should be text, the target sent an object"),
    "an id that is a list": (always(200, page({**USER, "id": ["u1"]})),
                             "id should be text, the target sent a list"),
    "an id that is true": (always(200, page({**USER, "id": True})),
                           "id should be text, the target sent true/false"),
    "no id": (always(200, page({"userName": "ann@example.org"})), "an object without id"),
    "a userName that is a list": (always(200, page({**USER, "userName": ["a"]})),
                                  "userName should be text, the target sent a list"),
    "active that is text": (always(200, page({**USER, "active": "maybe"})),
                            "user u1: active should be true or false, the target sent text"),
    "active that is a number": (always(200, page({**USER, "active": 1})),
                                "active should be true or false, the target sent a number"),
    "totalResults that is text": (always(200, {"Resources": [USER], "totalResults": "many"}),
                                  "totalResults should be a count, the target sent text"),
    "totalResults that is negative": (always(200, {"Resources": [USER], "totalResults": -1}),
                                      "totalResults should be a count"),
    "nesting too deep": (always(200, raw=b"[" * 100_000 + b"]" * 100_000),
                         "nested too deeply"),
}


@pytest.mark.parametrize("what", list(MALFORMED_LISTINGS))
def test_a_malformed_listing_stops_the_run_with_a_sentence(what):
    answer, expected = MALFORMED_LISTINGS[what]
    with pytest.raises(FatalTargetError) as info:
        list(target(answer).users())
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


MALFORMED_GROUPS = {
    "members as an object": ({**GROUP, "members": {"value": "u1"}},
                             "group g1: members should be a list, the target sent an object"),
    "members as text": ({**GROUP, "members": "u1,u2"}, "members should be a list"),
    "a member that is a number": ({**GROUP, "members": [1]},
                                  "group g1: members[0] should be an object, the target sent "
                                  "a number"),
    "a member value that is a list": ({**GROUP, "members": [{"value": ["u1"]}]},
                                      "members[0]: value should be text, the target sent a list"),
    "no displayName": ({"id": "g1", "members": []}, "an object without displayName"),
}


@pytest.mark.parametrize("what", list(MALFORMED_GROUPS))
def test_a_malformed_group_stops_the_run_with_a_sentence(what):
    resource, expected = MALFORMED_GROUPS[what]
    with pytest.raises(FatalTargetError) as info:
        list(target(always(200, page(resource))).groups())
    assert expected in str(info.value) and str(info.value).startswith("GET Groups: ")


def test_attributes_of_the_wrong_type_read_as_absent():
    odd = {**USER, "name": "Ann Archer", "emails": {"value": "x"}, "title": {"a": 1},
           "phoneNumbers": 5, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": [],
           "displayName": "Ann", "nickName": "an\ud800n"}
    (user,) = target(always(200, page(odd))).users()
    assert user == TargetUser(id="u1", user_name="ann@example.org", active=True,
                              attributes={"userName": "ann@example.org", "displayName": "Ann"})


def test_string_active_and_numeric_ids_are_read():
    (user,) = target(always(200, page({**USER, "id": 42, "active": "False"}))).users()
    assert user.id == "42" and user.active is False
    (group,) = target(always(200, page({**GROUP, "members": [{"value": 7}, {"value": ""},
                                                             {"display": "x"}]}))).groups()
    assert group.members == {"7"}


def test_a_lookup_or_a_count_of_the_wrong_shape_stops_the_run():
    html = always(200, raw=b"<html>maintenance</html>", content_type="text/html")
    for call in (lambda t: t.find_user("ann@example.org"), lambda t: t.find_group("Team"),
                 lambda t: t.check()):
        with pytest.raises(FatalTargetError, match="with text/html, not SCIM JSON"):
            call(target(html))


@pytest.mark.parametrize("body, expected", [
    (b"<html>created</html>", "user ann@example.org: the target answered 201 but returned "
                              "no id"),
    (json.dumps([USER]).encode(), "returned no id"),
    (json.dumps({**USER, "id": {"x": 1}}).encode(), "POST Users: id should be text"),
    (json.dumps({**USER, "active": "perhaps"}).encode(), "active should be true or false"),
])
def test_a_malformed_create_answer_fails_that_operation_only(body, expected):
    def answer(request):
        return httpx.Response(201, content=body, headers={"Content-Type": "application/json"})
    if body.startswith(b"<"):
        expected = "POST Users: the target answered HTTP 201 with application/json, not SCIM JSON"
    with pytest.raises(RejectedError) as info:
        target(answer).create_user({"userName": "ann@example.org"}, True, "1")
    assert expected in str(info.value)


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b"null",
                                  b'{"detail": {"a": 1}, "scimType": ["x"]}', b"\xff\xfe"])
def test_error_bodies_of_any_shape_are_read_as_a_sentence(body):
    answer = always(400, raw=body)
    with pytest.raises(RejectedError) as info:
        target(answer).update_user("u1", {"title": "x"})
    assert str(info.value).startswith("PATCH Users/u1: HTTP 400")


# ------------------------------------------------------------------ paging


def test_a_listing_with_more_objects_than_announced_stops():
    listing = always(200, page(USER, {**USER, "id": "u2", "userName": "b@x.org"}, total=1))
    with pytest.raises(FatalTargetError, match="holds more than the 1 objects it announced"):
        list(target(listing).users())


def test_an_object_seen_on_an_earlier_page_is_read_once():
    def shifting(request):          # a create while paging shifts u100 onto the next page
        start = int(request.url.params["startIndex"])
        ids = range(1, 101) if start == 1 else range(100, 151)
        return httpx.Response(200, json=page(*({"id": f"u{i}", "userName": f"u{i}@x.org"}
                                                for i in ids), total=150))
    users = list(target(shifting).users())
    assert len(users) == 150 and len({u.id for u in users}) == 150


def test_pages_that_alternate_without_anything_new_stop():
    a = [{"id": f"a{i}", "userName": f"a{i}@x.org"} for i in range(100)]
    b = [{"id": f"b{i}", "userName": f"b{i}@x.org"} for i in range(100)]

    def alternating(request):
        start = int(request.url.params["startIndex"])
        return httpx.Response(200, json={"Resources": a if (start // 100) % 2 == 0 else b})
    t = target(alternating)
    with pytest.raises(FatalTargetError, match="the page brought nothing new"):
        list(t.users())
    assert t.requests_sent == 3


# ------------------------------------------------------------------ fuzz

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["id", "userName", "displayName", "active", "members",
                                       "value", "Resources", "totalResults", "emails", "name",
                                       "externalId", "x"]) | st.text(max_size=5),
                      children, max_size=6),
    max_leaves=25)

RESOURCE = st.fixed_dictionaries(
    {}, optional={"id": JSON | st.text(min_size=1, max_size=8), "userName": JSON | st.emails(),
                  "displayName": JSON, "active": JSON, "members": JSON, "externalId": JSON,
                  "emails": JSON, "name": JSON})
PAGE = st.fixed_dictionaries({}, optional={"Resources": st.lists(RESOURCE, max_size=5) | JSON,
                                           "totalResults": JSON | st.integers(0, 10)})
BODY = (PAGE.map(json.dumps) | JSON.map(json.dumps)).map(str.encode) | st.binary(max_size=60)
READS = {
    "users": lambda t: list(t.users()),
    "groups": lambda t: list(t.groups()),
    "find_user": lambda t: t.find_user("ann@example.org"),
    "find_group": lambda t: t.find_group("Team"),
    "check": lambda t: t.check(),
    "create_user": lambda t: t.create_user({"userName": "ann@example.org"}, True, "1"),
    "create_group": lambda t: t.create_group("Team", "g1"),
}


@FUZZ
@given(read=st.sampled_from(sorted(READS)), body=BODY,
       status=st.sampled_from([200, 201, 400, 404, 409, 500]))
def test_any_answer_is_a_record_or_an_error_of_the_tree(read, body, status):
    answer = always(status, raw=body)
    try:
        result = READS[read](target(answer))
    except (TargetError, ConnectorError) as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    records = result if isinstance(result, list) else [result]
    for record in records:
        if isinstance(record, Created):
            record = record.record
        assert record is None or isinstance(record, (TargetUser, TargetGroup, dict))
        if isinstance(record, (TargetUser, TargetGroup)):
            assert isinstance(record.id, str) and record.id


@FUZZ
@given(pages=st.lists(PAGE, min_size=1, max_size=6), full=st.booleans())
def test_any_sequence_of_pages_ends_soon_with_users_or_an_error(pages, full):
    served = []

    def answer(request):
        body = pages[min(len(served), len(pages) - 1)]
        if full and isinstance(body.get("Resources"), list):   # pages that look full go on
            body = {**body, "Resources": (body["Resources"] * 100)[:100] or body["Resources"]}
        served.append(body)
        return httpx.Response(200, json=body)
    t = target(answer)
    try:
        users = list(t.users())
    except TargetError:
        pass
    else:
        assert len({u.id for u in users}) == len(users)
    assert t.requests_sent <= len(pages) + 2


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("body, content_type, expected", [
    (b"<html><h1>Sign in to the proxy</h1></html>", "text/html",
     "GET Users: the target answered HTTP 200 with text/html, not SCIM JSON (a proxy or a "
     "login page?)"),
    (b"[]", "application/json", "GET Users: expected a SCIM object, the target sent a list"),
    (json.dumps(page({"id": {"$oid": "1"}, "userName": "a@x.org"})).encode(),
     "application/scim+json", "GET Users: Resources[0]: id should be text"),
])
def test_sync_and_check_say_what_the_target_sent_in_one_line(tmp_path, capsys, body,
                                                             content_type, expected):
    from agent.cli.main import main
    from tests.conftest import Workspace, user
    from tests.servers.hostile import HostileServer

    with HostileServer(lambda request, wire: wire.answer(200, body, content_type)) as server:
        ws = Workspace(tmp_path, server.base_url)
        ws.write_directory([user("1", "ann@example.org")], [])
        assert main(["--config", str(ws.config), "sync"]) == 1
        _, err = capsys.readouterr()
        assert expected in err and "Traceback" not in err and "unexpected" not in err, err
        assert main(["--config", str(ws.config), "check"]) == 1
        out, _ = capsys.readouterr()
        assert f"FAIL target: {expected}" in out
