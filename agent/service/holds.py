"""Holding pushing, and noticing what lifts a hold.

A hold starts when the engine's cycle ends with a :class:`~agent.core.outcome.Hold` (a
rejected token, an endpoint no retry mends, a safety guard). Later cycles send nothing until
one of these happens:

* the config file, or a secret file it names, changes (checked every tick: a cheap file
  signature first, then a digest of the config and the secrets' values, kept in memory);
* the service is reloaded (SIGHUP);
* ``scim-agent sync`` succeeds when run by hand (it clears the snapshot's hold, and its run
  is in the history).

A restart also tries again: one refused request costs nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, secrets_of
from ..core.outcome import Hold, HoldKind, Outcome
from ..store.state import State, StateError
from .clock import local

log = logging.getLogger(__name__)


@dataclass
class PushHold:
    """The daemon's hold: why (typed, from the engine), since when, and what lifts it."""

    hold: Hold
    since: dt.datetime
    after_run: int            # a manual sync recorded after this run id can lift the hold
    fingerprint: str          # content of the config and its secrets when the hold began
    files: tuple              # cheap (mtime, size, inode) signature, checked every tick
    restart_needed: bool = False   # the token is read once, at start

    @classmethod
    def start(cls, hold: Hold, since: dt.datetime, after_run: int, config: Config,
              fingerprint: str, environ: Mapping[str, str]) -> "PushHold":
        # systemd copies credentials at start, and a process's environment is fixed when it
        # starts: only a restart brings a new token in. A token file is read again on reload.
        origin = config.target.token.origin if config.target.token is not None else ""
        restart = hold.kind is HoldKind.TOKEN_REJECTED and origin.startswith(
            ("credential ", "environment variable "))
        return cls(hold, since, after_run, fingerprint, file_signature(config, environ),
                   restart)

    @property
    def kind(self) -> HoldKind:
        return self.hold.kind

    @property
    def reason(self) -> str:
        return self.hold.reason

    def describe(self) -> str:
        if self.restart_needed:
            how = "update the credential, then restart the service"
        else:
            how = "fix it, then reload the service or run 'scim-agent sync'"
        return f"{self.reason} (since {local(self.since)}; {how})"


def watched_files(config: Config, environ: Mapping[str, str]) -> list[Path]:
    """The config file and every secret file it names ({ file } and { credential })."""
    paths = [config.path]
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    for secret in secrets_of(config):
        if secret.origin.startswith("file "):
            paths.append(Path(secret.origin[len("file "):]))
        elif secret.origin.startswith("credential ") and credentials:
            paths.append(Path(credentials) / secret.origin[len("credential "):])
    return paths


def file_signature(config: Config, environ: Mapping[str, str]) -> tuple:
    signature = []
    for path in watched_files(config, environ):
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


def last_run_id(state_path: Path) -> int:
    """The newest run in the history (0 without one): a manual sync after it lifts a hold."""
    try:
        with State.read(state_path) as state:
            runs = state.runs(1)
    except (StateError, OSError, sqlite3.Error):
        return 0
    return runs[0].id if runs else 0


def lifted_by_hand(state_path: Path, hold: PushHold) -> bool:
    """Did a manual ``sync`` succeed since the hold began, or clear the snapshot's hold?"""
    try:
        with State.read(state_path) as state:
            manual = any(r.id > hold.after_run and r.mode == "sync"
                         and r.outcome in (Outcome.OK, Outcome.PARTIAL)
                         for r in state.runs(20))
            cleared = state.meta.held() is None
    except (StateError, OSError, sqlite3.Error) as exc:
        log.warning("cannot read the snapshot to check the hold: %s", exc)
        return False
    return manual or cleared
