"""The SCIM target (connectors/scim/): its codec, what it sends and how it reads answers."""

from __future__ import annotations

import httpx
import pytest

from connectors.base import FatalTargetError, RejectedError, Secret, UnsupportedError
from connectors.http import HttpPolicy
from connectors.scim import ScimTarget
from connectors.scim.codec import filter_value, flat_user, user_resource
from connectors.scim.dialects import dialect_named
from tests.conftest import TOKEN, FakeTime


def target_for(url: str, transport=None, dialect: str = "entra") -> ScimTarget:
    fake_time = FakeTime()
    return ScimTarget(url, Secret(TOKEN), HttpPolicy(rate_limit=1000, max_attempts=2),
                      dialect=dialect, transport=transport, clock=fake_time.clock,
                      sleep=fake_time.sleep)


def test_filter_values_are_quoted_and_escaped():
    assert filter_value('a"b\\c@example.org') == '"a\\"b\\\\c@example.org"'


def test_user_resource_and_back():
    flat = {"userName": "a@example.org", "email": "a@example.org", "name.givenName": "A",
            "name.familyName": "B", "displayName": "A B", "title": "T", "department": "D",
            "manager": "m-1", "phoneNumber": "+1 555"}
    body = user_resource(flat, True, "src-1")
    assert body["externalId"] == "src-1" and body["active"] is True
    assert body["emails"] == [{"value": "a@example.org", "type": "work", "primary": True}]
    ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert ent in body["schemas"] and body[ent] == {"department": "D", "manager": {"value": "m-1"}}
    assert flat_user({**body, "id": "x"}) == (flat, True)


def test_an_entra_style_string_active_is_read_as_a_boolean():
    assert flat_user({"userName": "a", "active": "False"})[1] is False


def test_rfc_patch_ops_are_lowercase_and_replace_the_email_whole():
    ops = dialect_named("rfc").user_patch({"email": "b@x", "title": None}, active=False)
    assert ops == [
        {"op": "replace", "path": "emails", "value": [{"value": "b@x", "type": "work", "primary": True}]},
        {"op": "remove", "path": "title"},
        {"op": "replace", "path": "active", "value": False},
    ]


def test_plain_http_is_refused_except_on_loopback():
    with pytest.raises(FatalTargetError, match="https"):
        target_for("http://split.example.org/scim/v2")
    target_for("http://127.0.0.1:9/scim/v2").close()
    target_for("https://split.example.org/scim/v2").close()


def test_a_redirect_is_fatal_never_success():
    def moved(request):
        return httpx.Response(301, headers={"Location": "https://app.harness.io/scim"})
    target = target_for("https://split.example.org/scim/v2", httpx.MockTransport(moved))
    with pytest.raises(FatalTargetError, match="redirects to https://app.harness.io/scim"):
        target.update_user("u1", {}, active=False)


def test_a_created_answer_without_an_id_is_not_taken_for_success():
    def no_body(request):
        return httpx.Response(201, headers={"Location": "https://split.example.org/scim/v2/Users"})
    target = target_for("https://split.example.org/scim/v2", httpx.MockTransport(no_body))
    from connectors.base import RejectedError
    with pytest.raises(RejectedError, match="no id"):
        target.create_user({"userName": "a@example.org"}, True, "1")


def test_listing_without_total_results_pages_until_a_short_page():
    pages = []

    def listing(request):
        start = int(request.url.params["startIndex"])
        pages.append(start)
        count = 100 if start < 201 else 7
        return httpx.Response(200, json={"Resources": [{"id": str(start + i),
                                                        "userName": f"u{start + i}@example.org"}
                                                       for i in range(count)]})
    target = target_for("https://split.example.org/scim/v2", httpx.MockTransport(listing))
    assert len(list(target.users())) == 207
    assert pages == [1, 101, 201]


def test_removing_members_already_gone_counts_as_done():
    def no_target(request):
        return httpx.Response(400, json={"status": 400, "scimType": "noTarget",
                                         "detail": "no member matched"})
    target = target_for("https://split.example.org/scim/v2", httpx.MockTransport(no_target))
    done = []
    target.remove_members("g1", ["u1", "u2"], on_chunk=done.extend)
    assert done == ["u1", "u2"]


