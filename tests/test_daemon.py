"""``scim-agent run``: the daemon in a subprocess against the fake Split, and the unit file.

The daemon runs as systemd would run it. It gets a test-owned notify socket and
``WATCHDOG_USEC``, a one-second interval, and a file source in ``tmp_path``. The fake Split
runs in this process, so the tests can watch every request and inject latency and token
rotation. Every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from agent.config import ScheduleConfig, load
from agent.service.daemon import Daemon as InProcessDaemon
from agent.service.notify import Notifier, Watchdog, watchdog_interval
from agent.service.schedule import Schedule
from agent.cli.main import main as cli_main
from tests.fakes.split import FakeSplit

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "scim-agent.service"

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------------------------
# Helpers


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settled(status: dict) -> bool:
    """``status`` was read between two daemon cycles: its newest run has finished and the
    daemon's failure count (saved after it) counts exactly the failed runs in a row."""
    runs = status["runs"]
    failed_in_a_row = next((i for i, r in enumerate(runs) if r["outcome"] != "error"), len(runs))
    return bool(runs) and runs[0]["finished"] is not None \
        and status["consecutive_failures"] == failed_in_a_row


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def user(i: int, title: str = "Engineer") -> dict:
    return {"id": f"u{i}", "userName": f"user{i}@example.org", "email": f"user{i}@example.org",
            "givenName": "User", "familyName": f"Number{i}", "displayName": f"User {i}",
            "title": title, "active": True}


def write_source(path: Path, ids, titles: dict[int, str] | None = None) -> None:
    titles = titles or {}
    ids = list(ids)
    data = {"users": [user(i, titles.get(i, "Engineer")) for i in ids],
            "groups": [{"id": "g1", "displayName": "Staff", "members": [f"u{i}" for i in ids]}]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)                       # the daemon never reads half a file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Setup:
    """A working folder: config, source file, token file, and the fake Split."""

    def __init__(self, tmp_path: Path, fake: FakeSplit, *, interval: str = "1s",
                 max_backoff: str = "3s", concurrency: int = 2, listen: str = "",
                 token_created: str = "", max_deactivations: str = '"50%"'):
        self.dir = tmp_path
        self.fake = fake
        self.config = tmp_path / "config.toml"
        self.source = tmp_path / "directory.json"
        self.token = tmp_path / "token"
        self.token.write_text(fake.token + "\n")
        self.token.chmod(0o600)
        self.log = tmp_path / "daemon.log"
        self.settings = dict(interval=interval, max_backoff=max_backoff, concurrency=concurrency,
                             listen=listen, token_created=token_created,
                             max_deactivations=max_deactivations, source="directory.json")
        self.write_config()

    def write_config(self, **changes) -> None:
        self.settings.update(changes)
        s = self.settings
        created = f"token_created = {s['token_created']}\n" if s["token_created"] else ""
        self.config.write_text(f"""
[state]
path = "state/state.db"

[source]
type = "file"
path = "{s['source']}"

[target]
url = "{self.fake.base_url}"
token = {{ file = "token" }}
{created}rate_limit = 200.0
concurrency = {s['concurrency']}
timeout = 10
max_attempts = 2

[sync]
max_deactivations = {s['max_deactivations']}

[schedule]
interval = "{s['interval']}"
max_backoff = "{s['max_backoff']}"

[metrics]
listen = "{s['listen']}"
""")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                            "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM", "SCIM_AGENT_CONFIG")}
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agent", "--config", str(self.config), *args],
                              cwd=ROOT, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def status(self) -> dict:
        result = self.cli("status", "--output", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def daemon_runs(self) -> list[dict]:
        """The daemon's runs, read straight from the snapshot (the config may be broken)."""
        path = self.dir / "state" / "state.db"
        if not path.exists():
            return []
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM runs WHERE mode = 'run' ORDER BY id").fetchall()
        return [dict(row) for row in rows]

    def user_names(self) -> list[str]:
        return sorted(u["userName"] for u in list(self.fake.users.values()))


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket collecting what the daemon sends."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().split("\n"))

    def times(self, line: str) -> list[float]:
        return [t for t, text in list(self.messages) if text == line]

    def values(self, key: str) -> list[str]:
        return [text[len(key) + 1:] for _t, text in list(self.messages)
                if text.startswith(key + "=")]

    def wait_for(self, line: str, timeout: float) -> None:
        wait_until(lambda: self.times(line), timeout, f"{line} on the notify socket")

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=1)
        self.sock.close()


