"""Adaptive pacing: the shared bucket's AIMD decisions on an injected clock, the one HTTP path
telling it what each answer meant, and a smoke-size run of bench/bench_pacing.py."""

from __future__ import annotations

import email.utils
import math
import threading

import httpx
import pytest

from connectors.http import HttpClient, HttpPolicy, RateLimiter, Request, Vendor, quota_spent
from connectors.http.waits import CLIMB, DECREASE, FLOOR, PLATEAU, PROBE


class Clock:
    """A monotonic clock that only sleeping moves; safe to share between threads."""

    def __init__(self, start: float = 0.0):
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def bucket(ceiling: float, burst: float | None = 1.0) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(ceiling, burst, clock=clock, sleep=clock.sleep), clock


def grant(limiter: RateLimiter, count: int) -> list[int]:
    return [limiter.acquire() for _ in range(count)]


# ------------------------------------------------------------------ the decisions


def test_a_throttle_cuts_the_pace_to_a_share_of_the_rate_being_sent():
    limiter, _ = bucket(50)
    tickets = grant(limiter, 20)                 # at the ceiling: 50 per second
    assert limiter.throttled(tickets[-1]) is True
    assert limiter.rate == pytest.approx(DECREASE * 50)
    assert limiter.throttles == 1


def test_workers_slower_than_the_pace_are_cut_from_what_they_really_sent():
    limiter, clock = bucket(50)
    tickets = []
    for _ in range(10):
        tickets.append(limiter.acquire())
        clock.sleep(0.1)                         # the workers manage 10 per second
    limiter.throttled(tickets[-1])
    assert limiter.rate == pytest.approx(DECREASE * 10, rel=0.02)


def test_only_the_first_throttle_of_an_episode_cuts():
    limiter, _ = bucket(50)
    in_flight = grant(limiter, 4)                # four workers, one closed window
    assert limiter.throttled(in_flight[0]) is True
    cut = limiter.rate
    assert [limiter.throttled(t) for t in in_flight[1:]] == [False] * 3
    limiter.succeeded(in_flight[1])              # sent before the cut: says nothing now
    assert limiter.rate == cut and limiter.throttles == 1
    assert limiter.throttled(limiter.acquire()) is True      # a new episode cuts again
    assert limiter.rate == pytest.approx(DECREASE * cut)


def test_answers_climb_back_by_a_share_of_the_ceiling_per_second_of_sending():
    limiter, clock = bucket(100)
    limiter.throttled(limiter.acquire())         # no history yet: cut from the pace
    assert limiter.rate == pytest.approx(DECREASE * 100)
    start, rate = clock(), limiter.rate
    while clock() - start < 2.0:
        limiter.succeeded(limiter.acquire())
    climbed = (limiter.rate - rate) / (clock() - start)
    assert climbed == pytest.approx(CLIMB * 100, rel=0.1)


def test_the_climb_slows_just_below_the_rate_that_drew_the_throttle():
    limiter, clock = bucket(100)
    grant(limiter, 30)
    limiter.throttled(limiter.acquire())         # too fast at 100
    while limiter.rate < PLATEAU * 100:
        limiter.succeeded(limiter.acquire())
    start, rate = clock(), limiter.rate
    while clock() - start < 10.0:
        limiter.succeeded(limiter.acquire())
    probing = (limiter.rate - rate) / (clock() - start)
    assert probing == pytest.approx(PROBE * 100, rel=0.1)      # the 3 % band takes a minute


def test_climbing_well_past_the_throttled_rate_means_the_limit_moved():
    limiter, clock = bucket(100)
    limiter.rate = 20.0                          # as if cut to 20 long ago
    limiter._too_fast = 20.0 / (2 - PLATEAU) * 0.999
    limiter.succeeded(limiter.acquire())
    assert limiter._too_fast is None             # forgotten: the fast climb is back
    start, rate = clock(), limiter.rate
    while clock() - start < 1.0:
        limiter.succeeded(limiter.acquire())
    assert (limiter.rate - rate) / (clock() - start) == pytest.approx(CLIMB * 100, rel=0.1)


def test_the_ceiling_is_never_exceeded():
    limiter, clock = bucket(20)
    limiter.throttled(limiter.acquire())
    paces = []
    for _ in range(5000):
        limiter.succeeded(limiter.acquire())
        paces.append(limiter.rate)
    assert max(paces) == 20 and paces[-1] == 20
    granted = []
    for _ in range(41):
        limiter.acquire()
        granted.append(clock())
    assert (granted[-1] - granted[0]) == pytest.approx(2.0)   # 40 gaps at 20 per second


def test_the_pace_never_falls_below_its_floor():
    limiter, _ = bucket(50)
    for _ in range(30):
        limiter.throttled(limiter.acquire())
    assert limiter.rate == pytest.approx(FLOOR * 50)


