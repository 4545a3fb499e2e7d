"""Groups whose pushed members are their desired ones, known without working them out.

A group's desired members (``flatten_members``) are a function of three things only: the
member lists of the groups it reaches through nesting (its *reach*: itself and every group
nested in it, at any depth), which ids on those lists are groups, and which are users in
``active`` (mapped this cycle, active, not dropped). Its pushed members are what the store
holds. A *stamp*, recorded beside a pushed group, says that the two were equal, and of what:
a digest of its reach (each group's id and member list; which ids were walked as groups is in
it). A sync records a stamp only for a group whose pushed members are its desired ones, and
only where none of the users on its reach's lists was one whose row's ``active`` differed
from whether the user was in ``active`` (a user in ``changed``, below).

A stamp holds only while nothing it was made against moves: the store counts, by triggers,
every membership written and every user row made, dropped, or turned active or inactive
(the *member epoch*, agent/store/state.py), and a stamp is recorded with the epoch the
mapping read; under another epoch no stamp holds.

So when a later mapping finds the digest of a group's reach equal to its stamp, and none of
the users on those lists in ``changed`` now, the group's desired members are exactly its
pushed ones: the same lists, the same groups among them (else another reach, another
digest), and on them the same users active (their rows' ``active``: unchanged since the
stamp, equal to ``active`` then and equal to it now). Such a group is neither flattened nor
compared: its desired members are its pushed members, the very object, which a plan
compares by identity and never reads from the store (``StoredMembers``). An id that is
both a user's and a group's (which ``flatten_members`` takes for a user only while the user
is in scope) leaves no group clean, and a reach of more than :data:`MAX_REACH` groups is
worked out as before. tests/test_stamps.py checks, on random directories, random writes
to the snapshot and random changes, that mapping and planning with stamps give exactly
what they give without.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable, Mapping
from hashlib import blake2b
from itertools import compress
from operator import itemgetter

from connectors.base import GroupRecord

from .model import ROW_ACTIVE, PushedGroup

STAMP_VERSION = 1       # raise it whenever flatten_members may give other members
MAX_REACH = 64
_PERSON = f"stamp{STAMP_VERSION}".encode()


def _digest(blob: bytes) -> str:
    return blake2b(blob, digest_size=16, person=_PERSON).hexdigest()


def member_digests(groups: Mapping[str, GroupRecord],
                   given: Mapping[str, str] | None) -> Mapping[str, str]:
    """Each group's digest of its member list: the source's own (``Directory.group_digests``)
    or one made of its members in order."""
    if given is not None:
        return given
    return {gid: _digest(marshal.dumps(sorted(g.members), 2)) for gid, g in groups.items()}


def group_stamps(groups: Mapping[str, GroupRecord], own: Mapping[str, str],
                 wanted: Iterable[str], changed: set[str], clash: bool) -> dict[str, str]:
    """The stamp of each group in ``wanted`` whose desired members a stamp may stand for
    (none where ``clash``: an id is both a user's and a group's). ``changed``: the users
    whose row's ``active`` is not whether they are active members now (in ``active`` or
    not), rows missing counted as inactive."""
    if clash:
        return {}
    group_ids = set(groups)
    out: dict[str, str] = {}
    for gid in wanted:
        reach, seen, i = [gid], {gid}, 0
        while i < len(reach):
            members = groups[reach[i]].members
            # (ids as the source listed them, where it kept them: no set made of them)
            members = getattr(members, "listed", None) or members
            i += 1
            if changed and not changed.isdisjoint(members):
                break
            for nested in group_ids.intersection(members):
                if nested not in seen:
                    seen.add(nested)
                    reach.append(nested)
            if len(reach) > MAX_REACH:
                break
        else:
            reach.sort()
            out[gid] = _digest(marshal.dumps([(h, own.get(h)) for h in reach], 2))
    return out


def changed_users(active: set[str], rows: Mapping[str, tuple]) -> set[str]:
    """The users in ``active`` without an active row, and those with one not in it."""
    return active ^ set(compress(rows, map(itemgetter(ROW_ACTIVE), rows.values())))


def clean(stamps: Mapping[str, str], pushed: Mapping[str, PushedGroup]) -> set[str]:
    """The groups whose stamp now is the one recorded (see the module's docstring)."""
    return {gid for gid, stamp in stamps.items()
            if (group := pushed.get(gid)) is not None and group.stamp == stamp}
