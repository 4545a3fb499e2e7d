"""Which attribute names the configuration reads that no record of the source carries.

A typo in ``[source.attributes]`` or in a scope rule is not an error the loader can see (any
name may exist in a directory), but it shows once the source is read: no record has it.
``scim-agent check`` reads the source and names each one, with the spelling the records do
use when only the case differs (Graph and Okta return names in their own case).

Pure: the directory is handed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.base import Directory

from .expressions import Expression, raw_value
from .scope import Objects, Scope


@dataclass(frozen=True)
class Unseen:
    name: str              # the attribute name as configured
    where: str             # the config key that reads it
    kind: str              # "user" | "group"
    suggestion: str = ""   # the spelling the records use, when only the case differs

    def describe(self) -> str:
        hint = f" (the records have {self.suggestion!r})" if self.suggestion else ""
        return f"{self.where} reads {self.name!r}, which no {self.kind} record has{hint}"


def configured_names(attributes: Mapping[str, Expression],
                     group_attributes: Mapping[str, Expression],
                     scope: Scope) -> list[tuple[str, str, str]]:
    """(name, config key, "user" | "group") for every attribute the operator's config reads
    (the sources' defaults are not the operator's to fix)."""
    out = []
    for key, expression in attributes.items():
        out += [(n, f"[source.attributes] {key}", "user") for n in sorted(expression.attributes())]
    for key, expression in group_attributes.items():
        out += [(n, f"[source.group_attributes] {key}", "group")
                for n in sorted(expression.attributes())]
    for rule in scope.rules:
        kind = "user" if rule.objects is Objects.USERS else "group"
        out.append((rule.condition.attribute, f"[[source.scope]] #{rule.number}", kind))
    return out


def unseen_attributes(directory: Directory, names: Iterable[tuple[str, str, str]]) -> list[Unseen]:
    """The configured names no record of their kind carries (with any value). Nothing is
    reported for a kind the source returned no record of."""
    records = {"user": [u.attributes for u in directory.users.values()],
               "group": [g.attributes for g in directory.groups.values()]}
    keys = {kind: {k for attrs in found for k in attrs} for kind, found in records.items()}
    out = []
    for name, where, kind in names:
        if not records[kind] or name in keys[kind]:
            continue
        if any(raw_value(attrs, name) is not None for attrs in records[kind]):
            continue                        # a dotted name reaching into nested objects
        folded = [k for k in sorted(keys[kind]) if k.casefold() == name.casefold()]
        out.append(Unseen(name, where, kind, folded[0] if folded else ""))
    return out
