"""connectors/http/: pacing, server wait hints, retries, TLS policy, and the one HTTP path."""

from __future__ import annotations

import email.utils
import ssl

import certifi
import httpx
import pytest

from connectors.base import RejectedError, TransientError
from connectors.http import (HttpPolicy, RateLimiter, build_client, parse_retry_after, retrying,
                             server_wait_hint, tls_context)


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
    assert clock.now == pytest.approx(sleeps[0])
    assert clock.now >= 5.0


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
    with pytest.raises(OSError):
        tls_context(tmp_path / "corporate-ca.pem")


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
