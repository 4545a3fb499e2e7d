"""connectors/http/: pacing, server wait hints, retries, TLS policy, and the one HTTP path."""

from __future__ import annotations

import email.utils
import ssl

import certifi
import httpx
import pytest

from connectors.base import ConnectorError, Interrupted, RejectedError, TransientError
from connectors.http import (Failure, HttpClient, HttpPolicy, RateLimiter, Request, Vendor,
                             build_client, parse_retry_after, retrying, server_wait_hint,
                             tls_context)
from tests.conftest import FakeTime


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 0.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(rate: float, burst: float | None = None) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep), clock


def acquire_times(bucket: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        bucket.acquire()
        times.append(clock.now)
    return times


# ------------------------------------------------------------------ RateLimiter


def test_rate_is_honoured_after_the_burst():
    bucket, clock = limiter(rate=4, burst=1)
    assert acquire_times(bucket, clock, 9) == [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]


def test_burst_goes_through_at_once_then_the_rate_applies():
    bucket, clock = limiter(rate=2, burst=3)
    assert acquire_times(bucket, clock, 5) == [0, 0, 0, 0.5, 1.0]


def test_default_burst_is_one_second_of_rate():
    bucket, clock = limiter(rate=8)
    times = acquire_times(bucket, clock, 9)
    assert times[:8] == [0] * 8
    assert times[8] == 0.125


def test_idle_time_refills_the_bucket_up_to_the_burst_only():
    bucket, clock = limiter(rate=2, burst=2)
    acquire_times(bucket, clock, 2)
    clock.now += 100                        # a long quiet spell
    assert acquire_times(bucket, clock, 3) == [100, 100, 100.5]


def test_pause_until_makes_every_acquirer_wait():
    bucket, clock = limiter(rate=2, burst=3)
    bucket.pause_until(10.0)
    assert acquire_times(bucket, clock, 3) == [10.0, 10.0, 10.0]


def test_an_earlier_pause_does_not_shorten_a_later_one():
    bucket, clock = limiter(rate=1)
    bucket.pause_until(10.0)
    bucket.pause_until(5.0)
    bucket.acquire()
    assert clock.now == 10.0


def test_pause_for_is_relative_to_now():
    bucket, clock = limiter(rate=1)
    clock.now = 50.0
    bucket.pause_for(3.0)
    bucket.acquire()
    assert clock.now == 53.0


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        RateLimiter(0)


# ------------------------------------------------------------------ Retry-After and friends


@pytest.mark.parametrize("value, seconds", [("120", 120.0), ("0", 0.0), ("1.5", 1.5),
                                            (" 7 ", 7.0), ("-3", 0.0)])
def test_parse_retry_after_seconds(value, seconds):
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date():
    now = 1_800_000_000.0
    value = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(value, now=now) == pytest.approx(30.0)


def test_parse_retry_after_date_in_the_past_is_zero():
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Someday, 99 Foo 2026"])
def test_parse_retry_after_unusable(value):
    assert parse_retry_after(value) is None


def response(**headers: str) -> httpx.Response:
    return httpx.Response(429, headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_retry_after_comes_first():
    hint = server_wait_hint(response(Retry_After="3", X_RateLimit_Reset_Seconds_Org="40",
                                      X_Rate_Limit_Reset="9999999999"))
    assert hint == 3.0


def test_split_reset_headers_take_the_larger_of_org_and_ip():
    assert server_wait_hint(response(X_RateLimit_Reset_Seconds_Org="5",
                                     X_RateLimit_Reset_Seconds_IP="12")) == 12.0
    assert server_wait_hint(response(X_RateLimit_Reset_Seconds_IP="4")) == 4.0


def test_split_reset_headers_come_before_okta_reset():
    hint = server_wait_hint(response(X_RateLimit_Reset_Seconds_Org="5",
                                     X_Rate_Limit_Reset="9999999999"))
    assert hint == 5.0


def test_okta_reset_is_measured_against_the_response_date():
    server_now = 1_000_000_000                    # far from our clock: skew must not matter
    hint = server_wait_hint(response(X_Rate_Limit_Reset=str(server_now + 30),
                                     Date=email.utils.formatdate(server_now, usegmt=True)))
    assert hint == pytest.approx(30.0)


def test_okta_reset_without_a_date_uses_our_clock():
    assert server_wait_hint(response(X_Rate_Limit_Reset="2000000020"),
                            now=2_000_000_000.0) == pytest.approx(20.0)


def test_unparseable_split_headers_fall_through_to_the_next_hint():
    server_now = 1_000_000_000
    hint = server_wait_hint(response(Retry_After="soon", X_RateLimit_Reset_Seconds_Org="later",
                                     X_Rate_Limit_Reset=str(server_now + 8),
                                     Date=email.utils.formatdate(server_now, usegmt=True)))
    assert hint == pytest.approx(8.0)


def test_no_hint_when_the_server_says_nothing():
    assert server_wait_hint(response()) is None


# ------------------------------------------------------------------ retrying()


class Flaky:
    """Raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def run(call, policy: HttpPolicy, bucket: RateLimiter | None = None):
    sleeps: list[float] = []
    result = retrying(policy, bucket, sleep=sleeps.append)(call)
    return result, sleeps


def test_transient_errors_are_retried_until_success():
    call = Flaky(TransientError("503", 503), TransientError("timeout"))
    result, sleeps = run(call, HttpPolicy(max_attempts=3))
    assert result == "done"
    assert call.calls == 3
    assert len(sleeps) == 2


def test_retries_stop_at_max_attempts_with_the_last_error():
    call = Flaky(*(TransientError(f"503 #{i}", 503) for i in range(10)))
    with pytest.raises(TransientError, match="503 #3"):
        run(call, HttpPolicy(max_attempts=4))
    assert call.calls == 4


def test_other_errors_are_not_retried():
    call = Flaky(RejectedError("400: bad email", 400))
    with pytest.raises(RejectedError):
        run(call, HttpPolicy(max_attempts=5))
    assert call.calls == 1


def test_the_server_hint_is_the_wait():
    call = Flaky(TransientError("429", 429, retry_after=7.0))
    _, sleeps = run(call, HttpPolicy(max_attempts=2))
    assert 7.0 <= sleeps[0] <= 7.25           # plus a little jitter, never less


def test_the_server_hint_is_capped_by_max_wait():
    call = Flaky(TransientError("429", 429, retry_after=86_400.0))
    _, sleeps = run(call, HttpPolicy(max_attempts=2, max_wait=60.0))
    assert 60.0 <= sleeps[0] <= 60.25


def test_the_server_hint_pauses_the_shared_limiter():
    bucket, clock = limiter(rate=100)
    call = Flaky(TransientError("429", 429, retry_after=5.0))
    _, sleeps = run(call, HttpPolicy(max_attempts=2), bucket)
    bucket.acquire()                          # another worker, on the limiter's clock
    assert clock.now == 5.0                   # exactly what the server said, for every worker
    assert 5.0 <= sleeps[0] <= 5.25           # the one that saw it: a little jitter on top


def test_without_a_hint_backoff_is_exponential_with_jitter():
    policy = HttpPolicy(max_attempts=6, backoff_base=1.0, backoff_cap=4.0)
    call = Flaky(*(TransientError("503", 503) for _ in range(5)))
    _, sleeps = run(call, policy)
    caps = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(sleeps) == 5
    assert all(0 <= wait <= cap for wait, cap in zip(sleeps, caps))


# ------------------------------------------------------------------ TLS


@pytest.mark.parametrize("ca_file", [None, certifi.where()])
def test_tls_context_always_verifies(ca_file):
    ctx = tls_context(ca_file)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.cert_store_stats()["x509_ca"] > 0


def test_tls_context_ignores_ssl_cert_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    assert tls_context(None).cert_store_stats()["x509_ca"] > 0


def test_a_missing_ca_file_is_an_error_not_a_fallback(tmp_path):
    from connectors.base import SettingError
    with pytest.raises(SettingError, match="corporate-ca.pem: cannot be used as a CA bundle"):
        tls_context(tmp_path / "corporate-ca.pem")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    with pytest.raises(SettingError, match="no PEM certificate in it"):
        tls_context(tmp_path / "garbage.pem")
    with pytest.raises(SettingError, match=r"Is a directory|cannot be used"):
        tls_context(tmp_path)


def test_built_client_ignores_proxy_environment_and_redirects():
    with build_client("https://split.example.test/scim/v2", HttpPolicy()) as client:
        assert client.trust_env is False
        assert client.follow_redirects is False
        assert client.timeout.connect == 10.0
        assert client.timeout.read == 30.0


def test_every_request_sent_and_every_answer_count_as_activity_for_the_watchdog():
    from connectors import base
    seen = []

    def server(request):
        seen.append("server")
        return httpx.Response(200)
    base.on_activity(lambda: seen.append("beat"))
    try:
        client = build_client("https://example.invalid/", HttpPolicy(),
                              transport=httpx.MockTransport(server))
        client.get("x")
        client.get("y")
    finally:
        base._activity_listeners.clear()
    # a beat as each request goes out (a slow server is not a hung agent) and as it is answered
    assert seen == ["beat", "server", "beat"] * 2


# ------------------------------------------------------------------ the one path: HttpClient

BASE = "https://api.example.test/v1/"


class Plain(Vendor):
    """The shared rules only, and a record of what the path asked."""

    name = "the test API"

    def __init__(self):
        self.failures: list[Failure] = []
        self.gave_up_on: list[TransientError] = []

    def transport_error(self, request, failure, exc):
        self.failures.append(failure)
        return super().transport_error(request, failure, exc)

    def gave_up(self, request, error):
        self.gave_up_on.append(error)
        return error


class Script:
    """A MockTransport handler answering from a list (an exception is raised instead)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def http_client(script, vendor: Vendor | None = None, *, auth=None,
                policy: HttpPolicy | None = None) -> tuple[HttpClient, FakeTime]:
    fake_time = FakeTime()
    client = HttpClient(BASE, vendor or Plain(),
                        policy or HttpPolicy(rate_limit=1000, max_attempts=3),
                        auth=auth, transport=httpx.MockTransport(script),
                        clock=fake_time.clock, sleep=fake_time.sleep)
    return client, fake_time


def test_a_success_is_the_answer_and_is_counted():
    script = Script(httpx.Response(200, json={"ok": True}))
    client, _ = http_client(script)
    assert client.call(Request("GET", "things", params={"a": "1"})).json() == {"ok": True}
    client.call(Request("POST", "things", json={}))
    assert (client.requests_sent, client.write_requests) == (2, 1)
    assert str(script.requests[0].url) == BASE + "things?a=1"


def test_a_429_is_retried_after_the_servers_hint_on_the_injected_clock():
    script = Script(httpx.Response(429, headers={"X-RateLimit-Reset-Seconds-Org": "12"}),
                    httpx.Response(200))
    client, fake_time = http_client(script)
    assert client.call(Request("POST", "things", idempotent=False)).status_code == 200
    assert len(script.requests) == 2                 # a 429 was not processed: resent
    assert 12 <= fake_time.waits[0] <= 12.25


def test_an_okta_reset_is_waited_out_against_the_response_date():
    server_now = 1_000_000_000
    script = Script(httpx.Response(429, headers={
        "X-Rate-Limit-Reset": str(server_now + 20),
        "Date": email.utils.formatdate(server_now, usegmt=True)}), httpx.Response(200))
    client, fake_time = http_client(script)
    client.call(Request("GET", "things"))
    assert 20 <= fake_time.waits[0] <= 20.25


@pytest.mark.parametrize("status, resent", [(503, True), (500, False), (502, False)])
def test_a_non_idempotent_request_is_resent_only_when_it_cannot_have_been_carried_out(
        status, resent):
    script = Script(httpx.Response(status), httpx.Response(201))
    vendor = Plain()
    client, _ = http_client(script, vendor)
    if resent:
        assert client.call(Request("POST", "things", idempotent=False)).status_code == 201
    else:
        with pytest.raises(TransientError) as caught:
            client.call(Request("POST", "things", idempotent=False))
        assert caught.value.sent and vendor.gave_up_on == [caught.value]
    assert len(script.requests) == (2 if resent else 1)


def test_an_idempotent_request_is_retried_until_the_attempts_are_spent():
    script = Script(httpx.Response(500))
    vendor = Plain()
    client, fake_time = http_client(script, vendor)
    with pytest.raises(TransientError, match="HTTP 500"):
        client.call(Request("GET", "things"))
    assert len(script.requests) == 3 and len(vendor.gave_up_on) == 1
    assert len(fake_time.sleeps) == 2                # backoff, on the injected sleep


@pytest.mark.parametrize("status", [501, 505])
def test_a_permanent_5xx_is_a_refusal_sent_once_never_retried(status):
    script = Script(httpx.Response(status), httpx.Response(200))
    vendor = Plain()
    client, fake_time = http_client(script, vendor)
    with pytest.raises(ConnectorError, match=f"HTTP {status}") as caught:
        client.call(Request("PATCH", "things/1", json={}))
    assert not isinstance(caught.value, TransientError)
    assert len(script.requests) == 1 and fake_time.sleeps == [] and vendor.gave_up_on == []


def test_the_vendor_classification_comes_before_the_shared_rules():
    class Picky(Plain):
        def classify(self, request, response):
            if response.status_code == 503:
                return ConnectorError("maintenance: do not retry")
            return None

        def rejected(self, request, response):
            return RejectedError(f"{request.where}: refused", response.status_code)

    client, _ = http_client(Script(httpx.Response(503)), Picky())
    with pytest.raises(ConnectorError, match="maintenance"):
        client.call(Request("GET", "things"))
    client, _ = http_client(Script(httpx.Response(422)), Picky())
    with pytest.raises(RejectedError, match="GET things: refused"):
        client.call(Request("GET", "things"))


@pytest.mark.parametrize("error, failure", [
    (httpx.ConnectError("[Errno 111] Connection refused"), Failure.CONNECT),
    (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
     Failure.TLS),
    (httpx.ConnectTimeout("timed out"), Failure.CONNECT_TIMEOUT),
    (httpx.ReadTimeout("timed out"), Failure.TIMEOUT),
    (httpx.RemoteProtocolError("peer closed connection"), Failure.BROKEN),
])
def test_transport_errors_are_told_apart_by_whether_the_request_went_out(error, failure):
    vendor = Plain()
    script = Script(error, httpx.Response(201))
    client, _ = http_client(script, vendor)
    request = Request("POST", "things", idempotent=False)
    if failure.sent:
        with pytest.raises(TransientError) as caught:
            client.call(request)
        assert caught.value.sent and len(script.requests) == 1      # outcome unknown
    else:
        assert client.call(request).status_code == 201               # never arrived: resent
        assert len(script.requests) == 2
    assert vendor.failures == [failure]


class Token:
    """An Auth that hands out numbered tokens and renews when told the token was refused."""

    def __init__(self, renewable: bool = True):
        self.issued, self.renewable = 0, renewable

    def headers(self, request):
        if not self.issued:
            self.issued += 1
        return {"Authorization": f"Bearer t{self.issued}"}

    def renew(self, request, response):
        if not self.renewable:
            return False
        self.issued += 1
        return True


def test_a_refused_credential_is_renewed_once():
    script = Script(httpx.Response(401), httpx.Response(200))
    client, _ = http_client(script, auth=Token())
    assert client.call(Request("GET", "things")).status_code == 200
    assert [r.headers["Authorization"] for r in script.requests] == ["Bearer t1", "Bearer t2"]

    script = Script(httpx.Response(401))
    client, _ = http_client(script, auth=Token(renewable=False))
    with pytest.raises(ConnectorError, match="HTTP 401"):
        client.call(Request("GET", "things"))
    assert len(script.requests) == 1


def test_a_request_marked_unauthenticated_carries_no_credential():
    script = Script(httpx.Response(200))
    client, _ = http_client(script, auth=Token())
    client.call(Request("POST", "token", data={"grant_type": "x"}, authenticate=False))
    assert "Authorization" not in script.requests[0].headers


def test_a_link_to_another_host_is_never_sent():
    script = Script(httpx.Response(200))
    client, _ = http_client(script, auth=Token())
    for url in ("https://evil.example/v1/things", "http://api.example.test/v1/things",
                "https://api.example.test:8443/v1/things"):
        with pytest.raises(ConnectorError, match="another host"):
            client.call(Request("GET", url))
    client.call(Request("GET", "https://API.example.test/v1/things?page=2"))   # same origin
    assert len(script.requests) == 1


def test_a_stop_request_sends_nothing_new_and_cuts_waits_short():
    import threading
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}), httpx.Response(200))
    client, fake_time = http_client(script)
    client.cancel = threading.Event()
    client.cancel.set()
    with pytest.raises(Interrupted):
        client.call(Request("GET", "things"))
    assert script.requests == [] and fake_time.sleeps == []


