"""Mapping expressions: what one SCIM attribute is made of, parsed once when the config loads.

The forms a value of ``[source.attributes]`` (or ``[source.group_attributes]``) may take::

    "mail"                           a source attribute. A plain string is always a name,
                                     never a constant, whatever it looks like
    ["mail", "userPrincipalName"]    alternatives, tried in order: the first non-empty wins
                                     (each one may be any form below)
    { constant = "Acme" }            a constant
    "{givenName} {sn}"               a template: any string holding "{". ``{{`` and ``}}``
                                     are literal braces
    "{mail | lower}"                 a placeholder with filters, applied left to right

Filters: ``lower``, ``upper``, ``trim``, ``default("text")``, ``replace("old", "new")``,
``regex("pattern", group)``, ``split("sep", n)``, ``truncate(n)``. Arguments are quoted
strings (``"..."`` or ``'...'``; a backslash escapes only the quote and itself, so ``\\w`` in
a pattern needs no doubling) or whole numbers.

How values are read: a multi-valued attribute gives its first non-empty value, a nested
object gives nothing, values are trimmed, and empty means missing. A template whose
placeholders all come out empty is empty, so a list can fall back to the next alternative
instead of sending ``" "`` or ``".@corp.example"``.

Pure, and total: nothing is evaluated as code, every filter is defined for every string, and
source data that cannot become a SCIM value (text that is not valid Unicode, a value over
:data:`MAX_VALUE` characters, a number too large to write out) raises :class:`BadValue`,
which the mapper turns into a problem for that one object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .patterns import Pattern

MAX_VALUE = 10_000          # characters in one value read or produced; beyond is bad data
_NAME_STOP = frozenset(" \t\r\n{}|()'\",")


def quoted(text: str) -> str:
    """``text`` as a TOML string: a literal string ('...') when it can be one, which keeps
    the double quotes of filter arguments readable; else a basic string with escapes."""
    if "'" not in text and text.isprintable():
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=False)


class BadValue(Exception):
    """Source data that cannot become a SCIM value; the message is fit for the operator."""


class ExpressionError(ValueError):
    """An expression that cannot be parsed. ``position`` counts characters from 1."""

    def __init__(self, message: str, expression: str, position: int | None = None):
        self.message = message
        self.expression = expression
        self.position = position
        self.item: int | None = None        # 1-based, when it is one item of a list
        super().__init__(message)

    def __str__(self) -> str:
        item = f"item {self.item} " if self.item is not None else ""
        where = f" at position {self.position}" if self.position is not None else ""
        return f"{item}{quoted(self.expression)}{where}: {self.message}"


# ---------------------------------------------------------------------------------------------
# Reading raw values


def raw_value(attributes: Mapping[str, object], name: str) -> object:
    """The value of ``name``; a dotted name reaches into nested objects (``profile.email``)
    when no flat key of that name exists."""
    value = attributes.get(name)
    if value is None and "." in name:
        node: object = attributes
        for part in name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        value = node
    return value


def text_of(value: object, _depth: int = 0) -> str:
    """One value as trimmed text ("" when missing). Raises :class:`BadValue` for data that
    cannot be sent."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, Mapping):
        return ""
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int):
        try:
            text = str(value)
        except ValueError:
            raise BadValue("a number too large to write out") from None
    elif isinstance(value, float):
        text = str(value)
    elif isinstance(value, (list, tuple)):
        if _depth > 2:
            return ""
        for item in value:
            text = text_of(item, _depth + 1)
            if text:
                return text
        return ""
    elif isinstance(value, (bytes, bytearray)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue("binary data, not text") from None
    else:
        raise BadValue(f"a {type(value).__name__} value, not text")
    text = text.strip()
    if len(text) > MAX_VALUE:
        raise BadValue(f"{len(text)} characters long (at most {MAX_VALUE})")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadValue("not valid Unicode (it holds a lone surrogate)") from None
    return text


def texts_of(value: object, _depth: int = 0) -> list[str]:
    """Every non-empty value of a (possibly multi-valued) attribute as text, for matching.
    Lenient and total: what cannot be read as text is left out."""
    if isinstance(value, str):
        text = value.strip()
        return [text] if text else []
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int):
        try:
            return [str(value)]
        except ValueError:
            return []
    if isinstance(value, float):
        return [str(value)]
    if isinstance(value, (list, tuple)) and _depth <= 2:
        return [t for item in value for t in texts_of(item, _depth + 1)]
    if isinstance(value, (bytes, bytearray)):
        return texts_of(bytes(value).decode("utf-8", "replace"), _depth)
    return []


