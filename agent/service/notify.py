"""Talking to systemd: the notify socket, and when the watchdog may be told all is well.

``WATCHDOG=1`` is a promise that the daemon makes progress, so it is sent only while that is
true: idle with the scheduler on time, or in a cycle whose heartbeat (an HTTP answer, a
source page, a finished operation) is younger than the watchdog interval. A hung cycle stops
the pings and systemd restarts the agent; a long but busy one does not.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

from connectors.redaction import printable, redact

from . import clock

log = logging.getLogger(__name__)


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
        # One assignment per line: a newline inside a value (a message quoting a name) would
        # add an assignment of its own (READY=1, MAINPID=...), so values are made printable.
        lines = tuple(f"{k}={redact(printable(v))}" for k, _, v in
                      (line.partition("=") for line in lines))
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


class Watchdog:
    """The progress-based watchdog decision, on the monotonic ``clock``. Without an
    interval (no ``WATCHDOG_USEC``) nothing ever stalls and no ping is ever due."""

    def __init__(self, interval: float | None, clock: Callable[[], float] = clock.monotonic):
        self.interval = interval
        self._clock = clock
        self._heartbeat = clock()
        self._last_ping: float | None = None
        self._stall_logged = False
        self._late_since: float | None = None     # when the idle scheduler first looked late

    def beat(self, *_args) -> None:
        """Proof of progress; takes and ignores any arguments, so it fits every callback."""
        self._heartbeat = self._clock()

    def cycle_progressing(self) -> bool:
        """In a cycle: has it shown progress within the last interval?"""
        stalled = self._clock() - self._heartbeat
        if stalled >= (self.interval or float("inf")):
            if not self._stall_logged:
                self._stall_logged = True
                log.error("the cycle has made no progress for %.1fs; no longer pinging the "
                          "systemd watchdog", stalled)
            return False
        self._stall_logged = False
        return True

    def scheduler_on_time(self, late: float | None, wake: Callable[[], None]) -> bool:
        """Idle: is the scheduler's next run no later than it should be? ``late`` is how many
        seconds past its due time the job is by the wall clock (None: no run is due)."""
        if late is None or not self.interval or late <= self.interval:
            self._late_since = None
            return True
        # A wall-clock jump (NTP, a resumed VM) makes a punctual scheduler look late: wake
        # it, and give up on it only if it stays late for a watchdog interval measured on the
        # monotonic clock.
        wake()
        now = self._clock()
        if self._late_since is None:
            self._late_since = now
        if now - self._late_since > self.interval:
            log.error("the scheduler is %.0fs late; no longer pinging the watchdog", late)
            return False
        return True

    def ping_due(self) -> bool:
        """Half an interval since the last ping (sd_watchdog_enabled(3) advises half)."""
        if not self.interval:
            return False
        return self._last_ping is None or self._clock() - self._last_ping >= self.interval / 2

    def pinged(self) -> None:
        self._last_ping = self._clock()
