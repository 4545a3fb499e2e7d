"""What the commands print: the plan and the sync's outcome, as text for people or JSON for
scripts (the plan JSON is a contract: docs/cli.md), and progress on long runs.

Every name and message in text output goes through ``printable`` (control characters
escaped): a group called ``"Team\n+ create user mallory"`` shows as one line, never two.
JSON escapes them by itself."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ..core.outcome import Outcome
from connectors.redaction import printable as _p

from ..core.plan import Op, OpKind, Plan
from ..engine.cycle import SyncResult
from ..engine.observe import TargetRead

log = logging.getLogger("agent")


class Style:
    def __init__(self, stream):
        self.on = (hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
                   and os.environ.get("TERM") != "dumb")

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text


_SIGN = {
    OpKind.CREATE_USER: ("+", "32", "create user"),
    OpKind.REACTIVATE_USER: ("+", "32", "reactivate user"),
    OpKind.UPDATE_USER: ("~", "33", "update user"),
    OpKind.DEACTIVATE_USER: ("-", "31", "deactivate user"),
    OpKind.CREATE_GROUP: ("+", "32", "create group"),
    OpKind.UPDATE_GROUP: ("~", "33", "rename group"),
    OpKind.DELETE_GROUP: ("-", "31", "delete group"),
    OpKind.ADD_MEMBERS: ("+", "32", "add to group"),
    OpKind.REMOVE_MEMBERS: ("-", "31", "remove from group"),
}


def _q(value: str | None) -> str:
    return "(none)" if value is None else _p(json.dumps(value, ensure_ascii=False))


def _op_lines(op: Op, style: "Style", failed: str = "", drift: bool = False) -> list[str]:
    """One change as ``plan`` shows it, and ``sync`` shows it again once it was sent."""
    sign, colour, label = _SIGN[op.kind]
    head = f"{style(sign, colour)} {label} {style(_p(op.key), '1')}"
    if op.reason:
        head += f"  ({_p(op.reason)})"
    if drift:
        head += "  [drift: puts right a change made in Split]"
    if op.refused:
        head = f"{style('!', '31;1')} {label} {_p(op.key)}: refused, not sent: {_p(op.refused)}"
    elif failed:
        head = f"{style('!', '31;1')} {label} {_p(op.key)}: failed: {_p(failed)}"
    return [head, *_details(op)]


def _problem_lines(plan: Plan, style: "Style") -> list[str]:
    return [f"{style('!', '33;1')} {p.kind} {_p(p.key)}: not pushed: {_p(p.reason)}"
            for p in plan.problems]


def render_plan(plan: Plan, stream=None, guard_reason: str = "",
                target_read: TargetRead | None = None) -> str:
    """The plan for people. With ``target_read`` (``plan --refresh``), what reading Split
    found comes first, and the changes that put drift right are marked."""
    style = Style(stream or sys.stdout)
    lines: list[str] = drift_lines(target_read, "below") if target_read is not None else []
    drifted = {k.casefold() for k in target_read.drifted} if target_read is not None else set()
    for op in plan.ops:
        lines.extend(_op_lines(op, style, drift=op.key.casefold() in drifted))
    lines.extend(_problem_lines(plan, style))
    if lines:
        lines.append("")
    lines.append(summary_line(plan, refreshed=target_read is not None))
    if guard_reason:
        lines.append(style(f"Safety guard: {_p(guard_reason)}. A sync would stop here (exit 3) "
                           "unless run with --allow-mass-deactivation.", "31;1"))
    return "\n".join(lines)


def _details(op: Op) -> list[str]:
    if op.kind in (OpKind.CREATE_USER, OpKind.CREATE_GROUP):
        return [f"      {_p(k)}: {_q(v)}" for k, v in op.attributes.items()]
    if op.changed:
        return [f"      {_p(k)}: {_q(old)} -> {_q(new)}" for k, (old, new) in op.changed.items()]
    if op.member_keys:
        shown = list(op.member_keys[:20])
        more = len(op.member_keys) - len(shown)
        return [f"      {_p(m)}" for m in shown] + ([f"      ... and {more} more"] if more else [])
    return []


def summary_line(plan: Plan, refreshed: bool = False) -> str:
    s = plan.summary()
    notes = []
    if plan.refused:
        notes.append(f"{len(plan.refused)} refused (not sent)")
    if plan.problems:
        notes.append(f"{len(plan.problems)} source object(s) not pushed")
    tail = f" {'; '.join(notes).capitalize()}." if notes else ""
    if not plan.sendable and refreshed:
        return "No changes: the source, the snapshot and Split agree (Split was read)." + tail
    if not plan.sendable:
        # plan compares with the snapshot of what was pushed, not with Split itself
        return ("No changes: everything the source holds was pushed, as far as the snapshot "
                "knows (plan --refresh and sync --reconcile read Split itself)." + tail)
    return (f"Plan: users {s['create_user']} to create, {s['update_user']} to update, "
            f"{s['reactivate_user']} to reactivate, {s['deactivate_user']} to deactivate; "
            f"groups {s['create_group']} to create, {s['update_group']} to rename, "
            f"{s['delete_group']} to delete; members +{s['add_members']} -{s['remove_members']}."
            + tail)


def target_read_json(read: TargetRead) -> dict:
    return {"adopted": read.adopted, "drifted": read.drifted, "vanished": read.vanished,
            "drift": [{"kind": d.kind, "key": d.key,
                       "changed": {k: list(v) for k, v in d.changed.items()}}
                      for d in read.drift]}


def plan_json(plan: Plan, guard_reason: str = "", target_read: TargetRead | None = None) -> str:
    out = plan.to_dict()
    if target_read is not None:
        out["target_read"] = target_read_json(target_read)
    if guard_reason:
        out["guard"] = guard_reason
    return json.dumps(out, indent=2, ensure_ascii=False)


class Progress:
    """``applying 120/5000`` on a terminal; a log line every 10% otherwise."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr   # as it is now, not at import
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_step = -1
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        if total < 20:
            return
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw > 0.1 or done == total:
                self.last_draw = now
                self.stream.write(f"\rapplying {done}/{total} operations")
                if done == total:
                    self.stream.write("\n")
                self.stream.flush()
        else:
            step = done * 10 // total
            if step != self.last_step:
                self.last_step = step
                log.info("processed %d of %d operations", done, total)  # failed ones too


