"""A cycle with nothing to do costs nothing: no write, one request (the token probe), and no
record mapped again. (That a change-feed source then reads only what changed, LDAP, Okta and
Entra alike, is tests/test_sources_end_to_end.py's ``took_change_path``.)"""

from __future__ import annotations

import random

from agent.core import mapping
from agent.core.outcome import Outcome
from tests.conftest import group, user


def directory(n: int, seed: int = 3):
    rnd = random.Random(seed)
    users = [user(f"u{i}", f"person{i}@example.org", active=rnd.random() > 0.05)
             for i in range(n)]
    for i, u in enumerate(users):
        if i:
            u["manager"] = f"u{rnd.randrange(i)}"
    groups = [group(f"g{j}", f"Team {j}", [f"u{rnd.randrange(n)}" for _ in range(15)]
                    + ([f"g{j - 1}"] if j % 4 == 3 else []))
              for j in range(12)]
    return users, groups


def mapped_records(monkeypatch) -> list[str]:
    seen: list[str] = []
    original = mapping._Mapper.user

    def spy(self, record, digest=""):
        seen.append(record.id)
        return original(self, record, digest)
    monkeypatch.setattr(mapping._Mapper, "user", spy)
    return seen


def test_a_quiet_cycle_sends_one_probe_and_no_write(split_ws, fake_split, monkeypatch):
    users, groups = directory(300)
    split_ws.write_directory(users, groups)
    first = split_ws.agent().sync()
    assert first.outcome is Outcome.OK, first.message
    assert fake_split.writes()

    mapped = mapped_records(monkeypatch)
    fake_split.reset_log()
    quiet = split_ws.agent().sync()
    assert quiet.outcome is Outcome.OK, quiet.message
    # nothing planned: not even the managers disabled in the source and so never created on
    # Split, whose references wait for those accounts
    assert quiet.plan.is_empty
    assert fake_split.writes() == []
    assert [(r.method, r.status) for r in fake_split.requests] == [("GET", 200)]   # the probe
    # every record took the value pushed for it, but those never pushed (disabled) or not
    # pushed whole (a manager reference waiting for a disabled manager)
    never = {u["id"] for u in users if not u["active"]}
    waiting = {u["id"] for u in users if u.get("manager") in never}
    assert set(mapped) == never | waiting
    assert len(mapped) < len(users) / 5


def test_after_a_change_only_that_record_is_mapped_and_sent(split_ws, fake_split, monkeypatch):
    users, groups = directory(120)
    split_ws.write_directory(users, groups)
    assert split_ws.agent().sync().outcome is Outcome.OK
    users[7]["title"] = "Head of Things"
    split_ws.write_directory(users, groups)

    mapped = mapped_records(monkeypatch)
    fake_split.reset_log()
    never = {u["id"] for u in users if not u["active"]}
    waiting = never | {u["id"] for u in users if u.get("manager") in never}
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.OK, result.message
    assert set(mapped) - waiting == {"u7"}
    writes = [(r.method, r.path.split("/")[1]) for r in fake_split.writes()]
    assert writes == ([("PATCH", "Users")] if users[7]["active"] else writes)
    assert len(fake_split.requests) == 1 + len(writes)                  # the probe, the write


def test_rows_recorded_from_another_digest_are_given_the_records_own(split_ws, fake_split,
                                                                     monkeypatch):
    """Rows from before a change of how records are digested (or adopted from Split) hold
    the desired value but another source digest: a cycle sends nothing for them and records
    their records' digests, so the cycle after it maps none of them again."""
    import sqlite3
    users, groups = directory(60)
    split_ws.write_directory(users, groups)
    assert split_ws.agent().sync().outcome is Outcome.OK
    with sqlite3.connect(split_ws.state) as conn:
        conn.execute("UPDATE users SET source_digest = 'other/-', manager_reference = NULL")
    mapped = mapped_records(monkeypatch)
    fake_split.reset_log()
    again = split_ws.agent().sync()
    assert again.outcome is Outcome.OK and again.plan.is_empty
    assert fake_split.writes() == []
    assert set(mapped) == {u["id"] for u in users}               # every record, once more
    mapped.clear()
    assert split_ws.agent().sync().plan.is_empty
    never = {u["id"] for u in users if not u["active"]}
    assert set(mapped) == never | {u["id"] for u in users if u.get("manager") in never}
