"""``scim-agent history KEY``: every change sent for one user or group, newest first."""

from __future__ import annotations

import json
import sys

from ..config import Config
from ..store.state import Change, State
from .render import Style
from .status import _at

MARK = {"applied": ("+", "32"), "adopted": ("=", "36"), "gone": ("?", "33"),
        "failed": ("!", "31;1"), "refused": ("!", "33;1"), "deferred": ("~", "33")}


def history_report(config: Config, key: str, limit: int) -> dict:
    path = config.state.path
    state = State.read(path, missing_ok=True)
    if state is None:
        return {"key": key, "source_ids": [], "changes": [],
                "note": "no snapshot yet: run 'scim-agent sync' first"}
    with state:
        ids = state.source_ids_named(key)
        changes = state.changes_of(ids, limit)
    return {"key": key, "source_ids": ids, "changes": [vars(c) for c in changes]}


def print_history(report: dict) -> None:
    style = Style(sys.stdout)
    if report.get("note"):
        print(report["note"])
        return
    if not report["changes"]:
        known = "" if report["source_ids"] else " (no user or group of that name or id)"
        print(f"No changes recorded for {report['key']}{known}.")
        return
    print(f"History of {report['key']} (source id {', '.join(report['source_ids'])}), "
          "newest first, local time:")
    for change in report["changes"]:
        for line in _lines(Change(**change), style):
            print(line)


def _lines(change: Change, style: Style) -> list[str]:
    sign, colour = MARK.get(change.outcome, ("?", "0"))
    run = f"run {change.run_id} ({change.mode})" if change.run_id else "a run"
    head = (f"{_at(change.at)}  {run}  {style(sign, colour)} {change.op} {change.key}: "
            f"{change.outcome}")
    detail = change.detail
    if detail.get("error"):
        head += f": {detail['error']}"
    if detail.get("refused"):
        head += f": {detail['refused']}"
    if detail.get("reason"):
        head += f"  ({detail['reason']})"
    lines = [head]
    for name, (old, new) in (detail.get("changed") or {}).items():
        lines.append(f"      {name}: {json.dumps(old)} -> {json.dumps(new)}")
    for member in (detail.get("members") or [])[:20]:
        lines.append(f"      {member}")
    return lines