def test_after_a_cut_a_pause_ends_in_a_burst_of_the_new_pace_not_the_old():
    limiter, clock = bucket(10, burst=10)        # Okta's and Graph's bucket: a second of rate
    grant(limiter, 10)
    limiter.throttled(limiter.acquire())         # 7 per second now
    clock.sleep(60)                              # a long pause refills the bucket
    start, granted = clock(), []
    for _ in range(10):
        limiter.acquire()
        granted.append(clock())
    assert granted.count(start) == 7


# ------------------------------------------------------------------ against a fixed window


class FixedWindow:
    """The fake Split's limiter rule (tests/fakes/split.py: FakeSplit.rate_limit): ``quota``
    per window aligned on the clock, every request counted, the reset rounded up to whole
    seconds and at least one."""

    def __init__(self, quota: int, clock: Clock, window: float = 1.0):
        self.quota, self.clock, self.window = quota, clock, window
        self.index, self.used = None, 0

    def admit(self) -> float | None:
        """None if admitted, else the reset seconds of the 429."""
        now = self.clock()
        index = math.floor(now / self.window)
        if index != self.index:
            self.index, self.used = index, 0
        self.used += 1
        if self.used <= self.quota:
            return None
        return max(1, math.ceil((index + 1) * self.window - now))


def paced_run(server: int, ceiling: float, requests: int, latency: float = 0.004):
    """One worker sending ``requests`` through the bucket into a fixed window, honouring
    every reset as the retry path does: (admitted per second, throttled share)."""
    limiter, clock = bucket(ceiling)
    clock.now = 0.37                              # the server's windows do not start with us
    window = FixedWindow(server, clock)
    start, throttled, sent = clock(), 0, 0
    admitted = 0
    while admitted < requests:
        ticket = limiter.acquire()
        sent += 1
        reset = window.admit()
        clock.sleep(latency)
        if reset is None:
            admitted += 1
            limiter.succeeded(ticket)
        else:
            throttled += 1
            limiter.throttled(ticket)
            limiter.pause_for(reset)
    return admitted / (clock() - start), throttled / sent


def test_at_twice_the_servers_limit_the_pace_learns_it():
    rate, throttled = paced_run(server=25, ceiling=50, requests=3000)
    assert rate >= 0.9 * 25
    assert throttled <= 0.01


def test_at_the_servers_own_limit_nothing_is_throttled():
    rate, throttled = paced_run(server=50, ceiling=50, requests=3000)
    assert rate >= 0.95 * 50
    assert throttled == 0


# ------------------------------------------------------------------ on the one HTTP path


class Plain(Vendor):
    name = "the test remote"


