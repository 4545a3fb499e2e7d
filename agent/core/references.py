"""References between users across the target port: the core speaks source ids, Split its own.

``manager`` in the desired state holds the manager's *source* id (``mapping.resolve_managers``),
as group members do: the planner diffs source ids, and only the snapshot knows which SCIM id
Split gave each user. The engine translates at the port, both ways, with the helpers here:

* :func:`to_target` before a create or an update: source id -> SCIM id. A manager who is not
  on the target yet (created in the same phase, or whose create failed) is left out of what
  is sent and reported as *deferred*; the user is then recorded with what Split really holds
  (:func:`as_recorded`), so the next plan, the engine's follow-up pass of the same cycle,
  sends the reference once the manager exists.
* :func:`from_target` when target records are read back (adoption, reconcile, a create that
  met an existing account): SCIM id -> source id, so the planner compares like with like. A
  SCIM id the snapshot does not know is kept as it is: it then differs from every source id,
  and the planner puts it right.

Pure: plain mappings in, plain mappings out.
"""

from __future__ import annotations

from collections.abc import Mapping

from .model import User

REFERENCE_ATTRIBUTES = ("manager",)


def to_target(attributes: Mapping[str, str | None],
              scim_ids: Mapping[str, str]) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """``attributes`` (whole, or the changed ones of an update; None removes) with every
    reference as the target's id, and the names of the references left out because their
    user is not on the target yet."""
    out = dict(attributes)
    deferred = []
    for name in REFERENCE_ATTRIBUTES:
        source_id = out.get(name)
        if source_id is None:
            continue
        scim_id = scim_ids.get(source_id)
        if scim_id is None:
            del out[name]
            deferred.append(name)
        else:
            out[name] = scim_id
    return out, tuple(deferred)


def from_target(attributes: Mapping[str, str], source_ids: Mapping[str, str]) -> dict[str, str]:
    """Target attributes with every reference the snapshot knows as the user's source id
    (``source_ids``: SCIM id -> source id)."""
    out = dict(attributes)
    for name in REFERENCE_ATTRIBUTES:
        scim_id = out.get(name)
        if scim_id is not None and scim_id in source_ids:
            out[name] = source_ids[scim_id]
    return out


def as_recorded(user: User, deferred: tuple[str, ...],
                held: Mapping[str, str | None] = {}) -> User:
    """``user`` as the snapshot must remember it when the ``deferred`` references were not
    sent: with the value the target still holds (``held``; absent for a create)."""
    if not deferred:
        return user
    attributes = dict(user.attributes)
    for name in deferred:
        value = held.get(name)
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
    return User(user.source_id, user.user_name, user.active, attributes)