def lookup(attributes: Mapping[str, object], name: str) -> str:
    """The first non-empty value of ``name`` as text; "" when missing or unreadable."""
    try:
        return text_of(raw_value(attributes, name))
    except BadValue:
        return ""


def first_of(attributes: Mapping[str, object], names: Iterable[str]) -> str:
    for name in names:
        value = lookup(attributes, name)
        if value:
            return value
    return ""


def _read(attributes: Mapping[str, object], name: str) -> str:
    raw = attributes.get(name)
    if type(raw) is str and raw.isascii() and len(raw) <= MAX_VALUE:
        return raw.strip()              # the common case, kept cheap: it runs per user per key
    try:
        return text_of(raw_value(attributes, name))
    except BadValue as exc:
        raise BadValue(f"{name} is {exc}") from None


# ---------------------------------------------------------------------------------------------
# Terms: one alternative of an expression


@dataclass(frozen=True)
class Attribute:
    name: str

    @property
    def written(self) -> str:
        return quoted(self.name)

    def value(self, attributes: Mapping[str, object]) -> str:
        return _read(attributes, self.name)

    def attributes(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True)
class Constant:
    text: str

    @property
    def written(self) -> str:
        return f"{{ constant = {quoted(self.text)} }}"

    def value(self, attributes: Mapping[str, object]) -> str:
        return self.text.strip()

    def attributes(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class Filter:
    name: str
    args: tuple[str | int, ...] = ()
    pattern: Pattern | None = None          # regex() only

    @property
    def written(self) -> str:
        if not self.args:
            return self.name
        return f"{self.name}({', '.join(json.dumps(a, ensure_ascii=False) for a in self.args)})"

    def apply(self, text: str) -> str:
        name, args = self.name, self.args
        if name == "lower":
            return text.lower()
        if name == "upper":
            return text.upper()
        if name == "trim":
            return text.strip()
        if name == "default":
            return text if text.strip() else str(args[0])
        if name == "replace":
            return text.replace(str(args[0]), str(args[1])) if text else text
        if name == "regex":
            assert self.pattern is not None
            match = self.pattern.search(text) if text else None
            if match is None:
                return ""
            return match.group(args[1] if len(args) > 1 else 0) or ""
        if name == "split":
            pieces = text.split(str(args[0]))
            n = int(args[1]) if len(args) > 1 else 0
            return pieces[n] if -len(pieces) <= n < len(pieces) else ""
        if name == "truncate":
            return text[:int(args[0])]
        raise AssertionError(name)          # parse() admits no other name


@dataclass(frozen=True)
class Placeholder:
    attribute: str
    filters: tuple[Filter, ...] = ()

    def value(self, attributes: Mapping[str, object]) -> str:
        text = _read(attributes, self.attribute)
        for f in self.filters:
            text = f.apply(text)
        return text


@dataclass(frozen=True)
class Template:
    written_text: str
    parts: tuple[str | Placeholder, ...]

    @property
    def written(self) -> str:
        return quoted(self.written_text)

    def value(self, attributes: Mapping[str, object]) -> str:
        out: list[str] = []
        placeholders = filled = 0
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            placeholders += 1
            text = part.value(attributes)
            if text.strip():
                filled += 1
            out.append(text)
        if placeholders and not filled:
            return ""
        text = "".join(out).strip()
        if len(text) > MAX_VALUE:
            raise BadValue(f"the template makes {len(text)} characters (at most {MAX_VALUE})")
        return text

    def attributes(self) -> frozenset[str]:
        return frozenset(p.attribute for p in self.parts if isinstance(p, Placeholder))


Term = Attribute | Constant | Template


# ---------------------------------------------------------------------------------------------
# Expressions


@dataclass(frozen=True)
class Trace:
    """How an expression came to its value: which alternative (0-based; None when none gave
    a value) and the value, or the bad data that stopped it."""

    value: str
    alternative: int | None
    error: str = ""


@dataclass(frozen=True)
class Expression:
    alternatives: tuple[Term, ...]

    @classmethod
    def parse(cls, value: object) -> "Expression":
        """An expression as the config writes it (see the module docstring); raises
        :class:`ExpressionError`. A tuple is read like a list (the sources' defaults)."""
        if isinstance(value, (list, tuple)):
            if not value:
                raise ExpressionError("an empty list names no attribute", "[]")
            terms = []
            for i, item in enumerate(value):
                try:
                    if isinstance(item, (list, tuple)):
                        raise ExpressionError("a list inside a list; write one flat list",
                                              _shown(item))
                    terms.append(_term(item))
                except ExpressionError as exc:
                    exc.item = i + 1
                    raise
            return cls(tuple(terms))
        return cls((_term(value),))

    @property
    def written(self) -> str:
        """The expression as the config would write it."""
        if len(self.alternatives) == 1:
            return self.alternatives[0].written
        return "[" + ", ".join(t.written for t in self.alternatives) + "]"

    @property
    def config_value(self) -> object:
        """The expression as TOML gives it (a string, a constant table or a list)."""
        values = [_config_value(t) for t in self.alternatives]
        return values[0] if len(values) == 1 else values

    def evaluate(self, attributes: Mapping[str, object]) -> str:
        """The first non-empty alternative, trimmed; "" when none. Raises BadValue."""
        for term in self.alternatives:
            text = term.value(attributes)
            if text:
                return text
        return ""

    def trace(self, attributes: Mapping[str, object]) -> Trace:
        """Like :meth:`evaluate`, saying which alternative gave the value; never raises."""
        for i, term in enumerate(self.alternatives):
            try:
                text = term.value(attributes)
            except BadValue as exc:
                return Trace("", i, str(exc))
            if text:
                return Trace(text, i)
        return Trace("", None)

    def attributes(self) -> frozenset[str]:
        """Every source attribute name it reads."""
        return frozenset().union(*(t.attributes() for t in self.alternatives))


def _config_value(term: Term) -> object:
    if isinstance(term, Constant):
        return {"constant": term.text}
    if isinstance(term, Template):
        return term.written_text
    return term.name


def _term(value: object) -> Term:
    if isinstance(value, Mapping):
        keys = set(value)
        if keys != {"constant"}:
            shown = ", ".join(sorted(map(str, keys))) or "nothing"
            raise ExpressionError(f"a table here must be {{ constant = \"...\" }} (it has "
                                  f"{shown})", _shown(value))
        text = value["constant"]
        if not isinstance(text, str):
            raise ExpressionError("a constant must be a string", _shown(value))
        return Constant(text)
    if not isinstance(value, str):
        raise ExpressionError("expected an attribute name, a template, a list or "
                              "{ constant = \"...\" }", _shown(value))
    if "{" in value or "}" in value:
        return _template(value)
    if not value.strip():
        raise ExpressionError("an empty string names no attribute", value)
    if value != value.strip():
        raise ExpressionError("an attribute name cannot start or end with spaces", value, 1)
    return Attribute(value)


def _shown(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------------------------------------
# Templates: a small hand-written scanner (the grammar is a dozen lines; no code is run)
#
#   template    := ( text | "{{" | "}}" | placeholder )*
#   placeholder := "{" name ( "|" filter )* "}"
#   filter      := ident [ "(" [ arg ( "," arg )* ] ")" ]
#   arg         := '"' chars '"' | "'" chars "'" | integer

# filter name -> (argument kinds, how many are required)
_FILTERS: dict[str, tuple[tuple[str, ...], int]] = {
    "lower": ((), 0),
    "upper": ((), 0),
    "trim": ((), 0),
    "default": (("text",), 1),
    "replace": (("text", "text"), 2),
    "regex": (("pattern", "group"), 1),
    "split": (("text", "int"), 1),
    "truncate": (("int",), 1),
}
_USAGE = {
    "default": 'default("text")', "replace": 'replace("old", "new")',
    "regex": 'regex("pattern", group)', "split": 'split("separator", n)',
    "truncate": "truncate(n)",
}


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.i = 0

    def error(self, message: str, at: int | None = None) -> ExpressionError:
        return ExpressionError(message, self.text, (self.i if at is None else at) + 1)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def word(self) -> str:
        start = self.i
        while self.i < len(self.text) and self.text[self.i] not in _NAME_STOP:
            self.i += 1
        return self.text[start:self.i]

    def argument(self) -> tuple[str | int, int]:
        start = self.i
        quote = self.peek()
        if quote in ("'", '"'):
            self.i += 1
            out = []
            while True:
                c = self.peek()
                if not c:
                    raise self.error(f"unterminated string (missing {quote})", start)
                self.i += 1
                if c == quote:
                    return "".join(out), start
                if c == "\\" and self.peek() in (quote, "\\"):
                    out.append(self.peek())
                    self.i += 1
                    continue
                out.append(c)
        digits = self.word()
        try:
            return int(digits), start
        except ValueError:
            raise self.error("expected a quoted string or a whole number", start) from None


def _template(text: str) -> Template:
    scan = _Scanner(text)
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    while scan.i < len(text):
        c = text[scan.i]
        if c in "{}" and text.startswith(c * 2, scan.i):
            literal.append(c)
            scan.i += 2
        elif c == "}":
            raise scan.error("a lone } (write }} for a literal brace)")
        elif c == "{":
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_placeholder(scan))
        else:
            literal.append(c)
            scan.i += 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def _placeholder(scan: _Scanner) -> Placeholder:
    opening = scan.i
    scan.i += 1
    scan.spaces()
    name_at = scan.i
    name = scan.word()
    if not name:
        if not scan.peek():
            raise scan.error("unterminated placeholder (missing })", opening)
        raise scan.error("expected a source attribute name (write {{ for a literal brace)",
                         name_at)
    filters = []
    scan.spaces()
    while scan.peek() == "|":
        scan.i += 1
        scan.spaces()
        filters.append(_filter(scan))
        scan.spaces()
    if scan.peek() != "}":
        if not scan.peek():
            raise scan.error("unterminated placeholder (missing })", opening)
        raise scan.error(f"expected | or }} after {name if not filters else filters[-1].name}")
    scan.i += 1
    return Placeholder(name, tuple(filters))


def _filter(scan: _Scanner) -> Filter:
    at = scan.i
    name = scan.word()
    if name not in _FILTERS:
        known = ", ".join(sorted(_FILTERS))
        raise scan.error(f"unknown filter {name!r} (filters: {known})" if name
                         else f"expected a filter name ({known})", at)
    kinds, required = _FILTERS[name]
    args: list[tuple[str | int, int]] = []
    scan.spaces()
    if scan.peek() == "(":
        scan.i += 1
        scan.spaces()
        while scan.peek() != ")":
            if not scan.peek():
                raise scan.error(f"unterminated arguments of {name} (missing ))", at)
            args.append(scan.argument())
            scan.spaces()
            if scan.peek() == ",":
                scan.i += 1
                scan.spaces()
            elif scan.peek() != ")":
                raise scan.error("expected , or ) between arguments")
        scan.i += 1
    if not required <= len(args) <= len(kinds):
        usage = _USAGE.get(name, name)
        raise scan.error(f"{name} takes no arguments" if not kinds
                         else f"{name} needs {'at least ' if required < len(kinds) else ''}"
                              f"{required} argument{'s' * (required > 1)}: {usage}", at)
    values: list[str | int] = []
    pattern = None
    for (value, where), kind in zip(args, kinds):
        if kind in ("text", "pattern") and not isinstance(value, str):
            raise scan.error(f"{name}: expected a quoted string, not {value}", where)
        if kind == "int" and not isinstance(value, int):
            raise scan.error(f"{name}: expected a whole number, not {json.dumps(value)}", where)
        if kind == "pattern":
            try:
                pattern = Pattern.compile(str(value))
            except ValueError as exc:
                raise scan.error(f"regex: {exc}", where) from None
        if kind == "group":
            assert pattern is not None
            if isinstance(value, int) and not 0 <= value <= pattern.groups:
                raise scan.error(f"regex: group {value} does not exist (the pattern has "
                                 f"{pattern.groups} group{'s' * (pattern.groups != 1)})", where)
            if isinstance(value, str) and value not in pattern.group_names:
                raise scan.error(f"regex: the pattern has no group named {value!r}", where)
        values.append(value)
    if name in ("replace", "split") and values[0] == "":
        raise scan.error(f"{name}: the first argument cannot be empty", args[0][1])
    if name == "truncate" and int(values[0]) < 1:
        raise scan.error("truncate: n must be at least 1", args[0][1])
    return Filter(name, tuple(values), pattern)


FILTER_NAMES = tuple(sorted(_FILTERS))
