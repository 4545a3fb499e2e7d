"""Redaction everywhere (connectors/redaction.py and the edges that use it).

A target, a proxy and an Okta that echo the request's headers (the bearer token, the SSWS
token) back in their error bodies and headers, in the spellings a remote side uses (as sent,
URL-encoded, JSON- and HTML-escaped). Every command runs against them (plan, sync, sync
--output json, status, check, the daemon) and no output holds the secret: not stdout, not
stderr, not the log, not the daemon's status line, not a byte of the SQLite files.
Then each edge alone, for secrets that arrive some other way, and control characters in
names that would forge a line of the plan or the log.
"""

from __future__ import annotations

import html
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from agent.cli.main import main
from connectors.base import SourceError
from connectors.redaction import MARK, forms, printable, redact
from tests.conftest import Workspace, group, user
from tests.servers.hostile import HostileServer, list_response

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok/3c0b+6a5e=s3cr3t&leak"            # characters that every encoding spells its way
OKTA_TOKEN = "00okta-4f1e/9b+secret"
pytestmark = pytest.mark.timeout(120)


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
            json.dumps(secret).replace("/", "\\/")[1:-1], html.escape(secret)}


def assert_clean(text: str | bytes, where: str, *secrets: str) -> None:
    for secret in secrets:
        for form in spellings(secret):
            needle = form.encode() if isinstance(text, bytes) else form
            assert needle not in text, f"{where} holds the secret as {form!r}"


def echo_page(request) -> str:
    """What a nosy server sends back: the request's head, in several spellings."""
    head = request.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    auth = request.headers.get("authorization", "")
    return (f"Bad request. You sent Authorization: {auth}; url-encoded: "
            f"{quote(auth, safe='')}; form: {quote_plus(auth)}; html: {html.escape(auth)}; "
            f"json: {json.dumps(auth)}; the whole request:\n{head}")


class Nosy:
    """A SCIM target whose writes (and, when asked, reads) fail with an echo of the headers."""

    def __init__(self):
        self.echo_reads = False
        self.server = HostileServer(self.answer)

    def answer(self, request, wire) -> None:
        echo = {"X-Echo": request.headers.get("authorization", "")}
        if request.method == "GET" and not self.echo_reads:
            wire.answer(200, list_response(), headers=echo)
        elif request.method == "GET":
            wire.answer(502, f"<html><body><h1>Proxy error</h1><pre>"
                             f"{html.escape(echo_page(request))}</pre></body></html>",
                        content_type="text/html", headers=echo)
        else:
            wire.answer(400, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                              "status": "400", "detail": echo_page(request),
                              "scimType": "invalidValue"}, headers=echo)


@pytest.fixture
def nosy():
    target = Nosy()
    with target.server:
        yield target


@pytest.fixture
def ws(tmp_path, nosy):
    ws = Workspace(tmp_path, nosy.server.base_url, token=TOKEN)
    ws.write_directory([user("1", "ann@example.org"), user("2", "ben@example.org")],
                       [group("g", "Team", ["1", "2"])])
    return ws


def run(capsys, ws, *args) -> tuple[int, str, str]:
    code = main(["--config", str(ws.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot_bytes(ws) -> bytes:
    return b"".join(p.read_bytes() for p in ws.state.parent.glob(ws.state.name + "*")
                    if p.is_file())


def test_a_remote_echo_of_the_token_reaches_no_output_of_any_command(ws, nosy, capsys):
    code, out, err = run(capsys, ws, "sync")
    assert code == 5, err                                   # the target refused the creates
    assert "You sent Authorization: [redacted]; url-encoded: [redacted]" in out   # echoed, no token
    assert_clean(out + err, "sync", TOKEN)

    # changed records are sent again at once (unchanged ones wait out their back-off)
    ws.write_directory([user("1", "ann@example.org", title="a"),
                        user("2", "ben@example.org", title="b")], [group("g", "Team", ["1", "2"])])
    code, out, err = run(capsys, ws, "--debug", "--log-format", "json", "sync", "--output",
                         "json")
    assert code == 5
    failed = json.loads(out)["failed"]
    assert any(MARK in f["error"] for f in failed if f["op"] == "create_user")
    assert_clean(out + err, "sync --output json (and its debug log)", TOKEN)

    for args in (("status",), ("status", "--output", "json")):
        code, out, err = run(capsys, ws, *args)
        assert code == 0 and "ann@example.org" in out
        assert_clean(out + err, " ".join(args), TOKEN)

    nosy.echo_reads = True
    code, out, err = run(capsys, ws, "check")
    assert code == 1 and "FAIL target" in out
    assert_clean(out + err, "check", TOKEN)
    code, out, err = run(capsys, ws, "sync")
    assert code == 1 and err
    assert_clean(out + err, "sync against a proxy page", TOKEN)

    code, out, err = run(capsys, ws, "plan", "--output", "json")
    assert_clean(out + err, "plan", TOKEN)
    assert_clean(snapshot_bytes(ws), "the SQLite files", TOKEN)
    assert snapshot_bytes(ws)


def test_an_okta_error_that_echoes_its_token_is_redacted_in_plan(tmp_path, capsys):
    def okta(request, wire):
        wire.answer(400, {"errorCode": "E0000001", "errorSummary": echo_page(request)},
                    content_type="application/json")

    with HostileServer(okta) as server:
        ws = Workspace(tmp_path, "https://split.example.test/scim/v2")
        ws.config.write_text(ws.config.read_text().replace(
            'type = "file"\npath = "directory.json"',
            f'type = "okta"\norg_url = "http://127.0.0.1:{server.port}"\n'
            f'token = "{OKTA_TOKEN}"\ntimeout = 5'))
        for args in (("plan",), ("plan", "--output", "json"), ("check",)):
            code, out, err = run(capsys, ws, *args)
            assert code == 1, (args, out, err)
            assert "You sent Authorization: [redacted]; url-encoded: [redacted]" in out + err
            assert_clean(out + err, " ".join(args), OKTA_TOKEN, TOKEN)


def test_the_daemons_log_and_status_line_hold_no_secret(ws, nosy, tmp_path):
    ws.config.write_text(ws.config.read_text().replace(
        f'token = "{TOKEN}"', 'token = { file = "token.txt" }')
        + '\n[schedule]\ninterval = "1h"\n')
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    (tmp_path / "token.txt").chmod(0o600)
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM",
                                                            "SCIM_AGENT_CONFIG")}
    env["NOTIFY_SOCKET"] = str(notify_path)
    log = tmp_path / "daemon.log"
    with log.open("wb") as handle:
        daemon = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(ws.config),
                                   "run"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                  stdout=handle, stderr=handle)
    messages = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                messages.append(notify.recv(65536).decode())
            except socket.timeout:
                pass
            if _finished_runs(ws) and any("STATUS=" in m and "failed" in m for m in messages):
                break
        assert _finished_runs(ws), log.read_text()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
        notify.close()
    text = log.read_text()
    assert "POST Users: HTTP 400" in text and "[redacted]" in text, text
    assert_clean(text, "the daemon's log", TOKEN)
    assert_clean("\n".join(messages), "the daemon's sd_notify messages", TOKEN)
    assert_clean(snapshot_bytes(ws), "the SQLite files", TOKEN)