def test_a_501_names_the_refused_request_and_is_sent_once():
    sent = []

    def not_implemented(request):
        sent.append(request)
        return httpx.Response(501, json={"status": 501, "detail": ""})
    target = target_for("https://split.example.org/scim/v2", httpx.MockTransport(not_implemented),
                        dialect="okta")
    with pytest.raises(UnsupportedError) as caught:
        target.remove_members("g1", ["u1"])
    assert len(sent) == 1                                  # not retried: 501 means "never"
    assert caught.value.status == 501 and isinstance(caught.value, RejectedError)
    assert "does not implement" in str(caught.value)
    assert "remove members[value eq ...]" in str(caught.value)


def test_error_bodies_with_numeric_status_are_read(fake_split):
    fake_split.status_as_int = True
    target = target_for(fake_split.base_url)
    target.create_user({"userName": "a@example.org"}, True, "1")
    created = target.create_user({"userName": "A@example.org"}, True, "2")   # 409 -> look up
    assert created.existed and created.record.user_name == "a@example.org"
    assert len(fake_split.users) == 1


@pytest.mark.parametrize("dialect, reads", [("rfc", 1), ("okta", 1), ("entra", 2)])
def test_an_existing_group_of_that_name_is_linked_not_created(fake_split, dialect, reads):
    alice = fake_split.seed_user("alice@example.org")
    existing = fake_split.seed_group("Engineering", [alice])
    target = target_for(fake_split.base_url, dialect=dialect)
    created = target.create_group("engineering", "g-1")
    assert created.existed and created.record.id == existing
    assert created.record.members == {alice}      # what it holds, even when looked up without
    assert [r.method for r in fake_split.requests] == ["GET"] * reads


def test_patch_answers_with_a_body_are_accepted(fake_split):
    fake_split.patch_returns_body = True
    target = target_for(fake_split.base_url)
    created = target.create_user({"userName": "a@example.org"}, True, "1")
    target.update_user(created.record.id, {"title": "Boss"})
    assert fake_split.users[created.record.id]["title"] == "Boss"


def test_tls_session_keys_are_never_logged(monkeypatch, tmp_path):
    from connectors.http import tls_context
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))
    assert tls_context(None).keylog_filename is None


@pytest.mark.parametrize("url, suggested", [
    ("https://api.split.io", "https://api.split.io/scim/v2"),
    ("https://api.split.io/", "https://api.split.io/scim/v2"),
    ("https://api.split.io/scim", "https://api.split.io/scim/v2"),
    ("https://api.split.io/SCIM/V2/Users", "https://api.split.io/SCIM/V2"),
    ("https://api.split.io/scim/v2?x=1", "https://api.split.io/scim/v2"),
    ("https://gw.example/ng/api/scim/account/ABC", None),    # another product's form: no guess
    ("https://api.split.io/scim/v2/Users", "https://api.split.io/scim/v2"),
    ("https://api.split.io/scim/v2/Groups/", "https://api.split.io/scim/v2"),
    ("https://api.split.io/scim/v2/extra", "https://api.split.io/scim/v2"),
    ("https://api.split.io/scim/v2", None),
    ("https://api.split.io/scim/v2/", None),
])
def test_a_base_url_of_the_wrong_form_gets_the_scim_v2_form_suggested(url, suggested):
    from connectors.scim.client import suggested_base
    assert suggested_base(url) == suggested


@pytest.mark.parametrize("cut", ["/scim/v2", "/v2"])
def test_a_404_on_a_collection_says_the_base_url_is_not_one(fake_split, cut):
    wrong = fake_split.base_url[:-len(cut)]
    target = target_for(wrong)
    for read in (target.probe, lambda: list(target.users()), lambda: list(target.groups())):
        with pytest.raises(FatalTargetError) as info:
            read()
        message = str(info.value)
        assert f"[target] url ({wrong}) is not the SCIM base URL" in message
        assert "ends in /scim/v2" in message
    assert target.requests_sent == 3                 # each read stopped at once, not retried


def test_a_404_on_one_object_is_still_that_object_gone(fake_split):
    from connectors.base import NotFoundError
    target = target_for(fake_split.base_url)
    with pytest.raises(NotFoundError):
        target.update_user("no-such-id", {"title": "x"})