class Daemon:
    """``scim-agent run`` in a subprocess, as systemd would start it."""

    def __init__(self, setup: Setup, notify: NotifySocket | None = None,
                 watchdog_usec: int = 1_000_000, options: tuple[str, ...] = ()):
        extra = {}
        if notify is not None:
            extra = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(watchdog_usec)}
        self.setup = setup
        self._log = open(setup.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *options, "--config", str(setup.config), "run"],
            cwd=ROOT, env=setup.env(**extra), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._log)

    def log(self) -> str:
        return self.setup.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def fake():
    with FakeSplit(token="tok") as split:
        yield split


@pytest.fixture
def notify(tmp_path):
    # A path socket: sun_path is limited to 108 bytes, so keep it short.
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"sa-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir()
    sock = NotifySocket(str(folder / "notify"))
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(setup: Setup, notify: NotifySocket | None = None, **kwargs) -> Daemon:
        daemon = Daemon(setup, notify, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


# ---------------------------------------------------------------------------------------------
# Pieces, in process


def test_notifier_speaks_to_an_abstract_socket():
    name = f"@scim-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name[1:])
    server.settimeout(2)
    try:
        notifier = Notifier(name)
        notifier.send("READY=1", "STATUS=syncing")
        assert server.recv(1024) == b"READY=1\nSTATUS=syncing"
        notifier.close()
    finally:
        server.close()
    Notifier(None).send("READY=1")          # outside systemd: nothing, and no error


def test_watchdog_interval_reads_systemd_environment():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000",
                              "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({}) is None


def test_watchdog_pings_every_half_interval_and_stops_when_a_cycle_stalls(caplog):
    clock = FakeClock(50.0)
    watchdog = Watchdog(1.0, clock)
    assert watchdog.ping_due()
    watchdog.pinged()
    clock.advance(0.4)
    assert not watchdog.ping_due()
    clock.advance(0.1)
    assert watchdog.ping_due()                              # half of WATCHDOG_USEC
    watchdog.beat()
    clock.advance(0.9)
    assert watchdog.cycle_progressing()
    clock.advance(0.1)                                      # a whole interval without progress
    assert not watchdog.cycle_progressing() and not watchdog.cycle_progressing()
    assert caplog.text.count("no progress for 1.0s") == 1   # said once per stall
    watchdog.beat("any", "arguments")                       # an HTTP answer, a finished op
    assert watchdog.cycle_progressing()
    assert not Watchdog(None, clock).ping_due()             # outside systemd's watchdog


def test_a_hold_says_what_lifts_it_by_its_kind_not_its_text(tmp_path, fake):
    from agent.core.outcome import Hold, HoldKind
    from agent.service.holds import PushHold
    from connectors.base import Secret
    config = load(Setup(tmp_path, fake).config)
    since = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    under_systemd = {"CREDENTIALS_DIRECTORY": str(tmp_path)}

    def how(kind: HoldKind, reason: str, environ, config=config) -> str:
        return PushHold.start(Hold(kind, reason), since, 0, config, "fp", environ).describe()

    def token_from(origin: str):
        token = Secret("t0k3n-value", origin)
        return dataclasses.replace(config, target=dataclasses.replace(config.target, token=token))

    # a token file is read again on reload; a credential or the environment only at start
    assert "reload the service" in how(HoldKind.TOKEN_REJECTED, "401 from Split", under_systemd)
    for origin in ("credential scim_token", "environment variable SCIM_TOKEN"):
        for environ in (under_systemd, {}):
            assert "restart the service" in how(HoldKind.TOKEN_REJECTED, "401 from Split",
                                                environ, token_from(origin))
    # a guard stop whose message happens to say "token" is still lifted by a reload
    assert "reload the service" in how(HoldKind.GUARD, "safety guard: token users gone",
                                       under_systemd, token_from("credential scim_token"))


def test_the_service_never_imports_the_command_line():
    import ast
    for path in (ROOT / "agent" / "service").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert "cli" not in module.split("."), f"{path.name} imports {module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("agent.cli") for a in node.names), path.name


def test_schedule_backs_off_doubling_up_to_the_cap_and_slow_cycles_delay_the_next():
    s = Schedule(ScheduleConfig(interval=dt.timedelta(seconds=10),
                                max_backoff=dt.timedelta(seconds=60)))
    assert [s.backoff(n).total_seconds() for n in range(5)] == [0, 20, 40, 60, 60]
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    second = dt.timedelta(seconds=1)
    assert s.next_run(t0, t0 + 2 * second, 0) == t0 + 10 * second     # on the interval
    assert s.next_run(t0, t0 + 25 * second, 0) == t0 + 25 * second    # slow: right after
    assert s.next_run(t0, t0 + 2 * second, 2) == t0 + 42 * second      # backing off
    assert s.backoff(10_000) == dt.timedelta(seconds=60)               # no overflow
    cron = Schedule(ScheduleConfig(cron="*/5 * * * *"))
    assert cron.period() == dt.timedelta(minutes=5)
    due = cron.next_run(t0, t0 + second, 0)
    assert due > t0 and due.minute % 5 == 0 and due.second == 0


# ---------------------------------------------------------------------------------------------
# The daemon


def test_ready_watchdog_schedule_changes_health_and_metrics(tmp_path, fake, notify, daemons):
    port = free_port()
    today = dt.date.today()
    created = (today - dt.timedelta(days=350)).isoformat()             # 15 days left
    setup = Setup(tmp_path, fake, listen=f"127.0.0.1:{port}", token_created=created)
    write_source(setup.source, range(5))
    daemon = daemons(setup, notify, watchdog_usec=1_000_000)

    notify.wait_for("READY=1", timeout=15)
    wait_until(lambda: len(fake.users) == 5, 10, "the first cycle to create 5 users")
    wait_until(lambda: len(setup.daemon_runs()) >= 2, 10, "a second scheduled cycle")
    fake.reset_log()
    runs_before = len(setup.daemon_runs())
    wait_until(lambda: len(setup.daemon_runs()) >= runs_before + 2, 10, "two more cycles")
    assert fake.writes() == [], "a cycle with no source changes sends no writes"

    write_source(setup.source, range(6), titles={0: "Director"})
    wait_until(lambda: "user5@example.org" in setup.user_names(), 10, "the new user")
    wait_until(lambda: any(u.get("title") == "Director" for u in fake.users.values()), 10,
               "the changed title")

    assert len(notify.times("WATCHDOG=1")) >= 2
    assert any("next run" in s for s in notify.values("STATUS"))

    # The fake sees the last change a moment before the daemon has recorded its answers,
    # ended the cycle and updated the metrics: wait for the metrics, never for luck.
    expected = ('scim_agent_operations_total{kind="create_user",outcome="applied"} 6.0',
                'scim_agent_objects_managed{kind="users"} 6.0',
                "scim_agent_consecutive_failures 0.0",
                "scim_agent_held 0.0")

    def metrics_once_recorded() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return text if all(line in text for line in expected) else None

    metrics = wait_until(metrics_once_recorded, 10,
                         "the metrics of the cycle that applied the changes")
    for line in expected:
        assert line in metrics, line
    # 15 days left; 14 if midnight passed since the test began
    days_left = {15, 15 - (dt.date.today() - today).days}
    assert any(f"scim_agent_token_days_left {days}.0" in metrics for days in days_left)
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["token_days_left"] in days_left
    assert "scim_agent_cycle_duration_seconds_count" in metrics
    last_success = [l for l in metrics.splitlines()
                    if l.startswith("scim_agent_last_success_timestamp_seconds ")][0]
    assert abs(float(last_success.split()[1]) - time.time()) < 30

    status = setup.status()
    assert status["held"] is None and status["consecutive_failures"] == 0
    assert status["next_run"]
    assert "expires on" in daemon.log()                 # the token warning, every cycle

    rc, took = daemon.stop()
    assert rc == 0 and took < 5
    assert notify.times("STOPPING=1")
    assert setup.status()["next_run"] is None


def test_slow_target_never_overlaps_and_locks_refuse_other_agents(tmp_path, fake, daemons,
                                                                 capsys):
    fake.latency = 0.25
    setup = Setup(tmp_path, fake, concurrency=1)
    write_source(setup.source, range(8))
    daemon = daemons(setup)

    # The first cycle takes ~3 s (each request 0.25 s, one at a time) on a 1 s interval.
    wait_until(lambda: any(r.method == "POST" for r in fake.requests), 15, "the first POST")
    # In this process: a CLI subprocess can take longer to start on a loaded machine than the
    # cycle has left, and would then find the snapshot free.
    assert cli_main(["--config", str(setup.config), "sync"]) == 1
    assert re.search(rf"another scim-agent \(pid {daemon.proc.pid}\) is using this snapshot",
                     capsys.readouterr().err)
    second = setup.cli("run", timeout=15)
    assert second.returncode == 1 and "already running" in second.stderr

    wait_until(lambda: len(fake.users) == 8, 15, "the slow cycle to finish")
    wait_until(lambda: len(setup.daemon_runs()) >= 2, 10, "the next cycle")
    assert fake.max_in_flight == 1, "two cycles were sending at the same time"
    runs = sorted(setup.daemon_runs(), key=lambda r: r["id"])
    for earlier, later in zip(runs, runs[1:]):
        assert earlier["finished"] and earlier["finished"] <= later["started"]
    posts = [r for r in fake.requests if r.method == "POST" and r.path == "/Users"]
    assert len(posts) == 8
    assert "maximum number of running instances" not in daemon.log()
    # the daemon itself never tried to start a cycle while one ran (the snapshot lock
    # would have refused it: that is the safety net, not the mechanism under test)
    assert "skipping this cycle" not in daemon.log()
    assert daemon.stop()[0] == 0


def test_sigterm_mid_cycle_exits_promptly_and_next_sync_converges(tmp_path, fake, notify,
                                                                  daemons):
    setup = Setup(tmp_path, fake, concurrency=2)
    write_source(setup.source, range(4))
    daemon = daemons(setup, notify, watchdog_usec=600_000)
    wait_until(lambda: len(fake.users) == 4, 15, "the first cycle")
    wait_until(lambda: len(notify.times("WATCHDOG=1")) >= 3, 5, "watchdog pings")

    fake.latency = 2.0                       # each request now hangs longer than the watchdog
    posts_before = sum(r.method == "POST" for r in fake.requests)
    write_source(setup.source, range(16))
    slow_from = time.monotonic()
    wait_until(lambda: sum(r.method == "POST" and r.status > 0 for r in fake.requests)
               >= posts_before + 2, 15, "the slow cycle to get two creates answered")

    # While requests hang, the heartbeat ages past the watchdog interval: the pings stop.
    pings = [slow_from] + [t for t in notify.times("WATCHDOG=1") if t > slow_from]
    assert max(b - a for a, b in zip(pings, pings[1:] + [time.monotonic()])) > 1.2

    rc, took = daemon.stop()
    assert rc == 0
    assert took < 4, f"took {took:.1f}s to stop"
    assert notify.times("STOPPING=1")
    assert len(fake.users) < 16, "the stop came too late to test an interrupted cycle"

    fake.latency = 0
    result = setup.cli("sync")
    assert result.returncode == 0, result.stderr
    names = [u["userName"] for u in fake.users.values()]
    assert len(names) == 16 and len(set(names)) == 16
    created = [r for r in fake.requests if r.method == "POST" and r.path == "/Users"
               and r.status == 201]
    assert len(created) == 16, "a user was created twice"
    assert not any(r.method == "DELETE" for r in fake.requests)


def test_sighup_reloads_and_a_broken_config_keeps_the_old_one(tmp_path, fake, notify, daemons):
    setup = Setup(tmp_path, fake)
    write_source(setup.source, range(3))
    write_source(tmp_path / "other.json", range(5))
    daemon = daemons(setup, notify)
    wait_until(lambda: len(fake.users) == 3, 15, "the first cycle")

    good = setup.config.read_text()
    setup.config.write_text(good + "\n[nonsense\n")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed; still running with the previous config" in daemon.log(),
               10, "the reload error")
    runs = len(setup.daemon_runs())
    wait_until(lambda: len(setup.daemon_runs()) >= runs + 2, 10, "cycles after the bad reload")
    assert daemon.alive()

    setup.write_config(source="other.json")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(fake.users) == 5, 10, "the reloaded config's source")
    assert "config reloaded" in daemon.log()
    assert notify.times("RELOADING=1")
    assert daemon.stop()[0] == 0


