"""The command line: commands, options, output formats, exit statuses, secrecy."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import build_parser, main
from tests.conftest import TOKEN, Workspace, group, user

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("plan", "sync", "run", "status", "history", "check")


def run(capsys, ws: Workspace, *args) -> tuple[int, str, str]:
    code = main(["--config", str(ws.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def small_directory(ws: Workspace) -> None:
    ws.write_directory([user("1", "ann@example.org", "Ann", "Archer", title="Engineer"),
                        user("2", "ben@example.org", "Ben", "Baker"),
                        user("3", "cy@example.org", "Cy", "Cole", active=False)],
                       [group("g", "Team", ["1", "2", "3"])])


def test_every_command_has_help_text_and_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    helps = {a.dest: a.help for a in sub._choices_actions}
    cli_doc = (ROOT / "docs" / "cli.md").read_text()
    for command in COMMANDS:
        assert helps[command], command
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([command, "--help"])
        assert exc.value.code == 0
        assert f"scim-agent {command}" in cli_doc or f"`{command}" in cli_doc, command


def test_the_example_config_plans_the_bundled_example_without_a_token(capsys, monkeypatch):
    monkeypatch.delenv("SCIM_TOKEN", raising=False)
    code = main(["--config", str(ROOT / "config.example.toml"), "plan", "--output", "json"])
    out, _ = capsys.readouterr()
    assert code == 0
    plan = json.loads(out)
    assert plan["summary"]["create_user"] == 34
    assert not (ROOT / "state").exists()            # plan writes nothing


def test_plan_text_reads_like_a_plan(capsys, split_ws):
    small_directory(split_ws)
    code, out, _ = run(capsys, split_ws, "plan")
    assert code == 0
    assert "+ create user ann@example.org" in out
    assert '      title: "Engineer"' in out
    assert "+ add to group Team" in out
    assert "cy@example.org" not in out.split("add to group")[0]     # disabled: not created
    assert out.strip().endswith("members +2 -0.")
    assert "\033[" not in out                                      # no colours off a terminal


def test_plan_json_follows_the_contract(capsys, split_ws):
    small_directory(split_ws)
    code, out, _ = run(capsys, split_ws, "plan", "--output", "json")
    plan = json.loads(out)
    assert list(plan) == ["summary", "changes"]
    assert list(plan["summary"]) == ["create_user", "update_user", "deactivate_user",
                                     "reactivate_user", "create_group", "update_group",
                                     "delete_group", "add_members", "remove_members"]
    assert plan["summary"]["add_members"] == 2
    first = plan["changes"][0]
    assert first == {"op": "create_user", "key": "ann@example.org", "source_id": "1",
                     "attributes": {"userName": "ann@example.org", "email": "ann@example.org",
                                    "name.givenName": "Ann", "name.familyName": "Archer",
                                    "displayName": "Ann Archer", "title": "Engineer"}}
    assert plan["changes"][-1] == {"op": "add_members", "key": "Team",
                                   "members": ["ann@example.org", "ben@example.org"]}


def test_update_shows_old_and_new(capsys, split_ws):
    small_directory(split_ws)
    assert run(capsys, split_ws, "sync")[0] == 0
    split_ws.write_directory([user("1", "ann@example.org", "Ann", "Archer", title="Lead")],
                             [group("g", "Team", ["1"])])
    code, out, _ = run(capsys, split_ws, "plan")
    assert '~ update user ann@example.org' in out
    assert 'title: "Engineer" -> "Lead"' in out
    assert "- deactivate user ben@example.org  (no longer in the source or its scope)" in out
    assert "- remove from group Team" in out
    code, out, _ = run(capsys, split_ws, "plan", "--output", "json")
    changes = json.loads(out)["changes"]
    assert {"op": "update_user", "key": "ann@example.org", "source_id": "1",
            "changed": {"title": ["Engineer", "Lead"]}} in changes


def test_detailed_exitcode(capsys, split_ws):
    small_directory(split_ws)
    assert run(capsys, split_ws, "plan", "--detailed-exitcode")[0] == 2
    assert run(capsys, split_ws, "sync")[0] == 0
    assert run(capsys, split_ws, "plan", "--detailed-exitcode")[0] == 0
    code, out, _ = run(capsys, split_ws, "plan")
    assert "No changes" in out


def test_sync_dry_run_is_plan_and_sends_nothing(capsys, split_ws, fake_split):
    small_directory(split_ws)
    code, out, _ = run(capsys, split_ws, "sync", "--dry-run")
    assert code == 0 and "+ create user" in out
    assert fake_split.requests == []


def test_sync_exit_statuses(capsys, split_ws, fake_split):
    small_directory(split_ws)
    assert run(capsys, split_ws, "sync")[0] == 0
    split_ws.write_directory([], [])
    code, out, _ = run(capsys, split_ws, "sync")
    assert code == 3 and "safety guard" in out
    small_directory(split_ws)
    split_ws.write_directory([user("1", "ann@example.org"), user("2", "ben@example.org")],
                             [group("g", "A very long group name for Split", ["1"])])
    code, out, _ = run(capsys, split_ws, "sync")
    assert code == 5 and "25 characters" in out            # applied, with a refusal
    assert "refused and not sent" in out and "retried" not in out
    code, out, _ = run(capsys, split_ws, "sync", "--output", "json")
    report = json.loads(out)
    assert code == 5 and report["refused"][0]["op"] == "update_group"   # a refused rename
    assert report["failed"] == [] and report["outcome"] == "refused"


def test_a_config_error_is_one_line_naming_file_and_key(capsys, split_ws):
    split_ws.write_config(extra="[sync]\nmax_deactivation = 5\n")
    code, out, err = run(capsys, split_ws, "plan")
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert str(split_ws.config) in err and "[sync] max_deactivation" in err
    assert "Traceback" not in err


def test_a_malformed_source_is_one_line_naming_the_record(capsys, split_ws):
    split_ws.source.write_text('{"users": [{"id": "1", "userName": "a@b.c"}, {"id": "2"}]}')
    code, _, err = run(capsys, split_ws, "plan")
    assert code == 1
    assert "users[1]" in err and "userName is required" in err and "Traceback" not in err


def test_sync_needs_a_token_and_says_which_key(capsys, split_ws, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    split_ws.config.write_text(split_ws.config.read_text().replace(
        f'token = "{TOKEN}"', 'token = { env = "NO_SUCH_TOKEN" }'))
    code, _, err = run(capsys, split_ws, "sync")
    assert code == 1 and "[target] token" in err and "NO_SUCH_TOKEN" in err
    assert run(capsys, split_ws, "plan")[0] == 0              # plan does not need it


def test_status_reports_runs_and_failures(capsys, split_ws):
    small_directory(split_ws)
    code, out, _ = run(capsys, split_ws, "status")
    assert code == 0 and "no snapshot yet" not in out.lower() or "Snapshot" in out
    run(capsys, split_ws, "sync")
    split_ws.write_directory([user("1", "ann@example.org")],
                             [group("g", "Another very long group name", ["1"])])
    run(capsys, split_ws, "sync", "--allow-mass-deactivation")
    code, out, _ = run(capsys, split_ws, "status")
    assert code == 0
    assert "Managed: 2 users (1 active), 1 groups" in out
    assert "Another very long group name" in out and "refused" in out
    code, out, _ = run(capsys, split_ws, "status", "--output", "json")
    data = json.loads(out)
    assert data["runs"][0]["outcome"] == "refused" and data["runs"][1]["outcome"] == "ok"
    assert data["failures"][0]["op"] == "refused"
    assert "update_group refused" in data["failures"][0]["error"]


def test_check_reports_source_and_target(capsys, split_ws, fake_split):
    small_directory(split_ws)
    fake_split.seed_user("someone@example.org")
    code, out, _ = run(capsys, split_ws, "check")
    assert code == 0
    assert re.search(r"ok\s+source \(file\): users: 3, groups: 1", out)
    assert re.search(r"ok\s+target: users: 1, groups: 0", out)
    assert fake_split.writes() == []
    fake_split.token = "rotated"
    code, out, _ = run(capsys, split_ws, "check")
    assert code == 1 and "FAIL target" in out and "token was rejected" in out


def test_the_token_never_appears_in_any_output_or_in_the_snapshot(capsys, split_ws, fake_split,
                                                                    tmp_path, monkeypatch):
    secret = "s3cr3t-TOKEN-value-0123456789"
    small_directory(split_ws)
    fake_split.token = "something-else"                    # every call fails with 401
    outputs = []
    for form in (f'token = "{secret}"', 'token = { env = "AGENT_TEST_TOKEN" }',
                 'token = { file = "token.txt" }'):
        monkeypatch.setenv("AGENT_TEST_TOKEN", secret)
        (split_ws.root / "token.txt").write_text(secret + "\n")
        os.chmod(split_ws.root / "token.txt", 0o600)
        split_ws.config.write_text(split_ws.config.read_text().split("token =")[0] + form + "\n"
                                   + "timeout = 2\nmax_attempts = 1\n")
        for args in (["plan"], ["plan", "--output", "json"], ["sync"], ["sync", "--output", "json"],
                     ["--debug", "sync"], ["check"], ["status"], ["status", "--output", "json"]):
            code, out, err = run(capsys, split_ws, *args)
            outputs.append((args, code, out + err))
    assert any("token was rejected" in text for _, _, text in outputs)
    for args, code, text in outputs:
        assert secret not in text, args
    for path in split_ws.state.parent.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    # and the requests really carried it: the secret was used, not lost
    assert any(r.headers.get("authorization") == f"Bearer {secret}" for r in fake_split.requests)


def test_python_dash_m_and_the_console_script(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cmd in ([sys.executable, "-m", "agent", "--help"],
                [str(Path(sys.executable).parent / "scim-agent"), "--version"]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "scim-agent" in result.stdout


RUN = """
import atexit, sys, threading, time
from agent.cli.main import run
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
class Left:
    def __del__(self):
        print("freed at exit", file=sys.stderr)
