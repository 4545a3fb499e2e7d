"""What the commands print: the plan and the sync's outcome, as text for people or JSON for
scripts (the plan JSON is a contract: docs/cli.md), and progress on long runs."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ..core.plan import Op, OpKind, Plan
from ..engine.cycle import SyncResult

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
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


def render_plan(plan: Plan, stream=None, guard_reason: str = "") -> str:
    style = Style(stream or sys.stdout)
    lines: list[str] = []
    for op in plan.ops:
        sign, colour, label = _SIGN[op.kind]
        head = f"{style(sign, colour)} {label} {style(op.key, '1')}"
        if op.reason:
            head += f"  ({op.reason})"
        if op.refused:
            head = f"{style('!', '31;1')} {label} {op.key}: refused, not sent: {op.refused}"
        lines.append(head)
        lines.extend(_details(op))
    for problem in plan.problems:
        lines.append(f"{style('!', '33;1')} {problem.kind} {problem.key}: not pushed: {problem.reason}")
    if lines:
        lines.append("")
    lines.append(summary_line(plan))
    if guard_reason:
        lines.append(style(f"Safety guard: {guard_reason}. A sync would stop here (exit 3) "
                           "unless run with --allow-mass-deactivation.", "31;1"))
    return "\n".join(lines)


def _details(op: Op) -> list[str]:
    if op.kind in (OpKind.CREATE_USER, OpKind.CREATE_GROUP):
        return [f"      {k}: {_q(v)}" for k, v in op.attributes.items()]
    if op.changed:
        return [f"      {k}: {_q(old)} -> {_q(new)}" for k, (old, new) in op.changed.items()]
    if op.member_keys:
        shown = list(op.member_keys[:20])
        more = len(op.member_keys) - len(shown)
        return [f"      {m}" for m in shown] + ([f"      ... and {more} more"] if more else [])
    return []


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    notes = []
    if plan.refused:
        notes.append(f"{len(plan.refused)} refused (not sent)")
    if plan.problems:
        notes.append(f"{len(plan.problems)} source object(s) not pushed")
    tail = f" {'; '.join(notes).capitalize()}." if notes else ""
    if not plan.sendable:
        # plan compares with the snapshot of what was pushed, not with Split itself
        return ("No changes: everything the source holds was pushed, as far as the snapshot "
                "knows (sync --reconcile re-reads Split)." + tail)
    return (f"Plan: users {s['create_user']} to create, {s['update_user']} to update, "
            f"{s['reactivate_user']} to reactivate, {s['deactivate_user']} to deactivate; "
            f"groups {s['create_group']} to create, {s['update_group']} to rename, "
            f"{s['delete_group']} to delete; members +{s['add_members']} -{s['remove_members']}."
            + tail)


def plan_json(plan: Plan, guard_reason: str = "") -> str:
    out = plan.to_dict()
    if guard_reason:
        out["guard"] = guard_reason
    return json.dumps(out, indent=2, ensure_ascii=False)


class Progress:
    """``applying 120/5000`` on a terminal; a log line every 10% otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
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
                log.info("applied %d of %d operations", done, total)


def sync_json(result: SyncResult, exit_status: int) -> dict:
    out: dict = {"exit_code": exit_status, "message": result.message,
                 "duration_seconds": round(result.duration, 3), "adopted": result.adopted}
    if result.plan is not None:
        out["plan"] = result.plan.to_dict()
    if result.target_read is not None:
        out["target_read"] = {"adopted": result.target_read.adopted,
                              "drifted": result.target_read.drifted,
                              "vanished": result.target_read.vanished}
    if result.report is not None:
        out["applied"] = result.report.counts()
        out["applied_changes"] = [{"op": op.kind.value, "key": op.key}
                                  for op in result.report.applied]
        out["failed"] = [{"op": op.kind.value, "key": op.key, "error": error}
                         for op, error in result.report.failed]
    if result.guard:
        out["guard"] = result.guard.reason
    if result.warnings:
        out["warnings"] = result.warnings
    return out


APPLIED_SHOWN = 200


def print_sync(result: SyncResult) -> None:
    """What happened, object by object, then one line of counts; errors once, on stderr."""
    style = Style(sys.stdout)
    if result.guard and result.plan is not None:
        print(render_plan(result.plan, sys.stdout))
        print(style(f"Stopped by the safety guard: {result.guard.reason}. Nothing was applied. "
                    "Check the source; if this is intended, run once with "
                    "--allow-mass-deactivation.", "31;1"))
        return
    if result.report is None:
        print(style(f"error: {result.message}", "31;1"), file=sys.stderr)
        return
    report = result.report
    read = result.target_read
    if read is not None:
        for label, keys in (("adopted from Split", read.adopted),
                            ("changed in Split by hand, put right", read.drifted),
                            ("gone from Split, created again", read.vanished)):
            for key in keys[:20]:
                print(f"= {label}: {key}")
            if len(keys) > 20:
                print(f"= ... and {len(keys) - 20} more {label}")
    for op in report.applied[:APPLIED_SHOWN]:
        sign, colour, label = _SIGN[op.kind]
        members = f" ({len(op.members)} members)" if op.members else ""
        print(f"{style(sign, colour)} {label} {op.key}{members}")
    if len(report.applied) > APPLIED_SHOWN:
        print(f"  ... and {len(report.applied) - APPLIED_SHOWN} more (--output json lists all)")
    for op, error in report.failed:
        if report.fatal and error == report.fatal:
            continue                                   # said once, below
        print(f"{style('!', '31;1')} {_SIGN[op.kind][2]} {op.key}: {error}")
    if report.applied or not report.failed:
        print(f"Applied {len(report.applied)} change(s)" if report.applied
              else "Nothing to apply: the target already matches the source.")
    failed = [f for f in report.failed if f[1] != report.fatal]
    if failed:
        print(style(f"{len(failed)} change(s) failed; they are retried next cycle "
                    "('scim-agent status' lists them).", "33"))
    if report.fatal:
        print(style(f"error: {report.fatal}", "31;1"), file=sys.stderr)
        print("Stopped: nothing further was sent.", file=sys.stderr)
    for warning in result.warnings:
        print(style(f"warning: {warning}", "33"), file=sys.stderr)