def test_requests_are_paced_by_the_shared_limiter():
    client, fake_time = http_client(Script(httpx.Response(200)),
                                    policy=HttpPolicy(rate_limit=5))
    for _ in range(15):
        client.call(Request("GET", "things"))
    assert fake_time.now - 1000.0 == pytest.approx(2.0)   # a burst of 5, then 5 per second


def test_the_client_beats_the_watchdog_before_sending_and_on_the_answer():
    from connectors import base
    seen = []
    script = Script(httpx.Response(200))
    base.on_activity(lambda: seen.append(len(script.requests)))
    try:
        client, _ = http_client(script)
        client.call(Request("GET", "things"))
    finally:
        base._activity_listeners.clear()
    assert seen == [0, 1]


# ------------------------------------------------------------------ the one path: paging


def numbered(request: httpx.Request) -> httpx.Response:
    page = int(request.url.params.get("page", "1"))
    return httpx.Response(200, json={"items": [page], "next": page + 1 if page < 3 else None})


def by_number(request: Request, response: httpx.Response):
    body = response.json()
    following = (Request("GET", "things", params={"page": body["next"]})
                 if body["next"] else None)
    return body["items"], following


def test_pages_follow_the_vendors_next_request_lazily():
    client, _ = http_client(numbered)
    pages = client.pages(Request("GET", "things"), by_number)
    assert next(pages) == [1] and client.requests_sent == 1      # one page at a time
    assert list(pages) == [[2], [3]]


