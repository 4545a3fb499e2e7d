"""Regular expressions from the config, run on directory data in linear time.

Patterns are the administrator's, values are whatever the directory holds: a pattern with
nested repetition (``(a+)+$``) would make a backtracking engine spin for minutes on one odd
value. RE2 (google-re2) guarantees time linear in the input, so no record can stall a cycle.
Its syntax is Python's without backreferences and lookaround (a pattern using them is refused
at config load, with RE2's reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import re2

_options_cache: dict[bool, "re2.Options"] = {}


def _options(ignore_case: bool) -> "re2.Options":
    options = _options_cache.get(ignore_case)
    if options is None:
        options = re2.Options()
        options.log_errors = False          # RE2 would print parse errors on stderr
        options.case_sensitive = not ignore_case
        _options_cache[ignore_case] = options
    return options


def _matchable(text: str) -> str:
    """RE2 reads UTF-8: a lone surrogate (possible in JSON input) cannot be encoded, so it is
    matched as U+FFFD instead of failing the match."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern; equal when written the same."""

    text: str
    ignore_case: bool = False
    _compiled: object = field(default=None, compare=False, repr=False)

    @classmethod
    def compile(cls, text: str, ignore_case: bool = False) -> "Pattern":
        """Raises ValueError with RE2's reason when ``text`` is not a pattern."""
        try:
            compiled = re2.compile(text, _options(ignore_case))
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise ValueError(f"not a regular expression: {reason}") from None
        except UnicodeEncodeError:
            raise ValueError("not a regular expression: it is not valid Unicode") from None
        return cls(text, ignore_case, compiled)

    @property
    def groups(self) -> int:
        return self._compiled.groups                          # type: ignore[attr-defined]

    @property
    def group_names(self) -> frozenset[str]:
        return frozenset(self._compiled.groupindex)          # type: ignore[attr-defined]

    def search(self, text: str):
        return self._compiled.search(_matchable(text))       # type: ignore[attr-defined]

    def matches(self, text: str) -> bool:
        return self.search(text) is not None
