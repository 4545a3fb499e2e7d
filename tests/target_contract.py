"""The contract every Target honours (connectors/base.py), run against each SCIM server.

A test module subclasses :class:`TargetContract` and provides a ``server`` fixture: a running
SCIM service provider on loopback with ``base_url`` and ``token``. Every check goes through
the port only (create, update, set active, members, rename, delete, look up, iterate, probe),
so it proves both that the implementation speaks the server's dialect and that what it reads
back is what it wrote. Servers differ in what they answer (204 or 200 with a body, ``status``
as a string or a number, ``noTarget`` or silence for an absent member): the port hides that.
"""

from __future__ import annotations

import pytest

from connectors.base import (Created, FatalTargetError, NotFoundError, Secret, TargetGroup,
                             TargetUser)
from connectors.http import HttpPolicy
from connectors.scim import ScimTarget
from tests.conftest import FakeTime

ALICE = {"userName": "alice@example.org", "email": "alice@example.org",
         "name.givenName": "Alice", "name.familyName": "Archer", "displayName": "Alice Archer",
         "title": "Engineer", "department": "Engineering", "employeeNumber": "1001"}


def person(i: int) -> dict[str, str]:
    return {"userName": f"p{i:03d}@example.org", "email": f"p{i:03d}@example.org",
            "name.givenName": f"G{i}", "name.familyName": f"F{i}"}


class TargetContract:
    """Subclass with a ``server`` fixture (``base_url``, ``token``) and the ``dialect`` the
    server is run with (every dialect the server accepts gets its own subclass)."""

    dialect = "entra"

    @pytest.fixture
    def target(self, server):
        fake_time = FakeTime()      # retries and pacing wait on a fake clock
        target = ScimTarget(server.base_url, Secret(server.token),
                            HttpPolicy(rate_limit=1000, max_attempts=3, timeout=10),
                            dialect=self.dialect, clock=fake_time.clock, sleep=fake_time.sleep)
        yield target
        target.close()

    # -- users -----------------------------------------------------------------------------

    def test_probe_and_a_rejected_token(self, server, target):
        target.probe()
        wrong = ScimTarget(server.base_url, Secret("not-the-token"),
                           HttpPolicy(rate_limit=1000, max_attempts=1))
        with pytest.raises(FatalTargetError) as caught:
            wrong.probe()
        assert caught.value.status in (401, 403)
        wrong.close()

    def test_a_created_user_reads_back_as_sent(self, target):
        created = target.create_user(ALICE, True, "src-alice")
        assert isinstance(created, Created) and not created.existed
        assert isinstance(created.record, TargetUser) and created.record.id
        found = target.find_user("ALICE@example.org")        # userName is case-insensitive
        assert found is not None and found.id == created.record.id
        assert found.active is True and found.external_id == "src-alice"
        assert {k: found.attributes.get(k) for k in ALICE} == ALICE

    def test_creating_an_existing_user_answers_what_the_target_holds(self, target):
        first = target.create_user(ALICE, True, "src-alice").record
        again = target.create_user({**ALICE, "userName": "Alice@Example.org"}, True, "other")
        assert again.existed and again.record.id == first.id
        assert [u.id for u in target.users()] == [first.id]   # never created twice

    def test_look_ups_quote_what_they_look_for(self, target):
        odd = 'o"brien\\ops@example.org'
        target.create_user({"userName": odd, "email": "obrien@example.org"}, True, "src-odd")
        assert target.find_user(odd).user_name == odd
        assert target.find_user("nobody@example.org") is None

    def test_updates_replace_and_remove_attributes(self, target):
        uid = target.create_user(ALICE, True, "src-alice").record.id
        target.update_user(uid, {"title": "Staff Engineer", "department": None,
                                 "email": "alice.archer@example.org"})
        found = target.find_user(ALICE["userName"])
        assert found.attributes["title"] == "Staff Engineer"
        assert "department" not in found.attributes
        assert found.attributes["email"] == "alice.archer@example.org"
        assert found.attributes["name.givenName"] == "Alice"       # untouched

    def test_deactivate_and_reactivate(self, target):
        uid = target.create_user(ALICE, True, "src-alice").record.id
        target.update_user(uid, {}, active=False)
        assert target.find_user(ALICE["userName"]).active is False
        target.update_user(uid, {"title": "Back"}, active=True)    # one request does both
        found = target.find_user(ALICE["userName"])
        assert found.active is True and found.attributes["title"] == "Back"

    def test_an_update_of_a_vanished_user_is_not_found(self, target):
        with pytest.raises(NotFoundError):
            target.update_user("00000000-0000-0000-0000-000000000000", {"title": "x"})

    def test_every_user_is_listed_across_pages(self, target):
        ids = {target.create_user(person(i), True, f"s{i}").record.id for i in range(105)}
        listed = [u.id for u in target.users()]
        assert len(listed) == 105 and set(listed) == ids      # each once, none lost
        assert target.check()["users"] == 105

    # -- groups ----------------------------------------------------------------------------

    def test_groups_are_linked_by_name_not_created_twice(self, target):
        created = target.create_group("Engineering", "src-eng")
        assert not created.existed and isinstance(created.record, TargetGroup)
        again = target.create_group("engineering", "src-other")
        assert again.existed and again.record.id == created.record.id
        assert [g.id for g in target.groups()] == [created.record.id]

    def test_members_are_added_in_chunks_and_removed(self, target):
        users = [target.create_user(person(i), True, f"s{i}").record.id for i in range(105)]
        gid = target.create_group("Everyone", "src-all").record.id
        confirmed: list[list[str]] = []
        target.add_members(gid, users, on_chunk=lambda chunk: confirmed.append(list(chunk)))
        assert sum(map(len, confirmed)) == 105 and len(confirmed) >= 2   # at most 100 a request
        assert target.find_group("Everyone").members == frozenset(users)
        removed: list[str] = []
        target.remove_members(gid, users[:3], on_chunk=removed.extend)
        assert removed == users[:3]
        assert target.find_group("Everyone").members == frozenset(users[3:])
        target.remove_members(gid, users[:1])        # already absent: done, not an error
        assert [g.members for g in target.groups()] == [frozenset(users[3:])]

    def test_rename_and_delete(self, target):
        gid = target.create_group("Old name", "src-g").record.id
        target.rename_group(gid, "New name")
        assert target.find_group("New name").id == gid
        assert target.find_group("Old name") is None
        target.delete_group(gid)
        assert target.find_group("New name") is None and list(target.groups()) == []
        target.delete_group(gid)                     # already gone: done, not an error

    def test_members_of_a_vanished_group_are_not_found(self, target):
        uid = target.create_user(ALICE, True, "src-alice").record.id
        with pytest.raises(NotFoundError):
            target.add_members("00000000-0000-0000-0000-000000000000", [uid])