def test_backoff_token_hold_and_guard_hold(tmp_path, fake, daemons):
    port = free_port()
    setup = Setup(tmp_path, fake, listen=f"127.0.0.1:{port}", max_backoff="3s",
                  max_deactivations="1")
    write_source(setup.source, range(4))
    daemon = daemons(setup)
    health = lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # noqa: E731
    wait_until(lambda: len(fake.users) == 4, 15, "the first cycle")

    # Failing cycles back off: 2 s after the first failure, then 3 s (the cap).
    setup.source.write_text("{ not json")
    metrics = lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text  # noqa: E731
    # the gauge says 2 from the end of the second failure until the end of the third, 3 s on
    wait_until(lambda: "scim_agent_consecutive_failures 2.0" in metrics(), 10,
               "two failed cycles in the metrics")
    status = wait_until(lambda: (s := setup.status())["consecutive_failures"] >= 2
                        and settled(s) and s, 10, "two failed cycles in the status")
    last = status["runs"][0]
    assert last["outcome"] == "error" and "reading the source failed" in last["message"]
    gap = (dt.datetime.fromisoformat(status["next_run"])
           - dt.datetime.fromisoformat(last["finished"])).total_seconds()
    assert gap >= 2, f"next run only {gap}s after a second failure"
    write_source(setup.source, range(5))
    wait_until(lambda: setup.status()["consecutive_failures"] == 0, 10, "recovery")
    assert "user4@example.org" in setup.user_names()

    # A rotated token: 401, then nothing is sent until the credential changes.
    fake.token = "rotated"
    write_source(setup.source, range(6))
    status = wait_until(lambda: (s := setup.status())["held"] and s, 10, "the 401 hold")
    assert "401" in status["held"]
    assert health().status_code == 503 and health().json()["status"] == "held"
    fake.reset_log()
    held_ticks = daemon.log().count("pushing is held: ")
    wait_until(lambda: daemon.log().count("pushing is held: ") >= held_ticks + 2, 10,
               "two ticks of the 1 s schedule while held")
    assert fake.requests == [], "requests were sent while pushing was held"
    setup.token.write_text("rotated\n")
    wait_until(lambda: "user5@example.org" in setup.user_names(), 10, "resuming after the fix")
    wait_until(lambda: setup.status()["held"] is None, 5, "the hold to clear")
    assert health().status_code == 200

    # The safety guard holds too; a manual sync that gets through lifts the hold.
    write_source(setup.source, range(2))     # 4 leavers, more than max_deactivations = 1
    status = wait_until(lambda: (s := setup.status())["held"] and s, 10, "the guard hold")
    assert "safety guard" in status["held"]
    manual = setup.cli("sync", "--allow-mass-deactivation")
    assert manual.returncode == 0, manual.stderr
    assert setup.status()["held"] is None              # the manual sync cleared it at once
    wait_until(lambda: "a manual sync succeeded" in daemon.log(), 10, "the daemon to resume")
    assert sum(1 for u in fake.users.values() if u.get("active")) == 2
    assert daemon.stop()[0] == 0