def _finished_runs(ws) -> int:
    if not ws.state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{ws.state}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM runs WHERE finished IS NOT NULL "
                              "AND mode = 'run'").fetchone()[0]
    except sqlite3.Error:
        return 0


# ------------------------------------------------------------------ each edge on its own


def test_a_secret_in_a_source_error_is_redacted_at_the_output_and_in_the_snapshot(
        split_ws, fake_split, capsys, monkeypatch):
    """No HTTP: a source that puts its password in an exception (a careless library)."""
    from connectors.files import FileSource
    password = "hunter2-correct-horse"

    def leaky(self):
        raise SourceError(f"bind as cn=svc with password {password} refused")
    monkeypatch.setattr(FileSource, "read", leaky)
    from connectors.redaction import keep_secret
    keep_secret(password)               # what the config loader's wiring does for a password
    for args in (("plan",), ("sync",), ("sync", "--output", "json"), ("status",)):
        code, out, err = run(capsys, split_ws, *args)
        assert_clean(out + err, " ".join(args), password)
    assert_clean(snapshot_bytes(split_ws), "the SQLite files", password)


def test_the_log_handler_redacts_tracebacks_and_escapes_control_characters(capsys):
    from agent.cli.logs import setup_logging
    from connectors.redaction import keep_secret
    secret = "sk-live-0a9b8c7d6e5f"
    keep_secret(secret)
    handler = setup_logging(logging.DEBUG, "text")
    try:
        try:
            raise RuntimeError(f"token {secret} was refused")
        except RuntimeError:
            logging.getLogger("agent").exception("group %s failed", "Team\n2026-01-01 ERROR x")
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert secret not in err and "token [redacted] was refused" in err
    first = err.splitlines()[0]
    assert first.endswith("group Team\\n2026-01-01 ERROR x failed")


def test_forms_cover_the_spellings_and_keys_line_by_line():
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" in forms(key)
    assert forms("abc") == set()                                 # too short to be a secret
    assert redact("x tok%2F3 y", extra=["tok/3"]) == f"x {MARK} y"


# ------------------------------------------------------------------ control characters


FORGED_GROUP = "T\n+ create user m@x.io"       # short enough for Split
FORGED_USER = "Eve\x1b[2K\r\u202egro.elpmaxe@nimda"


def test_a_name_cannot_forge_a_line_of_the_plan_or_the_log(split_ws, capsys):
    split_ws.write_directory([user("1", "ann@example.org", title="a\nb"),
                              {"id": "2", "userName": "eve@example.org",
                               "displayName": FORGED_USER},
                              {"id": "3", "userName": "x\n+ create user forged@example.org"}],
                             [group("g", FORGED_GROUP, ["1", "2"])])
    code, out, err = run(capsys, split_ws, "plan")
    lines = out.splitlines()
    assert "+ create user m@x.io" not in lines
    assert any("add to group T\\n+ create user m@x.io" in line for line in lines), out
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
    assert '"Eve\\u001b[2K\\r\\u202egro.elpmaxe@nimda"' in out
    for line in err.splitlines():                              # the problem is logged once
        assert not line.startswith("+ create user forged@example.org")
    code, out, _ = run(capsys, split_ws, "plan", "--output", "json")
    names = [c["key"] for c in json.loads(out)["changes"]]
    assert FORGED_GROUP in names                                # JSON keeps the value as is


def test_printable_escapes_what_a_terminal_would_obey():
    assert printable("a\tb\nc\rd\x00e\x1b[31mf\x7fg\x85h\u2028i\u202ej") == \
        "a\\tb\\nc\\rd\\x00e\\x1b[31mf\\x7fg\\x85h\\u2028i\\u202ej"
    assert printable("Zoë Ünal, 東京") == "Zoë Ünal, 東京"
