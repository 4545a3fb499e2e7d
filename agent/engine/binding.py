"""A snapshot is bound to the target it was made for.

The snapshot maps source ids to ids that one Split organisation assigned. Pointed at another
(a changed ``[target] url``: a second organisation, a test tenant, a Harness FME base URL),
those ids mean nothing: the new organisation would get nothing, and later changes would be
PATCHed to ids that exist only in the old one. So the snapshot records its target's URL at
its first sync, and any other URL is refused, in ``plan``, ``sync``, the daemon and on
SIGHUP alike, with a sentence saying how to start over: move the snapshot aside, or
``scim-agent sync --rebind-target`` once, which forgets the old organisation's ids and
adopts what the new one holds by userName and group name. A snapshot that holds no ids yet
(a first sync that failed) follows the URL: fixing a typo is not a change of organisation.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..store.state import State, StateError


class TargetChanged(StateError):
    """The snapshot belongs to another target than ``[target] url``."""


def target_identity(url: str) -> str:
    """The base URL as one target: scheme and host case-folded, default port and trailing
    slash dropped, the path kept as written (it may carry an organisation id)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is not None and (scheme, port) not in (("https", 443), ("http", 80)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def binding_problem(state: State, url: str) -> str:
    """"" when ``state`` may be used with the target at ``url``; else the sentence."""
    bound = state.meta.target()
    if bound is None or bound == target_identity(url) or state.is_empty():
        return ""        # nothing pushed yet: a fixed typo in the URL is no change of target
    return (f"{state.path}: this snapshot was made for the Split organisation at {bound}, but "
            f"[target] url is now {target_identity(url)}; its ids mean nothing there. To start "
            f"over against the new one, move the snapshot aside (mv {state.path} "
            f"{state.path}.old) and sync again, or run 'scim-agent sync --rebind-target' once: "
            "either way what the new organisation holds is adopted by userName and group name")


def check_binding(path: Path, url: str) -> str:
    """The same question for a snapshot file that may not exist yet (the daemon's reload)."""
    state = State.read(path, missing_ok=True)
    if state is None:
        return ""
    with state:
        return binding_problem(state, url)


def bind(state: State, url: str, *, rebind: bool = False) -> None:
    """Record the target of a snapshot that has none yet (a new file, or one written before
    snapshots were bound); with ``rebind``, forget the old organisation's ids first."""
    identity = target_identity(url)
    if rebind and state.meta.target() not in (None, identity):
        state.forget_target(identity)
    elif state.meta.target() is None or state.is_empty():
        state.meta.bind_target(identity)
