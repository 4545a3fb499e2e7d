"""What the daemon shows to monitoring: Prometheus metrics, and ``/healthz`` + ``/metrics``
served over HTTP on ``[metrics] listen`` by a thread of its own."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

from connectors.redaction import redact

from ..config import ConfigError
from ..core.outcome import Outcome
from ..engine.cycle import SyncResult
from ..store.history import RunRecord
from .clock import local
from .holds import PushHold

log = logging.getLogger(__name__)

HEALTHY_PERIODS = 3          # /healthz: 503 once the last success is older than this many periods


@dataclass
class Standing:
    """What the daemon knows about its cycles: the status line, ``/healthz`` and the
    snapshot's daemon meta are all read from it. At start, :meth:`restore` fills the last
    outcome and the last success in from the run history (``restored`` until this process
    ends a cycle of its own), so a restart does not forget them."""

    started_at: dt.datetime
    failures: int = 0                          # failed cycles in a row
    hold: PushHold | None = None
    last_outcome: Outcome | None = None
    last_message: str = ""
    last_finished: dt.datetime | None = None
    last_success: dt.datetime | None = None
    next_run: dt.datetime | None = None
    restored: bool = False                     # last_* come from an earlier process

    def restore(self, last: RunRecord | None, last_success: RunRecord | None) -> None:
        """The daemon's newest run that ended (``last``) and its newest success, as the
        snapshot's run history holds them."""
        if last is not None and last.outcome in {o.value for o in Outcome}:
            self.last_outcome, self.last_message = Outcome(last.outcome), last.message
            self.last_finished = _moment(last.finished)
            self.restored = True
        if last_success is not None:
            self.last_success = _moment(last_success.finished)

    def cycle_ended(self) -> None:
        self.restored = False

    def status_line(self, *, stopping: bool, cycle_started: dt.datetime | None) -> str:
        """One line for systemctl status (notify STATUS=)."""
        if stopping:
            return "stopping"
        if cycle_started:
            return f"cycle running since {local(cycle_started, time_only=True)}"
        if self.hold:
            text = f"HELD: {self.hold.describe()}"
        elif self.restored:
            text = (f"starting (before the restart: last cycle {self.last_outcome} at "
                    f"{local(self.last_finished)}: {self.last_message})")
        elif self.last_outcome is not None and self.last_outcome.succeeded:
            text = (f"last cycle {self.last_outcome} at "
                    f"{local(self.last_finished, time_only=True)}: {self.last_message}")
        elif self.last_outcome is not None:
            text = f"failing ({self.failures} in a row): {self.last_message}"
        else:
            text = "starting"
        if self.next_run and not self.hold:
            text += f"; next run {local(self.next_run, time_only=True)}"
        return " ".join(text.split())[:400]

    def health(self, *, now: dt.datetime, period: dt.timedelta,
               token_days_left: int | None, syncing: bool = False) -> tuple[int, dict]:
        """/healthz: 200 while the last cycle succeeded and ended less than HEALTHY_PERIODS
        periods ago, or the last success (or the start) is that young; 503 when held or
        failing longer, and when no cycle has ended for that long (skipped because another
        agent holds the snapshot, say: a prompt left unanswered). ``syncing``: a cycle is
        under way and making progress (the watchdog's word); a long first cycle, or a long
        one after a success, is "syncing", not failing. Until this process ends its first
        cycle it is "starting" (showing what the history says), for HEALTHY_PERIODS periods
        at most."""
        window = period * HEALTHY_PERIODS

        def fresh(moment: dt.datetime | None) -> bool:
            return moment is not None and now - moment <= window

        succeeded = self.last_outcome is not None and self.last_outcome.succeeded
        if self.hold:
            status = "held"
        elif not self.restored and succeeded and fresh(self.last_finished):
            status = "ok"
        elif syncing and (self.restored or self.last_outcome is None or succeeded):
            status = "syncing"
        elif self.restored:
            status = "starting" if fresh(self.started_at) else "failing"
        elif fresh(self.last_success or self.started_at):
            status = "retrying" if self.last_outcome else "starting"
        else:
            status = "failing"
        body = {
            "status": status,
            "last_outcome": self.last_outcome.value if self.last_outcome else None,
            "last_message": self.last_message or None,
            "last_success": local(self.last_success) if self.last_success else None,
            "consecutive_failures": self.failures,
            "held": self.hold.describe() if self.hold else None,
            "next_run": local(self.next_run) if self.next_run else None,
            "token_days_left": token_days_left,
        }
        return (200 if status in ("ok", "syncing", "retrying", "starting") else 503), body


def _moment(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    moment = dt.datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


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
            for op, _error in result.report.to_retry():
                self.operations.labels(op.kind.value, "failed").inc()
            for op, _error in result.report.refused_by_target():
                self.operations.labels(op.kind.value, "refused").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """``/healthz`` (``health()`` gives the status code and the JSON body) and ``/metrics``."""

    def __init__(self, listen: str, health: Callable[[], tuple[int, dict]], metrics: Metrics):
        self.listen = listen
        self._health = health
        self._metrics = metrics
        self._server: ThreadingHTTPServer | None = None

    def start(self, config_path: Path) -> None:
        host, port = parse_listen(self.listen)
        server_class = type("_Server", (ThreadingHTTPServer,), {
            "daemon_threads": True,
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"{config_path}: [metrics] listen: cannot listen on "
                              f"{self.listen}: {exc.strerror}")
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, name="metrics-http",
                         daemon=True).start()
        log.info("serving /healthz and /metrics on http://%s", self.listen)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, path: str) -> tuple[int, bytes, str]:
        if path == "/healthz":
            status, body = self._health()
            return status, redact(json.dumps(body)).encode() + b"\n", "application/json"
        if path == "/metrics":
            return 200, self._metrics.render(), CONTENT_TYPE_LATEST
        return 404, b"not found: try /healthz or /metrics\n", "text/plain"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body, content_type = self.server.owner.answer(self.path.split("?", 1)[0])
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
