"""What a cycle ended as, and why pushing may be held: typed values, never searched text.

The engine produces an :class:`Outcome` (and, when nothing should be sent until someone acts,
a :class:`Hold`); the run history stores the outcome's value; the CLI alone turns it into an
exit status (``agent/cli``), the daemon into a metric label and a schedule decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"                  # every planned change was applied (or there was none)
    REFUSED = "refused"        # everything that can be applied was; some changes are refused
                               # or held (a rule of the target, a source record to fix): a
                               # person must act, no retry helps
    PARTIAL = "partial"        # the cycle ran to its end, some operations failed (retried)
    FAILED = "failed"          # the cycle ran to its end, operations failed and none could be
                               # applied (retried): for the daemon a failed cycle, so that a
                               # target that takes reads but no writes is not "ok" for ever
    GUARD = "guard"            # a safety guard stopped the cycle before anything was sent
    INTERRUPTED = "interrupted"  # a stop was asked for (SIGTERM, Ctrl-C): what was applied
                                 # is recorded, nothing new was sent
    DECLINED = "declined"      # the operator was shown the plan and said no: nothing sent
    ERROR = "error"            # a fatal error stopped the cycle (source unreadable, token...)

    @property
    def succeeded(self) -> bool:
        """The cycle ran to its end: the daemon counts it as a success."""
        return self in (Outcome.OK, Outcome.REFUSED, Outcome.PARTIAL)


class HoldKind(StrEnum):
    TOKEN_REJECTED = "token"     # 401/403: expired or regenerated token
    ENDPOINT = "endpoint"        # the target answers in a way no retry mends (a redirect)
    GUARD = "guard"              # a safety guard stopped the cycle
    TARGET_CHANGED = "target"    # [target] url names another organisation than the snapshot


@dataclass(frozen=True)
class Hold:
    """Why pushing should stop until someone acts (a new token, a config fix, a look)."""

    kind: HoldKind
    reason: str

    def __str__(self) -> str:
        return self.reason
