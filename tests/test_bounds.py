"""connectors/http/bounds.py: a request ends by its deadline, an answer is never too large.

Real sockets on loopback: a server that drips its answer one byte at a time answers every
read in time, so only a deadline on the whole exchange ends the request. The bounds asserted
here are generous (the drip would last minutes); what matters is that the request ends.
"""

from __future__ import annotations

import gzip

import pytest

from connectors.base import FatalTargetError, TransientError
from connectors.http import HttpClient, HttpPolicy, Request, Vendor
from connectors.scim import ScimTarget
from connectors.base import Secret
from tests.servers.hostile import HostileServer, elapsed, list_response

pytestmark = pytest.mark.timeout(120)

BODY = b'{"schemas": [], "totalResults": 0, "Resources": []}' + b" " * 4000
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n")
DRIP = 0.02                 # seconds per byte: each read is answered far within any timeout


def client(server: HostileServer, **policy) -> HttpClient:
    return HttpClient(server.base_url + "/", Vendor(),
                      HttpPolicy(**{"max_attempts": 1, "rate_limit": 1000.0, **policy}))


@pytest.mark.parametrize("where", ["status line and headers", "body"])
def test_a_server_that_drips_its_answer_cannot_hold_a_request_past_its_timeout(where):
    def answer(request, wire):
        if where == "body":
            wire.send(HEAD) and wire.drip(BODY, DRIP)
        else:
            wire.drip(HEAD + BODY, DRIP)

    with HostileServer(answer) as server:
        http = client(server, timeout=1.0)
        took, error = elapsed(lambda: http.call(Request("GET", "Users")))
    # Without the deadline: (len(HEAD) + len(BODY)) * DRIP, about 80 s of answers that each
    # arrive well within the 1 s read timeout.
    assert isinstance(error, TransientError) and error.sent, error
    print(f"drip in the {where}: the request ended after {took:.2f}s (timeout 1s)")
    assert 0.9 <= took < 10, took


def test_a_drip_within_the_deadline_is_read_whole():
    with HostileServer(lambda request, wire: wire.send(HEAD[:20]) and wire.drip(HEAD[20:], 0.01)
                       and wire.send(BODY)) as server:
        response = client(server, timeout=10.0).call(Request("GET", "Users"))
    assert response.json()["totalResults"] == 0


def test_the_deadline_is_per_request_not_per_connection():
    """Two requests in a row on one kept-alive connection: each has its own deadline."""
    def answer(request, wire):
        wire.send(HEAD[:10]) and wire.drip(HEAD[10:40], 0.02) and wire.send(HEAD[40:] + BODY)

    with HostileServer(answer) as server:
        http = client(server, timeout=5.0)
        for _ in range(3):
            assert http.call(Request("GET", "Users")).status_code == 200
        assert len(server.requests) == 3


def test_the_scim_target_names_the_timeout_and_a_sync_is_not_hung(tmp_path, capsys):
    from agent.cli.main import main
    from tests.conftest import Workspace, user

    def answer(request, wire):
        wire.drip(HEAD + BODY, DRIP)

    with HostileServer(answer) as server:
        ws = Workspace(tmp_path, server.base_url)
        ws.write_config(target_extra="")
        ws.config.write_text(ws.config.read_text().replace("timeout = 5", "timeout = 1")
                             .replace("max_attempts = 4", "max_attempts = 2"))
        ws.write_directory([user("1", "ann@example.org")], [])
        took, error = elapsed(lambda: main(["--config", str(ws.config), "sync"]))
    out, err = capsys.readouterr()
    assert error is None
    assert "GET Users: no answer within 1s" in err, err
    assert took < 20, took       # two attempts of 1 s and a backoff, not minutes of drip


# ------------------------------------------------------------------ the size cap


def test_a_declared_length_above_the_cap_is_refused_before_reading():
    def answer(request, wire):
        wire.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 1000)

    with HostileServer(answer) as server:
        with pytest.raises(Exception, match=r"the answer is larger than 1 MB \(9.31 GB "
                                            r"announced\); refusing to read it"):
            client(server, max_body=1 << 20).call(Request("GET", "Users"))


def test_an_endless_body_is_cut_at_the_cap():
    def answer(request, wire):
        wire.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        while wire.send(chunk) and not wire.stopping.is_set():
            pass

    with HostileServer(answer) as server:
        took, error = elapsed(lambda: client(server, max_body=1 << 20, timeout=30)
                              .call(Request("GET", "Users")))
    assert "the answer is larger than 1 MB; refusing to read it" in str(error)
    assert took < 20


def test_a_compressed_bomb_counts_at_its_decoded_size():
    bomb = gzip.compress(b"[" + b" " * (8 << 20) + b"]")      # 8 MB of JSON in a few KB

    def answer(request, wire):
        wire.send(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
                  + str(len(bomb)).encode() + b"\r\n\r\n" + bomb)

    with HostileServer(answer) as server:
        with pytest.raises(Exception, match=r"larger than 1 MB"):
            client(server, max_body=1 << 20).call(Request("GET", "Users"))
        assert client(server, max_body=16 << 20).call(Request("GET", "Users")).json() == []