# ---------------------------------------------------------------------------------------------
# The unit file


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run must install Debian's systemd")
        pytest.skip("systemd-analyze is not installed")
    return path


TEMPLATE = ROOT / "systemd" / "scim-agent@.service"
UNITS = {"scim-agent.service": UNIT, "scim-agent@acme.service": TEMPLATE}
HARDENING_SCORE = 1.1          # what the single unit scored when the template was added


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_files_are_hardened_to_ok(tmp_path, name):
    """Both units, the template as an instance, stay at or below the single unit's 1.1."""
    analyze = _systemd_analyze()
    unit = tmp_path / name
    shutil.copy(UNITS[name], unit)
    result = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    score = float(result.stdout.rsplit("Overall exposure level", 1)[1].split(":")[1].split()[0])
    assert score <= HARDENING_SCORE, result.stdout[-3000:]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_files_verify_without_a_word(tmp_path, name):
    """``systemd-analyze verify`` insists that ExecStart exists, so verify inside a root folder
    holding the unit, the system's own units and a stand-in for /opt/scim-agent/bin."""
    analyze = _systemd_analyze()
    system_units = Path("/usr/lib/systemd/system")
    if not system_units.is_dir():
        pytest.skip("no systemd unit folder on this machine")
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    shutil.copy(UNITS[name], root / "etc/systemd/system" / UNITS[name].name)
    for command in ("/opt/scim-agent/bin/scim-agent", "/usr/bin/kill"):
        stub = root / command.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    result = subprocess.run([analyze, "verify", f"--root={root}", name],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def _unit_settings(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in path.read_text().splitlines()
            if line and not line.startswith(("#", "[")) and "=" in line]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_stop_grace_ends_before_systemd_kills_the_agent(name):
    """A stop lets the requests in flight finish for up to [target] timeout + 10 s; past the
    unit's TimeoutStopSec systemd would SIGKILL it mid-write, so the grace is capped below."""
    from agent.service.daemon import STOP_GRACE_LIMIT
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", UNITS[name].read_text(), re.M)
    assert stop and STOP_GRACE_LIMIT + 5 <= int(stop.group(1))


def test_the_template_differs_from_the_single_unit_only_in_what_is_per_organisation():
    """Same hardening, same everything, except the names that carry the instance (%i): its
    config, its state folder, its token and its description."""
    single, template = _unit_settings(UNIT), _unit_settings(TEMPLATE)
    differing = {(k, v) for k, v in template if (k, v) not in single}
    assert differing == {
        ("Description", "scim-agent for %i: directory to Split SCIM sync"),
        ("Environment", "SCIM_AGENT_CONFIG=/etc/scim-agent/%i.toml"),
        ("StateDirectory", "scim-agent-%i"),
        ("LoadCredential", "scim_token:/etc/scim-agent/credentials/%i/scim_token"),
    }
    assert len(single) == len(template)


def _systemctl_reload(daemon: Daemon, unit: Path) -> subprocess.CompletedProcess:
    """What ``systemctl reload`` does with the unit's ExecReload= lines: each in turn, with
    $MAINPID and the unit's config, the first that fails failing the reload."""
    lines = [v for k, v in _unit_settings(unit) if k == "ExecReload"]
    assert lines, unit
    for line in lines:
        argv = line.replace("$MAINPID", str(daemon.proc.pid)).split()
        if argv[0] == "/opt/scim-agent/bin/scim-agent":
            argv[:1] = [sys.executable, "-m", "agent"]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env=daemon.setup.env(SCIM_AGENT_CONFIG=str(daemon.setup.config),
                                                     MAINPID=str(daemon.proc.pid)))
        if result.returncode != 0:
            return result
    return result


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemctl_reload_fails_on_a_config_the_agent_would_refuse(tmp_path, fake, daemons,
                                                                   name):
    """Without the check first, ``kill -HUP`` succeeds whatever the agent then makes of the
    config, and systemctl says the reload worked while the agent runs the old one."""
    setup = Setup(tmp_path, fake)
    write_source(setup.source, range(3))
    write_source(tmp_path / "other.json", range(5))
    daemon = daemons(setup)
    wait_until(lambda: len(fake.users) == 3, 15, "the first cycle")
    good = setup.config.read_text()
    for broken, words in ((good + "\n[nonsense\n", "config.toml"),                # not TOML
                          (good.replace('{ file = "token" }', '{ file = "gone" }'), "gone"),
                          (good.replace(fake.base_url, "https://elsewhere.example.org/scim/v2"),
                           "made for the Split organisation at")):    # another organisation
        setup.config.write_text(broken)
        result = _systemctl_reload(daemon, UNITS[name])
        assert result.returncode == 1 and words in result.stdout + result.stderr, result
        assert "reload failed" not in daemon.log() and daemon.alive()    # never signalled
    setup.write_config(source="other.json")
    result = _systemctl_reload(daemon, UNITS[name])
    assert result.returncode == 0, result
    wait_until(lambda: len(fake.users) == 5, 10, "the reloaded config's source")
    assert "config reloaded" in daemon.log()
    assert daemon.stop()[0] == 0