left = Left()
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", file=sys.stderr))
                     ).start()
sys.argv[1:] = sys.argv[2:]
run()
"""


@pytest.mark.parametrize("thread", [False, True])
def test_the_command_ends_with_its_output_whole_its_exit_handlers_run_and_its_threads_done(
        split_ws, thread):
    # far more output than one buffer holds: ending without freeing must still flush it all
    split_ws.write_directory([user(str(i), f"u{i}@example.org") for i in range(3000)], [])
    # (stdout buffered as a pipe is, whatever this machine sets: unbuffered, it would hide
    # a missing flush)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT)
    saved = split_ws.config.parent / "saved-plan.json"
    result = subprocess.run([sys.executable, "-c", RUN, "thread" if thread else "-",
                             "--config", str(split_ws.config), "plan", "--output", "json",
                             "--detailed-exitcode", "--out", str(saved)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr            # changes pending, as main says
    assert json.loads(result.stdout)["summary"]["create_user"] == 3000
    assert result.stdout.endswith("}\n")      # (print's last newline: the buffer's)
    assert len(json.loads(saved.read_text())["plan"]["changes"]) == 3000
    assert "exit handler ran" in result.stderr
    assert ("thread done" in result.stderr) is thread        # waited for, as Python does
    # what is left is not freed object by object, but where Python must wait for a thread
    assert ("freed at exit" in result.stderr) is thread


def test_a_command_started_without_stdout_ends_with_its_own_status_not_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(f"{sys.executable} -m agent --config {tmp_path}/none.toml status "
                            ">&-", shell=True, capture_output=True, text=True, env=env,
                            timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


def test_the_example_config_names_every_option_of_every_section_and_source():
    import dataclasses

    from agent import config as cfg
    from connectors import SOURCES, source_class

    text = (ROOT / "config.example.toml").read_text()
    sections = {"state": cfg.StateConfig, "target": cfg.TargetConfig, "sync": cfg.SyncConfig,
                "schedule": cfg.ScheduleConfig, "metrics": cfg.MetricsConfig}
    for name, cls in sections.items():
        for field in dataclasses.fields(cls):
            assert re.search(rf"^#? ?{field.name} = ", text, re.M), f"[{name}] {field.name}"
    for type_name in SOURCES:
        assert f'type = "{type_name}"' in text
        for field in dataclasses.fields(source_class(type_name).Settings):
            assert re.search(rf"^#? ?{field.name} = ", text, re.M), f"{type_name}: {field.name}"


def test_refused_changes_are_listed_but_not_counted_as_pending(capsys, split_ws):
    split_ws.write_directory([user("1", "ann@example.org")], [group("g", "Team", ["1"])])
    assert run(capsys, split_ws, "sync")[0] == 0
    split_ws.write_directory([user("1", "ann@example.org")],
                             [group("g", "A group name far too long for Split", ["1"])])
    code, out, _ = run(capsys, split_ws, "plan", "--detailed-exitcode")
    assert code == 0                                    # nothing that would be sent
    assert "refused, not sent" in out and "1 refused (not sent)" in out
    code, out, _ = run(capsys, split_ws, "plan", "--output", "json")
    plan = json.loads(out)
    assert plan["summary"]["update_group"] == 0
    assert plan["changes"][0]["refused"].startswith("Split group names must be shorter")


def test_plain_http_to_a_remote_target_is_a_config_error(capsys, split_ws):
    split_ws.url = "http://split.example.org/scim/v2"
    split_ws.write_config()
    code, _, err = run(capsys, split_ws, "plan")
    assert code == 1 and "[target] url" in err and "https://" in err


def test_status_without_a_snapshot_says_what_to_do(capsys, split_ws):
    code, out, _ = run(capsys, split_ws, "status")
    assert code == 0 and "no snapshot yet: run 'scim-agent sync' first" in out
    code, out, _ = run(capsys, split_ws, "status", "--output", "json")
    data = json.loads(out)
    assert data["held"] is None and data["runs"] == [] and data["consecutive_failures"] == 0


def test_check_fails_when_the_snapshot_cannot_be_created(capsys, split_ws, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    split_ws.config.write_text(split_ws.config.read_text().replace(
        'path = "state/agent.db"', f'path = "{blocked}/sub/agent.db"'))
    code, out, _ = run(capsys, split_ws, "check")
    assert code == 1 and re.search(r"FAIL\s+state: .*is a file, not a folder", out)


def test_check_config_only_connects_to_nothing(capsys, tmp_path):
    """What ExecReload runs before it signals the agent: a target and a directory that are
    down must not fail a reload that only fixes the config."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        ws = Workspace(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}/scim/v2")
        small_directory(ws)
        code, out, err = run(capsys, ws, "check", "--config-only")
        assert (code, err) == (0, "")
        assert re.search(r"ok\s+config: .*config.toml", out)
        assert re.search(r"ok\s+snapshot: .*agent.db", out)
        with pytest.raises(BlockingIOError):
            listener.accept()                 # nobody knocked
        assert not ws.state.exists()          # and nothing was made