@pytest.mark.parametrize("framing", [
    b"Content-Length: 2\r\n\r\n[]",
    b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(b"[]"))
    + gzip.compress(b"[]"),
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
])
def test_an_answer_read_whole_says_the_length_of_its_decoded_body(framing):
    def answer(request, wire):
        wire.send(b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\n" + framing)

    with HostileServer(answer) as server:
        response = client(server).call(Request("GET", "Users"))
    assert response.json() == [] and response.headers["X-Kept"] == "yes"
    assert response.headers["Content-Length"] == "2"
    assert "Content-Encoding" not in response.headers
    assert "Transfer-Encoding" not in response.headers


def test_the_scim_target_refuses_a_huge_listing_and_stops_the_run():
    def answer(request, wire):
        resources = [{"id": str(i), "userName": f"u{i}@example.org"} for i in range(50)]
        page = list_response(resources)
        page["padding"] = "x" * 200_000
        wire.answer(200, page)

    with HostileServer(answer) as server:
        target = ScimTarget(server.base_url, Secret("tok-huge-1234"),
                            HttpPolicy(max_body=100 << 10, max_attempts=1))
        with pytest.raises(FatalTargetError, match=r"GET Users: the answer is larger than "
                                                   r"100 KB \(198 KB announced\); refusing"):
            list(target.users())


# ------------------------------------------------------------------ the settings


@pytest.mark.parametrize("headers", [{"Retry-After": "86400"},
                                     {"X-RateLimit-Reset-Seconds-Org": "7200"},
                                     {"Retry-After": "1e308"}])
def test_server_wait_hints_are_cut_to_target_max_wait(fake_split, split_ws, headers):
    from agent.app import make_target
    from agent.core.outcome import Outcome
    from tests.conftest import FakeTime, user

    split_ws.write_config(target_extra='max_wait = "2s"\n')
    split_ws.write_directory([user("1", "ann@example.org")], [])
    fake_time = FakeTime()
    fake_split.fail_next(3, status=429, headers=headers)
    result = split_ws.agent(target_factory=lambda config: make_target(
        config, clock=fake_time.clock, sleep=fake_time.sleep)).sync()
    assert result.outcome is Outcome.OK and len(fake_split.users) == 1
    assert len(fake_time.waits) == 3 and all(2 <= w < 2.3 for w in fake_time.waits)


def test_max_response_mb_is_the_cap_of_a_sync(tmp_path, capsys):
    from agent.cli.main import main
    from tests.conftest import Workspace, user

    def answer(request, wire):
        page = list_response()
        page["padding"] = "x" * (2 << 20)
        wire.answer(200, page)

    with HostileServer(answer) as server:
        ws = Workspace(tmp_path, server.base_url)
        ws.write_config(target_extra="max_response_mb = 1\n")
        ws.write_directory([user("1", "ann@example.org")], [])
        assert main(["--config", str(ws.config), "sync"]) == 1
    err = capsys.readouterr().err
    assert "GET Users: the answer is larger than 1 MB (2 MB announced); refusing to read it" \
        in err, err


@pytest.mark.parametrize("line, message", [
    ('max_wait = "2h"', "[target] max_wait: must be at most 1h"),
    ("max_wait = \"0s\"", "[target] max_wait: a duration must be positive"),
    ("max_response_mb = 0", "[target] max_response_mb: must be between 1 and 4096"),
    ('max_response_mb = "big"', "[target] max_response_mb: expected a whole number"),
])
def test_bound_settings_are_checked_at_load(tmp_path, line, message):
    from agent.config import ConfigError, load
    from tests.conftest import Workspace
    ws = Workspace(tmp_path, "https://split.example.test/scim/v2")
    ws.write_config(target_extra=line + "\n")
    with pytest.raises(ConfigError) as info:
        load(ws.config)
    assert message in str(info.value)


# ------------------------------------------------------------------ an answer cut short


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_answer_cut_short_is_an_error_never_a_shorter_page(framing):
    """The HTTP sources and the target read pages over this path: a connection that drops
    mid-answer must not yield the part that arrived."""
    body = b'{"Resources": [' + b'{"id": "1"},' * 200 + b'{"id": "x"}]}'

    def answer(request, wire):
        if framing == "content-length":
            wire.send(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body[:len(body) // 2])
        else:
            wire.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + f"{len(body) // 2:x}\r\n".encode() + body[:len(body) // 2] + b"\r\n")
        wire.sock.close()
        wire.closed = True

    with HostileServer(answer) as server:
        with pytest.raises(TransientError) as info:
            client(server, timeout=5.0).call(Request("GET", "Users"))
    assert info.value.sent                   # outcome unknown: a write would be looked up


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_file_that_cannot_be_used_is_a_config_error_naming_the_key(tmp_path, capsys,
                                                                          content):
    from agent.cli.main import main
    from tests.conftest import Workspace
    ws = Workspace(tmp_path, "https://split.example.test/scim/v2")
    ca = tmp_path / "ca.pem"
    if content is None:
        ca.mkdir()
    else:
        ca.write_text(content)
    ws.write_config(target_extra='ca_file = "ca.pem"\n')
    for command in ("sync", "check", "plan"):
        assert main(["--config", str(ws.config), command]) == 1
        err = capsys.readouterr().err
        assert f"[target] ca_file: {ca}: cannot be used as a CA bundle" in err, err
        assert "unexpected" not in err