def sync_json(result: SyncResult, exit_status: int) -> dict:
    out: dict = {"exit_code": exit_status, "message": result.message,
                 "duration_seconds": round(result.duration, 3), "adopted": result.adopted}
    if result.plan is not None:
        out["plan"] = result.plan.to_dict()
    if result.target_read is not None:
        out["target_read"] = target_read_json(result.target_read)
    if result.report is not None:
        out["applied"] = result.report.counts()
        out["applied_changes"] = [{"op": op.kind.value, "key": op.key}
                                  for op in result.report.applied]
        out["failed"] = [{"op": op.kind.value, "key": op.key, "error": error}
                         for op, error in result.report.failed]
        out["refused"] = [{"op": op.kind.value, "key": op.key, "reason": op.refused}
                          for op in result.report.refused]
        out["outcome"] = result.outcome.value
    if result.guard:
        out["guard"] = result.guard.reason
    if result.warnings:
        out["warnings"] = result.warnings
    return out


APPLIED_SHOWN = 200

_DONE = {"create_user": "created", "update_user": "updated", "reactivate_user": "reactivated",
         "deactivate_user": "deactivated", "create_group": "created",
         "update_group": "renamed", "delete_group": "deleted"}


def applied_line(counts: dict[str, int]) -> str:
    """The plan's summary, in the past tense and the same units (member references)."""
    c = {kind: counts.get(kind, 0) for kind in _DONE} | {
        "add_members": counts.get("add_members", 0),
        "remove_members": counts.get("remove_members", 0)}
    return (f"Applied: users {c['create_user']} created, {c['update_user']} updated, "
            f"{c['reactivate_user']} reactivated, {c['deactivate_user']} deactivated; "
            f"groups {c['create_group']} created, {c['update_group']} renamed, "
            f"{c['delete_group']} deleted; members +{c['add_members']} -{c['remove_members']}.")


def _in_plan_order(ops: list[Op]) -> list[Op]:
    return sorted(ops, key=lambda op: (op.phase, op.kind.value, op.key.casefold(), op.source_id))


