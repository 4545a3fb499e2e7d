"""The contract every source honours, run against each source and its server (real or fake).

A test module subclasses :class:`SourceContract`, sets ``source_cls`` and provides two
fixtures:

``seeded_source``
    a Source whose directory holds exactly :data:`PEOPLE` and :data:`TEAMS` (written into a
    real slapd, a fake Okta, a fake Graph, a file...), in whatever form that vendor uses:
    a disabled person is disabled the vendor's way.
``failing_source``
    a Source whose server fails part-way through a read (connection dropped, 5xx that does
    not clear, page missing). Reading it must raise SourceError, never return a partial view.

The checks go through ``agent.mapping`` with the source's default mapping, so they also prove
that the defaults produce the SCIM values an administrator expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent.core.mapping import MappingRules, map_directory
from connectors.base import Directory, SourceError


@dataclass(frozen=True)
class Person:
    key: str           # a short handle: uid / login prefix / mailNickname
    email: str
    given: str
    family: str
    title: str = ""
    department: str = ""
    active: bool = True

    @property
    def display(self) -> str:
        return f"{self.given} {self.family}"


@dataclass(frozen=True)
class Team:
    key: str
    name: str
    people: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()     # nested groups, by Team.key


PEOPLE = (
    Person("alice", "alice@example.org", "Alice", "Archer", "Engineer", "Engineering"),
    Person("bob", "bob@example.org", "Bob", "Baker", "Designer", "Product"),
    Person("carol", "carol@example.org", "Carol", "Chen", "Analyst", "Finance", active=False),
    Person("dave", "dave@example.org", "Dave", "Dunn", "SRE", "Engineering"),
    Person("zoe", "zoe.unal@example.org", "Zoë", "Ünal", "Directrice", "Opérations"),
    Person("obrien", "o.brien@example.org", "Seán (Ops)", "O'Brien*", "Lead, Ops", "Ops"),
)

TEAMS = (
    Team("eng", "Engineering", people=("alice", "bob"), teams=("platform",)),
    Team("platform", "Platform", people=("dave", "carol")),
    Team("admins", "Split_Administrators", people=("alice",)),
    Team("loop-a", "Loop A", people=("zoe",), teams=("loop-b",)),
    Team("loop-b", "Loop B", people=("obrien",), teams=("loop-a",)),
)


def people_by_key() -> dict[str, Person]:
    return {p.key: p for p in PEOPLE}


def team_people(key: str) -> set[str]:
    """A team's people with nesting flattened (for sources without nested groups, Okta)."""
    teams = {t.key: t for t in TEAMS}
    seen, stack, people = {key}, [key], set()
    while stack:
        team = teams[stack.pop()]
        people |= set(team.people)
        for sub in team.teams:
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return people


class SourceContract:
    source_cls: type

    def rules(self) -> MappingRules:
        # the admins team feeds Split's administrators because the config names it
        return MappingRules.for_source(self.source_cls, admin_group="Split_Administrators")

    def read_desired(self, source):
        directory = source.read()
        assert isinstance(directory, Directory)
        return directory, map_directory(directory, self.rules())

    def test_reads_every_person_with_mapped_attributes(self, seeded_source):
        directory, desired = self.read_desired(seeded_source)
        assert not [p for p in desired.problems if p.kind == "user"]
        by_name = {u.user_name.casefold(): u for u in desired.users.values()}
        assert set(by_name) == {p.email.casefold() for p in PEOPLE}
        for person in PEOPLE:
            user = by_name[person.email.casefold()]
            assert user.attributes["email"].casefold() == person.email.casefold()
            assert user.attributes["name.givenName"] == person.given
            assert user.attributes["name.familyName"] == person.family
            assert user.attributes["displayName"] == person.display
            assert user.active is person.active, person.key

    def test_ids_are_stable_across_reads(self, seeded_source):
        first = seeded_source.read()
        second = seeded_source.read()
        assert set(first.users) == set(second.users)
        assert set(first.groups) == set(second.groups)
        assert all(isinstance(uid, str) and uid for uid in first.users)

    def test_groups_are_flattened_to_active_members(self, seeded_source):
        directory, desired = self.read_desired(seeded_source)
        email_of = {sid: u.user_name.casefold() for sid, u in desired.users.items()}
        groups = {g.display_name: {email_of[m] for m in g.members} for g in desired.groups.values()}
        assert groups["Engineering"] == {"alice@example.org", "bob@example.org", "dave@example.org"}
        assert groups["Platform"] == {"dave@example.org"}          # carol is disabled
        assert groups["Split_Administrators"] == {"alice@example.org"}
        assert groups["Loop A"] == groups["Loop B"] == {"zoe.unal@example.org", "o.brien@example.org"}

    def test_check_reports_counts(self, seeded_source):
        report = seeded_source.check()
        assert int(report["users"]) >= len(PEOPLE)
        assert int(report["groups"]) >= len(TEAMS)

    def test_a_failure_part_way_raises_instead_of_returning_a_partial_view(self, failing_source):
        with pytest.raises(SourceError):
            failing_source.read()
