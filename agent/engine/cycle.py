"""One cycle: read the source, map, plan, guard, apply, report.

The source is read in full or as a change set on top of the last complete view
(``reading.py``); the target is read when the snapshot is empty or a reconcile is due
(``observe.py``); the plan is applied (``apply.py``), and planned again when applying taught
the snapshot something new. ``agent/cli`` and ``agent/service`` call :class:`Agent` (built by
``agent/app.py``) and only format what it returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from connectors.base import (ConnectorError, FatalTargetError, Interrupted, Source, SourceError,
                             Target, TargetError)

from ..config import Config, ConfigError, format_duration
from ..core.mapping import MappingRules, map_directory
from ..core.model import DesiredState, Snapshot
from ..core.outcome import Hold, HoldKind, Outcome
from ..core import adopt
from ..core.guard import GuardStop, guard, guard_target_read
from ..core.plan import USER_OPS, Plan, PlanOptions, make_plan
from ..store.state import State, StateBusy, StateError
from .apply import REFUSED, Applier, ApplyReport, hold_for
from .quarantine import defer_refused, quarantine
from .binding import TargetChanged, bind, binding_problem, target_identity
from .saved import Basis, SavedPlan, differences
from .checks import Check, run_checks, token_warning
from .deadline import CycleStop
from .observe import Learner, TargetRead, read_target
from .reading import ReadResult, SourceReader

log = logging.getLogger(__name__)

MAX_FOLLOW_UPS = 2      # plans made again within one cycle after the target surprised apply


@dataclass
class PlanResult:
    plan: Plan
    desired: DesiredState
    snapshot: Snapshot
    read: ReadResult
    guard: GuardStop | None
    target_read: TargetRead | None = None    # plan --refresh: what reading Split found
    basis: Basis | None = None               # what it was computed from (plan --out)


@dataclass(frozen=True)
class SyncAsk:
    """What one sync was asked to do (the command's options)."""

    only: tuple[str, ...] = ()
    allow_mass_deactivation: bool = False
    stop: threading.Event | None = None
    progress: Callable[[int, int], None] | None = None
    reconcile: bool = False
    saved: SavedPlan | None = None            # sync --plan FILE: exactly this plan, or nothing
    confirm: Callable[[Plan], bool] | None = None   # asked before anything is sent


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


class Agent:
    """Cycles for one config. ``make_source(config, attributes)`` and ``make_target(config)``
    build the real clients (``agent/app.py``); ``clock`` (monotonic seconds) and ``now``
    (aware wall-clock time) are the time seam."""

    def __init__(self, config: Config, *,
                 make_source: Callable[[Config, Sequence[str]], Source],
                 make_target: Callable[[Config], Target],
                 clock: Callable[[], float],
                 now: Callable[[], dt.datetime],
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._make_source = make_source
        self._target_factory = make_target
        self.clock = clock
        self.now = now
        self.sleep = sleep
        self.source_cls = config.source.source_class
        self.rules = MappingRules.for_source(self.source_cls, config.source.attributes,
                                             config.source.group_attributes,
                                             scope=config.source.scope,
                                             admin_group=config.sync.admin_group,
                                             admin_group_name=config.target.admin_group_name)
        self.plan_options = PlanOptions(deactivate=config.sync.deactivate,
                                        groups=config.sync.groups,
                                        admin_group_name=config.target.admin_group_name)
        self.reader = SourceReader(config, self.rules, self.make_source, now)
        self._run_id: int | None = None

    # -- pieces ---------------------------------------------------------------------------

    def make_source(self) -> Source:
        """The configured source, told every raw attribute name the mapping and the scope
        rules read, so a source that fetches named attributes fetches those too."""
        return self._make_source(self.config, self.rules.raw_attributes())

    def open_state(self, *, lock: bool = True) -> State:
        return State.open(self.config.state.path, lock=lock)

    def read_source(self, state: State | None) -> ReadResult:
        return self.reader.read(state)

    def compute_plan(self, state: State | None, read: ReadResult | None = None,
                     desired: DesiredState | None = None) -> PlanResult:
        with bulk():
            read = read or self.read_source(state)
            snapshot = state.snapshot() if state is not None else Snapshot.empty()
            desired = desired or map_directory(read.view, self.rules, snapshot.users,
                                               stamps=snapshot)
            plan = make_plan(desired, snapshot, self.plan_options)
        for problem in desired.problems:
            log.warning("%s %s not pushed: %s", problem.kind, problem.key, problem.reason)
        return PlanResult(plan, desired, snapshot, read, self._guard(plan, desired, snapshot))

    # -- commands -------------------------------------------------------------------------

    def plan(self, *, refresh: bool = False, basis: bool = True) -> PlanResult:
        """Read, map and plan; write nothing and send nothing. ``refresh`` also reads the
        target (read-only, paged, as a reconcile does) and plans from what it holds, so drift
        made there by hand, and what a first sync would adopt, show before anything is sent.
        ``basis``: also digest what the plan was computed from (for ``plan --out``; it reads
        the whole snapshot once more, so a plain ``plan`` leaves it out).

        The snapshot is closed when this returns: the plan, the read and the desired state
        stay whole, but the attributes of a pushed user the plan did not read are gone with
        it (see :meth:`planning`)."""
        with self.planning(refresh=refresh, basis=basis) as result:
            return result

    @contextlib.contextmanager
    def planning(self, *, refresh: bool = False, basis: bool = True) -> Iterator[PlanResult]:
        """:meth:`plan`, with the snapshot open until the block ends: anything may be read of
        ``result.snapshot`` inside it (``plan --explain`` does)."""
        path = self.config.state.path
        # --refresh reads the whole target after the snapshot is loaded: it reads the users'
        # attributes with the snapshot rather than hold a read transaction across that
        # (the snapshot's integrity is checked on the other core while the source is read)
        state = State.read(path, missing_ok=True, lazy_attributes=not refresh,
                           check_beside=True)
        try:
            if state is not None:
                problem = binding_problem(state, self.config.target.url)
                if problem:
                    state.checked()     # a damaged file is said to be one, first
                    raise TargetChanged(problem)
            if refresh:
                with bulk():
                    read = self.read_source(state)
                    snapshot = state.snapshot() if state is not None else None
                    desired = map_directory(read.view, self.rules, snapshot and snapshot.users,
                                            stamps=snapshot)
                result = self._refreshed_plan(state, read, desired)
            else:
                result = self.compute_plan(state)
            if basis:
                result.basis = Basis(result.desired.digest(), state.digest() if state else "",
                                     target_identity(self.config.target.url), refresh)
            yield result
        finally:
            if state is not None:
                state.close()

    def _refreshed_plan(self, state: State | None, read: ReadResult,
                        desired: DesiredState) -> PlanResult:
        snapshot = state.snapshot() if state is not None else Snapshot.empty()
        target = self._target_factory(self.config)
        try:
            target.probe()
            facts = adopt.observe(desired, snapshot, target.users(),
                                  target.groups() if self.config.sync.groups else (),
                                  refresh=not snapshot.is_empty)
        finally:
            target.close()
        sync = self.config.sync
        stop = guard_target_read(facts, snapshot, sync.max_deactivations, sync.max_group_changes)
        seen = TargetRead(list(facts.adopted), list(facts.drifted), list(facts.vanished), stop,
                          list(facts.drift))
        if stop is not None:
            empty = Plan((), desired.problems)
            return PlanResult(empty, desired, snapshot, read, stop, seen)
        refreshed = adopt.refreshed(snapshot, facts)
        plan = make_plan(desired, refreshed, self.plan_options)
        return PlanResult(plan, desired, refreshed, read,
                          self._guard(plan, desired, refreshed), seen)

    def sync(self, *, only: Iterable[str] = (), allow_mass_deactivation: bool = False,
             stop: threading.Event | None = None,
             progress: Callable[[int, int], None] | None = None,
             mode: str = "sync", reconcile: bool = False,
             rebind_target: bool = False, saved: SavedPlan | None = None,
             confirm: Callable[[Plan], bool] | None = None) -> SyncResult:
        """One full cycle. Never raises for expected failures: the result says what happened.
        ``rebind_target`` lets a snapshot made for another target forget it (binding.py);
        ``saved`` applies exactly a plan saved by ``plan --out`` (saved.py); ``confirm`` is
        shown the plan and may decline it before anything is sent."""
        started = self.clock()
        # from here on, ``stop`` is also set once the cycle has run for [sync] max_cycle_time
        stop = CycleStop(stop, started, self.config.sync.max_cycle_time, self.clock, self.sleep)
        ask = SyncAsk(tuple(only), allow_mass_deactivation, stop, progress, reconcile, saved,
                      confirm)
        warnings = [w for w in [token_warning(self.config)] if w]
        for w in warnings:
            log.warning("%s", w)
        try:
            state = self.open_state(lock=True)
        except StateError as exc:
            return SyncResult(Outcome.ERROR, message=str(exc), warnings=warnings,
                              busy=isinstance(exc, StateBusy))
        try:
            try:
                run_id = self._run_id = state.start_run(mode)
            except StateError as exc:       # the snapshot cannot be written (a full disk...)
                log.error("%s", exc)
                return SyncResult(Outcome.ERROR, message=str(exc), warnings=warnings)
            try:
                problem = "" if rebind_target else binding_problem(state,
                                                                    self.config.target.url)
                if problem:
                    log.error("%s", problem)
                    result = SyncResult(Outcome.ERROR, message=problem,
                                        hold=Hold(HoldKind.TARGET_CHANGED, problem))
                else:
                    bind(state, self.config.target.url, rebind=rebind_target)
                    result = self._sync(state, ask)
            except StateError as exc:
                log.error("%s", exc)
                return SyncResult(Outcome.ERROR, message=str(exc), warnings=warnings)
            except Exception as exc:        # a bug: still close the run record, then re-raise
                state.finish_run(run_id, "error", {}, 0, f"internal error: {type(exc).__name__}",
                                 self.clock() - started)
                raise
            except BaseException:           # a second Ctrl-C: close the record as interrupted
                state.finish_run(run_id, Outcome.INTERRUPTED.value, {}, 0,
                                 "interrupted at once; what was confirmed is in the snapshot",
                                 self.clock() - started)
                raise
            result.duration = self.clock() - started
            result.warnings = warnings + result.warnings
            if stop.expired:
                result = self._out_of_time(result)
            report = result.report
            try:
                state.finish_run(run_id, result.outcome.value, report.counts() if report else {},
                                 len(report.failed) if report else 0, result.message,
                                 result.duration)
                if mode == "sync" and result.outcome.succeeded:
                    state.meta.clear_hold()   # a running daemon resumes (agent/service/daemon.py)
                state.prune_changes(dt.timedelta(days=self.config.state.history_days))
            except StateError as exc:
                log.error("the run could not be recorded: %s", exc)
                if result.outcome.succeeded:
                    return SyncResult(Outcome.ERROR, plan=result.plan, report=report,
                                      message=str(exc), warnings=result.warnings)
            return result
        finally:
            state.close()

    def _sync(self, state: State, ask: SyncAsk) -> SyncResult:
        only, stop = list(ask.only), ask.stop
        try:
            with bulk():
                read = self.read_source(state)
                # unchanged records take the value pushed for them (see map_directory)
                snapshot = state.snapshot()
                desired = map_directory(read.view, self.rules, snapshot.users, stamps=snapshot)
        except SourceError as exc:
            return SyncResult(Outcome.ERROR, message=f"reading the source failed: {exc}")
        except ConnectorError as exc:       # a source setting its constructor refused
            return SyncResult(Outcome.ERROR, message=f"source: {exc}")
        if ask.saved is not None:
            moved = _moved_since(ask.saved, desired, state, self.config.target.url)
            if moved:
                return SyncResult(Outcome.ERROR, message=moved)
        unknown = _unknown_keys(only, desired, state)
        if unknown:
            return SyncResult(Outcome.ERROR, message=f"--only: {', '.join(unknown)} names no user or "
                                                  "group in the source or the snapshot")
        try:
            target = self._target_factory(self.config)
        except (ConfigError, TargetError) as exc:
            return SyncResult(Outcome.ERROR, message=str(exc))
        except ConnectorError as exc:       # a setting the target's constructor refused
            return SyncResult(Outcome.ERROR, message=f"{self.config.path}: [target] {exc}")
        target.cancel = stop
        try:
            try:
                target.probe()      # a rejected token shows even when nothing is pending
                if ask.saved is not None:       # Split is read exactly when the plan did
                    fetched = (self._read_target(target, state, desired, True,
                                                 ask.allow_mass_deactivation, automatic=False)
                               if ask.saved.basis.refreshed else None)
                else:
                    fetched = self._read_target(target, state, desired, ask.reconcile,
                                                ask.allow_mass_deactivation)
                learner = Learner(state, desired)
                landed = learner.intents(target, desired)
            except Interrupted:
                return SyncResult(Outcome.INTERRUPTED, report=ApplyReport(interrupted=True),
                                  message="interrupted before anything was applied")
            except FatalTargetError as exc:
                return SyncResult(Outcome.ERROR, message=str(exc), hold=hold_for(exc))
            except TargetError as exc:
                return SyncResult(Outcome.ERROR, message=f"reading the target failed: {exc}")
            if fetched is not None and fetched.stopped is not None:
                reason = fetched.stopped.reason
                log.error("safety guard: %s; nothing recorded or applied", reason)
                return SyncResult(Outcome.GUARD, guard=fetched.stopped, message=reason,
                                  hold=Hold(HoldKind.GUARD, f"safety guard: {reason}"))
            adopted = (len(fetched.adopted) if fetched else 0) + landed
            if fetched is not None:
                _log_target_read(fetched)
            result = self.compute_plan(state, read, desired)
            plan = result.plan.only(only) if only else result.plan
            if ask.saved is not None and plan.to_dict() != ask.saved.plan:
                return SyncResult(Outcome.ERROR, message=(
                    f"{ask.saved.path}: Split no longer matches what the plan was made from: "
                    f"{differences(ask.saved.plan, plan.to_dict())}; nothing was applied. Make "
                    "the plan again (plan --refresh --out) and review it"))
            if result.guard and not ask.allow_mass_deactivation:
                log.error("safety guard: %s; nothing applied (use --allow-mass-deactivation "
                          "once if this is intended)", result.guard.reason)
                return SyncResult(Outcome.GUARD, plan=plan, guard=result.guard,
                                  message=result.guard.reason, adopted=adopted,
                                  hold=Hold(HoldKind.GUARD,
                                            f"safety guard: {result.guard.reason}"))
            reached = f"{self.config.target.url} {self.config.target.dialect}"
            plan, deferred = ((plan, []) if only or ask.saved is not None else
                              defer_refused(plan, state, desired, self.now(), reached))
            # no question once a stop was asked for (Ctrl-C while reading): nothing is sent
            if ask.confirm is not None and plan.sendable and not stop.is_set() \
                    and not ask.confirm(plan):
                return SyncResult(Outcome.DECLINED, plan=plan, adopted=adopted,
                                  message="not applied: declined at the prompt")
            log.info("plan: %s", _summary_line(plan))
            applier = Applier(target, state, learner, self.config.target.concurrency, stop=stop,
                              progress=ask.progress, run_id=self._run_id)
            report = applier.apply(plan)
            report.deferred = deferred
            if ask.saved is None:   # a saved plan is applied as reviewed, nothing more
                self._follow_up(applier, state, desired, report, only)
            quarantine(report.rejected, state, desired, self.now(), reached)
        finally:
            target.close()

        if report.fatal:
            return SyncResult(Outcome.ERROR, plan=plan, report=report, message=report.fatal,
                              adopted=adopted, hold=report.hold)
        held = report.held = _held_pushed(desired, state)
        if not only and not report.interrupted:
            for problem in held:
                state.record_failure(problem.kind, problem.source_id, problem.key, HELD,
                                     f"not updated: {problem.reason}")
            state.keep_only_failures([(_kind(op), op.source_id, op.kind.value)
                                      for op, _ in report.failed]
                                     + [(_kind(op), op.source_id, REFUSED) for op in report.refused]
                                     + [(_kind(op), op.source_id, op.kind.value)
                                        for op in report.deferred]
                                     + [(p.kind, p.source_id, HELD) for p in held])
            self.reader.save(state, read)
            # rows whose value is the desired one, recorded from another source digest: the
            # next cycle takes them as they are (see map_directory)
            state.record_source_digests(desired)
            # groups whose pushed members are their desired ones, when nothing was written
            # to memberships or users' active since they were read (agent/core/stamps.py)
            state.record_group_stamps(desired, result.snapshot)
        outcome, message = _outcome(report, held)
        log.info("%s", message)
        return SyncResult(outcome, plan=plan, report=report, message=message, adopted=adopted,
                          target_read=fetched)

    def _out_of_time(self, result: SyncResult) -> SyncResult:
        """A cycle that reached [sync] max_cycle_time sent nothing more: what it applied is
        recorded, the rest waits for the next cycle. Said as such, not as a stop request."""
        limit = format_duration(self.config.sync.max_cycle_time)
        report = result.report
        if report is None or not report.interrupted:
            return result
        report.interrupted = False
        left = report.planned - len(report.applied) - len(report.failed) - len(report.refused)
        if report.planned and left <= 0:        # the time ran out just as the last one ended
            outcome, message = _outcome(report, report.held)
            return dataclasses.replace(result, outcome=outcome, message=message)
        if not report.planned:
            message = (f"the cycle reached [sync] max_cycle_time ({limit}) before sending "
                       "anything (a slow source read or target?); nothing was applied")
            log.error("%s", message)
            return SyncResult(Outcome.ERROR, report=report, message=message, plan=result.plan,
                              warnings=result.warnings, duration=result.duration)
        message = (f"stopped sending after [sync] max_cycle_time ({limit}): applied "
                   f"{len(report.applied)} of {report.planned} operations"
                   + (f", {len(report.failed)} failed" if report.failed else "")
                   + f"; {left} wait for the next cycle")
        log.warning("%s", message)
        return SyncResult(Outcome.PARTIAL if report.applied else Outcome.FAILED,
                          plan=result.plan, report=report, message=message,
                          adopted=result.adopted, warnings=result.warnings + [message],
                          target_read=result.target_read, duration=result.duration)

    def _read_target(self, target: Target, state: State, desired: DesiredState,
                     reconcile: bool, allow_mass_deactivation: bool, *,
                     automatic: bool = True) -> TargetRead | None:
        """Read all of the target when a reconcile is asked for, or (``automatic``) when the
        snapshot is empty (adoption) or a reconcile is due; None when none of these. A read
        that looks like the wrong organisation or a broken listing is returned with
        ``stopped`` and recorded nowhere."""
        if automatic:
            reconcile = reconcile or self._reconcile_due(state)
        if not (reconcile or (automatic and state.is_empty() and desired.users)):
            return None
        sync = self.config.sync

        def plausible(facts, snapshot):
            return guard_target_read(facts, snapshot, sync.max_deactivations,
                                     sync.max_group_changes)
        fetched = read_target(target, state, desired, groups=sync.groups, refresh=reconcile,
                              guard=None if allow_mass_deactivation else plausible)
        if fetched.stopped is None:
            state.meta.record_target_read(self.now())
        return fetched

    def _guard(self, plan: Plan, desired: DesiredState, snapshot: Snapshot) -> GuardStop | None:
        sync = self.config.sync
        return guard(plan, desired, snapshot, sync.max_deactivations,
                     sync.max_group_changes if self.plan_options.groups else None)

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
            stop = self._guard(plan, desired, snapshot)
            if stop is not None:
                log.warning("not applying what the target's answers added to the plan: %s; "
                            "the next cycle looks again", stop.reason)
                return
            log.info("what the target already held changed the plan: %s", _summary_line(plan))
            report.extend(applier.apply(plan))

    def _reconcile_due(self, state: State) -> bool:
        last = state.meta.last_target_read()
        if last is None:
            return not state.is_empty()   # a snapshot from before reconciliation
        age = self.now() - last
        if age >= self.config.sync.reconcile_every:
            log.info("re-reading Split to catch changes made there by hand (last read %s ago)",
                     str(age).split(".")[0])
            return True
        return False

    def check(self) -> list[Check]:
        """Read-only checks of source and target; (what, ok, detail) per line."""
        return run_checks(self.config, self.make_source,
                          lambda: self._target_factory(self.config))

    def source_fingerprint(self) -> str:
        return self.reader.fingerprint()


@contextlib.contextmanager
def bulk():
    """Reading, mapping and planning a large directory allocates some ten objects per user
    and frees none of them until the cycle ends: the cycle collector would walk them all,
    over and over, for nothing (a fifth of a 100 000-user plan). They hold no reference
    cycles, so it waits until this is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # what was made stays: enabled as it is, the collector's next pass would walk
            # every one of those objects (an eighth of a plan); they go to the oldest
            # generation instead, as if they had survived the passes they missed
            gc.freeze()
            gc.unfreeze()
            gc.enable()


HELD = "held"      # the failure kind of a pushed object whose source record cannot be mapped


def _held_pushed(desired: DesiredState, state: State) -> list:
    """Problems that hold an object already pushed: it is left alone (not deactivated, not
    updated), so it must be reported loudly: in status, and in the exit status. A disabled
    user is not among them: it is deactivated all the same (see the planner)."""
    users, groups = state.scim_ids()
    return [p for p in desired.problems
            if (p.kind == "user" and p.source_id in users and not p.disabled)
            or (p.kind == "group" and p.source_id in groups)]


def _outcome(report: ApplyReport, held: list) -> tuple[Outcome, str]:
    """What the cycle ended as, in one value and one sentence. Failures the next cycle tries
    again make it partial; refusals (planned as refused, refused by the target, held back
    after a refusal, held pushed objects) are warnings no retry mends: refused."""
    retried, rejected = len(report.to_retry()), len(report.refused_by_target())
    refused = (len(report.refused) + rejected + len(report.deferred) + len(report.blocked)
               + len(held))
    message = (f"applied {len(report.applied)} of {report.planned} operations"
               + (f"; {retried} failed (retried next cycle)" if retried else "")
               + (f"; {len(report.blocked)} not sent or not whole because what they need "
                  "failed or was refused" if report.blocked else "")
               + (f"; {rejected} refused by the target (sent again after a growing wait, "
                  "or when the source record changes)" if rejected else "")
               + (f"; {len(report.deferred)} held back after the target refused them "
                  "(see status for the next attempt)" if report.deferred else "")
               + (f"; {len(report.refused)} refused (not sent)" if report.refused else "")
               + (f"; {len(held)} pushed object(s) held until their source record is fixed"
                  if held else ""))
    if report.interrupted:
        return Outcome.INTERRUPTED, f"interrupted: {message}; nothing more was sent"
    if retried:
        return (Outcome.PARTIAL if report.applied else Outcome.FAILED), message
    return (Outcome.REFUSED if refused else Outcome.OK), message


def _moved_since(saved: SavedPlan, desired: DesiredState, state: State, url: str) -> str:
    """Why a saved plan no longer fits (the source, the snapshot or the target moved), or ""."""
    basis, where = saved.basis, saved.path
    if basis.target != target_identity(url):
        return (f"{where}: the plan was made for {basis.target}, not for [target] url "
                f"{target_identity(url)}; nothing was applied")
    if basis.source != desired.digest():
        return (f"{where}: the source changed since the plan was made; nothing was applied. "
                "Make the plan again (plan --out) and review it")
    if basis.snapshot != state.digest():
        return (f"{where}: the snapshot moved since the plan was made (another sync ran); "
                "nothing was applied. Make the plan again (plan --out) and review it")
    return ""


def _kind(op) -> str:
    return "user" if op.kind in USER_OPS else "group"


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