def drift_lines(read: TargetRead, when: str = "below") -> list[str]:
    """What reading Split found: adoptions, drift attribute by attribute, objects gone."""
    lines = [f"= adopted from Split: {_p(key)}" for key in read.adopted[:20]]
    if len(read.adopted) > 20:
        lines.append(f"= ... and {len(read.adopted) - 20} more adopted from Split")
    for drift in read.drift:
        lines.append(f"= changed in Split by hand, put right {when}: {drift.kind} "
                     f"{_p(drift.key)}")
        for name, (pushed, found) in drift.changed.items():
            if name == "members":
                removed, added = pushed, found
                if removed:
                    lines.append(f"      members removed in Split: {_p(', '.join(removed))}")
                if added:
                    lines.append(f"      members added in Split: {_p(', '.join(added))}")
            else:
                lines.append(f"      {_p(name)}: {_q(_text(pushed))} pushed, {_q(_text(found))} "
                             "in Split")
    lines += [f"= gone from Split, created again: {_p(key)}" for key in read.vanished]
    return lines


def _text(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def print_sync(result: SyncResult) -> None:
    """Each change as ``plan`` showed it, in the plan's order, then the same summary in the
    past tense; refusals and failures told apart; errors once, on stderr."""
    style = Style(sys.stdout)
    if result.guard and result.plan is not None:
        print(render_plan(result.plan, sys.stdout))
        print(style(f"Stopped by the safety guard: {_p(result.guard.reason)}. Nothing was applied. "
                    "Check the source; if this is intended, run once with "
                    "--allow-mass-deactivation.", "31;1"))
        return
    if result.outcome is Outcome.DECLINED:
        return                                         # the prompt said so already
    if result.report is None:
        print(style(f"error: {_p(result.message)}", "31;1"), file=sys.stderr)
        return
    report = result.report
    lines = drift_lines(result.target_read) if result.target_read is not None else []
    applied = _in_plan_order(report.applied)
    for op in applied[:APPLIED_SHOWN]:
        lines.extend(_op_lines(op, style))
    if len(applied) > APPLIED_SHOWN:
        lines.append(f"  ... and {len(applied) - APPLIED_SHOWN} more (--output json lists all)")
    for op in _in_plan_order(report.refused):
        lines.extend(_op_lines(op, style)[:1])
    failed = [(op, error) for op, error in report.failed if error != report.fatal]
    for op, error in sorted(failed, key=lambda f: (f[0].phase, f[0].kind.value, f[0].key)):
        lines.append(_op_lines(op, style, failed=error)[0])
    if result.plan is not None:
        lines.extend(_problem_lines(result.plan, style))
    for line in lines:
        print(line)
    if lines:
        print()
    if report.interrupted and not (report.applied or failed):
        print("Interrupted before anything was sent: nothing was applied.")
    elif not (report.applied or failed or report.refused or report.deferred or report.fatal):
        if result.target_read is not None:
            print("No changes: the source, the snapshot and Split agree (Split was read this "
                  "cycle).")
        else:
            print("No changes: everything the source holds was pushed, as far as the snapshot "
                  "knows (Split itself was not read this cycle; sync --reconcile compares with "
                  "it).")
    else:
        print(applied_line(report.counts()))
    notes = []
    retried, rejected = len(report.to_retry()), len(report.refused_by_target())
    if retried:
        notes.append(style(f"{retried} change(s) failed; they are retried next cycle "
                           "('scim-agent status' lists them).", "33"))
    if rejected:
        notes.append(style(f"{rejected} change(s) refused by the target; each is sent again "
                           "after a growing wait (15 min, then longer) or as soon as its "
                           "source record changes; 'scim-agent status' shows when (exit 5).",
                           "33"))
    if report.deferred:
        notes.append(style(f"{len(report.deferred)} change(s) held back: the target refused "
                           "them before and their wait is not over ('scim-agent status' "
                           "shows the next attempt; exit 5).", "33"))
    if report.refused:
        notes.append(style(f"{len(report.refused)} change(s) refused and not sent: no retry "
                           "mends them; fix the source or the config (exit 5).", "33"))
    if report.interrupted:
        notes.append(style("Interrupted: what is listed above was applied and recorded; "
                           "nothing more was sent. The next sync carries on.", "33"))
    for note in notes:
        print(note)
    if report.fatal:
        print(style(f"error: {_p(report.fatal)}", "31;1"), file=sys.stderr)
        print("Stopped: nothing further was sent.", file=sys.stderr)
    for warning in result.warnings:
        print(style(f"warning: {_p(warning)}", "33"), file=sys.stderr)
