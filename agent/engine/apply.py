"""Execute a Plan through the SCIM target, recording each outcome as soon as it is known.

Phases run in the plan's order; the operations of one phase run concurrently (at most
``target.concurrency`` in flight, paced by the target's rate limiter). Each confirmed effect
is written to the snapshot in its own transaction (for membership changes, each confirmed
chunk of up to 100), so a crash or a SIGTERM at any point loses nothing and duplicates nothing.

What happens on an error follows the error tree in ``connectors/base.py``: a rejected or
exhausted operation is recorded as failed and the rest goes on; a fatal one (token rejected)
stops the run at once: nothing further is sent, and nothing further is recorded as pushed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from connectors.base import FatalTargetError, Interrupted, NotFoundError, TargetError
from connectors.scim.target import ScimTarget, flat_user, user_patch

from ..core.model import DesiredState
from ..core.outcome import Hold, HoldKind
from ..core.plan import USER_OPS, Op, Plan, diff
from ..store.state import State

log = logging.getLogger(__name__)


@dataclass
class ApplyReport:
    applied: list[Op] = field(default_factory=list)
    failed: list[tuple[Op, str]] = field(default_factory=list)
    adopted: int = 0
    fatal: str = ""
    hold: Hold | None = None           # when ``fatal`` is one no retry mends (token, endpoint)
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.applied:
            out[op.kind.value] = out.get(op.kind.value, 0) + op.weight
        return out


class _Recorder:
    """Serialises snapshot writes from worker threads; one transaction per call."""

    def __init__(self, state: State):
        self.state = state
        self.lock = threading.Lock()

    def __call__(self, method: str, *args) -> None:
        with self.lock:
            getattr(self.state, method)(*args)


class Applier:
    def __init__(self, target: ScimTarget, state: State, concurrency: int = 4,
                 stop: threading.Event | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.target = target
        self.state = state
        self.record = _Recorder(state)
        self.concurrency = max(1, concurrency)
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda done, total: None)
        self._fatal = threading.Event()

    def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        total, done = len(plan.ops), 0
        phases: dict[int, list[Op]] = {}
        for op in plan.ops:
            phases.setdefault(op.phase, []).append(op)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="apply") as pool:
            for phase in sorted(phases):
                if self._halted(report):
                    break
                self.user_ids, self.group_ids = self.state.scim_ids()
                pending: set[Future] = set()
                queue = list(phases[phase])
                while queue or pending:
                    while queue and len(pending) < self.concurrency and not self._halted(report):
                        op = queue.pop(0)
                        future = pool.submit(self._run, op)
                        future.op = op  # type: ignore[attr-defined]
                        pending.add(future)
                    if not pending:
                        break
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done += 1
                        self._collect(future, report)
                    self.progress(done, total)
                if self._halted(report):
                    break
        report.interrupted = self.stop.is_set() and not report.fatal
        return report

    def _halted(self, report: ApplyReport) -> bool:
        return bool(report.fatal) or self.stop.is_set()

    def _collect(self, future: Future, report: ApplyReport) -> None:
        op: Op = future.op  # type: ignore[attr-defined]
        kind = "user" if op.kind in USER_OPS else "group"
        try:
            adopted = future.result()
        except (_NotSent, Interrupted):
            return
        except FatalTargetError as exc:
            if report.fatal:
                return
            report.fatal = str(exc)
            report.hold = hold_for(exc)
            report.failed.append((op, str(exc)))
            log.error("stopping: %s", exc)
            return
        except TargetError as exc:
            report.failed.append((op, str(exc)))
            self.record("record_failure", kind, op.source_id, op.key, op.kind.value, str(exc))
            log.warning("%s %s failed: %s", op.kind.value, op.key, exc)
            return
        except Exception as exc:  # a bug: report it with its traceback, keep the run going
            log.exception("%s %s failed unexpectedly", op.kind.value, op.key)
            report.failed.append((op, f"internal error: {type(exc).__name__}: {exc}"))
            self.record("record_failure", kind, op.source_id, op.key, op.kind.value,
                        f"internal error: {type(exc).__name__}")
            return
        report.applied.append(op)
        report.adopted += int(bool(adopted))
        self.record("clear_failure", kind, op.source_id, op.kind.value)
        log.debug("%s %s done%s", op.kind.value, op.key, " (adopted)" if adopted else "")

    # -- one operation ------------------------------------------------------------------
    # Each returns True when an existing object was adopted. Runs in a worker thread.

    def _run(self, op: Op) -> bool:
        if self._fatal.is_set():
            raise _NotSent()
        if op.refused:
            raise _Refused(op.refused)
        try:
            return getattr(self, f"_{op.kind.value}")(op)
        except FatalTargetError:
            self._fatal.set()
            raise

    def _create_user(self, op: Op) -> bool:
        user = op.user
        assert user is not None
        created = self.target.create_user(user.attributes, True, user.source_id)
        previous = None
        if created.adopted and created.resource is not None:
            # It was there already (onboarding, a lost snapshot, a lost response): make it match.
            current, active = flat_user(created.resource)
            current = managed(current, user.attributes)
            ops = user_patch(diff(current, user.attributes), active=None if active else True)
            self.target.patch_user(created.scim_id, ops)
            previous = next((sid for sid, scim in self.user_ids.items()
                             if scim == created.scim_id and sid != user.source_id), None)
        self.record("record_user", user, created.scim_id, None, previous)
        return created.adopted

    def _update_user(self, op: Op) -> bool:
        return self._patch_user(op, active=None)

    def _reactivate_user(self, op: Op) -> bool:
        return self._patch_user(op, active=True)

    def _deactivate_user(self, op: Op) -> bool:
        if op.user is None:     # gone from the source: switch off what we pushed, keep the rest
            scim_id = self.user_ids.get(op.source_id)
            if scim_id is None:
                return False
            try:
                self.target.patch_user(scim_id, user_patch({}, active=False))
            except NotFoundError:
                self.record("forget_user", op.source_id)    # nothing left to deactivate
                return False
            self.record("record_user_active", op.source_id, False)
            return False
        return self._patch_user(op, active=False)

    def _patch_user(self, op: Op, active: bool | None) -> bool:
        user = op.user
        assert user is not None
        scim_id = self.user_ids.get(op.source_id)
        try:
            if scim_id is None:
                raise NotFoundError("not in the snapshot")
            self.target.patch_user(scim_id, user_patch(op.changed, active=active))
        except NotFoundError:
            # Deleted on the target behind our back: create it again rather than give up.
            log.info("user %s is gone from the target; creating it again", op.key)
            self.record("forget_user", op.source_id)
            if not user.active:
                return False
            return self._create_user(op)
        self.record("record_user", user, scim_id)
        return False

    def _create_group(self, op: Op) -> bool:
        group = op.group
        assert group is not None
        created = self.target.create_group(group.display_name)
        if created.adopted:
            members = (created.resource or {}).get("members") or []
            by_scim = {scim: sid for sid, scim in self.user_ids.items()}
            known = [by_scim[m["value"]] for m in members
                     if isinstance(m, dict) and m.get("value") in by_scim]
            self.record("record_adopted_group", group.source_id, created.scim_id,
                        group.display_name, known)
        else:
            self.record("record_group", group, created.scim_id)
        return created.adopted

    def _update_group(self, op: Op) -> bool:
        group = op.group
        assert group is not None
        scim_id = self._group_id(op)
        self.target.rename_group(scim_id, group.display_name)
        self.record("record_group", group, scim_id)
        return False

    def _group_id(self, op: Op) -> str:
        scim_id = self.group_ids.get(op.source_id)
        if scim_id is None:
            raise NotFoundError(f"group {op.key} is not on the target (its creation failed)")
        return scim_id

    def _add_members(self, op: Op) -> bool:
        scim_id = self._group_id(op)
        by_scim, missing = self._member_ids(op.members)
        if by_scim:
            self.target.add_members(scim_id, list(by_scim), on_chunk=lambda chunk: self.record(
                "record_members", op.source_id, [by_scim[c] for c in chunk], ()))
        if missing:
            raise _MembersMissing(missing, op)
        return False

    def _remove_members(self, op: Op) -> bool:
        scim_id = self._group_id(op)
        by_scim, missing = self._member_ids(op.members)
        if missing:     # never pushed, so not on the target: just forget the reference
            self.record("record_members", op.source_id, (), missing)
        if by_scim:
            try:
                self.target.remove_members(scim_id, list(by_scim), on_chunk=lambda chunk: self.record(
                    "record_members", op.source_id, (), [by_scim[c] for c in chunk]))
            except NotFoundError:
                self.record("forget_group", op.source_id)
        return False

    def _member_ids(self, members: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        by_scim, missing = {}, []
        for sid in members:
            scim = self.user_ids.get(sid)
            if scim is None:
                missing.append(sid)
            else:
                by_scim[scim] = sid
        return by_scim, missing

    def _delete_group(self, op: Op) -> bool:
        scim_id = self.group_ids.get(op.source_id)
        if scim_id is not None:
            self.target.delete_group(scim_id)
        self.record("forget_group", op.source_id)
        return False


def hold_for(exc: FatalTargetError) -> Hold | None:
    """Hold pushing only for what will not mend itself (a rejected token, a moved endpoint);
    an unreachable target is an ordinary failed cycle, retried with back-off."""
    if exc.status in (401, 403):
        return Hold(HoldKind.TOKEN_REJECTED, str(exc))
    if exc.status is not None:
        return Hold(HoldKind.ENDPOINT, str(exc))
    return None


class _NotSent(Exception):
    """Skipped: an earlier operation stopped the run before this one was sent."""


class _Refused(TargetError):
    """Not sent: the target is known to refuse it."""


class _MembersMissing(TargetError):
    def __init__(self, missing: list[str], op: Op):
        names = dict(zip(op.members, op.member_keys))
        shown = ", ".join(names.get(m, m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"{len(missing)} member(s) are not on the target (their creation "
                         f"failed): {shown}{more}")


# ---------------------------------------------------------------------------------------------
# Reading the target: adoption on a first run, reconciliation on request


def managed(attributes: dict[str, str], *keysets) -> dict[str, str]:
    """Only the attributes the agent manages for this object (what the source maps, or what
    was pushed before): Split may hold attributes we never set, and those are left alone."""
    keep = set().union(*keysets) | {"userName"}
    return {k: v for k, v in attributes.items() if k in keep}


@dataclass
class TargetRead:
    adopted: list[str] = field(default_factory=list)      # keys of objects adopted
    drifted: list[str] = field(default_factory=list)      # keys whose target copy differed
    vanished: list[str] = field(default_factory=list)     # keys gone from the target


def read_target(target: ScimTarget, state: State, desired: DesiredState, *, groups: bool = True,
                refresh: bool = False) -> TargetRead:
    """Read the target once (paged) into the snapshot.

    Adoption: objects the snapshot does not know yet are matched to desired ones, users by
    userName (case-insensitive), groups by displayName, and remembered as the target holds
    them, so the planner sends only what differs.

    ``refresh`` (``sync --reconcile``): objects the snapshot does know are re-read too, so
    changes made by hand in Split show up as drift and are put right; objects gone from the
    target are forgotten, and so created again.
    """
    result = TargetRead()
    snapshot = state.snapshot()
    known_users = {u.scim_id: u for u in snapshot.users.values()}
    wanted_users = {u.user_name.casefold(): u for u in desired.users.values()
                    if u.source_id not in snapshot.users}
    scim_to_source = {u.scim_id: sid for sid, u in snapshot.users.items()}
    seen: set[str] = set()
    for resource in target.iter_users():
        scim_id = str(resource.get("id", ""))
        attributes, active = flat_user(resource)
        known = known_users.get(scim_id)
        if known is not None:
            seen.add(scim_id)
            if not refresh:
                continue
            wanted = desired.users.get(known.source_id)
            current = managed(attributes, known.attributes, wanted.attributes if wanted else ())
            if current != dict(known.attributes) or active != known.active:
                result.drifted.append(known.user_name)
                state.record_adopted_user(known.source_id, scim_id, known.user_name, active, current)
            continue
        user = wanted_users.pop(str(resource.get("userName", "")).casefold(), None)
        if user is None or not scim_id:
            continue
        state.record_adopted_user(user.source_id, scim_id, user.user_name, active,
                                  managed(attributes, user.attributes))
        scim_to_source[scim_id] = user.source_id
        result.adopted.append(user.user_name)
    if refresh:
        for pushed in snapshot.users.values():
            if pushed.scim_id not in seen:
                state.forget_user(pushed.source_id)
                scim_to_source.pop(pushed.scim_id, None)
                result.vanished.append(pushed.user_name)
    if groups:
        _read_groups(target, state, desired, snapshot, scim_to_source, refresh, result)
    return result


def _read_groups(target, state, desired, snapshot, scim_to_source, refresh, result) -> None:
    known_groups = {g.scim_id: g for g in snapshot.groups.values()}
    wanted_groups = {g.display_name.casefold(): g for g in desired.groups.values()
                     if g.source_id not in snapshot.groups}
    seen: set[str] = set()
    for resource in target.iter_groups():
        scim_id = str(resource.get("id", ""))
        members = {scim_to_source[m["value"]] for m in resource.get("members") or []
                   if isinstance(m, dict) and m.get("value") in scim_to_source}
        known = known_groups.get(scim_id)
        if known is not None:
            seen.add(scim_id)
            name = str(resource.get("displayName", ""))
            if refresh and (name != known.display_name or members != known.members):
                result.drifted.append(known.display_name)
                state.record_adopted_group(known.source_id, scim_id, name, members)
            continue
        group = wanted_groups.pop(str(resource.get("displayName", "")).casefold(), None)
        if group is None or not scim_id:
            continue
        state.record_adopted_group(group.source_id, scim_id, str(resource["displayName"]), members)
        result.adopted.append(group.display_name)
    if refresh:
        for pushed in snapshot.groups.values():
            if pushed.scim_id not in seen:
                state.forget_group(pushed.source_id)
                result.vanished.append(pushed.display_name)


__all__ = ["Applier", "ApplyReport", "TargetRead", "read_target"]