def test_backoff_of_a_daily_schedule_never_overflows():
    schedule = Schedule(ScheduleConfig(interval=dt.timedelta(days=1),
                                       max_backoff=dt.timedelta(days=3)))
    assert schedule.backoff(1) == dt.timedelta(days=2)
    assert schedule.backoff(40) == dt.timedelta(days=3)



def test_sigint_stops_cleanly_and_json_logs_are_one_object_per_line(tmp_path, fake, daemons):
    setup = Setup(tmp_path, fake)
    write_source(setup.source, range(3))
    daemon = daemons(setup, options=("--log-format", "json"))
    wait_until(lambda: len(fake.users) == 3, 15, "the first cycle")
    daemon.signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=15) == 0
    lines = [line for line in daemon.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]          # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("stopped" in r["message"] for r in records)


def test_a_wall_clock_jump_does_not_stop_the_watchdog_at_once(tmp_path, fake):
    """The job looks late after the clock jumps forward; the scheduler is woken and only a
    lateness that lasts a whole watchdog interval (monotonic) stops the pings."""
    setup = Setup(tmp_path, fake)
    clock = FakeClock(100.0)
    wall = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    d = InProcessDaemon(load(setup.config), setup.config, environ={"WATCHDOG_USEC": "1000000"},
                        clock=clock, wall_clock=lambda: wall)

    class Job:
        next_run_time = wall - dt.timedelta(hours=1)                    # "an hour late"

    class Scheduler:
        running = True
        woken = 0

        def get_job(self, _id):
            return Job()

        def wakeup(self):
            self.woken += 1

    d.scheduler = Scheduler()
    assert d.healthy() and d.scheduler.woken == 1          # first sight: wake it, keep pinging
    clock.advance(0.5)
    assert d.healthy()
    clock.advance(1.0)                                     # late for longer than the watchdog
    assert not d.healthy()


