"""Execute a Plan through the Target, recording each outcome as soon as it is known.

Phases run in the plan's order; the operations of one phase run concurrently (at most
``target.concurrency`` in flight, paced by the target's rate limiter). Each confirmed effect
is written to the snapshot in its own transaction (for membership changes, each confirmed
chunk), so a crash or a SIGTERM at any point loses nothing and duplicates nothing.

Apply never diffs. When the target turns out to hold something the plan did not expect (a
create meets an existing account, an update finds the object gone), that is recorded as a
fact (``observe.learn_*``, ``forget_*``) and counted in ``ApplyReport.learned``; the engine
then plans again from the updated snapshot, and the planner decides what that means.

What happens on an error follows the error tree in ``connectors/base.py``: a rejected or
exhausted operation is recorded as failed and the rest goes on; a fatal one (token rejected)
stops the run at once: nothing further is sent, and nothing further is recorded as pushed.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from connectors.base import (FatalTargetError, Interrupted, NotFoundError, RejectedError,
                             Target, TargetError, TargetGroup, TargetUser, TransientError)

from ..core import references
from ..core.outcome import Hold, HoldKind
from ..core.plan import USER_OPS, Op, OpKind, Plan
from ..store.state import State, StateError
from .observe import Learner

log = logging.getLogger(__name__)


class _Done(enum.Enum):
    APPLIED = "applied"        # the change is on the target and recorded
    ADOPTED = "adopted"        # the target already held it; recorded as it is there
    GONE = "gone"              # the target no longer holds the object; forgotten
    DEFERRED = "deferred"      # applied, but a reference (manager) waits for its user to
                               # exist on the target: recorded without it, planned again


@dataclass
class ApplyReport:
    applied: list[Op] = field(default_factory=list)
    failed: list[tuple[Op, str]] = field(default_factory=list)
    refused: list[Op] = field(default_factory=list)       # planned as refused: never sent
    rejected: list[Op] = field(default_factory=list)      # sent, refused by the target
    deferred: list[Op] = field(default_factory=list)      # held back: refused before
    blocked: list[Op] = field(default_factory=list)       # needed what failed or was refused
    held: list = field(default_factory=list)              # pushed objects held (problems)
    adopted: int = 0
    learned: int = 0                   # facts recorded that the plan did not foresee
    planned: int = 0                   # operations in the plans applied
    fatal: str = ""
    hold: Hold | None = None           # when ``fatal`` is one no retry mends (token, endpoint)
    interrupted: bool = False

    def to_retry(self) -> list[tuple[Op, str]]:
        """The failures the next cycle tries again: not a refusal, not what stopped the run,
        not an operation that only followed another's failure."""
        refused = {id(op) for op in self.rejected + self.blocked}
        return [(op, error) for op, error in self.failed
                if id(op) not in refused and error != self.fatal]

    def refused_by_target(self) -> list[tuple[Op, str]]:
        """Sent, and refused by the target (4xx, 501): sent again only after a growing wait
        (:mod:`agent.engine.quarantine`) or when the source record changes."""
        refused = {id(op) for op in self.rejected}
        return [(op, error) for op, error in self.failed if id(op) in refused]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.applied:
            out[op.kind.value] = out.get(op.kind.value, 0) + op.weight
        return out

    def extend(self, later: "ApplyReport") -> None:
        """Fold in the report of a follow-up pass of the same cycle."""
        self.applied += later.applied
        self.failed += later.failed
        self.refused += [op for op in later.refused if op not in self.refused]
        self.rejected += later.rejected
        self.blocked += later.blocked
        self.adopted += later.adopted
        self.learned = later.learned
        self.planned += later.planned
        self.fatal = self.fatal or later.fatal
        self.hold = self.hold or later.hold
        self.interrupted = self.interrupted or later.interrupted


