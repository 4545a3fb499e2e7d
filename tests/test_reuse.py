"""The users whose pushed row stands for them, found in bulk (agent/core/reuse.py); the
one-by-one test they must agree with is in map_directory (tests/test_mapping_reuse.py
checks both ways on random directories)."""

from __future__ import annotations

from agent.core.reuse import NOBODY, manager_digest, source_record_digest, standing_users

FP = "f" * 32


def row(sid: str, own: str, manager: str | None, *, digest: str = "d",
        named: str | None = None) -> tuple:
    """A snapshot row (ROW_* fields) recorded from ``own`` naming ``manager`` by id."""
    part = NOBODY if not manager else manager_digest(named or manager)
    return (sid, f"scim-{sid}", f"{sid}@example.org", 1, None, digest,
            source_record_digest(own, FP) + part, manager)


def test_the_rows_that_stand_and_those_left_to_the_test_of_one_user():
    own = {sid: f"own-{sid}" for sid in ("boss", "ann", "ben", "cy", "dee", "eve", "fay",
                                         "gus", "out")}
    ids = own.keys() - {"out"}                              # "out": read, not in scope
    rows = {
        "boss": row("boss", "own-boss", ""),                # names no one: stands
        "ann": row("ann", "own-ann", "boss"),               # a manager by id, still here
        "ben": row("ben", "own-ben", "gone"),               # its manager left: resolved again
        "cy": row("cy", "own-cy", "cy"),                    # itself: the one-by-one test counts it
        "dee": row("dee", "own-dee", None),                 # reference not recorded: mapped
        "eve": row("eve", "own-old", "boss"),               # another record: mapped
        "fay": row("fay", "own-fay", "boss", digest=""),    # recorded not whole: mapped
        "gus": row("gus", "own-gus", "boss@example.org", named="boss"),   # by e-mail
        "out": row("out", "own-out", ""),                   # out of scope
        "left": row("left", "own-left", ""),                # no longer read
    }
    standing, named = standing_users(ids, own, rows, FP, keep_reference=True)
    assert standing == {"boss", "ann"}
    assert named[None] == NOBODY and named["boss"] == manager_digest("boss")
    # without a manager in the mapping, the reference recorded does not matter
    standing, _ = standing_users(ids, own, rows, FP, keep_reference=False)
    assert standing == {"boss", "dee"}          # (the others' rows name a manager: mapped)
