"""The one place that wires config, snapshot, source and target together.

A cycle: read the source (in full, or a change set applied to the last complete view), map,
plan, guard, apply, report. ``cli.py`` and ``daemon.py`` call :class:`Agent` and only format
what it returns.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connectors.base import (ConnectorError, CursorExpired, Directory, FatalTargetError,
                             Interrupted, SourceError, TargetError)
from connectors.http import HttpPolicy
from connectors.base import Target
from connectors.scim import ScimTarget

from .apply import Applier, ApplyReport, hold_for
from .observe import TargetRead, read_target
from ..config import Config, ConfigError
from ..core.mapping import MappingRules, map_directory
from ..core.model import DesiredState, Snapshot, digest_of
from ..core.outcome import Hold, HoldKind, Outcome
from ..core.plan import USER_OPS, GuardStop, Plan, PlanOptions, guard, make_plan
from ..store.state import State, StateBusy, StateError, lock_holder, now

log = logging.getLogger(__name__)

TOKEN_LIFETIME = dt.timedelta(days=365)
MAX_FOLLOW_UPS = 2      # plans made again within one cycle after the target surprised apply
TOKEN_WARNING = dt.timedelta(days=30)

class AgentError(Exception):
    """A fatal error for this cycle, with a message fit for an operator."""


@dataclass
class ReadResult:
    view: Directory
    full: bool                      # a complete read (False: a change set applied to the view)
    changes: Directory | None = None
    removed_users: frozenset[str] = frozenset()
    removed_groups: frozenset[str] = frozenset()


@dataclass
class PlanResult:
    plan: Plan
    desired: DesiredState
    snapshot: Snapshot
    read: ReadResult
    guard: GuardStop | None


@dataclass
class SyncResult:
    outcome: Outcome
    plan: Plan | None = None
    report: ApplyReport | None = None
    guard: GuardStop | None = None
    message: str = ""
    duration: float = 0.0
    adopted: int = 0
    hold: Hold | None = None        # why pushing should be held until someone acts
    warnings: list[str] = field(default_factory=list)
    target_read: TargetRead | None = None   # what adoption or reconciliation found
    busy: bool = False              # another agent held the snapshot: nothing was attempted


def token_warning(config: Config, today: dt.date | None = None) -> str:
    created = config.target.token_created
    if created is None:
        return ""
    expires = created + TOKEN_LIFETIME
    left = (expires - (today or dt.date.today())).days
    if left < 0:
        return (f"the SCIM token created {created} expired on {expires}; regenerate it in Split "
                "(Admin settings > Security > SCIM)")
    if dt.timedelta(days=left) <= TOKEN_WARNING:
        return (f"the SCIM token expires on {expires} ({left} days left); regenerate it in Split "
                "and update [target] token and token_created")
    return ""


def token_days_left(config: Config, today: dt.date | None = None) -> int | None:
    created = config.target.token_created
    if created is None:
        return None
    return (created + TOKEN_LIFETIME - (today or dt.date.today())).days


class Agent:
    def __init__(self, config: Config, *, target_factory: Callable[[Config], Target] | None = None):
        self.config = config
        self._target_factory = target_factory or default_target
        self.source_cls = config.source.source_class
        self.rules = MappingRules.for_source(self.source_cls, config.source.attributes,
                                             admin_group=config.sync.admin_group,
                                             admin_group_name=config.target.admin_group_name)
        self.plan_options = PlanOptions(deactivate=config.sync.deactivate,
                                        groups=config.sync.groups,
                                        admin_group_name=config.target.admin_group_name)

    # -- pieces ---------------------------------------------------------------------------

    def make_source(self):
        """The configured source. Sources that fetch only the attributes they need are told
        every raw attribute name the mapping reads, overrides included."""
        attributes = sorted({name for names in self.rules.user_attributes.values()
                             for name in names})
        return self.source_cls(self.config.source.settings, attributes=attributes)

    def open_state(self, *, lock: bool = True) -> State:
        return State.open(self.config.state.path, lock=lock)

    def read_source(self, state: State | None) -> ReadResult:
        """A complete view of the source: a change set on top of the stored view when the
        source has a change feed and a full read is not due, else a full read."""
        source = self.make_source()
        try:
            view = self._stored_view(state)
            if view is not None:
                try:
                    changes = source.read_changes(view.cursor, view)
                except CursorExpired as exc:
                    log.info("change cursor no longer valid (%s); reading the source in full", exc)
                else:
                    log.info("read %d change(s) from the source since the last cycle", len(changes))
                    return ReadResult(changes.apply_to(view), full=False,
                                      changes=Directory(changes.users, changes.groups, changes.cursor),
                                      removed_users=changes.removed_users,
                                      removed_groups=changes.removed_groups)
            directory = source.read()
            log.info("read %d users and %d groups from the %s source", len(directory.users),
                     len(directory.groups), self.config.source.type)
            return ReadResult(directory, full=True)
        finally:
            source.close()

    def _stored_view(self, state: State | None) -> Directory | None:
        if state is None or not self.source_cls.supports_changes:
            return None
        every = self.config.source.settings.full_read_every
        if state.get_meta("source_config") != self.source_fingerprint():
            log.info("the [source] settings changed since the last read; reading in full")
            return None
        last_full = state.get_meta("last_full_read")
        if not last_full:
            return None
        age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(last_full)
        if age >= every:
            log.info("a full read is due (last one %s ago)", str(age).split(".")[0])
            return None
        view = state.source_view()
        return view if view is not None and view.cursor else None

    def source_fingerprint(self) -> str:
        """Changes whenever the source's config does (type, settings, mapping), so a view read
        under an old filter or base is never extended by change reads under a new one."""
        source = self.config.source
        return digest_of([source.type, repr(source.settings),
                          sorted((k, list(v)) for k, v in self.rules.user_attributes.items())])

    def compute_plan(self, state: State | None, read: ReadResult | None = None,
                     desired: DesiredState | None = None) -> PlanResult:
        read = read or self.read_source(state)
        desired = desired or map_directory(read.view, self.rules)
        for problem in desired.problems:
            log.warning("%s %s not pushed: %s", problem.kind, problem.key, problem.reason)
        snapshot = state.snapshot() if state is not None else Snapshot.empty()
        plan = make_plan(desired, snapshot, self.plan_options)
        stop = guard(plan, desired, snapshot, self.config.sync.max_deactivations)
        return PlanResult(plan, desired, snapshot, read, stop)

    # -- commands -------------------------------------------------------------------------

    def plan(self) -> PlanResult:
        """Read, map and plan; write nothing and send nothing."""
        path = self.config.state.path
        if not path.exists():
            return self.compute_plan(None)
        state = State.open(path, lock=False, create=False)
        try:
            return self.compute_plan(state)
        finally:
            state.close()

    def sync(self, *, only: Iterable[str] = (), allow_mass_deactivation: bool = False,
             stop: threading.Event | None = None,
             progress: Callable[[int, int], None] | None = None,
             mode: str = "sync", reconcile: bool = False) -> SyncResult:
        """One full cycle. Never raises for expected failures: the result says what happened."""
        started = time.monotonic()
        warnings = [w for w in [token_warning(self.config)] if w]
        for w in warnings:
            log.warning("%s", w)
        try:
            state = self.open_state(lock=True)
        except StateError as exc:
            return SyncResult(Outcome.ERROR, message=str(exc), warnings=warnings,
                              busy=isinstance(exc, StateBusy))
        try:
            run_id = state.start_run(mode)
            try:
                result = self._sync(state, list(only), allow_mass_deactivation, stop, progress,
                                    reconcile)
            except Exception as exc:        # a bug: still close the run record, then re-raise
                state.finish_run(run_id, "error", {}, 0, f"internal error: {type(exc).__name__}",
                                 time.monotonic() - started)
                raise
            result.duration = time.monotonic() - started
            result.warnings = warnings + result.warnings
            report = result.report
            state.finish_run(run_id, result.outcome.value, report.counts() if report else {},
                             len(report.failed) if report else 0, result.message, result.duration)
            if mode == "sync" and result.outcome.succeeded:
                with state.db.atomic():
                    state.set_meta("held", None)   # a running daemon resumes (agent/service/daemon.py)
            return result
        finally:
            state.close()

    def _sync(self, state: State, only: list[str], allow_mass_deactivation: bool,
              stop: threading.Event | None, progress, reconcile: bool) -> SyncResult:
        try:
            read = self.read_source(state)
        except SourceError as exc:
            return SyncResult(Outcome.ERROR, message=f"reading the source failed: {exc}")
        except ConnectorError as exc:       # a source setting its constructor refused
            return SyncResult(Outcome.ERROR, message=f"source: {exc}")
        desired = map_directory(read.view, self.rules)
        unknown = _unknown_keys(only, desired, state)
        if unknown:
            return SyncResult(Outcome.ERROR, message=f"--only: {', '.join(unknown)} names no user or "
                                                  "group in the source or the snapshot")
        try:
            target = self._target_factory(self.config)
        except (ConfigError, TargetError) as exc:
            return SyncResult(Outcome.ERROR, message=str(exc))
        target.cancel = stop
        try:
            fetched = None
            try:
                target.probe()      # a rejected token shows even when nothing is pending
                reconcile = reconcile or self._reconcile_due(state)
                if reconcile or (state.is_empty() and desired.users):
                    fetched = read_target(target, state, desired, groups=self.config.sync.groups,
                                          refresh=reconcile)
                    with state.db.atomic():
                        state.set_meta("last_target_read", now())
            except Interrupted:
                return SyncResult(Outcome.ERROR, message="stopped before anything was applied",
                                  report=ApplyReport(interrupted=True))
            except FatalTargetError as exc:
                return SyncResult(Outcome.ERROR, message=str(exc), hold=hold_for(exc))
            except TargetError as exc:
                return SyncResult(Outcome.ERROR, message=f"reading the target failed: {exc}")
            adopted = len(fetched.adopted) if fetched else 0
            if fetched is not None:
                _log_target_read(fetched)
            result = self.compute_plan(state, read, desired)
            plan = result.plan.only(only) if only else result.plan
            if result.guard and not allow_mass_deactivation:
                log.error("safety guard: %s; nothing applied (use --allow-mass-deactivation "
                          "once if this is intended)", result.guard.reason)
                return SyncResult(Outcome.GUARD, plan=plan, guard=result.guard,
                                  message=result.guard.reason, adopted=adopted,
                                  hold=Hold(HoldKind.GUARD,
                                            f"safety guard: {result.guard.reason}"))
            log.info("plan: %s", _summary_line(plan))
            applier = Applier(target, state, self.config.target.concurrency, stop=stop,
                              progress=progress)
            report = applier.apply(plan)
            self._follow_up(applier, state, desired, report, only)
        finally:
            target.close()

        if report.fatal:
            return SyncResult(Outcome.ERROR, plan=plan, report=report, message=report.fatal,
                              adopted=adopted, hold=report.hold)
        if not only and not report.interrupted:
            state.keep_only_failures((_kind(op), op.source_id, op.kind.value)
                                     for op, _ in report.failed)
        if read.view.cursor is not None and not only and not report.interrupted:
            state.save_source_view(read.view, self.source_fingerprint(), read.full,
                                   changed=read.changes, removed_users=read.removed_users,
                                   removed_groups=read.removed_groups)
        failed = len(report.failed)
        message = (f"applied {len(report.applied)} of {len(plan.ops)} operations"
                   + (f"; {failed} failed" if failed else "")
                   + ("; interrupted" if report.interrupted else ""))
        log.info("%s", message)
        return SyncResult(Outcome.PARTIAL if failed else Outcome.OK, plan=plan, report=report,
                          message=message, adopted=adopted, target_read=fetched)

    def _follow_up(self, applier: Applier, state: State, desired: DesiredState,
                   report: ApplyReport, only: list[str]) -> None:
        """Plan again when applying taught the snapshot something the plan did not foresee
        (a create met an existing account, an object was gone): the planner, not apply,
        decides what that means. A few passes at most; what is left waits for the next cycle."""
        for _ in range(MAX_FOLLOW_UPS):
            if not report.learned or report.fatal or report.interrupted:
                return
            snapshot = state.snapshot()
            plan = make_plan(desired, snapshot, self.plan_options)
            plan = plan.only(only) if only else plan
            if not plan.sendable:
                return
            stop = guard(plan, desired, snapshot, self.config.sync.max_deactivations)
            if stop is not None:
                log.warning("not applying what the target's answers added to the plan: %s; "
                            "the next cycle looks again", stop.reason)
                return
            log.info("what the target already held changed the plan: %s", _summary_line(plan))
            report.extend(applier.apply(plan))

    def _reconcile_due(self, state: State) -> bool:
        last = state.get_meta("last_target_read")
        if last is None:
            return not state.is_empty()   # a snapshot from before reconciliation
        age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(last)
        if age >= self.config.sync.reconcile_every:
            log.info("re-reading Split to catch changes made there by hand (last read %s ago)",
                     str(age).split(".")[0])
            return True
        return False

    def check(self) -> list[tuple[str, bool, str]]:
        """Read-only checks of source and target; (what, ok, detail) per line."""
        results: list[tuple[str, bool, str]] = [("config", True, str(self.config.path))]
        try:
            source = self.make_source()
            try:
                counts = source.check()
            finally:
                source.close()
            results.append((f"source ({self.config.source.type})", True,
                            ", ".join(f"{k}: {v}" for k, v in counts.items())))
        except Exception as exc:  # any failure is a failed check, said in one line
            results.append((f"source ({self.config.source.type})", False, _one_line(exc)))
        try:
            target = self._target_factory(self.config)
            try:
                counts = target.check()
            finally:
                target.close()
            results.append(("target", True, ", ".join(f"{k}: {v}" for k, v in counts.items())))
        except Exception as exc:
            results.append(("target", False, _one_line(exc)))
        warning = token_warning(self.config)
        if warning:
            results.append(("token", True, f"warning: {warning}"))
        elif self.config.target.token_created:
            results.append(("token", True, f"{token_days_left(self.config)} days left"))
        results.append(("state",) + _state_check(self.config.state.path))
        return results


def default_target(config: Config, *, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> ScimTarget:
    if config.target.token is None or not config.target.token.resolved:
        raise ConfigError(f"{config.path}: [target] token: is required for this command")
    t = config.target
    policy = HttpPolicy(timeout=t.timeout, rate_limit=t.rate_limit, concurrency=t.concurrency,
                        max_attempts=t.max_attempts, ca_file=t.ca_file)
    return ScimTarget(t.url, t.token, policy, clock=clock, sleep=sleep)


def _kind(op) -> str:
    return "user" if op.kind in USER_OPS else "group"


def _state_check(path) -> tuple[bool, str]:
    """Can the snapshot be opened (or created), and is an agent using it right now?"""
    if not path.exists():
        ancestor = path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            return False, f"{path}: cannot be created ({ancestor} is not writable by this user)"
        return True, f"{path}: not created yet (the first sync creates it)"
    try:
        with State.open(path, lock=False, create=False) as state:
            counts = state.counts()
    except StateError as exc:
        return False, str(exc)
    detail = f"{path}: " + ", ".join(f"{k}: {v}" for k, v in counts.items())
    holder = lock_holder(path)
    if holder is not None:
        detail += f"; in use now by pid {holder}" if holder else "; in use now"
    return True, detail


def _unknown_keys(keys: Iterable[str], desired: DesiredState, state: State) -> list[str]:
    """``--only`` keys that name nothing at all: a typo must not look like "no changes"."""
    if not keys:
        return []
    snapshot = state.snapshot()
    known = {u.user_name.casefold() for u in desired.users.values()}
    known |= {g.display_name.casefold() for g in desired.groups.values()}
    known |= {u.user_name.casefold() for u in snapshot.users.values()}
    known |= {g.display_name.casefold() for g in snapshot.groups.values()}
    return [k for k in keys if k.casefold() not in known]


def _log_target_read(read: TargetRead) -> None:
    for label, keys in (("adopted", read.adopted), ("changed in Split by hand", read.drifted),
                        ("gone from Split, will be created again", read.vanished)):
        if keys:
            shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
            log.info("%s: %s", label, shown)


def _summary_line(plan: Plan) -> str:
    parts = [f"{n} {k}" for k, n in plan.summary().items() if n]
    return ", ".join(parts) if parts else "no changes"


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text
