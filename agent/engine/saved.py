"""Saved plans: ``plan --out FILE`` writes the plan with what it was computed from, and
``sync --plan FILE`` applies exactly that plan, or refuses with a sentence when the source,
the snapshot or the target moved since (as ``terraform apply PLANFILE`` does).

The file holds the plan as the JSON contract shows it (``plan --output json``) and its basis:
a digest of the desired state read from the source, a digest of the snapshot, the target's
identity, and whether Split was read (``--refresh``). Applying it reads the source again and
plans again: the planner is deterministic, so equal inputs give the equal plan, and that is
checked change by change before anything is sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = "scim-agent plan 1"


class PlanFileError(Exception):
    """A saved plan cannot be read, or no longer fits what it would be applied to."""


@dataclass(frozen=True)
class Basis:
    source: str            # DesiredState.digest() of the source read
    snapshot: str          # State.digest() when the plan was made ("" with no snapshot)
    target: str            # binding.target_identity of [target] url
    refreshed: bool        # made with --refresh: Split was read, and will be read again


@dataclass(frozen=True)
class SavedPlan:
    path: Path
    plan: dict             # Plan.to_dict()
    basis: Basis

    @property
    def size(self) -> int:
        return len(self.plan.get("changes", []))


def write_plan(path: Path, plan: dict, basis: Basis) -> None:
    """Write atomically, 0600: the plan names people and their attributes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"format": FORMAT, "basis": asdict(basis), "plan": plan}, handle,
                  indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)


def read_plan(path: Path) -> SavedPlan:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such plan file (write one with plan --out)") from None
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read the plan file: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise PlanFileError(f"{path}: not a plan file written by 'scim-agent plan --out'") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanFileError(f"{path}: not a plan file of this scim-agent (format "
                            f"{data.get('format') if isinstance(data, dict) else '?'!r}); "
                            "make it again with plan --out")
    try:
        basis = Basis(**data["basis"])
        plan = data["plan"]
        if not isinstance(plan, dict) or not isinstance(plan.get("changes"), list):
            raise TypeError
    except (KeyError, TypeError):
        raise PlanFileError(f"{path}: the plan file is incomplete; make it again with "
                            "plan --out") from None
    return SavedPlan(path, plan, basis)


def differences(saved: dict, fresh: dict, shown: int = 5) -> str:
    """What differs between the saved plan and the one the same inputs give now."""
    def key(change: dict) -> str:
        return json.dumps(change, sort_keys=True, ensure_ascii=False)
    old = {key(c) for c in saved.get("changes", [])}
    new = {key(c) for c in fresh.get("changes", [])}
    gone = [json.loads(k) for k in sorted(old - new)]
    added = [json.loads(k) for k in sorted(new - old)]
    parts = [f"{c['op']} {c['key']} is no longer planned" for c in gone[:shown]]
    parts += [f"{c['op']} {c['key']} is now planned" for c in added[:shown]]
    more = len(gone) + len(added) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