def test_a_next_page_that_repeats_an_earlier_one_stops_the_listing():
    def loop(request):
        return httpx.Response(200, json={"items": [1], "next": 2 if "page" not in
                                         request.url.params else 1})
    client, _ = http_client(loop)
    pages = client.pages(Request("GET", "things", params={"page": 1}), by_number)
    with pytest.raises(ConnectorError, match="repeats an earlier one"):
        list(pages)


def test_a_listing_longer_than_the_page_cap_stops():
    def endless(request):
        page = int(request.url.params.get("page", "1"))
        return httpx.Response(200, json={"items": [page], "next": page + 1})
    client, _ = http_client(endless)
    with pytest.raises(ConnectorError, match="more than 5 pages"):
        list(client.pages(Request("GET", "things"), by_number, max_pages=5))
    assert client.requests_sent == 5


# ------------------------------------------------------------------ a vendor's details: SCIM


def test_a_scim_server_that_ignores_start_index_is_not_paged_for_ever():
    from connectors.base import FatalTargetError, Secret
    from connectors.scim.client import ScimClient

    def same_page(request):
        return httpx.Response(200, json={"Resources": [{"id": str(i)} for i in range(100)]})
    fake_time = FakeTime()
    client = ScimClient("https://split.example.test/scim/v2", Secret("t"),
                        HttpPolicy(rate_limit=1000), transport=httpx.MockTransport(same_page),
                        clock=fake_time.clock, sleep=fake_time.sleep)
    with pytest.raises(FatalTargetError, match="same page came back"):
        list(client.pages("Users"))
    assert client.requests_sent == 2
