"""``scim-agent run``: sync on the schedule until SIGTERM, under systemd or on its own.

Who does what
-------------
* The **main thread** owns signals and the conversation with systemd. SIGTERM and SIGINT
  start a shutdown, SIGHUP a config reload. It sends ``WATCHDOG=1`` every half
  ``WATCHDOG_USEC``, but only while the daemon makes progress (``notify.Watchdog``): idle
  with the scheduler on time, or in a cycle whose heartbeat is younger than the watchdog
  interval. The heartbeat is each connector's report of progress (``connectors.base.
  on_activity``: HTTP answers, source pages) and each finished operation. A hung cycle stops
  the pings, and systemd restarts the agent.
* An APScheduler ``BackgroundScheduler`` runs the cycle as its one job (``max_instances=1``,
  ``coalesce=True``). The job pauses itself while it runs and sets its own next run time when
  it ends (``schedule.Schedule``): a slow cycle delays the next one, never overlaps it, and
  skipped runs never pile up. After consecutive failures the delay doubles, up to
  ``[schedule] max_backoff``.
* An optional HTTP thread serves ``/healthz`` and ``/metrics`` (``health``).

Holding (``holds``): a rejected token, an endpoint no retry mends, or a stop by the safety
guard holds pushing until the config or a credential changes, the service is reloaded, or a
manual ``sync`` succeeds. The reason appears in the log, in ``status`` and in ``STATUS=``.

Locks (``agent/store/locks.py``): the daemon holds ``<db>.daemon.lock`` for its whole life, so
a second ``run`` exits at once. It holds the snapshot lock only during a cycle, so a manual
``sync`` between cycles works; one started during a cycle exits with a clear message.

Time: the wall clock, the monotonic clock and the sleep are constructor parameters
(``clock.py`` has the real ones), so a test drives them instead of patching.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler

from connectors.base import on_activity

from ..config import Config, ConfigError, format_duration, load
from ..core.outcome import Hold, Outcome
from ..app import build_agent
from ..engine.checks import token_days_left, token_warning
from ..engine.binding import check_binding
from ..engine.cycle import SyncResult
from ..store.locks import FileLock, lock_daemon
from ..store.meta import KEEP
from ..store.state import State, StateError
from . import clock as real
from .clock import local
from .health import HealthServer, Metrics, Standing
from .holds import PushHold, config_fingerprint, file_signature, last_run_id, lifted_by_hand
from .notify import Notifier, Watchdog, watchdog_interval
from .schedule import Schedule

log = logging.getLogger(__name__)

JOB_ID = "cycle"
STOP_GRACE_LIMIT = 80.0   # seconds: the units' TimeoutStopSec=90s SIGKILLs after 90
SUCCEEDED = [o.value for o in Outcome if o.succeeded]
ENDED = [o.value for o in Outcome if o is not Outcome.INTERRUPTED]   # what _record counts


def run_daemon(config: Config, config_file: str | os.PathLike,
               on_config: Callable[[Config], None] = lambda config: None) -> int:
    """The ``run`` command. Start-up problems raise ConfigError/StateError; cli prints them.
    ``on_config`` is called with every config a reload switches to (the CLI redacts its
    secrets in the log)."""
    return Daemon(config, Path(config_file), on_config=on_config).run()


class Daemon:
    def __init__(self, config: Config, config_file: Path,
                 environ: Mapping[str, str] = os.environ, *,
                 on_config: Callable[[Config], None] = lambda config: None,
                 wall_clock: Callable[[], dt.datetime] = real.utc_now,
                 clock: Callable[[], float] = real.monotonic,
                 sleep: Callable[[float], None] = real.sleep):
        self.config = config
        self.config_file = config_file
        self.environ = environ
        self._on_config = on_config
        self._now = wall_clock
        self._clock = clock
        self._sleep = sleep
        self._pacers: dict = {}         # each target's learned pace, kept from cycle to cycle
        self.schedule = Schedule(config.schedule, wall_clock)
        self.notify = Notifier(environ.get("NOTIFY_SOCKET"))
        self.watchdog = Watchdog(watchdog_interval(environ), clock)
        self.metrics = Metrics()
        self.stop = threading.Event()        # handed to Agent.sync: nothing new is sent once set
        self.scheduler: BackgroundScheduler | None = None

        self._lock = threading.RLock()       # config, hold and schedule changes
        self._pending_signals: list[int] = []
        self._idle = threading.Event()
        self._idle.set()
        self._in_cycle = False
        self._busy = False             # the last cycle found the snapshot in use
        self._cycle_started: dt.datetime | None = None
        self._config_fp = config_fingerprint(config)
        self._daemon_lock: FileLock | None = None
        self._http: HealthServer | None = None
        self._saved_held: str | None = "(unknown)"   # what the snapshot's hold says

        self.standing = Standing(started_at=wall_clock())   # what status and /healthz show

    # -- life cycle -----------------------------------------------------------------------

    def run(self) -> int:
        self._daemon_lock = lock_daemon(self.config.state.path)
        try:
            self._open_state()
            self._start_http()
            on_activity(self.watchdog.beat)          # source pages and HTTP answers
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
            self._start_scheduler()
            log.info("scim-agent daemon started: syncing %s into %s; snapshot %s",
                     self.schedule.describe(), self.config.target.url, self.config.state.path)
            self.notify.send("READY=1", f"STATUS={self.status_text()}")
            self._main_loop()
            return self._shutdown()
        finally:
            if self._http is not None:
                self._http.stop()
            self.notify.close()
            self._daemon_lock.release()

    def _open_state(self) -> None:
        """Prove the snapshot is usable before READY=1, and carry on what the snapshot knows
        of earlier daemons: the failure count, the last outcome and the last success."""
        with State.open(self.config.state.path, lock=False) as state:
            self.standing.failures = state.meta.consecutive_failures()
            self.standing.restore(state.last_run("run", ENDED), state.last_run("run", SUCCEEDED))
            stale = state.meta.held()
            state.meta.clear_hold()
        if self.standing.last_success is not None:
            self.metrics.last_success.set(self.standing.last_success.timestamp())
        if stale:
            log.warning("pushing was held before this start (%s); trying again", stale)

    def _start_http(self) -> None:
        if self.config.metrics.listen:
            self._http = HealthServer(self.config.metrics.listen, self.health, self.metrics)
            self._http.start(self.config.path)

    def _start_scheduler(self) -> None:
        self.scheduler = BackgroundScheduler(job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        self.scheduler.add_job(self._tick, self.schedule.trigger(), id=JOB_ID,
                               name="sync cycle", next_run_time=self._now())
        self.scheduler.add_listener(self._after_tick, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.scheduler.start()

    def _on_signal(self, signum: int, _frame) -> None:
        self._pending_signals.append(signum)  # handled by the main loop, outside the handler

    def _main_loop(self) -> None:
        interval = self.watchdog.interval
        tick = min(0.2, interval / 4) if interval else 0.2
        while True:
            while self._pending_signals:
                signum = self._pending_signals.pop(0)
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    return
            self._ping_watchdog()
            self._sleep(tick)       # a signal cuts it short (PEP 475 resumes, then we look)

    def _shutdown(self) -> int:
        self.notify.send("STOPPING=1", "STATUS=stopping")
        if self._in_cycle:
            log.info("stopping: the requests in flight finish, nothing new is sent")
        self.stop.set()
        self.scheduler.shutdown(wait=False)
        # a request in flight may take [target] timeout; never longer than the unit lets us
        grace = min(self.config.target.timeout + 10, STOP_GRACE_LIMIT)
        deadline = self._clock() + grace
        while not self._idle.wait(0.1):
            if self._clock() > deadline:
                # Every confirmed effect is already committed; an op cut off here is looked up
                # (not re-sent blindly) by the next cycle.
                log.warning("the cycle did not finish within %gs of the stop request; exiting "
                            "anyway (the snapshot is consistent)", grace)
                logging.shutdown()
                os._exit(0)
        self.standing.next_run = None
        self._save_meta()
        log.info("stopped")
        return 0

    # -- watchdog ---------------------------------------------------------------------------

    def healthy(self) -> bool:
        """What the watchdog vouches for: the process is making progress."""
        if self._in_cycle:
            return self.watchdog.cycle_progressing()
        if self.scheduler is None or not self.scheduler.running:
            return False
        job = self.scheduler.get_job(JOB_ID)
        late = None
        if job is not None and job.next_run_time is not None:
            late = (self._now() - job.next_run_time).total_seconds()
        return self.watchdog.scheduler_on_time(late, self.scheduler.wakeup)

    def _ping_watchdog(self) -> None:
        if self.watchdog.ping_due() and self.healthy():
            self.notify.send("WATCHDOG=1")
            self.watchdog.pinged()

    # -- one scheduled tick ------------------------------------------------------------------

    def _tick(self) -> None:
        with self._lock:
            if self.stop.is_set():
                return
            self._in_cycle = True
            self._idle.clear()
            self.watchdog.beat()
            # The next run is set when this one ends: a slow cycle delays it, never overlaps.
            self.scheduler.pause_job(JOB_ID)
        started = self._cycle_started = self._now()
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
        ended = self._now()
        st = self.standing
        with self._lock:
            self._in_cycle = False
            busy, self._busy = self._busy, False
            if self.stop.is_set():
                st.next_run = None
            elif busy:
                st.next_run = self.schedule.busy_retry(ended)
            else:   # resumed by _after_tick, once APScheduler counts this run as done
                st.next_run = self.schedule.next_run(started, ended, 0 if st.hold else st.failures)
        if busy and st.next_run:
            log.info("the snapshot is in use by another scim-agent (a manual sync, or a plan "
                     "reading it); skipping this cycle, trying again at %s", local(st.next_run))
        elif st.failures and not st.hold and st.next_run:
            log.warning("%d failed cycle(s) in a row; next attempt at %s (backing off %s)",
                        st.failures, local(st.next_run),
                        format_duration(self.schedule.backoff(st.failures)))
        elif note and st.next_run:
            log.info("%s; next run at %s", note, local(st.next_run))
        self._save_meta()
        self.notify.send(f"STATUS={self.status_text()}")

    def _after_tick(self, event) -> None:
        # Resuming the job inside _tick would let APScheduler fire it while this run still
        # counts as an instance, and skip it with a warning.
        with self._lock:
            if event.job_id == JOB_ID and self.standing.next_run and not self.stop.is_set():
                self._reschedule(self.standing.next_run)

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
        if self.standing.hold is not None and not self._hold_lifted():
            warning = token_warning(config)
            if warning:
                log.warning("%s", warning)
            log.info("pushing is held: %s", self.standing.hold.describe())
            return ""
        config = self.config                # a lifted hold may have loaded a new config
        agent = build_agent(config, clock=self._clock, now=self._now, sleep=self._sleep,
                            pacers=self._pacers)
        result = agent.sync(stop=self.stop, progress=self.watchdog.beat, mode="run")
        if result.busy:     # asked of the lock itself: no probe that could race a manual sync
            self._busy = True
            return ""
        return self._record(result)

    def _record(self, result: SyncResult) -> str:
        if result.outcome is Outcome.INTERRUPTED:
            self.metrics.record_cycle(result, "interrupted")
            log.info("cycle interrupted by the stop request: %s", result.message)
            return ""
        st = self.standing
        st.cycle_ended()
        st.last_finished = self._now()
        st.last_message = result.message
        if result.outcome.succeeded:
            if result.outcome is Outcome.PARTIAL:
                log.warning("cycle partial: %s", result.message)
            if st.failures:
                log.info("the cycle succeeded after %d failed one(s)", st.failures)
            st.failures = 0
            st.last_success = st.last_finished
            self.metrics.last_success.set(st.last_success.timestamp())
        else:
            st.failures += 1
            if result.hold:
                self._start_hold(result.hold)
            else:
                log.error("cycle failed: %s", result.message)
        st.last_outcome = result.outcome
        self.metrics.record_cycle(result, result.outcome.value)
        return f"cycle {result.outcome.value} in {result.duration:.1f}s"

    def _count_failure(self, message: str) -> None:
        st = self.standing
        st.cycle_ended()
        st.failures += 1
        st.last_outcome, st.last_message, st.last_finished = Outcome.ERROR, message, self._now()
        self.metrics.cycles.labels(Outcome.ERROR.value).inc()   # counted as any failed cycle

    # -- hold -------------------------------------------------------------------------------

    def _start_hold(self, hold: Hold) -> None:
        with self._lock:
            self.standing.hold = PushHold.start(hold, self._now(),
                                                last_run_id(self.config.state.path),
                                                self.config, self._config_fp, self.environ)
        log.error("pushing is held: %s. Nothing more is sent until the config or a credential "
                  "changes, the service is reloaded (systemctl reload scim-agent), or "
                  "'scim-agent sync' succeeds by hand", hold.reason)

    def _hold_lifted(self) -> bool:
        hold = self.standing.hold
        if lifted_by_hand(self.config.state.path, hold):
            log.info("a manual sync succeeded since pushing was held; resuming")
            self.standing.hold = None
            return True
        files = file_signature(self.config, self.environ)
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
        self.standing.hold = None
        return True

    # -- reload -----------------------------------------------------------------------------

    def _load_new_config(self) -> Config:
        new = load(self.config_file)
        if new.state.path != self.config.state.path:
            raise ConfigError(f"{new.path}: [state] path: changed from {self.config.state.path} "
                              f"to {new.state.path}; restart the service to switch snapshots")
        try:
            problem = check_binding(new.state.path, new.target.url)
        except StateError as exc:
            problem = str(exc)
        if problem:
            raise ConfigError(f"{new.path}: [target] url: {problem}")
        return new

    def _apply_config(self, new: Config) -> None:
        if new.metrics.listen != self.config.metrics.listen:
            log.warning("[metrics] listen changed; it takes effect when the service restarts")
        with self._lock:
            self.config = new
            self.schedule = Schedule(new.schedule, self._now)
            self._config_fp = config_fingerprint(new)
        self._on_config(new)   # a reloaded config may bring new secrets: keep them out of logs

    def reload(self) -> bool:
        """SIGHUP: load the config again. An invalid one leaves the running one in place."""
        # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC: always the real one
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={real.monotonic_ns() // 1000}")
        try:
            new = self._load_new_config()
        except ConfigError as exc:
            log.error("reload failed; still running with the previous config: %s", exc)
            self.notify.send("READY=1", f"STATUS={self.status_text()}")
            return False
        self._apply_config(new)
        with self._lock:
            resumed = self.standing.hold is not None
            if resumed:
                log.info("pushing was held (%s); the reload resumes it",
                         self.standing.hold.reason)
                self.standing.hold = None
            if not self._in_cycle and not self.stop.is_set():
                now = self._now()
                self.standing.next_run = now if resumed else self.schedule.next_run(
                    self._cycle_started or now, now, self.standing.failures)
                self._reschedule(self.standing.next_run)
        log.info("config reloaded from %s; syncing %s", self.config_file, self.schedule.describe())
        self._save_meta()
        self.notify.send("READY=1", f"STATUS={self.status_text()}")
        return True

    # -- reporting ----------------------------------------------------------------------------

    def _save_meta(self) -> None:
        """What ``scim-agent status`` shows about the daemon, and the snapshot gauges."""
        st = self.standing
        held = st.hold.describe() if st.hold else None
        try:
            with State.open(self.config.state.path, lock=False) as state:
                # the hold only on a change: a manual sync may have cleared it a moment ago
                state.meta.record_daemon(next_run=st.next_run, failures=st.failures,
                                         held=held if held != self._saved_held else KEEP)
                self._saved_held = held
                counts = state.counts()
        except (StateError, OSError, sqlite3.Error) as exc:
            log.warning("cannot record the daemon's status in the snapshot: %s", exc)
            counts = {}
        for kind, n in counts.items():
            self.metrics.objects.labels(kind).set(n)
        self.metrics.failures.set(st.failures)
        self.metrics.held.set(1 if st.hold else 0)
        self.metrics.next_run.set(st.next_run.timestamp() if st.next_run else float("nan"))

    def status_text(self) -> str:
        """One line for systemctl status (notify STATUS=)."""
        return self.standing.status_line(stopping=self.stop.is_set(),
                                         cycle_started=self._cycle_started if self._in_cycle
                                         else None)

    def health(self) -> tuple[int, dict]:
        return self.standing.health(now=self._now(), period=self.schedule.period(),
                                    token_days_left=token_days_left(self.config),
                                    syncing=self._in_cycle and self.watchdog.cycle_progressing())