class _Recorder:
    """Serialises snapshot writes from worker threads, with group commit.

    Each call returns once its write is committed (synchronous=FULL: on disk), and each
    write is atomic on its own (a savepoint); writes that arrive while another commit waits
    for the disk go into the next transaction together. A commit costs a few milliseconds
    whatever it holds, so one per operation capped a first sync at a few hundred operations
    per second; a crash still loses nothing that was acknowledged.

    Bookkeeping that no later decision depends on (a line of an object's history, a cleared
    failure) is handed to :meth:`later`: it rides with the next transaction, or the one
    :meth:`flush` makes at the end. What a crash can cost is the history of the operations
    applied since the last commit, never a record."""

    def __init__(self, state: State):
        self.state = state
        self.lock = threading.Lock()              # held while a transaction is written
        self._queue: list[_Write] = []
        self._later: list[tuple[Callable, tuple]] = []
        self._queue_lock = threading.Lock()       # never held across a commit

    def __call__(self, write: Callable, *args) -> None:
        mine = _Write(write, args)
        with self._queue_lock:
            self._queue.append(mine)
        with self.lock:
            if not mine.done:
                try:
                    self._commit()
                except _Swallowed:
                    pass
        if mine.error is not None:
            raise mine.error

    def later(self, write: Callable, *args) -> None:
        with self._queue_lock:
            self._later.append((write, args))

    def flush(self) -> None:
        with self.lock:
            self._commit()

    def _commit(self) -> None:
        """Everything queued, in one transaction (the caller holds ``lock``)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            later, self._later = self._later, []
        if not batch and not later:
            return
        db = self.state.db
        try:
            with db.atomic():
                for write, args in later:
                    write(*args)
                for item in batch:
                    try:
                        with db.atomic():        # a savepoint: a failed write leaves nothing
                            item.write(*item.args)
                    except StateError:
                        raise
                    except Exception as exc:     # this write's own failure, not the others'
                        item.error = exc
        except BaseException as exc:
            for item in batch:
                item.error = item.error or exc
            raise exc if not batch else _Swallowed() from exc
        finally:
            for item in batch:
                item.done = True


class _Swallowed(Exception):
    """The batch failed: each write's caller raises the error itself."""


@dataclass
class _Write:
    write: Callable
    args: tuple
    done: bool = False
    error: BaseException | None = None


