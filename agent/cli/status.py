"""``scim-agent status``: what the snapshot says about recent runs, failing objects, the
daemon's hold and schedule, and the token's age. Reads only; needs no secret."""

from __future__ import annotations

import datetime as dt

from ..config import Config
from ..engine.checks import token_days_left, token_warning
from ..store.state import State


def status_report(config: Config) -> dict:
    """Everything ``status`` shows, as the JSON it prints with ``--output json``."""
    path = config.state.path
    report: dict = {"state": str(path), "size_bytes": None, "counts": {}, "runs": [],
                    "failures": [], "held": None, "next_run": None, "consecutive_failures": 0,
                    "last_full_read": None, "token_days_left": token_days_left(config),
                    "token_warning": token_warning(config) or None}
    if not path.exists():
        report["note"] = "no snapshot yet: run 'scim-agent sync' first"
    else:
        with State.open(path, lock=False, create=False) as state:
            report["counts"] = state.counts()
            report["runs"] = [vars(r) for r in state.runs(10)]
            report["failures"] = state.failures()
            report["held"] = state.meta.held() or None
            report["next_run"] = _local(state.meta.next_run())
            report["consecutive_failures"] = state.meta.consecutive_failures()
            report["last_full_read"] = _utc(state.meta.last_full_read())
        report["size_bytes"] = path.stat().st_size
    return report


def print_status(report: dict) -> None:
    path = report["state"]
    if report.get("note"):
        print(f"Snapshot: {path}: {report['note']}")
    else:
        print(f"Snapshot: {path} ({report['size_bytes']} bytes)")
    counts = report.get("counts") or {}
    if counts:
        print(f"Managed: {counts['users']} users ({counts['active_users']} active), "
              f"{counts['groups']} groups, {counts['memberships']} memberships")
    if report.get("held"):
        print(f"Pushing is HELD: {report['held']}")
    if report.get("next_run"):
        print(f"Next run: {report['next_run']}")
    if report["token_warning"]:
        print(f"Token: {report['token_warning']}")
    elif report["token_days_left"] is not None:
        print(f"Token: {report['token_days_left']} days left")
    if report["consecutive_failures"]:
        print(f"Consecutive failed cycles: {report['consecutive_failures']}")
    runs = report.get("runs") or []
    if runs:
        print("\nLast runs:")
        for r in runs:
            print("  " + _run_line(r))
    failures = report.get("failures") or []
    if failures:
        print("\nFailing objects:")
        for f in failures:
            print(f"  {f['kind']} {f['key']}: {f['op']} failed {f['count']}x, last {f['last_seen']}: "
                  f"{f['error']}")


def _local(moment: dt.datetime | None) -> str | None:
    return moment.astimezone().isoformat(timespec="seconds") if moment else None


def _utc(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if moment else None


def _run_line(run: dict) -> str:
    """``<started> <mode> <outcome> <duration>  <what was applied, or why it stopped>``."""
    duration = f"{run['duration']:.1f}s" if run["duration"] is not None else "-"
    head = f"{run['started']}  {run['mode']:<5} {run['outcome'] or 'running':<8} {duration:>7}  "
    if run["outcome"] is None:
        return head + "in progress"
    applied = ", ".join(f"{n} {k}" for k, n in run["counts"].items())
    if run["outcome"] == "ok":
        return head + (applied or "no changes")
    parts = [f"applied {applied}" if applied else "", f"{run['failed']} failed" if run["failed"]
             else "", run["message"] if run["outcome"] != "partial" else ""]
    return head + "; ".join(p for p in parts if p)
