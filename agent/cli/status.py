"""``scim-agent status``: what the snapshot says about recent runs, failing objects, the
daemon's hold and schedule, and the token's age. Reads only; needs no secret."""

from __future__ import annotations

import datetime as dt

from connectors.redaction import printable as _p

from ..config import Config
from ..engine.checks import token_days_left, token_warning
from ..store.state import State, lock_holder

RUNS_SHOWN = 10            # lines of run history, after quiet runs are folded together
RUNS_READ = 500            # how far back status looks to fill them
ATTENTION = ("refused", "held")   # failure kinds no retry mends


def status_report(config: Config, runs: int = RUNS_SHOWN) -> dict:
    """Everything ``status`` shows, as the JSON it prints with ``--output json`` (the last
    ``runs`` runs; the text view reads further back to fold quiet runs together)."""
    path = config.state.path
    report: dict = {"state": str(path), "size_bytes": None, "counts": {}, "runs": [],
                    "failures": [], "held": None, "next_run": None, "consecutive_failures": 0,
                    "last_full_read": None, "token_days_left": token_days_left(config),
                    "token_warning": token_warning(config) or None}
    state = State.read(path, missing_ok=True)
    if state is None:
        report["note"] = "no snapshot yet: run 'scim-agent sync' first"
    else:
        with state:
            report["counts"] = state.counts()
            holder = lock_holder(path)
            report["runs"] = [_run_view(vars(r), holder) for r in state.runs(runs)]
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
        print(f"Pushing is HELD: {_p(report['held'])}")
    if report.get("next_run"):
        print(f"Next run: {report['next_run']}")
    if report["token_warning"]:
        print(f"Token: {_p(report['token_warning'])}")
    elif report["token_days_left"] is not None:
        print(f"Token: {report['token_days_left']} days left")
    if report["consecutive_failures"]:
        print(f"Consecutive failed cycles: {report['consecutive_failures']}")
    runs = report.get("runs") or []
    if runs:
        print("\nLast runs (local time):")
        for line in _run_lines(runs)[:RUNS_SHOWN]:
            print("  " + _p(line))
    failures = report.get("failures") or []
    attention = [f for f in failures if f["op"] in ATTENTION]
    refused = [f for f in failures if f["op"] not in ATTENTION and f.get("next_attempt")]
    failing = [f for f in failures if f["op"] not in ATTENTION and not f.get("next_attempt")]
    if attention:
        print("\nNeeds attention (refused or held: no retry mends these):")
        for f in attention:
            print(_p(f"  {f['kind']} {f['key']}: {f['error']} (since {_at(f['first_seen'])})"))
    if refused:
        print("\nRefused by the target (sent again after a growing wait, or at once when the "
              "source record changes):")
        for f in refused:
            print(_p(f"  {f['kind']} {f['key']}: {f['op']} refused {f['count']}x, last "
                     f"{_at(f['last_seen'])}: {f['error']}; next attempt "
                     f"{_at(f['next_attempt'])}"))
    if failing:
        print("\nFailing objects (retried every cycle):")
        for f in failing:
            print(_p(f"  {f['kind']} {f['key']}: {f['op']} failed {f['count']}x, last "
                     f"{_at(f['last_seen'])}: {f['error']}"))


def _local(moment: dt.datetime | None) -> str | None:
    return moment.astimezone().isoformat(timespec="seconds") if moment else None


def _utc(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if moment else None


def _run_view(run: dict, holder: int | None) -> dict:
    """A run as status reports it: an open run whose process no longer holds the snapshot is
    not "in progress", it was interrupted."""
    if run["outcome"] is None and run["finished"] is None:
        if run.get("pid") is not None and holder == run["pid"]:
            run["state"] = "in progress"
        else:
            run["outcome"], run["state"] = "interrupted", "its process is gone"
    return run


def _at(stamp: str | None) -> str:
    """A stored UTC time in the local zone, with its offset."""
    if not stamp:
        return "-"
    try:
        return dt.datetime.fromisoformat(stamp).astimezone().isoformat(timespec="seconds")
    except (ValueError, TypeError, OverflowError):      # a row edited by hand: shown as is
        return str(stamp)


def _quiet(run: dict) -> bool:
    return run["outcome"] == "ok" and not run["counts"]


def _run_lines(runs: list[dict]) -> list[str]:
    """Newest first; consecutive runs that changed nothing fold into one line."""
    lines: list[str] = []
    i = 0
    while i < len(runs):
        j = i
        while j < len(runs) and _quiet(runs[j]):
            j += 1
        if j - i >= 2:
            lines.append(f"{_at(runs[j - 1]['started'])} .. {_at(runs[i]['started'])}  "
                         f"{j - i} runs, no changes")
            i = j
            continue
        lines.append(_run_line(runs[i]))
        i += 1
    return lines


def _run_line(run: dict) -> str:
    """``<started> <mode> <outcome> <duration>  <what was applied, or why it stopped>``."""
    duration = f"{run['duration']:.1f}s" if run["duration"] is not None else "-"
    head = (f"{_at(run['started'])}  {run['mode']:<5} {run['outcome'] or 'running':<11} "
            f"{duration:>7}  ")
    if run.get("state") == "in progress":
        return head + f"in progress (pid {run['pid']})"
    applied = ", ".join(f"{n} {k}" for k, n in run["counts"].items())
    if run["outcome"] == "ok":
        return head + (applied or "no changes")
    parts = [f"applied {applied}" if applied else "", f"{run['failed']} failed" if run["failed"]
             else "", run["message"] if run["outcome"] not in ("partial", "failed") else ""]
    return head + "; ".join(p for p in parts if p)