class Applier:
    def __init__(self, target: Target, state: State, learner: Learner, concurrency: int = 4,
                 stop: threading.Event | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 run_id: int | None = None):
        self.target = target
        self.state = state
        self.learner = learner
        self.record = _Recorder(state)
        self.concurrency = max(1, concurrency)
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda done, total: None)
        self._fatal = threading.Event()
        self.run_id = run_id
        self._intended: set[str] = set()      # creates whose intent is on disk
        self._sent: set[str] = set()          # ... and whose POST was tried

    def _log(self, op: Op, outcome: str, **detail) -> None:
        """One line of the object's history (``scim-agent history``)."""
        kind = "user" if op.kind in USER_OPS else "group"
        if op.changed:
            detail["changed"] = {k: [old, new] for k, (old, new) in op.changed.items()}
        elif op.member_keys:
            detail["members"] = list(op.member_keys)
        elif op.attributes:
            detail["attributes"] = dict(op.attributes)
        if op.reason:
            detail["reason"] = op.reason
        self.record.later(self.state.log_change, self.run_id, kind, op.source_id, op.key,
                          op.kind.value, outcome, detail)

    def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport(planned=len(plan.ops))
        total = len(plan.ops)
        phases: dict[int, list[Op]] = {}
        for op in plan.ops:
            phases.setdefault(op.phase, []).append(op)
        try:
            self._apply(phases, report, total)
        finally:
            try:
                self._forget_unsent_intents()
                self.record.flush()
            except StateError as exc:
                self._stop_recording(report, exc)
        report.interrupted = self.stop.is_set() and not report.fatal
        return report

    def _apply(self, phases: dict, report: ApplyReport, total: int) -> None:
        done = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="apply") as pool:
            for phase in sorted(phases):
                if self._halted(report):
                    break
                self.user_ids, self.group_ids = self.state.scim_ids()
                pending: set[Future] = set()
                queue = deque(phases[phase])
                while queue or pending:
                    while queue and len(pending) < self.concurrency and not self._halted(report):
                        op = queue.popleft()
                        if op.kind is OpKind.CREATE_USER and op.source_id not in self._intended:
                            self._intend_ahead(op, queue)
                        future = pool.submit(self._run, op)
                        future.op = op  # type: ignore[attr-defined]
                        pending.add(future)
                    if not pending:
                        break
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done += 1
                        try:
                            self._collect(future, report)
                        except StateError as exc:     # recording it failed: a full disk...
                            self._stop_recording(report, exc)
                    self.progress(done, total)
                if self._halted(report):
                    break

    def _intend_ahead(self, op: Op, queue: deque) -> None:
        """Write-ahead for this create and the next few, in one transaction: each must be
        on disk before its POST, and one commit for each would halve the pace of a large
        first sync. A run that dies leaves at most INTENTS_AHEAD more intents, each looked
        up (never sent again) by the next cycle; :meth:`apply` clears those it did not send."""
        batch = [op] + [o for o in itertools.islice(queue, INTENTS_AHEAD - 1)
                        if o.kind is OpKind.CREATE_USER and not o.refused
                        and o.source_id not in self._intended]
        self.record(self.state.intend_creates,
                    [("user", o.source_id, o.user.user_name if o.user else o.key)
                     for o in batch])
        self._intended.update(o.source_id for o in batch)

    def _forget_unsent_intents(self) -> None:
        unsent = self._intended - self._sent
        if unsent:
            self.record(self.state.clear_intents, "user", sorted(unsent))
        self._intended, self._sent = set(), set()

    def _halted(self, report: ApplyReport) -> bool:
        return bool(report.fatal) or self.stop.is_set()

    def _collect(self, future: Future, report: ApplyReport) -> None:
        op: Op = future.op  # type: ignore[attr-defined]
        kind = "user" if op.kind in USER_OPS else "group"
        try:
            done = future.result()
        except (_NotSent, Interrupted):
            return
        except _Refused:
            report.refused.append(op)
            self.record(self.state.record_failure, kind, op.source_id, op.key, REFUSED,
                        f"{op.kind.value} refused, not sent: {op.refused}")
            self._log(op, "refused", refused=op.refused)
            return
        except FatalTargetError as exc:
            if report.fatal:
                return
            report.fatal = str(exc)
            report.hold = hold_for(exc)
            report.failed.append((op, str(exc)))
            log.error("stopping: %s", exc)
            self._log(op, "failed", error=str(exc))
            return
        except StateError as exc:
            # The snapshot cannot be written: nothing more may be sent, since its effect could
            # not be recorded (a create's intent is on disk: the next run looks it up).
            report.failed.append((op, str(exc)))
            self._stop_recording(report, exc)
            return
        except TargetError as exc:
            report.failed.append((op, str(exc)))
            if isinstance(exc, (_Blocked, _MembersMissing)):
                report.blocked.append(op)
            if isinstance(exc, RejectedError) and not isinstance(exc, _IdentityConflict):
                report.rejected.append(op)      # the target said no: quarantined (cycle.py)
            self.record(self.state.record_failure, kind, op.source_id, op.key, op.kind.value,
                        str(exc))
            log.warning("%s %s failed: %s", op.kind.value, op.key, exc)
            self._log(op, "failed", error=str(exc))
            return
        except Exception as exc:  # a bug: report it with its traceback, keep the run going
            log.exception("%s %s failed unexpectedly", op.kind.value, op.key)
            report.failed.append((op, f"internal error: {type(exc).__name__}: {exc}"))
            self.record(self.state.record_failure, kind, op.source_id, op.key, op.kind.value,
                        f"internal error: {type(exc).__name__}")
            self._log(op, "failed", error=f"internal error: {type(exc).__name__}")
            return
        self._log(op, done.value)
        if done is _Done.GONE:
            report.learned += 1
            log.info("%s %s: gone from the target; planned again", op.kind.value, op.key)
            return
        report.applied.append(op)
        if done is _Done.DEFERRED:
            report.learned += 1
        if done is _Done.ADOPTED:
            report.adopted += 1
            report.learned += 1
        self.record.later(self.state.clear_failure, kind, op.source_id, op.kind.value)
        log.debug("%s %s done%s", op.kind.value, op.key,
                  " (adopted)" if done is _Done.ADOPTED else "")

    def _stop_recording(self, report: ApplyReport, exc: StateError) -> None:
        self._fatal.set()
        if not report.fatal:
            report.fatal = str(exc)
            log.error("stopping: %s", exc)

    # -- one operation ------------------------------------------------------------------
    # Each runs in a worker thread and says what became of it.

    def _run(self, op: Op) -> _Done:
        if self._fatal.is_set():
            raise _NotSent()
        if op.refused:
            raise _Refused(op.refused)
        try:
            return getattr(self, f"_{op.kind.value}")(op)
        except (FatalTargetError, StateError):
            self._fatal.set()
            raise

    def _create_user(self, op: Op) -> _Done:
        user = op.user
        assert user is not None
        # Write-ahead: should this process die before the answer is recorded, the next cycle
        # finds the intent and looks the user up before sending anything (no second POST).
        # The main thread wrote it already, with the next few (_intend_ahead).
        if user.source_id not in self._intended:
            self.record(self.state.intend_create, "user", user.source_id, user.user_name)
        self._sent.add(user.source_id)
        attributes, deferred = references.to_target(user.attributes, self.user_ids)
        try:
            created = self.target.create_user(attributes, True, user.source_id)
        except TransientError as exc:
            if not exc.sent:        # it never reached the target: nothing to look for later
                self.record(self.state.clear_intent, "user", user.source_id)
            raise
        except (TargetError, Interrupted):
            self.record(self.state.clear_intent, "user", user.source_id)
            raise
        assert isinstance(created.record, TargetUser)
        if created.existed:
            # It was there already (onboarding, a lost snapshot, a lost response): the next
            # plan makes it match, unless it is someone else's.
            with self.record.lock:
                conflict = self.learner.user(user, created.record, self.user_ids)
                if conflict:
                    self.state.clear_intent("user", user.source_id)
            if conflict:
                raise _IdentityConflict(conflict, 409)
            return _Done.ADOPTED
        self.record(self.state.record_user, references.as_recorded(user, deferred),
                    created.record.id)
        return _Done.DEFERRED if deferred else _Done.APPLIED

    def _update_user(self, op: Op) -> _Done:
        return self._patch_user(op, active=None)

    def _reactivate_user(self, op: Op) -> _Done:
        return self._patch_user(op, active=True)

    def _deactivate_user(self, op: Op) -> _Done:
        if op.user is None:     # gone from the source: switch off what we pushed, keep the rest
            scim_id = self.user_ids.get(op.source_id)
            if scim_id is None:
                return _Done.APPLIED
            try:
                self.target.update_user(scim_id, {}, active=False)
            except NotFoundError:
                self.record(self.state.forget_user, op.source_id)  # nothing left to deactivate
                return _Done.APPLIED
            self.record(self.state.record_user_active, op.source_id, False)
            return _Done.APPLIED
        return self._patch_user(op, active=False)

    def _patch_user(self, op: Op, active: bool | None) -> _Done:
        user = op.user
        assert user is not None
        scim_id = self.user_ids.get(op.source_id)
        try:
            if scim_id is None:
                raise NotFoundError("not in the snapshot")
            changed, deferred = references.to_target(
                {k: new for k, (_old, new) in op.changed.items()}, self.user_ids)
            self.target.update_user(scim_id, changed, active=active)
        except NotFoundError:
            # Deleted on the target behind our back: forget it; the next plan creates it again
            # (an inactive account is not created).
            log.info("user %s is gone from the target", op.key)
            self.record(self.state.forget_user, op.source_id)
            return _Done.GONE
        held = {k: old for k, (old, _new) in op.changed.items()}
        self.record(self.state.record_user, references.as_recorded(user, deferred, held), scim_id)
        return _Done.DEFERRED if deferred else _Done.APPLIED

    def _create_group(self, op: Op) -> _Done:
        group = op.group
        assert group is not None
        created = self.target.create_group(group.display_name, group.source_id)
        assert isinstance(created.record, TargetGroup)
        if created.existed:
            self.record(self.learner.group, group, created.record, self.user_ids)
            return _Done.ADOPTED
        self.record(self.state.record_group, group, created.record.id)
        return _Done.APPLIED

    def _update_group(self, op: Op) -> _Done:
        group = op.group
        assert group is not None
        scim_id = self._group_id(op)
        self.target.rename_group(scim_id, group.display_name)
        self.record(self.state.record_group, group, scim_id)
        return _Done.APPLIED

    def _group_id(self, op: Op) -> str:
        scim_id = self.group_ids.get(op.source_id)
        if scim_id is None:
            raise _Blocked(f"group {op.key} is not on the target (its creation failed)")
        return scim_id

    def _add_members(self, op: Op) -> _Done:
        scim_id = self._group_id(op)
        by_scim, missing = self._member_ids(op.members)
        if by_scim:
            try:
                self.target.add_members(scim_id, list(by_scim), on_chunk=lambda chunk: self.record(
                    self.state.record_members, op.source_id, [by_scim[c] for c in chunk], ()))
            except NotFoundError:
                # Deleted on the target behind our back: forget it; the next plan creates it
                # again with all its members.
                log.info("group %s is gone from the target", op.key)
                self.record(self.state.forget_group, op.source_id)
                return _Done.GONE
        if missing:
            raise _MembersMissing(missing, op)
        return _Done.APPLIED

    def _remove_members(self, op: Op) -> _Done:
        scim_id = self._group_id(op)
        by_scim, missing = self._member_ids(op.members)
        if missing:     # never pushed, so not on the target: just forget the reference
            self.record(self.state.record_members, op.source_id, (), missing)
        if by_scim:
            try:
                self.target.remove_members(scim_id, list(by_scim), on_chunk=lambda chunk: self.record(
                    self.state.record_members, op.source_id, (), [by_scim[c] for c in chunk]))
            except NotFoundError:
                self.record(self.state.forget_group, op.source_id)
                return _Done.GONE
        return _Done.APPLIED

    def _member_ids(self, members: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        by_scim, missing = {}, []
        for sid in members:
            scim = self.user_ids.get(sid)
            if scim is None:
                missing.append(sid)
            else:
                by_scim[scim] = sid
        return by_scim, missing

    def _delete_group(self, op: Op) -> _Done:
        scim_id = self.group_ids.get(op.source_id)
        if scim_id is not None:
            self.target.delete_group(scim_id)
        self.record(self.state.forget_group, op.source_id)
        return _Done.APPLIED


def hold_for(exc: FatalTargetError) -> Hold | None:
    """Hold pushing only for what will not mend itself (a rejected token, a moved endpoint);
    an unreachable target is an ordinary failed cycle, retried with back-off."""
    if exc.status in (401, 403):
        return Hold(HoldKind.TOKEN_REJECTED, str(exc))
    if exc.status == 404:
        # No SCIM collection at the URL: a wrong url fails every cycle and says so, but a
        # gateway's passing 404 must not stop the daemon until someone acts.
        return None
    if exc.status is not None:
        return Hold(HoldKind.ENDPOINT, str(exc))
    return None


class _IdentityConflict(RejectedError):
    """Refused by the engine, not the target: the account found belongs to someone still in
    the source. It mends itself when the other object moves, so it is not held back."""


class _Blocked(NotFoundError):
    """Not sent: it needs an object whose own operation failed or was refused (a group whose
    creation did not land). It follows that failure; it is not a failure of its own."""


class _NotSent(Exception):
    """Skipped: an earlier operation stopped the run before this one was sent."""


class _Refused(Exception):
    """Not sent: the target is known to refuse it (planned as refused)."""


INTENTS_AHEAD = 32      # create intents written in one transaction (see _intend_ahead)
REFUSED = "refused"     # the failure kind that lists a refused change in status


class _MembersMissing(TargetError):
    """Some members were left out: their creation failed or was refused. It follows that
    failure (a _Blocked kind of outcome for the cycle), the others were added."""

    def __init__(self, missing: list[str], op: Op):
        names = dict(zip(op.members, op.member_keys))
        shown = ", ".join(names.get(m, m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"{len(missing)} member(s) are not on the target (their creation "
                         f"failed): {shown}{more}")


__all__ = ["Applier", "ApplyReport", "hold_for"]
