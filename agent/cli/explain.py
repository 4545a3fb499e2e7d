"""``plan --explain KEY``: read and plan as ``plan`` does, then print, for each user or group
``KEY`` names, its source record, its scope decision, how each attribute was computed and
what the plan does with it (``agent/core/explain.py`` decides all of that; this only prints).

JSON (``--output json``): ``{"key": KEY, "objects": [...]}``, one object per match, as
:meth:`Explanation.to_dict` builds it.
"""

from __future__ import annotations

import json
import sys

from ..core.explain import Explanation, explain, plain
from ..engine.cycle import Agent
from .render import Style, _SIGN

EXIT_OK, EXIT_ERROR = 0, 1


def cmd_explain(agent: Agent, args) -> int:
    with agent.planning(basis=False) as result:      # (the snapshot open while it is read)
        found = explain(args.explain, result.read.view, agent.rules, result.desired,
                        result.snapshot, result.plan)
    if not found:
        print(f"error: --explain {args.explain!r} names no user (userName, e-mail, source id, DN) "
              "or group (name, source id) in the source or the snapshot", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        print(json.dumps({"key": args.explain, "objects": [e.to_dict() for e in found]},
                         indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(render(e, Style(sys.stdout)) for e in found))
    return EXIT_OK


def render(e: Explanation, style: Style) -> str:
    lines = [style(f"{e.kind} {e.key}", "1") + f"  (source id {e.source_id})"]
    if e.record is None:
        lines.append("  source record: none (not in what the source returned)")
    else:
        state = "" if e.active is None else (" (active)" if e.active else " (disabled)")
        lines.append(f"  source record{state}:")
        for name, value in sorted(e.record.items()):
            lines.append(f"      {name}: {_shown(plain(value))}")
    if e.scope is not None:
        lines.append(f"  scope: {style(e.scope.reason, '32' if e.scope.in_scope else '31')}")
    shown = [s for s in e.steps if s.value is not None or s.note]
    if shown:
        lines.append("  attributes:")
        width = max(len(s.name) for s in shown)
        for s in shown:
            value = "(nothing)" if s.value is None else json.dumps(s.value, ensure_ascii=False)
            note = f"  [{s.note}]" if s.note else ""
            lines.append(f"      {s.name:<{width}} = {s.expression}  ->  {value}{note}")
    empty = [s.name for s in e.steps if s.value is None and not s.note]
    if empty:
        lines.append(f"  nothing from: {', '.join(empty)}")
    if e.related:
        label = "groups" if e.kind == "user" else "members"
        lines.append(f"  {label}: {', '.join(e.related)}")
    for problem in e.problems:
        lines.append(f"  {style('!', '33;1')} {problem}")
    for note in e.notes:
        lines.append(f"  note: {note}")
    if e.planned:
        lines.append("  plan:")
        for p in e.planned:
            sign, colour, label = _SIGN[p.op.kind]
            lines.append(f"      {style(sign, colour)} {label} {p.op.key}: {p.why}")
    lines.append(f"  verdict: {e.verdict}")
    return "\n".join(lines)


def _shown(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