def test_a_restarted_daemon_takes_its_last_outcome_and_last_success_from_the_run_history(
        tmp_path, fake):
    """/healthz used to say ``last_success: null`` after a restart although the snapshot held
    earlier successes. Manual syncs are not the daemon's cycles and do not count."""
    from agent.app import build_agent
    from agent.core.outcome import Outcome
    from agent.service.clock import local

    setup = Setup(tmp_path, fake)
    write_source(setup.source, range(2))
    config = load(setup.config)
    assert build_agent(config).sync(mode="run").outcome is Outcome.OK
    setup.source.write_text("{ not json")
    assert build_agent(config).sync(mode="run").outcome is Outcome.ERROR
    write_source(setup.source, range(3))
    assert build_agent(config).sync().outcome is Outcome.OK          # by hand: not a cycle
    ok, failed = setup.daemon_runs()
    succeeded_at = dt.datetime.fromisoformat(ok["finished"])
    started = succeeded_at + dt.timedelta(seconds=1)
    wall = [started]
    d = InProcessDaemon(config, setup.config, environ={}, wall_clock=lambda: wall[0])
    d._open_state()

    code, body = d.health()
    assert (code, body["status"]) == (200, "starting")
    assert body["last_success"] == local(succeeded_at)
    assert body["last_outcome"] == "error" and "reading the source failed" in body["last_message"]
    gauge = re.search(r"^scim_agent_last_success_timestamp_seconds (\S+)$",
                      d.metrics.render().decode(), re.M)
    assert float(gauge.group(1)) == succeeded_at.timestamp()
    line = d.status_text()
    assert line.startswith("starting (before the restart: last cycle error at ") \
           and "reading the source failed" in line
    # a first cycle that never ends is not "starting" for ever
    wall[0] = started + 3 * d.schedule.period() + dt.timedelta(seconds=1)
    assert d.health()[1]["status"] == "failing"
    # once this process ends a cycle, it speaks for itself
    d._record(build_agent(config).sync(mode="run"))
    code, body = d.health()
    assert (code, body["status"], body["last_outcome"]) == (200, "ok", "ok")
    assert body["last_success"] == local(wall[0])


