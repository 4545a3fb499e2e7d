"""Unchanged records: their value is the one pushed.

Mapping a user record is a pure function of the record and the attribute mapping; only
three things depend on other records, and each is done again for every user: the names
two records share (``_drop_duplicates``), the manager a reference names
(``resolve_managers``), and group membership (``flatten_members``, active users). So a
record whose digest, and the manager it names, are those of the record the pushed value was
recorded from maps to exactly that value, and is not mapped again (``map_directory``).
tests/test_mapping_reuse.py checks that both ways plan exactly the same, on random
directories and random changes.
"""

from __future__ import annotations

import hashlib
from itertools import compress, repeat
from operator import add, and_, eq, itemgetter, ne
from typing import TYPE_CHECKING

from connectors.base import USER_ATTRIBUTES, UserRecord

from .expressions import BadValue, Expression
from .model import (ROW_ACTIVE, ROW_DIGEST, ROW_MANAGER_REFERENCE, ROW_SOURCE_DIGEST,
                    digest_of)

if TYPE_CHECKING:
    from .mapping import MappingRules

MAPPING_VERSION = 1     # raise it whenever mapping one record may give another value


def mapping_fingerprint(rules: MappingRules) -> str:
    """What mapping one user record depends on, besides the record: the expressions (as
    the config writes them), the attributes sent, and the mapping code's version."""
    return digest_of([MAPPING_VERSION, sorted(USER_ATTRIBUTES),
                      sorted((k, e.config_value) for k, e in rules.user_attributes.items())])


def record_digest(record: UserRecord, fingerprint: str) -> str:
    """The digest of one source record under one mapping. ``repr`` is exact for the values
    records hold (text, numbers, booleans, lists, nested objects, bytes); two equal records
    whose keys come in another order digest differently, which only costs a mapping."""
    try:
        blob = f"{fingerprint}|{record.active}|{record.attributes!r}"
    except ValueError:          # an integer too long to write out: this record is mapped
        return ""
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def manager_digest(manager: str | None) -> str:
    if manager is None:
        return "/-"
    return "/" + hashlib.blake2b(manager.encode("utf-8", "surrogatepass"),
                                 digest_size=8).hexdigest()


def source_record_digest(digest: str, fingerprint: str) -> str:
    """A record's digest from the source's own (``Directory.user_digests``): that digest
    under this mapping. Never equal to a :func:`record_digest`, which is another length."""
    return digest and f"{digest}.{fingerprint[:16]}"


# A record whose pushed value is taken: (the length of its digest, the start of the pushed
# source digest; its manager reference, to be resolved again); a tuple, as there is one for
# nearly every user
Reused = tuple[int, "str | None"]


def reusable(record: UserRecord | None, digest: str, pushed: tuple | None,
             manager: Expression | None) -> Reused | None:
    """The pushed value stands for the record's when it was recorded from this very record
    under this mapping (and recorded whole: a row whose digest was cleared is mapped).
    ``pushed``: its row (:class:`PushedUsers`).

    ``record`` is None when the source's digest stands for it (it is not built): its
    ``active`` is the pushed row's, since a row keeps its source digest only when it was
    recorded with the active of the user mapped (``State._put_user``), and its manager
    reference is the one recorded with the row (a row without one is mapped)."""
    if not digest or pushed is None or not pushed[ROW_DIGEST]:
        return None
    source_digest = pushed[ROW_SOURCE_DIGEST]
    if source_digest[len(digest):len(digest) + 1] != "/" or not source_digest.startswith(digest):
        return None
    reference = None
    if record is None:
        if manager is not None:
            if pushed[ROW_MANAGER_REFERENCE] is None:
                return None
            reference = pushed[ROW_MANAGER_REFERENCE] or None
    else:
        if bool(pushed[ROW_ACTIVE]) != record.active:
            return None
        if manager is not None:
            try:
                reference = manager.evaluate(record.attributes) or None
            except BadValue:
                return None
    return len(digest), reference


NOBODY = manager_digest(None)


def standing_users(ids, own: dict[str, str], rows: dict[str, tuple], fingerprint: str,
                   keep_reference: bool) -> tuple[set[str], dict[str | None, str]]:
    """The users whose pushed row is exactly their value, by the source's own digests
    (``own``, ``Directory.user_digests``), and the manager digests worked out on the way
    (manager -> its part of a source digest, as :func:`resolve_managers` keeps them).

    The test ``map_directory`` makes of each user by hand, made of every user at once by
    C-level maps: no Python code runs per user. A user stands when its row was recorded
    whole (a digest) from this very record under this mapping, naming the very manager it
    names now: none, or a user by id who is still in ``ids``, as the row records it. A user
    this leaves out is tested one by one; among them all that name themselves as their own
    manager (which the one-by-one test counts), or a manager by anything but an id.
    ``keep_reference``: the mapping has a manager."""
    head = source_record_digest("-", fingerprint)[1:]      # what follows the source's own
    sids, found = list(rows), list(rows.values())           # (no look-up)
    keep = map(ids.__contains__, sids)                      # a row of a user read
    if keep_reference:
        refs = list(map(itemgetter(ROW_MANAGER_REFERENCE), found))
        named: dict[str | None, str] = {ref: manager_digest(ref)
                                        for ref in ids & set(refs)}
        named[""] = NOBODY                  # a row that records no reference names no one
        # (a reference recorded as None is not known: such a row is tested one by one)
        keep = list(map(and_, map(and_, keep, map(named.__contains__, refs)),
                        map(ne, refs, sids)))
        tails = {ref: head + part for ref, part in named.items()}
        ends = map(tails.__getitem__, compress(refs, keep))
    else:
        keep = list(keep)
        named, ends = {"": NOBODY}, repeat(head + NOBODY)
    sids, found = list(compress(sids, keep)), list(compress(found, keep))
    owns = list(map(own.get, sids, repeat("")))
    same = map(eq, map(itemgetter(ROW_SOURCE_DIGEST), found), map(add, owns, ends))
    whole = map(and_, map(bool, owns), map(bool, map(itemgetter(ROW_DIGEST), found)))
    standing = set(compress(sids, map(and_, same, whole)))
    named[None] = named.pop("")
    return standing, named