@pytest.mark.parametrize("breakage, words", [
    ("[nonsense\n", "config.toml"),
    ("[schedule]\ninterval = 5\n", "[schedule] interval"),
    ('[target.headers]\nx = 1\n', "[target]"),
])
def test_check_config_only_fails_on_a_config_the_agent_would_refuse(capsys, split_ws,
                                                                     breakage, words):
    split_ws.config.write_text(split_ws.config.read_text() + "\n" + breakage)
    code, out, err = run(capsys, split_ws, "check", "--config-only")
    assert code == 1 and words in err, err


def test_check_config_only_needs_every_secret_the_agent_needs(capsys, split_ws):
    text = split_ws.config.read_text().replace(f'token = "{TOKEN}"', 'token = { file = "gone" }')
    split_ws.config.write_text(text)
    code, _, err = run(capsys, split_ws, "check", "--config-only")
    assert code == 1 and "[target] token" in err and "gone" in err
    split_ws.config.write_text(text.replace('token = { file = "gone" }', ""))
    code, _, err = run(capsys, split_ws, "check", "--config-only")
    assert code == 1 and "[target] token: is required for check" in err


def test_check_config_only_refuses_a_snapshot_of_another_target(capsys, split_ws, fake_split):
    small_directory(split_ws)
    assert run(capsys, split_ws, "sync", "--yes")[0] == 0
    split_ws.url = "https://other.example.org/scim/v2"
    split_ws.write_config()
    code, out, _ = run(capsys, split_ws, "check", "--config-only")
    assert code == 1 and re.search(r"FAIL\s+snapshot: .*made for the Split organisation", out)