def test_a_cycle_that_finds_the_snapshot_in_use_tries_again_soon(tmp_path, fake, capsys):
    """A manual sync (or a plan reading the snapshot shared) used to cost the daemon a whole
    period: on a daily schedule, a day without syncing. It now tries again within a minute,
    and never sooner than its period."""
    from agent.store.locks import lock_snapshot, reader_lock

    setup = Setup(tmp_path, fake, interval="1d")
    write_source(setup.source, range(2))
    assert cli_main(["--config", str(setup.config), "sync"]) == 0
    d = InProcessDaemon(load(setup.config), setup.config, environ={})
    d._open_state()
    db = tmp_path / "state" / "state.db"
    requests = len(fake.requests)
    for take in (lock_snapshot, reader_lock):
        with take(db):
            started = d._now()
            d._end_tick(started, d._cycle())
        assert "in use by another scim-agent" in capsys.readouterr().err  # the CLI's logging
        assert d.standing.next_run - started <= dt.timedelta(minutes=1, seconds=5)
        assert d.standing.failures == 0 and len(fake.requests) == requests   # not a failure
    d._end_tick(d._now(), d._cycle())              # free again: a cycle, then the period
    assert d.standing.next_run - d._now() > dt.timedelta(hours=23)
    assert Schedule(ScheduleConfig(interval=dt.timedelta(seconds=10))).busy_retry(
        dt.datetime(2026, 1, 1)) == dt.datetime(2026, 1, 1, 0, 0, 10)


