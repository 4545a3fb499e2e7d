"""connectors/http/pool.py and the client's cheap paths: a lane of one connection per request
in flight, cookies read only from answers that set one, relative URLs joined once."""

from __future__ import annotations

import threading

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.http import HttpClient, HttpPolicy, Request, Vendor
from connectors.http.pool import Lanes
from connectors.http.transport import build_client
from tests.conftest import TOKEN


class Lane:
    """A stand-in for a one-connection httpcore pool: answers with a body, or raises."""

    made = 0

    def __init__(self, fail: Exception | None = None):
        Lane.made += 1
        self.fail, self.closed, self.answered = fail, False, 0

    def handle_request(self, request):
        if self.fail is not None:
            raise self.fail
        self.answered += 1
        return httpcore.Response(200, content=[b"ok"])

    def close(self):
        self.closed = True

    @property
    def connections(self):
        return [self]


def request(pool: float | None = None) -> httpcore.Request:
    return httpcore.Request("GET", "http://example.test/",
                            extensions={"timeout": {"pool": pool}})


def test_a_lane_is_taken_for_the_whole_exchange_and_given_back_when_the_answer_is_closed():
    made = []
    lanes = Lanes(lambda: made.append(Lane()) or made[-1], size=2)
    first, second = lanes.handle_request(request()), lanes.handle_request(request())
    assert len(made) == 2                       # two in flight: two lanes
    assert b"".join(first.stream) == b"ok"
    first.stream.close()
    first.stream.close()                        # closing twice gives the lane back once
    third = lanes.handle_request(request())
    assert len(made) == 2 and made[0].answered == 2   # the lane given back is used again
    second.stream.close()
    third.stream.close()
    assert len(lanes.connections) == 2
    lanes.close()
    assert all(lane.closed for lane in made) and lanes.connections == []


def test_a_request_beyond_the_bound_waits_for_a_lane_then_times_out_as_httpcore_does():
    lanes = Lanes(Lane, size=1)
    held = lanes.handle_request(request())
    with pytest.raises(httpcore.PoolTimeout):
        lanes.handle_request(request(pool=0.01))
    # a lane given back wakes a waiting request
    got = []
    waiter = threading.Thread(target=lambda: got.append(lanes.handle_request(request(pool=60))))
    waiter.start()
    held.stream.close()
    waiter.join(60)
    assert got and got[0].status == 200


def test_a_failed_exchange_gives_its_lane_back():
    failing = Lane(fail=httpcore.ConnectError("refused"))
    lanes = Lanes(lambda: failing, size=1)
    for _ in range(3):                          # never stuck waiting for the failed lane
        with pytest.raises(httpcore.ConnectError):
            lanes.handle_request(request(pool=0.01))


def test_concurrent_requests_to_a_real_server_reuse_at_most_concurrency_connections(fake_split):
    client = build_client(fake_split.base_url + "/", HttpPolicy(concurrency=3),
                          headers={"Authorization": f"Bearer {TOKEN}"})
    errors = []

    def work():
        try:
            for _ in range(10):
                assert client.get("Users").status_code == 200
        except Exception as exc:       # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert 1 <= len(client._transport._pool.connections) <= 3
    client.close()


def test_cookies_an_answer_sets_are_still_sent_back():
    def server(req: httpx.Request) -> httpx.Response:
        cookie = {"Set-Cookie": "lb=a1; Path=/"} if req.url.path == "/set" else {}
        return httpx.Response(200, headers=cookie, json={"cookie": req.headers.get("Cookie")})
    client = build_client("https://example.test/", HttpPolicy(),
                          transport=httpx.MockTransport(server))
    assert client.get("/a").json() == {"cookie": None}
    client.get("/set")
    assert client.get("/b").json() == {"cookie": "lb=a1"}
    assert dict(client.cookies) == {"lb": "a1"}


RELATIVE = st.text(alphabet="aZ09/?=&#%-_.~ ü:@+", max_size=20).filter(lambda u: "://" not in u)


CLIENTS = {base: HttpClient(base, Vendor(),
                            transport=httpx.MockTransport(lambda r: httpx.Response(200)))
           for base in ("https://split.example.test/scim/v2/",
                        "https://split.example.test:8443/api/scim/v2")}


@pytest.mark.parametrize("base", sorted(CLIENTS))
@given(url=RELATIVE)
def test_a_relative_url_is_joined_as_httpx_itself_would(base, url):
    client = CLIENTS[base]
    try:
        expected = client.client.build_request("GET", url).url
    except httpx.InvalidURL:
        with pytest.raises(httpx.InvalidURL):
            client._target(Request("GET", url))
        return
    assert client._target(Request("GET", url)) == expected
    assert client._target(Request("GET", url)) == expected     # and from the cache
