"""Scope rules: which source users and groups the agent manages, decided on the raw records.

``[[source.scope]]`` entries, each one condition on one raw attribute::

    [[source.scope]]
    action = "exclude"            # "include" or "exclude"
    objects = "users"             # "users" (default) or "groups"
    attribute = "userType"        # the source's own attribute name (dotted: profile.x)
    equals = "Guest"              # or: in = [...], regex = "...", present = true, absent = true

Semantics, the same for every source, after the source's own filters and scope groups have
narrowed what was read:

* with no include rule for a kind of object, every object of that kind is included; with
  some, an object must match at least one of them;
* an object matching any exclude rule is out, whatever the include rules say;
* the order of the rules does not matter (explanations name the first rule that decided).

Matching ignores case (``equals``, ``in`` and ``regex`` alike; ``(?-i)`` in a pattern makes
part of it case-sensitive). A multi-valued attribute matches when any of its values does.
``present`` means at least one non-empty value; a missing attribute matches no ``equals``,
``in`` or ``regex``. ``regex`` searches anywhere in the value (anchor it with ``^``/``$``).

Pure and total: evaluation never raises, whatever the record holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .expressions import raw_value, texts_of
from .patterns import Pattern

OPERATORS = ("equals", "in", "regex", "present", "absent")
KEYS = ("action", "objects", "attribute") + OPERATORS


class Action(StrEnum):
    INCLUDE = "include"
    EXCLUDE = "exclude"


class Objects(StrEnum):
    USERS = "users"
    GROUPS = "groups"


class ScopeError(ValueError):
    """A ``[[source.scope]]`` entry that cannot be used: ``number`` (1-based) and ``key``
    say where."""

    def __init__(self, number: int, key: str, message: str):
        super().__init__(message)
        self.number = number
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Condition:
    attribute: str
    operator: str                         # one of OPERATORS
    values: tuple[str, ...] = ()          # equals (one), in (several)
    pattern: Pattern | None = None        # regex
    _folded: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_folded", frozenset(v.casefold() for v in self.values))

    def matches(self, attributes: Mapping[str, object]) -> bool:
        values = texts_of(raw_value(attributes, self.attribute))
        if self.operator == "present":
            return bool(values)
        if self.operator == "absent":
            return not values
        if self.operator == "regex":
            assert self.pattern is not None
            return any(self.pattern.matches(v) for v in values)
        return any(v.casefold() in self._folded for v in values)

    def describe(self) -> str:
        if self.operator in ("present", "absent"):
            return f"{self.attribute} is {self.operator}"
        if self.operator == "regex":
            assert self.pattern is not None
            return f"{self.attribute} matches {_q(self.pattern.text)}"
        if self.operator == "equals":
            return f"{self.attribute} equals {_q(self.values[0])}"
        return f"{self.attribute} is one of {', '.join(_q(v) for v in self.values)}"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class ScopeRule:
    number: int                           # its place in [[source.scope]], from 1
    action: Action
    objects: Objects
    condition: Condition

    def describe(self) -> str:
        return (f"scope rule {self.number} ({self.action.value} {self.objects.value} where "
                f"{self.condition.describe()})")


@dataclass(frozen=True)
class Decision:
    """Whether an object is in scope, the rule that decided (None: no rule did), and why,
    in a sentence."""

    in_scope: bool
    rule: ScopeRule | None
    reason: str


@dataclass(frozen=True)
class Scope:
    rules: tuple[ScopeRule, ...] = ()

    def _of(self, objects: Objects) -> tuple[list[ScopeRule], list[ScopeRule]]:
        mine = [r for r in self.rules if r.objects is objects]
        return ([r for r in mine if r.action is Action.INCLUDE],
                [r for r in mine if r.action is Action.EXCLUDE])

    def admits(self, objects: Objects, attributes: Mapping[str, object]) -> bool:
        return self.decide(objects, attributes).in_scope

    def decide(self, objects: Objects, attributes: Mapping[str, object]) -> Decision:
        includes, excludes = self._of(objects)
        for rule in excludes:
            if rule.condition.matches(attributes):
                return Decision(False, rule, f"excluded by {rule.describe()}")
        if not includes:
            if excludes:
                return Decision(True, None, f"in scope: no exclude rule for {objects.value} "
                                            "matches")
            return Decision(True, None, f"in scope: there are no scope rules for "
                                        f"{objects.value}")
        for rule in includes:
            if rule.condition.matches(attributes):
                return Decision(True, rule, f"included by {rule.describe()}")
        numbers = ", ".join(str(r.number) for r in includes)
        return Decision(False, None, f"out of scope: matches no include rule for "
                                     f"{objects.value} (scope rule{'s' * (len(includes) > 1)} "
                                     f"{numbers})")

    def has_rules(self, objects: Objects) -> bool:
        return any(r.objects is objects for r in self.rules)

    def attributes(self, objects: Objects | None = None) -> frozenset[str]:
        return frozenset(r.condition.attribute for r in self.rules
                         if objects is None or r.objects is objects)

    @classmethod
    def parse(cls, entries: object) -> "Scope":
        """``[[source.scope]]`` as TOML gives it (a list of tables); raises ScopeError."""
        if not isinstance(entries, list):
            raise ScopeError(0, "", "must be a list of tables ([[source.scope]] entries)")
        return cls(tuple(_rule(i, entry) for i, entry in enumerate(entries, start=1)))


def _rule(number: int, entry: object) -> ScopeRule:
    if not isinstance(entry, dict):
        raise ScopeError(number, "", "must be a table")
    for key in entry:
        if key not in KEYS:
            raise ScopeError(number, key, f"unknown key (known keys: {', '.join(KEYS)})")
    action = entry.get("action")
    if action not in ("include", "exclude"):
        raise ScopeError(number, "action", "is required: \"include\" or \"exclude\""
                         if action is None else f"must be \"include\" or \"exclude\", not "
                                                f"{_q(str(action))}")
    objects = entry.get("objects", "users")
    if objects not in ("users", "groups"):
        raise ScopeError(number, "objects", f"must be \"users\" or \"groups\", not "
                                            f"{_q(str(objects))}")
    attribute = entry.get("attribute")
    if not isinstance(attribute, str) or not attribute.strip():
        raise ScopeError(number, "attribute", "is required: the source attribute to test")
    if attribute != attribute.strip():
        raise ScopeError(number, "attribute", "cannot start or end with spaces")
    given = [op for op in OPERATORS if op in entry]
    if len(given) != 1:
        raise ScopeError(number, given[1] if len(given) > 1 else "",
                         f"needs exactly one of {', '.join(OPERATORS)}"
                         + (f" (it has {' and '.join(given)})" if given else ""))
    operator = given[0]
    value = entry[operator]
    condition = _condition(number, attribute, operator, value)
    return ScopeRule(number, Action(action), Objects(objects), condition)


def _condition(number: int, attribute: str, operator: str, value: object) -> Condition:
    if operator in ("present", "absent"):
        if not isinstance(value, bool):
            raise ScopeError(number, operator, "expected true or false")
        if not value:        # present = false is absent = true, and the other way round
            operator = "absent" if operator == "present" else "present"
        return Condition(attribute, operator)
    if operator == "regex":
        if not isinstance(value, str) or not value:
            raise ScopeError(number, operator, "expected a regular expression (a string)")
        try:
            return Condition(attribute, operator, pattern=Pattern.compile(value,
                                                                          ignore_case=True))
        except ValueError as exc:
            raise ScopeError(number, operator, f"{_q(value)}: {exc}") from None
    values = value if operator == "in" else [value]
    if operator == "in" and (not isinstance(value, list) or not value):
        raise ScopeError(number, operator, "expected a non-empty list of values")
    texts = []
    for item in values:
        if isinstance(item, bool):
            texts.append("true" if item else "false")
        elif isinstance(item, (str, int)):
            texts.append(str(item).strip())
        else:
            raise ScopeError(number, operator, "expected a string (or a number, or true/false)"
                             if operator == "equals" else "expected a list of strings")
        if not texts[-1]:
            raise ScopeError(number, operator, "an empty value matches nothing (to test for "
                                               "a missing attribute, write absent = true)")
    return Condition(attribute, operator, tuple(texts))