def test_a_cycle_whose_every_write_fails_is_a_failed_cycle_not_a_success(tmp_path, fake,
                                                                         capsys):
    """Split that answers reads but refuses every write (503) used to leave /healthz "ok"
    for ever, with last_success renewed each cycle and no back-off: the cycle "ran to its
    end". Now a cycle that applied nothing while operations failed counts as failed (exit 4
    still); one that applied something and failed the rest is partial, a success."""
    from agent.core.outcome import Outcome

    setup = Setup(tmp_path, fake, interval="1m")
    write_source(setup.source, range(2))
    assert cli_main(["--config", str(setup.config), "sync"]) == 0
    d = InProcessDaemon(load(setup.config), setup.config, environ={})
    d._open_state()
    d._end_tick(d._now(), d._cycle())                     # a quiet cycle: ok
    succeeded = d.standing.last_success
    assert d.standing.last_outcome is Outcome.OK and succeeded is not None

    write_source(setup.source, range(4))
    fake.refuse("POST", "/Users", 503, "maintenance", None)
    for failures in (1, 2):
        started = d._now()
        d._end_tick(started, d._cycle())
        st = d.standing
        assert st.last_outcome is Outcome.FAILED and st.failures == failures
        assert st.last_success == succeeded                # not renewed
        assert st.next_run - started >= d.schedule.backoff(failures)     # backing off
    assert d.health()[1]["status"] == "retrying"
    said = capsys.readouterr()                      # the log, as the CLI's sync set it up
    assert "ERROR agent.service.daemon: cycle failed: applied 0 of 3 operations; 2 failed" \
        in said.out + said.err
    assert cli_main(["--config", str(setup.config), "sync"]) == 4     # the exit status as before

    fake.stop_refusing()
    d._end_tick(d._now(), d._cycle())
    assert d.standing.last_outcome is Outcome.OK and d.standing.failures == 0
    assert d.standing.last_success > succeeded and len(fake.users) == 4


def test_a_cycle_that_fails_unexpectedly_is_counted_everywhere_a_failed_cycle_is(tmp_path,
                                                                                   fake):
    setup = Setup(tmp_path, fake, interval="1m")
    d = InProcessDaemon(load(setup.config), setup.config, environ={})
    d._open_state()

    class Scheduler:
        def pause_job(self, _id):
            pass

    def broken():
        raise RuntimeError("a bug")

    d.scheduler, d._cycle = Scheduler(), broken
    d._tick()
    assert d.standing.failures == 1 and d.standing.next_run is not None
    assert re.search(r'^scim_agent_cycles_total\{outcome="error"\} 1\.0$',
                     d.metrics.render().decode(), re.M)


def test_a_daemon_on_a_new_snapshot_has_no_last_success(tmp_path, fake):
    setup = Setup(tmp_path, fake)
    d = InProcessDaemon(load(setup.config), setup.config, environ={})
    d._open_state()
    code, body = d.health()
    assert (code, body["status"], body["last_success"], body["last_outcome"]) == \
           (200, "starting", None, None)
    assert d.status_text() == "starting"