def answering(*statuses: int) -> tuple[HttpClient, list[int]]:
    answers = list(statuses)
    clock = Clock(1000.0)

    def handler(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(status, headers={"Retry-After": "2"} if status == 429 else {})

    client = HttpClient("https://api.example.test/", Plain(),
                        HttpPolicy(rate_limit=40, max_attempts=3),
                        transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep)
    return client, answers


def test_a_429_on_the_path_cuts_the_shared_pace_and_successes_climb():
    client, _ = answering(429, 200)
    client.call(Request("GET", "things"))         # 429, then after 2 s the retry's 200
    assert client.limiter.throttles == 1
    cut = client.limiter.rate                     # the retry's 200 climbed one step already
    assert cut == pytest.approx(DECREASE * 40 + CLIMB * 40 / (DECREASE * 40))
    client.call(Request("GET", "things"))
    assert client.limiter.rate > cut


def test_a_server_error_neither_cuts_nor_climbs():
    client, _ = answering(429, 503, 503, 503)
    with pytest.raises(Exception):
        client.call(Request("GET", "things"))
    assert client.limiter.throttles == 1
    assert client.limiter.rate == pytest.approx(DECREASE * 40)


# ------------------------------------------------------------------ a quota the headers say is gone


def answer(**headers: str) -> httpx.Response:
    return httpx.Response(200, headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize("headers, seconds", [
    ({"X_RateLimit_Remaining_Org": "0", "X_RateLimit_Reset_Seconds_Org": "3",
      "X_RateLimit_Remaining_IP": "5", "X_RateLimit_Reset_Seconds_IP": "4"}, 4.0),   # Split
    ({"X_RateLimit_Remaining": "0", "X_RateLimit_Reset": "12"}, 12.0),           # a delta
    ({"RateLimit_Remaining": "0", "RateLimit_Reset": "2"}, 2.0),                 # IETF draft
])
def test_an_answer_that_says_the_quota_is_gone_names_the_wait(headers, seconds):
    assert quota_spent(answer(**headers)) == seconds


def test_an_epoch_reset_is_measured_against_the_answers_date():
    date = email.utils.formatdate(2_000_000_000, usegmt=True)
    okta = answer(X_Rate_Limit_Limit="600", X_Rate_Limit_Remaining="0",
                  X_Rate_Limit_Reset="2000000030", Date=date)
    github = answer(X_RateLimit_Remaining="0", X_RateLimit_Reset="2000000045", Date=date)
    assert (quota_spent(okta), quota_spent(github)) == (30.0, 45.0)


@pytest.mark.parametrize("headers", [
    {"X_RateLimit_Remaining_Org": "1", "X_RateLimit_Reset_Seconds_Org": "3"},   # some left
    {"X_RateLimit_Remaining_Org": "0"},                  # Split's answer without a reset
    {"X_Rate_Limit_Limit": "0", "X_Rate_Limit_Remaining": "0",                # concurrent:
     "X_Rate_Limit_Reset": "2000000030"},                                       # an estimate
    {"X_RateLimit_Remaining": "soon", "X_RateLimit_Reset": "3"},
    {},
])
def test_otherwise_there_is_nothing_to_plan_with(headers):
    assert quota_spent(answer(**headers)) is None


def test_every_worker_waits_for_a_reset_the_answer_named_before_any_429():
    clock = Clock(1000.0)
    answers = [answer(X_RateLimit_Remaining="0", X_RateLimit_Reset="7"), answer()]
    client = HttpClient("https://api.example.test/", Plain(), HttpPolicy(rate_limit=40),
                        transport=httpx.MockTransport(lambda request: answers.pop(0)),
                        clock=clock, sleep=clock.sleep)
    client.call(Request("GET", "things"))
    client.call(Request("GET", "things"))
    assert clock() == pytest.approx(1007.0)
    assert client.limiter.throttles == 0


# ------------------------------------------------------------------ the benchmark, smoke size


def test_bench_pacing_smoke_learns_from_429s_and_completes():
    """A sync against a fake Split admitting a quarter of rate_limit, four workers, the fake
    and the agent on one injected clock (so nothing here depends on the machine's speed):
    429s come, every one is learned from and retried, nothing fails; a create is one
    request, member changes go in batches."""
    from bench.bench_pacing import run
    clock = Clock(5000.0)
    result = run(users=150, groups=3, server=10, rate_limit=40, concurrency=4, seed=3,
                 clock=clock, sleep=clock.sleep)
    assert (result.outcome, result.failed) == ("ok", 0)
    assert result.throttled >= 1
    assert 1 <= result.cuts <= result.throttled
    assert result.final_pace <= 40
    assert result.by_kind[("POST", "Users", "2xx")] == 150
    assert result.by_kind[("PATCH", "Groups", "2xx")] == result.expected_patches
    assert result.expected_patches > 3             # a group of more than 100 members


def test_the_daemon_keeps_the_learned_pace_from_one_cycle_to_the_next(split_ws):
    """Each cycle builds its target anew; the pace it learned must not restart at the
    ceiling (a few 429s every cycle). The daemon hands the same pacers to every cycle."""
    from agent.app import make_target
    from agent.config import load

    config = load(split_ws.config)
    pacers: dict = {}
    first = make_target(config, pacers=pacers)
    ticket = first.wire.http.limiter.acquire()
    first.wire.http.limiter.throttled(ticket)            # the first cycle met a 429
    learned = first.wire.http.limiter.rate
    assert learned < config.target.rate_limit
    first.close()
    second = make_target(config, pacers=pacers)
    assert second.wire.http.limiter is first.wire.http.limiter
    assert second.wire.http.limiter.rate == learned
    assert make_target(config).wire.http.limiter.rate == config.target.rate_limit  # a CLI run
    second.close()



def test_every_daemon_cycle_gets_the_same_pacers(split_ws, monkeypatch):
    from agent.app import build_agent
    from agent.config import load
    from agent.service import daemon as daemon_module

    seen = []

    def recording(config, **kwargs):
        seen.append(kwargs.get("pacers"))
        return build_agent(config, **kwargs)
    monkeypatch.setattr(daemon_module, "build_agent", recording)
    d = daemon_module.Daemon(load(split_ws.config), split_ws.config, environ={})
    d._open_state()
    d._cycle()
    d._cycle()
    assert len(seen) == 2 and seen[0] is seen[1]
    assert len(seen[0]) == 1                       # one target, one learned pace


def test_two_organisations_behind_one_url_keep_their_own_pace(split_ws):
    from agent.app import make_target
    from agent.config import load
    pacers: dict = {}
    first = make_target(load(split_ws.config), pacers=pacers)
    split_ws.token = split_ws.token + "-other-org"
    split_ws.write_config()
    second = make_target(load(split_ws.config), pacers=pacers)
    assert second.wire.http.limiter is not first.wire.http.limiter and len(pacers) == 2
    first.close()
    second.close()