def test_a_closed_pipe_is_not_an_error(split_ws):
    # far more output than a pipe buffers, so the writer really meets the closed pipe
    split_ws.write_directory([user(str(i), f"u{i}@example.org") for i in range(3000)], [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(f"{sys.executable} -m agent --config {split_ws.config} plan "
                            "--output json | head -c 10", shell=True, capture_output=True,
                            text=True, env=env, timeout=30)
    assert "BrokenPipe" not in result.stderr and "error" not in result.stderr


def test_sync_json_lists_what_was_applied_and_adopted(capsys, split_ws, fake_split):
    fake_split.seed_user("ann@example.org")
    small_directory(split_ws)
    code, out, _ = run(capsys, split_ws, "sync", "--output", "json")
    report = json.loads(out)
    assert code == 0 and report["exit_code"] == 0
    assert report["target_read"]["adopted"] == ["ann@example.org"]
    assert {"op": "create_user", "key": "ben@example.org"} in report["applied_changes"]
    assert report["failed"] == []


def test_progress_is_a_line_on_a_terminal_and_log_lines_otherwise(caplog, monkeypatch):
    import io
    import logging

    from agent.cli.render import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    progress = Progress(tty)
    for done in range(1, 51):
        progress(done, 50)
    assert tty.getvalue().startswith("\rapplying ") and tty.getvalue().endswith("50/50 operations\n")

    with caplog.at_level(logging.INFO, logger="agent"):
        plain = Progress(io.StringIO())
        for done in range(1, 101):
            plain(done, 100)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("processed ")]
    assert len(lines) == 11 and lines[-1] == "processed 100 of 100 operations"

    # as sync makes it: on the stderr of the moment, which is a terminal here
    monkeypatch.setattr(sys, "stderr", Tty())
    assert Progress().tty


# ------------------------------------------------------------------ interrupted runs


def _sync_process(ws, *extra):
    import subprocess
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", str(ws.config), "sync",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_writes(split, count: int, proc, timeout: float = 60) -> None:
    import time
    deadline = time.monotonic() + timeout
    while len(split.writes()) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sync made no progress"
        time.sleep(0.005)


@pytest.fixture
def slow_split_ws(tmp_path):
    from tests.conftest import TOKEN, Workspace
    from tests.fakes.split import FakeSplit
    with FakeSplit(token=TOKEN, latency=0.05) as split:
        ws = Workspace(tmp_path, split.base_url)
        ws.write_directory([user(str(i), f"p{i:03d}@example.org") for i in range(60)], [])
        yield split, ws


def test_ctrl_c_stops_a_sync_cleanly_and_says_what_was_applied(slow_split_ws, capsys):
    split, ws = slow_split_ws
    proc = _sync_process(ws)
    _wait_for_writes(split, 5, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "nothing new is sent" in err
    created = out.count("+ create user")
    assert 5 <= created < 60 and f"Applied: users {created} created" in out
    assert "Interrupted:" in out
    code, status, _ = run(capsys, ws, "status", "--output", "json")
    last = json.loads(status)["runs"][0]
    assert last["outcome"] == "interrupted" and last["counts"]["create_user"] == created
    split.reset_log()
    assert run(capsys, ws, "sync")[0] == 0                 # carries on: the rest, once each
    assert [r.status for r in split.requests if r.method == "POST"] == [201] * (60 - created)


def test_a_run_whose_process_died_is_never_shown_in_progress(slow_split_ws, capsys):
    split, ws = slow_split_ws
    proc = _sync_process(ws)
    _wait_for_writes(split, 3, proc)
    proc.kill()
    proc.communicate(timeout=30)
    code, out, _ = run(capsys, ws, "status")
    assert code == 0 and "in progress" not in out and "interrupted" in out
    code, status, _ = run(capsys, ws, "status", "--output", "json")
    assert json.loads(status)["runs"][0]["state"] == "its process is gone"


def test_history_lists_every_change_of_one_user_across_a_rename(capsys, split_ws):
    small_directory(split_ws)
    assert run(capsys, split_ws, "sync")[0] == 0
    split_ws.write_directory([user("1", "ann.archer@example.org", "Ann", "Archer",
                                   title="Lead"), user("2", "ben@example.org", "Ben", "Baker")],
                             [group("g", "Team", ["1", "2"])])
    assert run(capsys, split_ws, "sync")[0] == 0
    code, out, _ = run(capsys, split_ws, "history", "ann@example.org")    # the old name
    assert code == 0 and "source id 1" in out
    lines = [line for line in out.splitlines() if " run " in line]
    assert "update_user ann.archer@example.org: applied" in lines[0]
    assert "create_user ann@example.org: applied" in lines[-1]
    assert 'title: "Engineer" -> "Lead"' in out
    code, out, _ = run(capsys, split_ws, "history", "TEAM", "--output", "json")
    changes = json.loads(out)["changes"]
    assert [c["op"] for c in changes][-2:] == ["add_members", "create_group"]
    assert changes[-2]["detail"]["members"] == ["ann@example.org", "ben@example.org"]
    code, out, _ = run(capsys, split_ws, "history", "nobody@example.org")
    assert code == 0 and "no user or group of that name" in out


def test_history_is_pruned_after_history_days(split_ws, capsys):
    small_directory(split_ws)
    assert run(capsys, split_ws, "sync")[0] == 0
    from agent.store.state import State
    with State.open(split_ws.state) as state:
        state.db.execute("UPDATE changes SET at = '2000-01-01T00:00:00+00:00'")
        state.db.conn.commit()
    assert run(capsys, split_ws, "sync")[0] == 0
    code, out, _ = run(capsys, split_ws, "history", "ann@example.org", "--output", "json")
    assert json.loads(out)["changes"] == []


# ---------------------------------------------------------------------------------------------
# The command line's edge: global options anywhere, usage errors, JSON to the last line


def test_global_options_are_accepted_after_the_command_too(capsys, split_ws, tmp_path):
    small_directory(split_ws)
    code = main(["plan", "--config", str(split_ws.config), "--output", "json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["summary"]["create_user"] == 2
    code = main(["sync", "--output", "json", "--log-format", "json", "--debug",
                 "--config", str(split_ws.config)])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["exit_code"] == 0
    assert all(json.loads(line) for line in err.splitlines() if line.strip())
    # given in both places, the one after the command wins
    code = main(["--config", str(tmp_path / "nowhere.toml"), "status",
                 "--config", str(split_ws.config)])
    assert code == 0 and "ann@example.org" not in capsys.readouterr().err
    args = build_parser().parse_args(["--debug", "check"])
    assert (args.debug, args.config, args.log_format) == (True, None, "text")


@pytest.mark.parametrize("argv, words", [
    (["plan", "--detailed-exitcode", "--bogus"],
     "error: unrecognized arguments: --bogus (see 'scim-agent plan --help')"),
    (["sync", "--dry-rn"], "unrecognized arguments: --dry-rn; did you mean --dry-run?"),
    (["plan", "--output", "yaml"], "argument --output: invalid choice: 'yaml'"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
    (["sync", "--only"], "argument --only: expected at least one argument"),
])
def test_a_wrong_command_line_exits_1_never_2_which_means_changes_pending(capsys, argv, words):
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 1
    assert words in err and err.startswith("usage: scim-agent") and "Traceback" not in err


def test_help_and_version_still_exit_0(capsys):
    for argv in (["--help"], ["sync", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "global options (before or after the command)" in capsys.readouterr().out


def _json_lines(err: str) -> list[dict]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return [json.loads(line) for line in lines]         # every line is one JSON object


def test_with_json_logs_the_final_error_is_a_json_line_too(capsys, split_ws, fake_split):
    small_directory(split_ws)
    for extra, argv, words in (
            ("[sync]\nmax_deactivation = 5\n", ["plan"],
             "[sync] max_deactivation: unknown key; did you mean"),
            ("", ["plan", "--bogus"], "unrecognized arguments: --bogus"),
            ("", ["plan", "--explain", "nobody@example.org"], "names no user")):
        split_ws.write_config(extra=extra)
        code = main(["--log-format", "json", "--config", str(split_ws.config), *argv])
        out, err = capsys.readouterr()
        last = _json_lines(err)[-1]
        assert code == 1 and last["level"] == "error" and words in last["message"], err
        assert not last["message"].startswith("error:")
    # the fatal error of a sync (printed with the run's outcome) is a JSON line as well
    fake_split.token = "something-else"                              # Split answers 401
    code = main(["sync", "--config", str(split_ws.config), "--log-format", "json"])
    records = _json_lines(capsys.readouterr().err)
    assert code == 1
    assert any(r["level"] == "error" and "token was rejected" in r["message"] for r in records)
    assert not any("\x1b[" in r["message"] for r in records)


def test_a_mistyped_token_is_named_at_load_and_nothing_is_sent(capsys, split_ws, fake_split,
                                                               monkeypatch):
    """A token pasted with a trailing newline, or with a typographic apostrophe, used to give
    five retries and 'LocalProtocolError' or 'unexpected UnicodeEncodeError'."""
    small_directory(split_ws)
    split_ws.config.write_text(split_ws.config.read_text().replace(
        f'token = "{TOKEN}"', 'token = { env = "AGENT_TEST_TOKEN" }'))
    for pasted, words in ((TOKEN + "\n", "ends with a line break"),
                          (TOKEN[:5] + "\u2019" + TOKEN[5:], "has a non-ASCII character (U+2019 "
                                                             "RIGHT SINGLE QUOTATION MARK) at "
                                                             "character 6")):
        monkeypatch.setenv("AGENT_TEST_TOKEN", pasted)
        for command in ("sync", "check"):
            code, out, err = run(capsys, split_ws, command)
            assert code == 1 and out == "" and err.count("\n") == 1, err
            assert (f"{split_ws.config}: [target] token: the value from environment variable "
                    f"AGENT_TEST_TOKEN {words}, which no token contains") in err
            assert TOKEN not in err and TOKEN[5:] not in err
    assert fake_split.requests == []                       # refused before anything was sent


@pytest.mark.parametrize("command", ["sync", "check", "plan --refresh"])
def test_a_base_url_without_scim_v2_is_told_the_form_split_shows(capsys, split_ws, fake_split,
                                                                 command):
    right = fake_split.base_url
    split_ws.url = right[:-len("/scim/v2")]
    split_ws.write_config()
    split_ws.write_directory([user("1", "ann@example.org")], [])
    code, out, err = run(capsys, split_ws, *command.split())
    assert code == 1
    assert "Traceback" not in err and "unexpected" not in err
    assert "is not the SCIM base URL" in out + err and f"did you mean {right}?" in out + err
    assert fake_split.writes() == []
