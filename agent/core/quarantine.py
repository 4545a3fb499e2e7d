"""Per-object back-off (quarantine), decided purely: which refused changes wait, and how long.

An object the target keeps refusing (a RejectedError: 400 and friends, a 501 for a request it
does not implement) is not sent again every cycle: after its n-th refusal in a row it waits
:data:`BACKOFF` [n-1] (the last step repeats), across cycles and restarts, since the wait is
kept in the snapshot. It never blocks other objects: only its own operation is held back.
A changed source record (another digest than at the refusal) is tried at once: the fix an
operator makes in the directory (or to the target's URL or dialect) must not wait a day. Transient failures (timeouts, 5xx,
throttling) are not quarantined: the next cycle retries them as before.

Entra's provisioning service escrows a failing object the same way, retrying it after 6 h,
12 h and 24 h, then every 24 h (MicrosoftDocs/entra-docs,
application-provisioning-quarantine-status.md); a first, shorter step catches a refusal
that was a passing state of the target.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import digest_of

BACKOFF = (dt.timedelta(minutes=15), dt.timedelta(hours=1), dt.timedelta(hours=6),
           dt.timedelta(hours=12), dt.timedelta(hours=24))


@dataclass(frozen=True)
class Deferral:
    """A refused operation of one object, and when it may be sent again."""

    kind: str                  # "user" | "group"
    source_id: str
    op: str                    # the OpKind value that was refused
    key: str
    error: str
    count: int                 # refusals in a row
    next_attempt: dt.datetime
    digest: str                # the source record's digest when it was refused


def backoff(count: int) -> dt.timedelta:
    return BACKOFF[min(max(count, 1), len(BACKOFF)) - 1]


def next_attempt(count: int, now: dt.datetime) -> dt.datetime:
    return now + backoff(count)


def record_digest(kind: str, source_id: str, desired, target: str = "") -> str:
    """What "the record changed" is measured by: a user's digest; a group's name and members
    (a member change is a change of the group's record); "" when it left the source; and
    ``target``, how the target is reached and spoken to (its URL and dialect), since
    changing those is a fix too."""
    if kind == "user":
        user = desired.users.get(source_id)
        record = user.digest if user is not None else ""
    else:
        group = desired.groups.get(source_id)
        record = digest_of([group.digest, sorted(group.members)]) if group is not None else ""
    return digest_of([record, target]) if target else record


def waiting(deferrals: Iterable[Deferral], digests: Mapping[tuple[str, str], str],
            now: dt.datetime) -> dict[tuple[str, str, str], Deferral]:
    """The deferrals still in force: not due yet, and the record is the one refused.
    Keyed by (kind, source id, op)."""
    out = {}
    for d in deferrals:
        if now < d.next_attempt and digests.get((d.kind, d.source_id), "") == d.digest:
            out[(d.kind, d.source_id, d.op)] = d
    return out
