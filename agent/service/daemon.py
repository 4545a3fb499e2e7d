"""``scim-agent run``: sync on the schedule until SIGTERM, under systemd or on its own.

Who does what
-------------
* The **main thread** owns signals and the conversation with systemd. SIGTERM and SIGINT
  start a shutdown, SIGHUP a config reload. It sends ``WATCHDOG=1`` every half
  ``WATCHDOG_USEC``, but only while the daemon is healthy: idle with the scheduler on time, or
  in a cycle whose heartbeat is younger than the watchdog interval. The heartbeat is each HTTP
  request and response and each finished operation. A hung cycle stops the pings, and systemd
  restarts the agent.
* An APScheduler ``BackgroundScheduler`` runs the cycle as its one job (``max_instances=1``,
  ``coalesce=True``). The job pauses itself while it runs and sets its own next run time when
  it ends. A slow cycle therefore delays the next one: it never overlaps it, and skipped runs
  never pile up. After consecutive failures the delay doubles, up to
  ``[schedule] max_backoff``.
* An optional HTTP thread serves ``/healthz`` and ``/metrics`` (``[metrics] listen``).

Holding
-------
A 401 from the target, or a stop by the safety guard, holds pushing. Later cycles send
nothing until one of these happens:

* the config file, or a secret file it names, changes;
* the service is reloaded (SIGHUP);
* ``scim-agent sync`` succeeds when run by hand.

The reason appears in the log, in ``status`` (state meta ``held``) and in the notify
``STATUS=``. A restart also tries again: one refused request costs nothing.

Locks
-----
The daemon holds ``<db>.daemon.lock`` for its whole life, so a second ``run`` exits at once.
It holds the snapshot lock (``<db>.lock``, see ``state.py``) only during a cycle. A manual
``sync`` between cycles therefore works; one started during a cycle exits with a clear message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

from connectors.base import on_activity
from connectors.base import Target

from ..app import build_agent, make_target
from ..engine.checks import token_days_left, token_warning
from ..engine.cycle import SyncResult
from ..config import Config, ConfigError, ScheduleConfig, format_duration, load, secrets_of
from ..store.locks import FileLock, lock_daemon
from ..store.meta import KEEP
from ..store.state import State, StateError

log = logging.getLogger(__name__)

JOB_ID = "cycle"
HEALTHY_PERIODS = 3          # /healthz: 503 once the last success is older than this many periods
MAX_DOUBLINGS = 30           # 2**30 periods exceeds any max_backoff; keeps the product finite


def run_daemon(config: Config, config_file: str | os.PathLike,
               on_config: Callable[[Config], None] = lambda config: None) -> int:
    """The ``run`` command. Start-up problems raise ConfigError/StateError; cli prints them.
    ``on_config`` is called with every config a reload switches to (the CLI redacts its
    secrets in the log)."""
    return Daemon(config, Path(config_file), on_config=on_config).run()


# ---------------------------------------------------------------------------------------------
# systemd


class Notifier:
    """systemd's notify protocol (sd_notify(3)): ``KEY=VALUE`` lines in one datagram to the
    AF_UNIX socket named by ``$NOTIFY_SOCKET``. A leading ``@`` names the abstract namespace.
    Without the variable, every call does nothing."""

    def __init__(self, address: str | None):
        self.address: str | None = None
        self._sock: socket.socket | None = None
        if address and address[0] in "/@":
            self.address = "\0" + address[1:] if address[0] == "@" else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        elif address:
            log.warning("NOTIFY_SOCKET=%s is not a socket path; not notifying systemd", address)

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # systemd went away or the socket is full: never fatal
            log.debug("sd_notify failed: %s", exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds from ``WATCHDOG_USEC``, when the watchdog is enabled for this process."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


# ---------------------------------------------------------------------------------------------
# Schedule


class Schedule:
    """When the next cycle is due: ``interval`` or ``cron``, stretched after failures."""

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.cron = CronTrigger.from_crontab(config.cron) if config.cron else None

    def trigger(self):
        return self.cron or IntervalTrigger(seconds=self.config.effective_interval.total_seconds())

    def period(self) -> dt.timedelta:
        if self.cron is None:
            return self.config.effective_interval
        first = self.cron.get_next_fire_time(None, _now())
        second = self.cron.get_next_fire_time(first, first)
        return second - first

    def backoff(self, failures: int) -> dt.timedelta:
        """Least time after a failed cycle before the next: doubling, capped. In float
        seconds: a timedelta of a daily period doubled 30 times overflows."""
        if failures <= 0:
            return dt.timedelta(0)
        seconds = self.period().total_seconds() * 2.0 ** min(failures, MAX_DOUBLINGS)
        return dt.timedelta(seconds=min(seconds, self.config.max_backoff.total_seconds()))

    def next_run(self, started: dt.datetime, ended: dt.datetime, failures: int) -> dt.datetime:
        if self.cron is not None:
            due = self.cron.get_next_fire_time(None, ended)
        else:  # a cycle longer than the interval is followed at once, never overlapped
            due = max(started + self.config.effective_interval, ended)
        return max(due, ended + self.backoff(failures))

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.config.cron!r}"
        return f"every {format_duration(self.config.effective_interval)}"


# ---------------------------------------------------------------------------------------------
# Hold, and noticing that config or credentials changed


@dataclass
class Hold:
    reason: str
    since: dt.datetime
    after_run: int            # a manual sync recorded after this run id can lift the hold
    fingerprint: str          # content of the config and its secrets when the hold began
    files: tuple              # cheap (mtime, size, inode) signature, checked every tick

    def describe(self) -> str:
        if "token" in self.reason and os.environ.get("CREDENTIALS_DIRECTORY"):
            # systemd copies credentials at start: only a restart brings a new token in
            how = "update the credential, then restart the service"
        else:
            how = "fix it, then reload the service or run 'scim-agent sync'"
        return f"{self.reason} (since {_local(self.since)}; {how})"



def watched_files(config: Config) -> list[Path]:
    """The config file and every secret file it names ({ file } and { credential })."""
    paths = [config.path]
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    for secret in secrets_of(config):
        if secret.origin.startswith("file "):
            paths.append(Path(secret.origin[len("file "):]))
        elif secret.origin.startswith("credential ") and credentials:
            paths.append(Path(credentials) / secret.origin[len("credential "):])
    return paths


def file_signature(config: Config) -> tuple:
    signature = []
    for path in watched_files(config):
        try:
            st = path.stat()
            signature.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            signature.append((str(path), None))
    return tuple(signature)


def config_fingerprint(config: Config) -> str:
    """A digest of the config file and the secrets' values. It stays in memory."""
    digest = hashlib.sha256()
    try:
        digest.update(config.path.read_bytes())
    except OSError:
        digest.update(b"(unreadable)")
    for secret in secrets_of(config):
        digest.update(b"\0" + secret.reveal().encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Metrics and /healthz


class Metrics:
    """Prometheus metrics in a private registry, so that nothing global leaks in."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.cycle_duration = Histogram(
            "scim_agent_cycle_duration_seconds", "Duration of sync cycles that ran",
            buckets=(0.1, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600), registry=r)
        self.cycles = Counter("scim_agent_cycles", "Sync cycles by outcome "
                              "(ok, partial, error, guard, interrupted)", ["outcome"], registry=r)
        self.operations = Counter("scim_agent_operations", "Operations sent to the SCIM target, "
                                  "by kind and outcome (applied, failed)", ["kind", "outcome"],
                                  registry=r)
        self.objects = Gauge("scim_agent_objects_managed", "Objects in the snapshot", ["kind"],
                             registry=r)
        self.last_success = Gauge("scim_agent_last_success_timestamp_seconds",
                                  "Unix time of the last cycle that succeeded", registry=r)
        self.failures = Gauge("scim_agent_consecutive_failures",
                              "Failed cycles since the last success", registry=r)
        self.held = Gauge("scim_agent_held", "1 while pushing is held (token rejected or "
                          "safety guard)", registry=r)
        self.token_days_left = Gauge("scim_agent_token_days_left",
                                     "Days until the SCIM token's one-year expiry "
                                     "(NaN without [target] token_created)", registry=r)
        self.next_run = Gauge("scim_agent_next_run_timestamp_seconds",
                              "Unix time of the next scheduled cycle", registry=r)
        self.token_days_left.set(float("nan"))

    def record_cycle(self, result: SyncResult, outcome: str) -> None:
        self.cycles.labels(outcome).inc()
        self.cycle_duration.observe(result.duration)
        if result.report is not None:
            for op in result.report.applied:
                self.operations.labels(op.kind.value, "applied").inc()
            for op, _error in result.report.failed:
                self.operations.labels(op.kind.value, "failed").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Daemon


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = self.server.owner.health()
            self._send(status, json.dumps(body).encode() + b"\n", "application/json")
        elif path == "/metrics":
            self._send(200, self.server.owner.metrics.render(), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b"not found: try /healthz or /metrics\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # a scrape every 15 s is not news


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------------
# The daemon


class Daemon:
    def __init__(self, config: Config, config_file: Path,
                 environ: Mapping[str, str] = os.environ,
                 on_config: Callable[[Config], None] = lambda config: None):
        self.config = config
        self._on_config = on_config
        self.config_file = config_file
        self.schedule = Schedule(config.schedule)
        self.notify = Notifier(environ.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval(environ)
        self.metrics = Metrics()
        self.stop = threading.Event()        # handed to Agent.sync: nothing new is sent once set
        self.scheduler: BackgroundScheduler | None = None

        self._lock = threading.RLock()       # config, hold and schedule changes
        self._pending_signals: list[int] = []
        self._idle = threading.Event()
        self._idle.set()
        self._in_cycle = False
        self._cycle_started: dt.datetime | None = None
        self._heartbeat = time.monotonic()
        self._last_ping = 0.0
        self._stall_logged = False
        self._config_fp = config_fingerprint(config)
        self._daemon_lock: FileLock | None = None
        self._http: _HttpServer | None = None

        self.failures = 0
        self._saved_held: str | None = "(unknown)"   # what the snapshot's "held" says
        self._late_since: float | None = None         # monotonic time the job first looked late
        on_activity(self._beat)                       # source pages and HTTP answers
        self.hold: Hold | None = None
        self.last_outcome = ""               # ok | partial | error | guard
        self.last_message = ""
        self.last_finished: dt.datetime | None = None
        self.last_success: dt.datetime | None = None
        self.next_run: dt.datetime | None = None
        self.started_at = _now()

    # -- life cycle -----------------------------------------------------------------------

    def run(self) -> int:
        self._take_daemon_lock()
        try:
            self._open_state()
            self._start_http()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
            self._start_scheduler()
            log.info("scim-agent daemon started: syncing %s into %s; snapshot %s",
                     self.schedule.describe(), self.config.target.url, self.config.state.path)
            self.notify.send("READY=1", f"STATUS={self.status_text()}")
            self._main_loop()
            return self._shutdown()
        finally:
            self._stop_http()
            self.notify.close()
            self._release_daemon_lock()

    def _take_daemon_lock(self) -> None:
        self._daemon_lock = lock_daemon(self.config.state.path)

    def _release_daemon_lock(self) -> None:
        if self._daemon_lock is not None:
            self._daemon_lock.release()
            self._daemon_lock = None

    def _open_state(self) -> None:
        """Prove the snapshot is usable before READY=1, and carry on the failure count."""
        with State.open(self.config.state.path, lock=False) as state:
            self.failures = state.meta.consecutive_failures()
            stale = state.meta.held()
            state.meta.clear_hold()
        if stale:
            log.warning("pushing was held before this start (%s); trying again", stale)

    def _start_http(self) -> None:
        listen = self.config.metrics.listen
        if not listen:
            return
        host, port = parse_listen(listen)
        server_class = type("_Server", (_HttpServer,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._http = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"{self.config.path}: [metrics] listen: cannot listen on {listen}: "
                              f"{exc.strerror}")
        self._http.owner = self
        threading.Thread(target=self._http.serve_forever, name="metrics-http", daemon=True).start()
        log.info("serving /healthz and /metrics on http://%s", listen)

    def _stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def _start_scheduler(self) -> None:
        self.scheduler = BackgroundScheduler(job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        self.scheduler.add_job(self._tick, self.schedule.trigger(), id=JOB_ID,
                               name="sync cycle", next_run_time=_now())
        self.scheduler.add_listener(self._after_tick, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.scheduler.start()

    def _on_signal(self, signum: int, _frame) -> None:
        self._pending_signals.append(signum)  # handled by the main loop, outside the handler

    def _main_loop(self) -> None:
        tick = min(0.2, self.watchdog / 4) if self.watchdog else 0.2
        while True:
            while self._pending_signals:
                signum = self._pending_signals.pop(0)
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    return
            self._ping_watchdog()
            time.sleep(tick)

    def _shutdown(self) -> int:
        self.notify.send("STOPPING=1", "STATUS=stopping")
        busy = self._in_cycle
        if busy:
            log.info("stopping: the requests in flight finish, nothing new is sent")
        self.stop.set()
        self.scheduler.shutdown(wait=False)
        grace = self.config.target.timeout + 10
        deadline = time.monotonic() + grace
        while not self._idle.wait(0.1):
            if time.monotonic() > deadline:
                # Every confirmed effect is already committed; an op cut off here is looked up
                # (not re-sent blindly) by the next cycle.
                log.warning("the cycle did not finish within %gs of the stop request; exiting "
                            "anyway (the snapshot is consistent)", grace)
                logging.shutdown()
                os._exit(0)
        self.next_run = None
        self._save_meta()
        log.info("stopped")
        return 0

    # -- watchdog ---------------------------------------------------------------------------

    def _beat(self, *_args) -> None:
        self._heartbeat = time.monotonic()

    def healthy(self) -> bool:
        """What the watchdog vouches for: the process is making progress."""
        if self._in_cycle:
            stalled = time.monotonic() - self._heartbeat
            if stalled >= (self.watchdog or float("inf")):
                if not self._stall_logged:
                    self._stall_logged = True
                    log.error("the cycle has made no progress for %.1fs; no longer pinging the "
                              "systemd watchdog", stalled)
                return False
            self._stall_logged = False
            return True
        if self.scheduler is None or not self.scheduler.running:
            return False
        job = self.scheduler.get_job(JOB_ID)
        if job is not None and job.next_run_time is not None and self.watchdog:
            late = (_now() - job.next_run_time).total_seconds()
            if late > self.watchdog:
                # A wall-clock jump (NTP, a resumed VM) makes a punctual scheduler look late:
                # wake it, and give up on it only if it stays late for a watchdog interval
                # measured on the monotonic clock.
                self.scheduler.wakeup()
                if self._late_since is None:
                    self._late_since = time.monotonic()
                if time.monotonic() - self._late_since > self.watchdog:
                    log.error("the scheduler is %.0fs late; no longer pinging the watchdog", late)
                    return False
                return True
        self._late_since = None
        return True

    def _ping_watchdog(self) -> None:
        if not self.watchdog:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog / 2 and self.healthy():
            self.notify.send("WATCHDOG=1")
            self._last_ping = now

    # -- one scheduled tick ------------------------------------------------------------------

    def _tick(self) -> None:
        with self._lock:
            if self.stop.is_set():
                return
            self._in_cycle = True
            self._idle.clear()
            self._beat()
            # The next run is set when this one ends: a slow cycle delays it, never overlaps.
            self.scheduler.pause_job(JOB_ID)
        started = self._cycle_started = _now()
        self.notify.send(f"STATUS={self.status_text()}")
        note = ""
        try:
            note = self._cycle()
        except Exception:  # a bug must not kill the schedule; it counts as a failed cycle
            log.exception("the cycle failed unexpectedly")
            self._count_failure("internal error (see the log)")
        finally:
            try:
                self._end_tick(started, note)
            finally:
                self._idle.set()

    def _end_tick(self, started: dt.datetime, note: str) -> None:
        ended = _now()
        with self._lock:
            self._in_cycle = False
            if self.stop.is_set():
                self.next_run = None
            else:   # resumed by _after_tick, once APScheduler counts this run as done
                self.next_run = self.schedule.next_run(started, ended,
                                                       0 if self.hold else self.failures)
        if self.failures and not self.hold and self.next_run:
            log.warning("%d failed cycle(s) in a row; next attempt at %s (backing off %s)",
                        self.failures, _local(self.next_run),
                        format_duration(self.schedule.backoff(self.failures)))
        elif note and self.next_run:
            log.info("%s; next run at %s", note, _local(self.next_run))
        self._save_meta()
        self.notify.send(f"STATUS={self.status_text()}")

    def _after_tick(self, event) -> None:
        # Resuming the job inside _tick would let APScheduler fire it while this run still
        # counts as an instance, and skip it with a warning.
        with self._lock:
            if event.job_id == JOB_ID and self.next_run and not self.stop.is_set():
                self._reschedule(self.next_run)

    def _reschedule(self, when: dt.datetime) -> None:
        try:
            self.scheduler.modify_job(JOB_ID, next_run_time=when)
        except Exception as exc:  # the scheduler is shutting down
            log.debug("could not reschedule: %s", exc)

    def _cycle(self) -> str:
        """One tick: sync, unless pushing is held or a manual sync has the snapshot.
        Returns a note for the log when a cycle ran to its end."""
        config = self.config
        days = token_days_left(config)
        self.metrics.token_days_left.set(float("nan") if days is None else days)
        if self.hold is not None and not self._hold_lifted():
            warning = token_warning(config)
            if warning:
                log.warning("%s", warning)
            log.info("pushing is held: %s", self.hold.describe())
            return ""
        config = self.config                # a lifted hold may have loaded a new config
        agent = build_agent(config, target_factory=self._target)
        result = agent.sync(stop=self.stop, progress=self._beat, mode="run")
        if result.busy:     # asked of the lock itself: no probe that could race a manual sync
            log.info("the snapshot is in use by another scim-agent (a manual sync?); "
                     "skipping this cycle")
            return ""
        return self._record(result)

    def _target(self, config: Config) -> Target:
        target = make_target(config)
        hooks = target.wire.client.event_hooks
        target.wire.client.event_hooks = {"request": [*hooks["request"], self._beat],
                                     "response": hooks["response"]}   # answers beat globally
        return target

    def _record(self, result: SyncResult) -> str:
        if result.report is not None and result.report.interrupted:
            self.metrics.record_cycle(result, "interrupted")
            log.info("cycle interrupted by the stop request: %s", result.message)
            return ""
        self.last_finished = _now()
        self.last_message = result.message
        if result.outcome.succeeded:
            outcome = result.outcome.value
            if self.failures:
                log.info("the cycle succeeded after %d failed one(s)", self.failures)
            self.failures = 0
            self.last_success = self.last_finished
            self.metrics.last_success.set(self.last_success.timestamp())
        else:
            outcome = result.outcome.value
            self.failures += 1
            if result.hold:
                self._start_hold(result.hold.reason)
            else:
                log.error("cycle failed: %s", result.message)
        self.last_outcome = outcome
        self.metrics.record_cycle(result, outcome)
        return f"cycle {outcome} in {result.duration:.1f}s"

    def _count_failure(self, message: str) -> None:
        self.failures += 1
        self.last_outcome, self.last_message, self.last_finished = "error", message, _now()

    # -- hold -------------------------------------------------------------------------------

    def _start_hold(self, reason: str) -> None:
        with self._lock:
            self.hold = Hold(reason, _now(), self._last_run_id(), self._config_fp,
                             file_signature(self.config))
        log.error("pushing is held: %s. Nothing more is sent until the config or a credential "
                  "changes, the service is reloaded (systemctl reload scim-agent), or "
                  "'scim-agent sync' succeeds by hand", reason)

    def _last_run_id(self) -> int:
        try:
            with State.open(self.config.state.path, lock=False, create=False) as state:
                runs = state.runs(1)
        except (StateError, OSError, sqlite3.Error):
            return 0
        return runs[0].id if runs else 0

    def _hold_lifted(self) -> bool:
        hold = self.hold
        try:
            with State.open(self.config.state.path, lock=False, create=False) as state:
                manual = [r for r in state.runs(20) if r.id > hold.after_run and r.mode == "sync"
                          and r.outcome in ("ok", "partial")]
                cleared = state.meta.held() is None
        except (StateError, OSError, sqlite3.Error) as exc:
            log.warning("cannot read the snapshot to check the hold: %s", exc)
            manual, cleared = [], False
        if manual or cleared:
            log.info("a manual sync succeeded since pushing was held; resuming")
            self.hold = None
            return True
        files = file_signature(self.config)
        if files == hold.files:
            return False
        hold.files = files
        try:
            new = self._load_new_config()
        except ConfigError as exc:
            log.error("the config or a credential changed, but it cannot be used; still "
                      "holding: %s", exc)
            return False
        if config_fingerprint(new) == hold.fingerprint:
            return False
        self._apply_config(new)
        log.info("the config or a credential changed since pushing was held; resuming")
        self.hold = None
        return True

    # -- reload -----------------------------------------------------------------------------

    def _load_new_config(self) -> Config:
        new = load(self.config_file)
        if new.state.path != self.config.state.path:
            raise ConfigError(f"{new.path}: [state] path: changed from {self.config.state.path} "
                              f"to {new.state.path}; restart the service to switch snapshots")
        return new

    def _apply_config(self, new: Config) -> None:
        if new.metrics.listen != self.config.metrics.listen:
            log.warning("[metrics] listen changed; it takes effect when the service restarts")
        with self._lock:
            self.config = new
            self.schedule = Schedule(new.schedule)
            self._config_fp = config_fingerprint(new)
        self._on_config(new)   # a reloaded config may bring new secrets: keep them out of the log

    def reload(self) -> bool:
        """SIGHUP: load the config again. An invalid one leaves the running one in place."""
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = self._load_new_config()
        except ConfigError as exc:
            log.error("reload failed; still running with the previous config: %s", exc)
            self.notify.send("READY=1", f"STATUS={self.status_text()}")
            return False
        self._apply_config(new)
        with self._lock:
            resumed = self.hold is not None
            if resumed:
                log.info("pushing was held (%s); the reload resumes it", self.hold.reason)
                self.hold = None
            if not self._in_cycle and not self.stop.is_set():
                now = _now()
                self.next_run = now if resumed else self.schedule.next_run(
                    self._cycle_started or now, now, self.failures)
                self._reschedule(self.next_run)
        log.info("config reloaded from %s; syncing %s", self.config_file, self.schedule.describe())
        self._save_meta()
        self.notify.send("READY=1", f"STATUS={self.status_text()}")
        return True

    # -- reporting ----------------------------------------------------------------------------

    def _save_meta(self) -> None:
        """What ``scim-agent status`` shows about the daemon, and the snapshot gauges."""
        held = self.hold.describe() if self.hold else None
        try:
            with State.open(self.config.state.path, lock=False) as state:
                # held only on a change: a manual sync may have cleared it a moment ago
                state.meta.record_daemon(next_run=self.next_run, failures=self.failures,
                                         held=held if held != self._saved_held else KEEP)
                self._saved_held = held
                counts = state.counts()
        except (StateError, OSError, sqlite3.Error) as exc:
            log.warning("cannot record the daemon's status in the snapshot: %s", exc)
            counts = {}
        for kind, n in counts.items():
            self.metrics.objects.labels(kind).set(n)
        self.metrics.failures.set(self.failures)
        self.metrics.held.set(1 if self.hold else 0)
        self.metrics.next_run.set(self.next_run.timestamp() if self.next_run else float("nan"))

    def status_text(self) -> str:
        """One line for systemctl status (notify STATUS=)."""
        if self.stop.is_set():
            return "stopping"
        if self._in_cycle and self._cycle_started:
            return f"cycle running since {_local(self._cycle_started, time_only=True)}"
        if self.hold:
            text = f"HELD: {self.hold.describe()}"
        elif self.last_outcome in ("ok", "partial"):
            text = (f"last cycle {self.last_outcome} at "
                    f"{_local(self.last_finished, time_only=True)}: {self.last_message}")
        elif self.last_outcome:
            text = f"failing ({self.failures} in a row): {self.last_message}"
        else:
            text = "starting"
        if self.next_run and not self.hold:
            text += f"; next run {_local(self.next_run, time_only=True)}"
        return " ".join(text.split())[:400]

    def health(self) -> tuple[int, dict]:
        """/healthz: 200 while the last cycle succeeded, or the last success (or the start)
        is younger than HEALTHY_PERIODS periods; 503 when held or failing longer."""
        window = self.schedule.period() * HEALTHY_PERIODS
        reference = self.last_success or self.started_at
        if self.hold:
            status = "held"
        elif self.last_outcome in ("ok", "partial"):
            status = "ok"
        elif _now() - reference <= window:
            status = "retrying" if self.last_outcome else "starting"
        else:
            status = "failing"
        body = {
            "status": status,
            "last_outcome": self.last_outcome or None,
            "last_message": self.last_message or None,
            "last_success": _local(self.last_success) if self.last_success else None,
            "consecutive_failures": self.failures,
            "held": self.hold.describe() if self.hold else None,
            "next_run": _local(self.next_run) if self.next_run else None,
            "token_days_left": token_days_left(self.config),
        }
        return (200 if status in ("ok", "retrying", "starting") else 503), body


# ---------------------------------------------------------------------------------------------
# Helpers



def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _local(moment: dt.datetime | None, time_only: bool = False) -> str:
    if moment is None:
        return "-"
    local = moment.astimezone()
    return local.strftime("%H:%M:%S") if time_only else local.isoformat(timespec="seconds")
